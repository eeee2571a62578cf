#!/usr/bin/env bash
# The repository contract Draven's runner calls: deploy/run.sh TASK, with ENV, REF and JOB_ID
# (and DRAVEN_*) in the environment. Tasks: deploy:info (preflight), deploy, rollback.
# This example "deploys" by writing a release marker; a real project calls its tooling here
# (e.g. `dep deploy "$ENV" --revision="$REF"` with PHP Deployer).
set -euo pipefail
task="${1:-deploy}"
: "${ENV:?ENV is required}" "${REF:?REF is required}" "${JOB_ID:?JOB_ID is required}"
case "$task" in
  deploy:info)
    echo "shop: would deploy $REF ($DRAVEN_COMMIT) to $ENV"
    ;;
  deploy)
    echo "shop: deploying $REF ($DRAVEN_COMMIT) to $ENV as job $JOB_ID"
    echo "shop: a warning on stderr" >&2
    # A deploy/sleep file holds the deploy open (tests cancel it or kill its runner meanwhile).
    sleep "$(cat deploy/sleep 2>/dev/null || echo 0)"
    echo "shop: done"
    ;;
  rollback)
    echo "shop: rolling back $ENV to $REF"
    ;;
  *)
    echo "unknown task $task" >&2
    exit 2
    ;;
esac
