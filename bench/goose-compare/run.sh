#!/usr/bin/env bash
# goose, wrk and shortline-loadtest against the same nginx (a 10,000-entry
# map answered with `return 302`), one after another, nginx on CPU 0 and the
# load generator on CPU 1, 64 connections/users, 8 s each. Loopback only.
#
#   bench/goose-compare/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
(cd "$here" && cargo build --release --quiet)
(cd "$root" && cargo build --release --quiet -p shortline-loadtest)
work=$(mktemp -d)
trap 'kill $(cat "$work/nginx.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for i in $(seq 0 9999); do
  printf '/g%05d https://example.com/goose/%d;\n' "$i" "$i" >>"$work/links.map"
  printf '/g%05d\n' "$i" >>"$work/paths.txt"
  printf 'g%05d\thttps://example.com/goose/%d\n' "$i" "$i" >>"$work/links.tsv"
done
cat >"$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  map_hash_max_size 20000;
  map_hash_bucket_size 128;
  map \$uri \$target { default ""; include $work/links.map; }
  server {
    listen 127.0.0.1:$port reuseport;
    keepalive_requests 100000;
    location / { if (\$target = "") { return 404; } return 302 \$target; }
  }
}
CONF
taskset -c 0 nginx -c "$work/nginx.conf" -p "$work"
sleep 0.5
cat >"$work/paths.lua" <<'LUA'
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
request = function() return wrk.format("GET", paths[math.random(#paths)]) end
LUA
echo "| load generator | req/s |"
echo "|---|---:|"
rps=$(PATHS=$work/paths.txt taskset -c 1 wrk -t1 -c64 -d8s -s "$work/paths.lua" "http://127.0.0.1:$port" | awk '/Requests\/sec/ {print $2}')
echo "| wrk | ${rps} |"
"$root/target/release/shortline-loadtest" --target "http://127.0.0.1:$port" --links "$work/links.tsv" \
  --connections 64 --seconds 8 --json "$work/lt.json" >/dev/null || true
rps=$(python3 -c "import json; print(round(json.load(open('$work/lt.json'))['rps']))")
echo "| shortline-loadtest (unpinned) | ${rps} |"
taskset -c 1 "$root/target/release/shortline-loadtest" --target "http://127.0.0.1:$port" --links "$work/links.tsv" \
  --connections 64 --seconds 8 --json "$work/lt.json" >/dev/null || true
rps=$(python3 -c "import json; print(round(json.load(open('$work/lt.json'))['rps']))")
echo "| shortline-loadtest | ${rps} |"
PATHS=$work/paths.txt taskset -c 1 "$here/target/release/goose-compare" --host "http://127.0.0.1:$port" \
  --users 64 --increase-rate 64 --run-time 8s --no-reset-metrics >"$work/goose.out" 2>&1 || true
# The first "Aggregated" row of goose's request table: its req/s column.
rps=$(awk -F'|' '/Aggregated/ {gsub(/ /, "", $4); print $4; exit}' "$work/goose.out")
echo "| goose 0.19 | ${rps} |"
