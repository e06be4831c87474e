#!/usr/bin/env python3
"""Holds thousands of idle and slow sockets on a control plane and reports
how it copes: its descriptors, how long after the last socket was opened all
were released, and how health checks fared meanwhile.

A third of the sockets send nothing, a third half a request head, a third
the head of a POST to the public report endpoint announcing a body that
never comes. Control runs with its default limits (or SHORTLINE_* variables
from the environment) in a temporary data directory, on loopback.

    python3 bench/scripts/hold-connections.py --sockets 3000
"""

import argparse
import os
import socket
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sockets", type=int, default=3000)
    parser.add_argument("--bin", default=os.path.join(ROOT, "target", "release", "shortline-control"))
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data:
        env = dict(os.environ, SHORTLINE_DATA_DIR=data, SHORTLINE_CONTROL_LISTEN=f"127.0.0.1:{port}",
                   SHORTLINE_ADMIN_TOKEN="hold-connections-admin-token-0123", RUST_LOG="warn")
        control = subprocess.Popen([args.bin, "serve"], env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{base}/readyz", timeout=2).read()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.1)
            fds = lambda: len(os.listdir(f"/proc/{control.pid}/fd"))
            before = fds()
            held = []
            started = time.time()
            for i in range(args.sockets):
                s = socket.create_connection(("127.0.0.1", port))
                if i % 3 == 1:
                    s.send(b"POST /api/v1/links/x/report HTTP/1.1\r\nHost: c\r\nContent-Le")
                elif i % 3 == 2:
                    s.send(b"POST /api/v1/links/x/report HTTP/1.1\r\nHost: c\r\n"
                           b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
                held.append(s)
            opened = time.time()
            peak, checks, slowest = 0, 0, 0.0
            while True:
                count = fds()
                peak = max(peak, count)
                asked = time.time()
                urllib.request.urlopen(f"{base}/healthz", timeout=30).read()
                slowest = max(slowest, time.time() - asked)
                checks += 1
                if count <= before + 5:
                    break
                time.sleep(0.1)
            released = time.time() - opened
            metrics = urllib.request.urlopen(f"{base}/metrics", timeout=30).read().decode()
            print(f"{args.sockets} sockets opened in {opened - started:.1f} s; control held at most {peak} "
                  f"descriptors ({before} before); all released {released:.1f} s after the last was opened; "
                  f"{checks} health checks answered meanwhile, slowest {slowest * 1000:.1f} ms")
            for line in metrics.splitlines():
                if line.startswith("control_connections_"):
                    print(line)
        finally:
            control.terminate()
            control.wait()


if __name__ == "__main__":
    main()
