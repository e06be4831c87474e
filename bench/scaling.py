#!/usr/bin/env python3
"""Redirects per second against proxy worker threads, for a many-core machine.

For each worker count W (default 1, 2, 4, 8) the proxy runs pinned to cores
0..W-1 and wrk runs pinned to the remaining cores, so the load generator never
competes with the proxy. The control plane runs on the load generator's cores
too. Loopback only; stops by itself. Needs at least W+1 cores for the largest W.

    python3 bench/scaling.py --workers 1,2,4,8 --links 100000 --seconds 10

Writes bench/results/scaling.json, scaling.md and scaling.svg.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side as sbs  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--links", type=int, default=100000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections-per-worker", type=int, default=64)
    parser.add_argument("--out", default=os.path.join(sbs.ROOT, "bench", "results"))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    workers = [int(w) for w in args.workers.split(",")]
    if max(workers) >= cores:
        sys.exit(f"{cores} cores: the largest worker count must leave at least one core for wrk")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "shortline-control", "-p",
                        "shortline-proxy", "-p", "shortline-bench"], cwd=sbs.ROOT, check=True)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for w in workers:
        work = tempfile.mkdtemp(prefix="shortline-scaling-")
        server_cpus = f"0-{w - 1}"
        load_cpus = f"{w}-{cores - 1}"
        servers = sbs.Servers(work, args.links, server_cpus, load_cpus, w)
        try:
            time.sleep(1)
            options = argparse.Namespace(load_cpus=load_cpus, wrk_threads=cores - w,
                                         connections=args.connections_per_worker * w, seconds=args.seconds)
            pids = [servers.proxy.pid]
            before = sbs.cpu_seconds(pids)
            r = sbs.run_wrk(servers.proxy_url, options, work)
            cpu = sbs.cpu_seconds(pids) - before
            row = {"workers": w, "rps": r["requests"] / args.seconds, "p99": r["p99"], "cpu_seconds": cpu,
                   "per_cpu_second": r["requests"] / cpu if cpu else 0, "errors": r["errors"]}
            rows.append(row)
            print(f"{w} workers: {row['rps']:,.0f} req/s, p99 {row['p99']:.3f} ms, "
                  f"{row['per_cpu_second']:,.0f} req/CPU-s", flush=True)
        finally:
            servers.stop()
    base = rows[0]["rps"] / rows[0]["workers"]
    lines = [f"Machine: {cores} cores ({sbs.cpu_model()}); {args.links:,} links; wrk on the cores the proxy "
             f"does not use; {args.seconds} s per point.", "",
             "| proxy workers | req/s | p99 ms | req per CPU-s | scaling efficiency | errors |",
             "|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['workers']} | {row['rps']:,.0f} | {row['p99']:.3f} | {row['per_cpu_second']:,.0f} | "
                     f"{row['rps'] / (base * row['workers']):.0%} | {row['errors']} |")
    with open(os.path.join(args.out, "scaling.json"), "w") as f:
        json.dump({"cores": cores, "rows": rows}, f, indent=2)
    with open(os.path.join(args.out, "scaling.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    sbs.bar_chart(os.path.join(args.out, "scaling.svg"), "Redirects per second by proxy worker threads",
                  [(f"{row['workers']} workers", [("shortline", row["rps"])]) for row in rows], "req/s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
