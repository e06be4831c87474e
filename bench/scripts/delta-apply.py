#!/usr/bin/env python3
"""Changes applied to a large table by the real binaries: control's delta
step and the proxy's install, each round of CHANGES new links.

Writes a base of N generated links (bench-table --write-only, sequence 0)
into DIR/snapshots/ as control's newest segment, starts shortline-control
and shortline-proxy on DIR (the proxy maps the base from control's folder),
then for each round creates CHANGES links through the batch API and reads
two log lines: control's "segments moved forward" (the delta step, from
reading the change log to the fsynced delta file, and any merge it was due
for; its wall time bounds its CPU, as it runs on one thread) and the proxy's "installed segments" (from
control's segment list to serving: reading the new delta from the shared
folder, checking it whole, building its filter and the swap). Every link
of the round must then redirect through the proxy, and a sample of the base
too. Ends with each process's memory beyond mapped files (RssAnon).

The base is generated, not read from control's store: a delta step reads
the change log and writes the changed codes, never the base, so its cost
does not depend on where the base came from.

    python3 bench/scripts/delta-apply.py target/release "$(mktemp -d)" 100000000 --short-targets
"""
import http.client
import json
import os
import random
import re
import subprocess
import sys
import time

from generated import code_for, free_port, target_for

BIN, DIR, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
SHORT = "--short-targets" in sys.argv[4:]
ROUNDS, CHANGES, BATCH = 3, 10_000, 1_000
TOKEN = "sl_bench_" + "a" * 40
def wait_for(what, check, seconds=300):
    deadline = time.time() + seconds
    while time.time() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    sys.exit(f"timed out waiting for {what}")


def lines(path, needle):
    with open(path, errors="replace") as f:
        return [line for line in f if needle in line]


def field(line, name):
    return re.search(rf"\b{name}=([0-9.e-]+)", line).group(1)


def rss_anon(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) // 1024
    return 0


snapshots = os.path.join(DIR, "snapshots")
os.makedirs(snapshots, exist_ok=True)
base = os.path.join(snapshots, "links-00000000000000000000.snap")
t = time.time()
subprocess.run([os.path.join(BIN, "bench-table"), "--write-only", base, "--links", str(N),
                "--builds", "1", "--sequence", "0"] + (["--short-targets"] if SHORT else []),
               check=True, stdout=subprocess.DEVNULL)
print(f"base of {N} links written in {time.time() - t:.1f} s ({os.path.getsize(base)} bytes)")

control_port, proxy_port, metrics_port = free_port(), free_port(), free_port()
env = dict(os.environ, SHORTLINE_DATA_DIR=DIR, SHORTLINE_ADMIN_TOKEN=TOKEN, RUST_LOG="info",
           SHORTLINE_CONTROL_LISTEN=f"127.0.0.1:{control_port}",
           SHORTLINE_PROXY_LISTEN=f"127.0.0.1:{proxy_port}",
           SHORTLINE_PROXY_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
           SHORTLINE_SNAPSHOT_INTERVAL_MS="100", SHORTLINE_SNAPSHOT_CHANGES_MIN=str(CHANGES),
           SHORTLINE_SNAPSHOT_AGE_MAX_MS="3600000", SHORTLINE_RATE_LIMIT_ADMIN_PER_SECOND="1000000",
           SHORTLINE_RATE_LIMIT_IP_PER_SECOND="1000000")
control_log, proxy_log = os.path.join(DIR, "control.log"), os.path.join(DIR, "proxy.log")
control = subprocess.Popen([os.path.join(BIN, "shortline-control"), "serve"], env=env,
                           stdout=subprocess.DEVNULL, stderr=open(control_log, "w"))
wait_for("control", lambda: lines(control_log, "control plane listening"))
proxy = subprocess.Popen([os.path.join(BIN, "shortline-proxy")], env=env,
                         stdout=subprocess.DEVNULL, stderr=open(proxy_log, "w"))
try:
    wait_for("proxy", lambda: lines(proxy_log, "caught up") or lines(proxy_log, "following the change stream"))
    api = http.client.HTTPConnection("127.0.0.1", control_port, timeout=60)
    redirects = http.client.HTTPConnection("127.0.0.1", proxy_port, timeout=60)

    def redirect(code):
        redirects.request("GET", f"/{code}")
        answer = redirects.getresponse()
        answer.read()
        return answer.status, answer.getheader("location")

    print("| round | changes | control step | control step ms | proxy install ms | deltas |")
    print("|---:|---:|---|---:|---:|---:|")
    for round_ in range(ROUNDS):
        steps_before = len(lines(control_log, "segments moved forward"))
        installs_before = len(lines(proxy_log, "installed segments"))
        created = []
        for b in range(CHANGES // BATCH):
            links = [{"url": f"https://new.example/{round_}/{b}/{j}"} for j in range(BATCH)]
            api.request("POST", "/api/v1/links/batch", json.dumps({"links": links}),
                        {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
            answer = api.getresponse()
            body = json.loads(answer.read())
            assert answer.status == 200, body
            created += [(r["link"]["code"], r["link"]["url"]) for r in body["results"]]
        step = wait_for("the delta step", lambda: lines(control_log, "segments moved forward")[steps_before:])
        install = wait_for("the install", lambda: lines(proxy_log, "installed segments")[installs_before:])
        assert '"delta"' in step[-1], step[-1]
        for code, url in created:
            assert redirect(code) == (302, url), code
        for i in random.sample(range(N), 1000):
            assert redirect(code_for(i)) == (302, target_for(i, SHORT)), i
        steps = re.search(r"steps=\[([^\]]*)\]", step[-1]).group(1).replace('"', "")
        print(f"| {round_ + 1} | {CHANGES} | {steps} | {float(field(step[-1], 'seconds')) * 1e3:.1f} | "
              f"{int(field(install[-1], 'install_us')) / 1e3:.2f} | {field(install[-1], 'deltas')} |")
    print(f"memory beyond mapped files (RssAnon): proxy {rss_anon(proxy.pid)} MB, "
          f"control {rss_anon(control.pid)} MB")
finally:
    for process in (proxy, control):
        process.terminate()
        process.wait()
