#!/usr/bin/env bash
# Deploys Shortline onto this machine with the site playbook (embedded
# store, inventory/localhost), checks that a link created through the admin
# API redirects through the deployed proxy, performs a graceful proxy
# upgrade with the unit's own reload commands while requests flow, then runs
# the playbook a second time and asserts that nothing changed.
#
# Where systemd is not running (a container), the test starts the installed
# units' ExecStart commands itself, as the units' user: the files installed
# are the production ones either way.
#
#   ansible/tests/deploy-localhost.sh [binary-dir]   (default: target/release)
#
# Run as root on a machine you can change: it installs into /usr/local/bin,
# /etc/shortline, /etc/systemd/system and /var/lib/shortline.
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
binaries="$(cd "${1:-$repo/target/release}" && pwd)"
cd "$repo/ansible"
venv="$repo/target/ansible-venv"
if [[ ! -x "$venv/bin/ansible-playbook" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r requirements.txt
fi
export PATH="$venv/bin:$PATH" ANSIBLE_NOCOLOR=1 ANSIBLE_FORCE_COLOR=0
export SHORTLINE_BINARY_DIR="$binaries"

step() { printf '\n-- %s\n' "$1"; }
fail() { echo "FAILED: $*" >&2; exit 1; }
extra=()
[[ "$(id -u)" == 0 ]] && extra+=(-e ansible_become=false)

step "syntax check and lint"
ansible-playbook --syntax-check -i inventory/example/hosts.yml site.yml >/dev/null
ansible-playbook --syntax-check -i inventory/localhost/hosts.yml site.yml >/dev/null
ansible-lint --nocolor site.yml roles

work="$(mktemp -d)"
started=()
cleanup() {
  for pid in "${started[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -f /var/lib/shortline/proxy.pid ]]; then
    kill "$(cat /var/lib/shortline/proxy.pid)" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Stop what an earlier run of this test left running.
pkill -f '^/usr/local/bin/shortline-(control|proxy) ' 2>/dev/null || true
sleep 0.5

step "first run"
ansible-playbook -i inventory/localhost/hosts.yml "${extra[@]}" site.yml | tee "$work/first.log"

unit_value() { sed -n "s/^$2=//p" "/etc/systemd/system/$1"; }
if [[ "$(ps -p 1 -o comm=)" != systemd ]]; then
  step "no systemd here: starting the installed units' commands"
  user="$(unit_value shortline-control.service User)"
  cd /var/lib/shortline
  # shellcheck disable=SC2046
  setsid runuser -u "$user" -- $(unit_value shortline-control.service ExecStart) >"$work/control.log" 2>&1 &
  started+=($!)
  for _ in $(seq 100); do curl -fs http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.1; done
  # shellcheck disable=SC2046
  runuser -u "$user" -- $(unit_value shortline-proxy.service ExecStart) >"$work/proxy.log" 2>&1
  cd - >/dev/null
fi
for _ in $(seq 100); do curl -fs http://127.0.0.1:19090/healthz >/dev/null && break; sleep 0.1; done
curl -fs http://127.0.0.1:18081/readyz >/dev/null || fail "control is not ready"
curl -fs http://127.0.0.1:19090/healthz >/dev/null || fail "proxy is not healthy"

step "a created link redirects through the deployed proxy"
token=deploy-test-admin-token-0123456789
created="$(curl -fsS -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"url":"https://deployed.example/landing?x=1"}' http://127.0.0.1:18081/api/v1/links)"
code="$(python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])' <<<"$created")"
location=""
for _ in $(seq 100); do
  location="$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:18080/$code")"
  [[ "$location" == "302 https://deployed.example/landing?x=1" ]] && break
  sleep 0.1
done
[[ "$location" == "302 https://deployed.example/landing?x=1" ]] || fail "proxy answered '$location'"
echo "/$code -> $location"

step "graceful upgrade with the unit's reload commands, under requests"
old_pid="$(cat /var/lib/shortline/proxy.pid)"
(
  failures=0
  for _ in $(seq 400); do
    status="$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:18080/$code")" || status=000
    [[ "$status" == 302 ]] || failures=$((failures + 1))
    sleep 0.01
  done
  echo "$failures" >"$work/failures"
) &
load=$!
sleep 0.5
if [[ "$(ps -p 1 -o comm=)" == systemd ]]; then
  systemctl reload shortline-proxy
else
  user="$(unit_value shortline-proxy.service User)"
  while read -r command; do
    command="${command//\$MAINPID/$old_pid}"
    # shellcheck disable=SC2086
    if [[ "$command" == /bin/kill* ]]; then $command; else runuser -u "$user" -- $command; fi
  done < <(unit_value shortline-proxy.service ExecReload)
fi
wait "$load"
for _ in $(seq 100); do kill -0 "$old_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$old_pid" 2>/dev/null && fail "the old proxy did not exit"
new_pid="$(cat /var/lib/shortline/proxy.pid)"
[[ "$new_pid" != "$old_pid" ]] || fail "the pid file still names the old proxy"
[[ "$(cat "$work/failures")" == 0 ]] || fail "$(cat "$work/failures") requests failed during the upgrade"
echo "proxy $old_pid -> $new_pid, 400 requests, none failed"

step "second run changes nothing"
ansible-playbook -i inventory/localhost/hosts.yml "${extra[@]}" site.yml | tee "$work/second.log"
recap="$(sed -n '/PLAY RECAP/,$p' "$work/second.log")"
grep -Eq 'changed=0 +unreachable=0 +failed=0' <<<"$recap" || fail "second run was not idempotent: $recap"
echo "deploy test passed"
