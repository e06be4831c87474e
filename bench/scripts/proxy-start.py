#!/usr/bin/env python3
"""A proxy starting over a large snapshot: time to its first answer, time to
every block checked, and memory beyond the mapped file.

Writes a snapshot of N generated links (bench-table --write-only) into
DIR/proxy-cache/, starts shortline-proxy on it with no control plane and
catch_up_wait_ms = 0 (so it answers from the table as it stands), and times
the first 302 for a link from the middle of the file. Then reads the
background check's log line, looks up 20,000 random links over one
keep-alive connection (each must be a 302 to its own target), and reads the
process's resident memory: RssAnon is what the proxy holds beyond the
mapped file (RssFile).

    python3 bench/scripts/proxy-start.py target/release "$(mktemp -d)" 100000000 --short-targets

The page cache holds the file after it is written; a cold start after a
reboot reads the blocks it touches from disk.
"""
import http.client
import os
import random
import subprocess
import sys
import time

from generated import code_for, free_port, target_for

BIN, DIR, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
SHORT = "--short-targets" in sys.argv[4:]

cache = os.path.join(DIR, "proxy-cache")
os.makedirs(cache, exist_ok=True)
snap = os.path.join(cache, "links-00000000000000000001.snap")
t = time.time()
subprocess.run([os.path.join(BIN, "bench-table"), "--write-only", snap, "--links", str(N), "--builds", "1"]
               + (["--short-targets"] if SHORT else []), check=True, stdout=subprocess.DEVNULL)
print(f"snapshot of {N} links written in {time.time() - t:.1f} s ({os.path.getsize(snap)} bytes)")

port, metrics, dead = free_port(), free_port(), free_port()
env = dict(os.environ, SHORTLINE_DATA_DIR=DIR, SHORTLINE_PROXY_LISTEN=f"127.0.0.1:{port}",
           SHORTLINE_PROXY_METRICS_LISTEN=f"127.0.0.1:{metrics}", SHORTLINE_CONTROL_LISTEN=f"127.0.0.1:{dead}",
           SHORTLINE_CATCH_UP_WAIT_MS="0", SHORTLINE_INTERNAL_TOKEN="proxy-start-probe-token",
           RUST_LOG="info")
middle = N // 2
started = time.time()
proxy = subprocess.Popen([os.path.join(BIN, "shortline-proxy")], env=env, stderr=subprocess.PIPE, text=True)
try:
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/" + code_for(middle))
            answer = conn.getresponse()
            answer.read()
            if answer.status == 302:
                first = time.time() - started
                break
        except OSError:
            pass
        if time.time() - started > 60:
            sys.exit("no answer within a minute")
        time.sleep(0.001)
    assert answer.getheader("location") == target_for(middle, SHORT), answer.getheader("location")
    checked = None
    for line in proxy.stderr:
        if "snapshot checked" in line:
            checked = line.split("ms=")[1].split()[0]
            break
        if "damaged" in line:
            sys.exit(line)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    rng = random.Random(7)
    for _ in range(20_000):
        i = rng.randrange(N)
        conn.request("GET", "/" + code_for(i))
        answer = conn.getresponse()
        answer.read()
        assert answer.status == 302 and answer.getheader("location") == target_for(i, SHORT), (i, answer.status)
    status = {}
    with open(f"/proc/{proxy.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            status[key] = value.strip()
    print("| links | start to first answer | every block checked (the proxy's log) | RssAnon | RssFile |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {N} | {first * 1000:.0f} ms | {checked} ms | {status['RssAnon']} | {status['RssFile']} |")
finally:
    proxy.terminate()
    proxy.wait()
