#!/usr/bin/env bash
# The whole test suite, with every service it needs. Works on a fresh machine: installs and
# starts PostgreSQL if it is not running, installs an S3-compatible server (moto, from PyPI) and an
# SMTP server (aiosmtpd) in a virtualenv and starts them on free ports, then runs
# `cargo test --workspace`.
#
# With CI=true a service that cannot be provided fails the run (tests never skip in CI).
# Environment it honours: DRAVEN_TEST_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

log() { printf '\033[1m[test.sh]\033[0m %s\n' "$*" >&2; }
fail_or_warn() {
  if [ "${CI:-}" = "true" ]; then log "FATAL: $*"; exit 1; fi
  log "WARNING: $* (tests that need it will be skipped; CI=true makes this fatal)"
}

export DRAVEN_TEST_DATABASE_URL="${DRAVEN_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

port_open() { python3 - "$1" "$2" <<'PY'
import socket, sys
s = socket.socket(); s.settimeout(1)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("open")
except OSError:
    print("closed")
PY
}

# --- git and ssh-keygen (deploy tests make real repositories and SSH-signed tags) -------------
for tool in git ssh-keygen; do
  if ! command -v "$tool" >/dev/null; then
    log "installing $tool"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq git openssh-client >/dev/null) ||
      fail_or_warn "$tool is missing"
  fi
done

# --- Chromium and chromedriver (the web UI's browser test) ----------------------------------------
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  log "installing chromium and chromium-driver (Debian packages)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) ||
    fail_or_warn "chromium / chromedriver are missing (the browser test needs them)"
fi

# --- PostgreSQL -------------------------------------------------------------------------------
ensure_postgres() {
  [ "$(port_open 127.0.0.1 5432)" = open ] && return 0
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL (Debian package)"
    if command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) || return 1
    else
      return 1
    fi
    local hba
    hba=$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)
    # Test-only cluster on loopback: trust local connections, as on the development machines.
    sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/; s/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/; s/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$hba"
  fi
  log "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  for _ in $(seq 1 30); do
    [ "$(port_open 127.0.0.1 5432)" = open ] && return 0
    sleep 1
  done
  return 1
}
ensure_postgres || fail_or_warn "PostgreSQL is not reachable on 127.0.0.1:5432"

# Drop databases left by earlier runs (each test makes its own).
if command -v psql >/dev/null && [ "$(port_open 127.0.0.1 5432)" = open ]; then
  psql "$DRAVEN_TEST_DATABASE_URL" -Atqc "SELECT datname FROM pg_database WHERE datname LIKE 'draven_test_%'" 2>/dev/null |
    while read -r db; do psql "$DRAVEN_TEST_DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done
fi

# --- S3 (moto server) ------------------------------------------------------------------------
moto_pid=""
smtp_pid=""
cleanup() {
  [ -n "$moto_pid" ] && kill "$moto_pid" 2>/dev/null || true
  [ -n "$smtp_pid" ] && kill "$smtp_pid" 2>/dev/null || true
}
trap cleanup EXIT

start_s3() {
  local venv="$root/.venv"
  if [ ! -x "$venv/bin/moto_server" ]; then
    log "installing moto[server] into $venv"
    python3 -m venv "$venv" || return 1
    "$venv/bin/pip" install -q 'moto[server]>=5,<6' || return 1
  fi
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  "$venv/bin/moto_server" -H 127.0.0.1 -p "$port" >"$root/target/moto.log" 2>&1 &
  moto_pid=$!
  for _ in $(seq 1 60); do
    [ "$(port_open 127.0.0.1 "$port")" = open ] && break
    sleep 0.5
  done
  "$venv/bin/python" - "$port" <<'PY' || return 1
import sys, boto3
s3 = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{sys.argv[1]}", aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
s3.create_bucket(Bucket="draven-test")
PY
  export DRAVEN_TEST_S3_ENDPOINT="http://127.0.0.1:$port"
  export DRAVEN_TEST_S3_BUCKET="draven-test"
  log "S3 (moto) on $DRAVEN_TEST_S3_ENDPOINT"
}
mkdir -p target
start_s3 || fail_or_warn "could not start the S3 test server"

# --- SMTP (aiosmtpd; notification emails land in a maildir the tests read) -------------------
start_smtp() {
  local venv="$root/.venv"
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv" || return 1
  if ! "$venv/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
    log "installing aiosmtpd into $venv"
    "$venv/bin/pip" install -q 'aiosmtpd>=1.4,<2' || return 1
  fi
  local port maildir
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  maildir="$root/target/test-maildir"
  rm -rf "$maildir" && mkdir -p "$maildir"/{tmp,new,cur}
  "$venv/bin/python" -m aiosmtpd -n -l "127.0.0.1:$port" -c aiosmtpd.handlers.Mailbox "$maildir" >"$root/target/smtp.log" 2>&1 &
  smtp_pid=$!
  for _ in $(seq 1 40); do
    [ "$(port_open 127.0.0.1 "$port")" = open ] && break
    sleep 0.25
  done
  [ "$(port_open 127.0.0.1 "$port")" = open ] || return 1
  export DRAVEN_TEST_SMTP="127.0.0.1:$port"
  export DRAVEN_TEST_SMTP_MAILDIR="$maildir"
  log "SMTP (aiosmtpd) on $DRAVEN_TEST_SMTP"
}
start_smtp || fail_or_warn "could not start the SMTP test server"

# --- the suite ---------------------------------------------------------------------------------
log "cargo test --workspace"
cargo test --workspace --locked "$@"
