#!/usr/bin/env bash
# API fuzzing from the OpenAPI document: starts the real control plane on a
# loopback port in a throw-away data directory and runs schemathesis against
# it with a bounded number of examples per operation. Fails on any 5xx, any
# response that does not match its documented schema or content type.
#
#   control/api-fuzz/run.sh [max-examples]     (default 25)
#   SHORTLINE_CONTROL_BIN=path/to/shortline-control control/api-fuzz/run.sh 50
#
# Needs python3 with venv; installs schemathesis (pinned) into
# target/api-fuzz-venv on first use.
set -euo pipefail
cd "$(dirname "$0")/../.."

examples="${1:-25}"
venv=target/api-fuzz-venv
if [[ ! -x "$venv/bin/st" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r control/api-fuzz/requirements.txt
fi
# CI passes the binary `cargo test --workspace` built, which a build of
# this package alone would redo with other features.
bin="${SHORTLINE_CONTROL_BIN:-}"
if [[ -z "$bin" ]]; then
  cargo build --quiet -p shortline-control
  bin=target/debug/shortline-control
fi

data="$(mktemp -d)"
log="$data/control.log"
token="api-fuzz-admin-token-$(date +%s%N)"
cleanup() {
  [[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$data"
}
trap cleanup EXIT

# Generous rate limits: the fuzzer sends thousands of requests from one
# address; the limits themselves are tested in control/tests/it/abuse.rs.
env -i PATH="$PATH" RUST_LOG=warn \
  SHORTLINE_DATA_DIR="$data/store" \
  SHORTLINE_CONTROL_LISTEN=127.0.0.1:0 \
  SHORTLINE_ADMIN_TOKEN="$token" \
  SHORTLINE_ANONYMOUS_CREATE=true \
  SHORTLINE_RATE_LIMIT_USER_PER_SECOND=1000000 \
  SHORTLINE_RATE_LIMIT_ANONYMOUS_PER_MINUTE=10000000 \
  SHORTLINE_RATE_LIMIT_REPORT_PER_MINUTE=10000000 \
  "$bin" serve >"$log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  addr="$(sed -n 's|^control listening on http://||p' "$log")"
  [[ -n "$addr" ]] && break
  sleep 0.1
done
if [[ -z "${addr:-}" ]]; then
  cat "$log"
  echo "control did not start" >&2
  exit 1
fi

# Real objects for the path parameters, so operations on a link or a report
# reach their handlers' logic rather than answering 404.
api() { curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' "$@"; }
code="$(api -X POST "http://$addr/api/v1/links" -d '{"url":"https://api-fuzz.example/a","max_clicks":5,"tags":["x"]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')"
report="$(api -X POST "http://$addr/api/v1/links/$code/report" -d '{"category":"spam"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')"
api -X PUT "http://$addr/api/v1/blocklist/blocked.example" >/dev/null
cat >"$data/schemathesis.toml" <<TOML
[parameters]
"path.code" = "$code"
"path.id" = "$report"
"path.domain" = "blocked.example"
TOML

status=0
"$venv/bin/st" --config-file "$data/schemathesis.toml" run "http://$addr/api/v1/openapi.json" \
  --header "Authorization: Bearer $token" \
  --checks not_a_server_error,response_schema_conformance,content_type_conformance,status_code_conformance \
  --phases examples,coverage,fuzzing \
  --max-examples "$examples" \
  --seed 20261128 \
  --workers 1 \
  --request-timeout 10 \
  --no-color \
  --report-dir "$data/report" || status=$?
if grep -q "panicked\|request failed" "$log"; then
  echo "control logged a failure during the run:" >&2
  grep "panicked\|request failed" "$log" | head -20 >&2
  status=1
fi
exit "$status"
