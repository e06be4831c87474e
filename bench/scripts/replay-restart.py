#!/usr/bin/env python3
"""Restart time of the embedded store with a full redo log.

Starts shortline-control with checkpoints off for ten minutes (so every write
is only in the redo log), creates N links through the batch API, SIGKILLs it,
and times the restart to /readyz, which includes replaying the log.

    python3 bench/scripts/replay-restart.py target/release/shortline-control "$(mktemp -d)" 100000
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

BIN, DIR, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    ADDR = f"127.0.0.1:{probe.getsockname()[1]}"
env = dict(os.environ, SHORTLINE_DATA_DIR=DIR, SHORTLINE_CONTROL_LISTEN=ADDR,
           SHORTLINE_ADMIN_TOKEN="replay-probe-admin-token-0123456789", SHORTLINE_STORE_CHECKPOINT_MS="600000", RUST_LOG="warn")


def api(method, path, body=None):
    req = urllib.request.Request(f"http://{ADDR}" + path, method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": "Bearer replay-probe-admin-token-0123456789", "Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req))


def wait():
    t = time.time()
    while True:
        try:
            urllib.request.urlopen(f"http://{ADDR}/readyz")
            return time.time() - t
        except OSError:
            time.sleep(0.005)


p = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL)
wait()
for i in range(0, N, 1000):
    api("POST", "/api/v1/links/batch", {"links": [{"url": f"https://example.com/r/{j}"} for j in range(i, i + 1000)]})
log = sum(os.path.getsize(os.path.join(DIR, "store-log", f)) for f in os.listdir(os.path.join(DIR, "store-log")))
p.send_signal(signal.SIGKILL)
p.wait()
p = subprocess.Popen([BIN, "serve"], env=env, stdout=subprocess.DEVNULL)
up = wait()
print(f"{N} links created in batches of 1000, {log/2**20:.1f} MiB of redo log, SIGKILL; restart to ready {up:.2f} s")
p.terminate()
p.wait()
