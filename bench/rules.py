#!/usr/bin/env python3
"""What targeting rules and a split cost a redirect: one proxy, two link sets.

One run, on this machine, loopback only:

* builds the release binaries (unless --no-build);
* starts the control plane and one proxy (click capture off, so the
  proxy's own work is what is measured), and creates two sets of links
  through the API: plain links, and links with five rules (device, system,
  language, a query parameter, a country) and a 50/50 sticky split;
* alternating the order every round, drives the proxy with wrk on each set,
  every request with a desktop browser's User-Agent, an Accept-Language and
  no cookie, so each answer walks all five rules, draws a variant and sets
  the cookie (the dearest path; a rule that holds early is cheaper);
* reads the proxy's CPU seconds (utime + stime from /proc) around each run
  and reports redirects per CPU-second for both sets and their ratio.

    python3 bench/rules.py --links 10000 --seconds 10 --rounds 3
"""

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import side_by_side as sbs  # noqa: E402  (the helpers of the side-by-side run)

AGENT = ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Safari/537.36")
LANGUAGE = "en-US,en;q=0.9,fr;q=0.5"
RULES = [
    {"os": ["ios"], "url": "https://apps.example/app"},
    {"os": ["android"], "device": ["mobile", "tablet"], "url": "https://play.example/app"},
    {"language": ["de", "pt-BR"], "url": "https://example.com/de"},
    {"query": {"name": "ref", "value": "mail"}, "url": "https://example.com/mail"},
    {"country": ["NZ"], "url": "https://example.co.nz/"},
]
VARIANTS = [{"url": "https://example.com/a", "weight": 1}, {"url": "https://example.com/b", "weight": 1}]


def create(control, count, name, extra):
    """`count` links to https://example.com/NAME/i with `extra` fields; their codes."""
    codes = []
    while len(codes) < count:
        batch = min(1000, count - len(codes))
        items = [dict(extra, url=f"https://example.com/{name}/{len(codes) + i}") for i in range(batch)]
        out = sbs.api(control, "POST", "/api/v1/links/batch", {"links": items})
        codes += [r["link"]["code"] for r in out["results"]]
    return codes


def run_wrk(url, paths, args, work):
    script = os.path.join(work, "paths.lua")
    with open(script, "w") as f:
        f.write(sbs.WRK_SCRIPT)
    out = subprocess.run(sbs.pin(args.load_cpus) + [
        "wrk", "-t", "1", "-c", str(args.connections), "-d", f"{args.seconds}s", "-s", script,
        "-H", f"User-Agent: {AGENT}", "-H", f"Accept-Language: {LANGUAGE}", url],
        env=dict(os.environ, PATHS=paths, PIPELINE="1"), capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    return json.loads(line[5:])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--links", type=int, default=10000, help="links in each set")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="proxy worker threads")
    parser.add_argument("--server-cpus", default=None, help="taskset list for the proxy (default: 0 on 2+ cores)")
    parser.add_argument("--load-cpus", default=None, help="taskset list for wrk and control (default: the rest)")
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.server_cpus is None and cores >= 2:
        args.server_cpus = "0"
    if args.load_cpus is None and cores >= 2:
        args.load_cpus = f"1-{cores - 1}"
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (Debian: apt-get install wrk util-linux)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "shortline-control", "-p", "shortline-proxy"],
                       cwd=sbs.ROOT, check=True)
    work = tempfile.mkdtemp(prefix="shortline-rules-")
    procs = []

    def spawn(argv, env, cpus):
        proc = subprocess.Popen(sbs.pin(cpus) + argv, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        procs.append(proc)
        return proc

    try:
        control = f"127.0.0.1:{sbs.free_port()}"
        env = dict(os.environ, SHORTLINE_DATA_DIR=os.path.join(work, "data"), SHORTLINE_CONTROL_LISTEN=control,
                   SHORTLINE_ADMIN_TOKEN=sbs.TOKEN, RUST_LOG="warn",
                   SHORTLINE_INTERNAL_TOKEN="rules-bench-internal-token-0123456789")
        spawn([os.path.join(sbs.BIN, "shortline-control"), "serve"], env, args.load_cpus)
        sbs.wait_http(f"http://{control}/readyz")
        sets = {
            "plain": create(control, args.links, "plain", {}),
            "rules": create(control, args.links, "rules", {"rules": RULES, "variants": VARIANTS}),
        }
        port = sbs.free_port()
        proxy_env = dict(env, SHORTLINE_PROXY_LISTEN=f"127.0.0.1:{port}",
                         SHORTLINE_PROXY_METRICS_LISTEN=f"127.0.0.1:{sbs.free_port()}",
                         SHORTLINE_PROXY_THREADS=str(args.threads), SHORTLINE_CLICK_CAPTURE="false")
        proxy = spawn([os.path.join(sbs.BIN, "shortline-proxy")], proxy_env, args.server_cpus)
        url = f"http://127.0.0.1:{port}"
        for name, codes in sets.items():
            with open(os.path.join(work, f"{name}.txt"), "w") as f:
                f.writelines(f"/{c}\n" for c in codes)
            sbs.wait_http(f"{url}/{codes[-1]}", timeout=300, want=302)
        results = {name: [] for name in sets}
        order = list(sets)
        for round_ in range(args.rounds):
            random.Random(round_).shuffle(order)
            for name in order:
                before = sbs.cpu_seconds([proxy.pid])
                r = run_wrk(url, os.path.join(work, f"{name}.txt"), args, work)
                cpu = sbs.cpu_seconds([proxy.pid]) - before
                errors = r["errors"] + r["non2xx3xx"]
                per_cpu = r["requests"] / cpu if cpu > 0 else 0
                results[name].append(per_cpu)
                print(f"  round {round_} {name:6} {r['requests'] / args.seconds:>9,.0f} req/s  "
                      f"p99 {r['p99']:.3f} ms  proxy cpu {cpu:.2f} s  {per_cpu:,.0f} redirects/cpu-s  "
                      f"errors {errors}", flush=True)
        best = {name: max(v) for name, v in results.items()}
        print(f"best of {args.rounds}: plain {best['plain']:,.0f}, five rules and a split "
              f"{best['rules']:,.0f} redirects per CPU-second: {best['rules'] / best['plain']:.2f}x plain")
    finally:
        for proc in reversed(procs):
            try:
                os.killpg(proc.pid, 15)
            except ProcessLookupError:
                pass
        for proc in procs:
            proc.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
