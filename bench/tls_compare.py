#!/usr/bin/env python3
"""HTTPS side by side: Shortline's proxy and nginx terminating TLS for the
same links, with the same certificate and the same load generator.

One run, on this machine, loopback only:

* makes an ECDSA P-256 certificate for `bench.test` (openssl), used by both;
* starts the control plane, creates the links through the API, and starts
  the proxy with its HTTPS listener; writes the same links as an nginx `map`
  answered with `return 302` from an `ssl` listener (TLS 1.2 and 1.3,
  session tickets and a shared session cache, as the proxy has);
* each server on one core (one proxy thread, one nginx worker) and wrk on
  the other, alternating the order every round, two workloads:
  - **full handshakes**: Python clients (processes on the load core), each
    request on a new connection that offers no session;
  - **new connections**: wrk with `Connection: close`, so every request is a
    new TCP connection and a TLS handshake, which wrk resumes with the
    session of its last one (handshakes per CPU-second);
  - **keep-alive**: requests over open TLS connections (redirects per
    CPU-second);
* reads each server's CPU seconds from /proc (the proxy alone, and with the
  control plane, which counts the clicks; nginx's master and worker);
* measures session resumption: how many of 200 connections that offer the
  previous connection's session (Python's ssl) are resumed, per server; and
  the share of the proxy's handshakes under wrk that resumed (its metrics).

    python3 bench/tls_compare.py --links 10000 --seconds 10 --rounds 2
"""

import argparse
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side  # noqa: E402
from side_by_side import (  # noqa: E402
    BIN, TOKEN, case_distinct, child_pids, cpu_seconds, create_links, free_port, list_links, pin, wait_http)

NAME = "bench.test"
WORKLOADS = ("full handshakes", "new connections", "keep-alive")

WRK_SCRIPT = r"""
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local close = os.getenv("CLOSE") == "1"
math.randomseed(os.time())
request = function()
  local headers = {}
  if close then headers["Connection"] = "close" end
  return wrk.format("GET", paths[math.random(#paths)], headers)
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"errors\": %d, \"non2xx3xx\": %d, \"p50\": %f, \"p99\": %f}\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
"""


def https_status(port, path):
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=NAME) as tls:
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
                head = tls.recv(64).decode(errors="replace")
                return int(head.split()[1])
    except (OSError, ValueError, IndexError):
        return None


