#!/usr/bin/env bash
# deploy/run.sh — the repository contract Draven drives (SPEC D8, D12).
#
#   deploy/run.sh deploy:info   preflight: Deployer's view of the target (nothing changes)
#   deploy/run.sh deploy        dep deploy stage=$ENV --revision=$REF
#   deploy/run.sh rollback      dep rollback stage=$ENV
#
# Inputs (environment): ENV (stage|demo|prod), REF (branch/tag), JOB_ID. Draven's runner sets
# them and reports the outcome itself. A CI pipeline (templates/github, gitlab, bitbucket) also
# sets DRAVEN_CALLBACK_URL and DRAVEN_CALLBACK_TOKEN, and optionally DRAVEN_LOG_URL (the CI run's
# page): then this script reports to Draven itself — start, the output of each task as log
# chunks, and finish with the result, exit code and log link.
#
# After a failed `dep deploy`, Deployer keeps its own lock (.dep/deploy.lock on the target) and
# refuses the next deploy; this script runs `dep deploy:unlock` so the next job can deploy.
set -uo pipefail

task="${1:-deploy}"
: "${ENV:?ENV (stage|demo|prod) is required}"
REF="${REF:-}"
JOB_ID="${JOB_ID:-${DRAVEN_JOB_ID:-}}"
DEP="${DEP:-}"
if [ -z "$DEP" ]; then
  if [ -x vendor/bin/dep ]; then DEP=vendor/bin/dep; else DEP=dep; fi
fi

callback_url="${DRAVEN_CALLBACK_URL:-}"
callback_token="${DRAVEN_CALLBACK_TOKEN:-}"
reporting=false
if [ -n "$callback_url" ] && [ -n "$callback_token" ]; then reporting=true; fi

json_string() {
  if command -v jq >/dev/null 2>&1; then
    jq -Rs .
  else
    python3 -c 'import json,sys; sys.stdout.write(json.dumps(sys.stdin.read()))'
  fi
}

# POST <path> <json>: a callback to Draven (retried; a callback failure never hides the deploy's
# own result, it is only reported on stderr).
draven() {
  $reporting || return 0
  local path="$1" body="${2:-}"
  curl --silent --show-error --fail --retry 3 --retry-delay 2 --retry-all-errors \
    -X POST "$callback_url/$path" \
    -H "Authorization: Bearer $callback_token" \
    -H 'Content-Type: application/json' \
    ${body:+--data-binary "$body"} >/dev/null ||
    echo "run.sh: callback $path failed" >&2
}

# Runs a command, shows its output, and ships the output to Draven in chunks of at most 200 KiB.
run_logged() {
  local out status
  out=$(mktemp)
  "$@" >"$out" 2>&1
  status=$?
  cat "$out"
  if $reporting; then
    split -b 200000 "$out" "$out.part."
    for part in "$out".part.*; do
      [ -s "$part" ] || continue
      draven logs "{\"stream\":\"stdout\",\"text\":$(json_string <"$part")}"
    done
    rm -f "$out".part.*
  fi
  rm -f "$out"
  return $status
}

finish() {
  local result="$1" code="$2" link=""
  if [ -n "${DRAVEN_LOG_URL:-}" ]; then link=",\"log_url\":\"${DRAVEN_LOG_URL}\""; fi
  draven finish "{\"result\":\"$result\",\"exit_code\":$code$link}"
}

draven start
echo "run.sh: $task of ${REF:-<no ref>} to $ENV (job ${JOB_ID:-?})"
status=0
case "$task" in
  deploy:info)
    run_logged "$DEP" deploy:info stage="$ENV" || status=$?
    ;;
  deploy)
    : "${REF:?REF is required to deploy}"
    run_logged "$DEP" deploy:info stage="$ENV" || status=$?
    if [ "$status" -eq 0 ]; then
      run_logged "$DEP" deploy stage="$ENV" --revision="$REF" || status=$?
      if [ "$status" -ne 0 ]; then
        echo "run.sh: deploy failed ($status); releasing Deployer's lock"
        run_logged "$DEP" deploy:unlock stage="$ENV" || true
      fi
    fi
    ;;
  rollback)
    run_logged "$DEP" rollback stage="$ENV" || status=$?
    ;;
  *)
    echo "run.sh: unknown task $task (use deploy:info, deploy or rollback)" >&2
    status=2
    ;;
esac

if [ "$status" -eq 0 ]; then finish succeeded 0; else finish failed "$status"; fi
exit "$status"
