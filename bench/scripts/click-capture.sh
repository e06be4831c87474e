#!/usr/bin/env bash
# Redirect latency with click capture on and off, alternating, in one run.
# Both proxies get the same open-loop offered load from shortline-loadtest, so
# the p99 figures compare at equal load. Loopback only; stops by itself.
#
#   bench/scripts/click-capture.sh [rounds] [seconds] [rate]
set -euo pipefail
rounds=${1:-3}
seconds=${2:-10}
rate=${3:-20000}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
cargo build --release --quiet -p shortline-control -p shortline-proxy -p shortline-loadtest
bin=$root/target/release
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"' EXIT
token=bench-admin-token-0123456789
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
control_port=$(port); proxy_port=$(port); metrics_port=$(port)
SHORTLINE_DATA_DIR=$work SHORTLINE_CONTROL_LISTEN=127.0.0.1:$control_port \
  SHORTLINE_ADMIN_TOKEN=$token RUST_LOG=warn "$bin/shortline-control" serve >"$work/control.log" 2>&1 &
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$control_port/readyz" >/dev/null && break; sleep 0.1; done
start_proxy() {
  SHORTLINE_DATA_DIR=$work SHORTLINE_CONTROL_LISTEN=127.0.0.1:$control_port \
    SHORTLINE_PROXY_LISTEN=127.0.0.1:$proxy_port SHORTLINE_PROXY_METRICS_LISTEN=127.0.0.1:$metrics_port \
    SHORTLINE_PROXY_THREADS=1 SHORTLINE_CLICK_CAPTURE=$1 RUST_LOG=warn "$bin/shortline-proxy" >"$work/proxy.log" 2>&1 &
  proxy_pid=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$proxy_port/healthz-probe" && break; sleep 0.1; done
}
# Seed once; later rounds read the same links back from the file.
start_proxy true
"$bin/shortline-loadtest" --target "http://127.0.0.1:$proxy_port" --control "http://127.0.0.1:$control_port" \
  --token "$token" --seed-links 10000 --keep-links --seconds 1 --connections 4 --json "$work/seed.json" >/dev/null
kill -TERM $proxy_pid; wait $proxy_pid || true
curl -sf -H "Authorization: Bearer $token" "http://127.0.0.1:$control_port/api/v1/links?limit=1000" \
  | python3 -c 'import json,sys; [print(l["code"]+"\t"+l["url"]) for l in json.load(sys.stdin)["items"]]' >"$work/links.tsv"
echo "| round | click capture | offered req/s | achieved req/s | p50 ms | p99 ms | p99.9 ms | clicks dropped |"
echo "|---:|---|---:|---:|---:|---:|---:|---:|"
for round in $(seq "$rounds"); do
  for capture in true false; do
    start_proxy $capture
    sleep 1
    "$bin/shortline-loadtest" --target "http://127.0.0.1:$proxy_port" --links "$work/links.tsv" \
      --scenario redirect-zipf --connections 32 --seconds "$seconds" --rate "$rate" \
      --json "$work/run.json" >/dev/null
    dropped=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^proxy_clicks_dropped_total/ {print $2}')
    kill -TERM $proxy_pid; wait $proxy_pid || true
    python3 - "$work/run.json" "$round" "$capture" "$rate" "${dropped:-0}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); l = r["latency_ms"]
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {r['rps']:.0f} | {l['p50']:.3f} | {l['p99']:.3f} | {l['p999']:.3f} | {sys.argv[5]} |")
PY
  done
done