def wait_https(port, path, want, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if https_status(port, path) == want:
            return
        time.sleep(0.2)
    raise RuntimeError(f"https://127.0.0.1:{port}{path} did not answer {want}")


def resumption(port, attempts=200):
    """Of `attempts` connections that each offer the session of the one
    before, how many were resumed (TLS 1.3 tickets or 1.2 sessions)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    session = None
    resumed = 0
    for _ in range(attempts):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=NAME, session=session) as tls:
                tls.sendall(f"GET /healthz HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
                while tls.recv(4096):
                    pass
                resumed += tls.session_reused
                session = tls.session
    return resumed / attempts


def _full_handshakes(args):
    """One load process: `count` GETs, each on a new TLS connection that
    offers no session, so every handshake is a full one."""
    port, path, count = args
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    ok = 0
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=NAME) as tls:
                tls.sendall(f"GET {path} HTTP/1.1\r\nHost: {NAME}\r\nConnection: close\r\n\r\n".encode())
                answer = b""
                while chunk := tls.recv(4096):
                    answer += chunk
                ok += answer.startswith(b"HTTP/1.1 302")
    return ok


def run_full(port, path, args):
    """`--full-handshakes` new connections without resumption, from
    `--connections` processes on the load core; returns (answered, seconds)."""
    import multiprocessing
    per = max(1, args.full_handshakes // args.connections)
    if args.load_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.load_cpus.split(",")})
    started = time.time()
    with multiprocessing.Pool(args.connections) as pool:
        ok = sum(pool.map(_full_handshakes, [(port, path, per)] * args.connections))
    return ok, per * args.connections, time.time() - started


def metric(url, name):
    with urllib.request.urlopen(url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def make_certificate(work):
    key, crt = os.path.join(work, "bench.key"), os.path.join(work, "bench.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-days", "30", "-subj", f"/CN={NAME}", "-addext", f"subjectAltName=DNS:{NAME}",
                    "-keyout", key, "-out", crt], check=True, capture_output=True)
    return crt, key


class Servers(side_by_side.Servers):
    """Shortline's proxy (with its control plane) and nginx, both over TLS;
    spawning and stopping are side_by_side's."""

    def start(self, links, load_cpus, _threads):
        work = self.work
        crt, key = make_certificate(work)
        tls_dir = os.path.join(work, "data", "tls")
        os.makedirs(tls_dir)
        for source, name in ((crt, f"{NAME}.crt"), (key, f"{NAME}.key")):
            with open(source) as f, open(os.path.join(tls_dir, name), "w") as out:
                out.write(f.read())
        control_port = free_port()
        self.control = f"127.0.0.1:{control_port}"
        env = dict(os.environ, SHORTLINE_DATA_DIR=os.path.join(work, "data"),
                   SHORTLINE_CONTROL_LISTEN=self.control, SHORTLINE_ADMIN_TOKEN=TOKEN, RUST_LOG="warn",
                   SHORTLINE_INTERNAL_TOKEN="tls-compare-internal-token-0123456789")
        self.control_proc = self.spawn(pin(load_cpus) + [os.path.join(BIN, "shortline-control"), "serve"], env,
                                       pinned=False)
        wait_http(f"http://{self.control}/readyz")
        create_links(self.control, links, "tls")
        self.links = case_distinct(list_links(self.control))
        with open(os.path.join(work, "paths.txt"), "w") as f:
            f.writelines(f"/{c}\n" for c, _ in self.links)
        with open(os.path.join(work, "links.map"), "w") as f:
            f.writelines(f"/{c} {u};\n" for c, u in self.links)

        plain, tls, metrics = free_port(), free_port(), free_port()
        self.metrics_url = f"http://127.0.0.1:{metrics}/metrics"
        self.proxy = self.spawn([os.path.join(BIN, "shortline-proxy")], dict(
            env, SHORTLINE_PROXY_LISTEN=f"127.0.0.1:{plain}", SHORTLINE_PROXY_TLS_LISTEN=f"127.0.0.1:{tls}",
            SHORTLINE_PROXY_METRICS_LISTEN=f"127.0.0.1:{metrics}", SHORTLINE_PROXY_THREADS="1"))
        self.proxy_port = tls
        wait_https(tls, f"/{self.links[-1][0]}", 302)

        port = free_port()
        conf = os.path.join(work, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    map_hash_max_size {max(2 * len(self.links), 1024)};
    map_hash_bucket_size 128;
    map $uri $target {{
        default "";
        include {work}/links.map;
    }}
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_tickets on;
    server {{
        listen 127.0.0.1:{port} ssl reuseport;
        server_name {NAME};
        ssl_certificate {crt};
        ssl_certificate_key {key};
        keepalive_requests 10000;
        location = /healthz {{ return 200 "ok\\n"; }}
        location / {{
            if ($target = "") {{ return 404; }}
            return 302 $target;
        }}
    }}
}}
""")
        self.nginx = self.spawn(["nginx", "-c", conf, "-p", work], dict(os.environ))
        self.nginx_port = port
        wait_https(port, f"/{self.links[-1][0]}", 302)
        time.sleep(2)

    def targets(self):
        return {
            "shortline": (self.proxy_port, lambda: [self.proxy.pid, self.control_proc.pid],
                          lambda: [self.proxy.pid]),
            "nginx": (self.nginx_port, lambda: [self.nginx.pid] + child_pids(self.nginx.pid),
                      lambda: child_pids(self.nginx.pid)),
        }


def run_wrk(port, close, args, work):
    script = os.path.join(work, "paths.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    out = subprocess.run(pin(args.load_cpus) + ["wrk", "-t", "1", "-c", str(args.connections),
                          "-d", f"{args.seconds}s", "-s", script, f"https://127.0.0.1:{port}"],
                         env=dict(os.environ, PATHS=os.path.join(work, "paths.txt"), CLOSE="1" if close else "0"),
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    return json.loads(line[5:])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--links", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--full-handshakes", type=int, default=4000,
                        help="new connections that offer no session, per server and round")
    parser.add_argument("--server-cpus", default="0")
    parser.add_argument("--load-cpus", default="1")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args()
    if os.cpu_count() < 2:
        args.server_cpus = args.load_cpus = None

    with tempfile.TemporaryDirectory() as work:
        servers = Servers(work, args.links, args.server_cpus, args.load_cpus, 1)
        try:
            rows = {}
            resumed_before = metric(servers.metrics_url, "proxy_tls_resumed_total")
            handshakes_before = metric(servers.metrics_url, "proxy_tls_handshakes_total")
            for round_ in range(args.rounds):
                order = list(servers.targets().items())
                if round_ % 2:
                    order.reverse()
                for workload in WORKLOADS:
                    for name, (port, all_pids, own_pids) in order:
                        pids, own = all_pids(), own_pids()
                        cpu0, own0 = cpu_seconds(pids), cpu_seconds(own)
                        if workload == "full handshakes":
                            ok, sent, seconds = run_full(port, f"/{servers.links[0][0]}", args)
                            result = {"requests": ok, "errors": sent - ok, "non2xx3xx": 0, "p99": 0.0}
                        else:
                            seconds = args.seconds
                            result = run_wrk(port, workload == "new connections", args, work)
                        cpu, own_cpu = cpu_seconds(pids) - cpu0, cpu_seconds(own) - own0
                        rows.setdefault((workload, name), []).append({
                            "rps": result["requests"] / seconds,
                            "errors": result["errors"] + result["non2xx3xx"],
                            "per_cpu": result["requests"] / cpu if cpu else 0,
                            "per_own_cpu": result["requests"] / own_cpu if own_cpu else 0,
                            "p99_ms": result["p99"],
                        })
                        print(f"round {round_ + 1} {workload:15} {name:9} {rows[(workload, name)][-1]}", flush=True)
            handshakes = metric(servers.metrics_url, "proxy_tls_handshakes_total") - handshakes_before
            resumed = metric(servers.metrics_url, "proxy_tls_resumed_total") - resumed_before
            probe = {name: resumption(port) for name, (port, _, _) in servers.targets().items()}
        finally:
            servers.stop()

    def median(workload, name, field):
        return statistics.median(r[field] for r in rows[(workload, name)])

    lines = [
        "| workload | server | requests/s | per CPU-second (server) | per CPU-second (redirect process) | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for workload in WORKLOADS:
        for name in ("shortline", "nginx"):
            errors = sum(r["errors"] for r in rows[(workload, name)])
            lines.append(f"| {workload} | {name} | {median(workload, name, 'rps'):.0f} | "
                         f"{median(workload, name, 'per_cpu'):.0f} | {median(workload, name, 'per_own_cpu'):.0f} | "
                         f"{median(workload, name, 'p99_ms'):.2f} | {errors} |")
    lines.append("")
    for workload in WORKLOADS:
        ratio = median(workload, "shortline", "per_own_cpu") / median(workload, "nginx", "per_own_cpu")
        lines.append(f"* {workload}: Shortline's proxy / nginx's worker, requests per CPU-second: {ratio:.2f}x")
    lines.append(f"* resumed of 200 connections offering their last session: "
                 + ", ".join(f"{n} {r:.0%}" for n, r in probe.items()))
    lines.append(f"* the proxy's handshakes that resumed, over the whole run (wrk offers its last session; "
                 f"the full-handshake clients never do): {resumed:.0f} of {handshakes:.0f}")
    text = "\n".join(lines)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "tls-compare.md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
