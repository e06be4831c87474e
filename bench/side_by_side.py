#!/usr/bin/env python3
"""Shortline's proxy, nginx and a bare constant-redirect server, side by side.

One run, on this machine, loopback only:

* builds the release binaries;
* for each link count, starts the control plane and creates the links through
  the API, then writes the same links as an nginx `map` answered with
  `return 302`;
* alternating the order every round, drives each server with wrk (Debian's
  package) and with shortline-loadtest, same connections, same duration, the
  servers on one core and the load generator on the other when there are two;
* reads the CPU seconds (utime + stime from /proc) and RSS of every process
  of each server (the whole host's cost): Shortline's proxy and its control
  plane (which counts the clicks), nginx's master and workers; Shortline's
  proxy alone is a column of its own;
* compares against nginx twice: without a log, and with a buffered access log
  carrying the referrer and user agent of every request (what an operator
  turns on to get click analytics from nginx);
* reports RPS, p50/p99/p99.9, requests per CPU-second of the whole host and
  of the proxy alone, and the ratios to both nginx rows and to the bare
  server; writes results.json, results.md and SVG charts.

    python3 bench/side_by_side.py --links 100000,1000000 --seconds 10 --rounds 2
    python3 bench/side_by_side.py --links 100000 --tools wrk --pipeline 16   # pipelined clients
"""

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
TOKEN = "side-by-side-admin-token-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")
SERVERS = ("shortline", "shortline-nocapture", "nginx", "nginx-log", "bare")

WRK_SCRIPT = r"""
local paths = {}
for line in io.lines(os.getenv("PATHS")) do paths[#paths + 1] = line end
local depth = tonumber(os.getenv("PIPELINE") or "1")
math.randomseed(os.time())
request = function()
  if depth == 1 then
    return wrk.format("GET", paths[math.random(#paths)])
  end
  -- Pipelined: depth requests in one write; wrk counts every answer.
  local batch = {}
  for i = 1, depth do batch[i] = wrk.format("GET", paths[math.random(#paths)]) end
  return table.concat(batch)
end
done = function(summary, latency, requests)
  io.write(string.format("JSON {\"requests\": %d, \"errors\": %d, \"non2xx3xx\": %d, \"p50\": %f, \"p99\": %f, \"p999\": %f}\n",
    summary.requests, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000))
end
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url):
    """The status of GET url, without following redirects; None if unreachable."""
    host, _, path = url.removeprefix("http://").partition("/")
    try:
        conn = http.client.HTTPConnection(host, timeout=2)
        conn.request("GET", "/" + path)
        return conn.getresponse().status
    except OSError:
        return None


def wait_http(url, timeout=60, want=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        code = status(url)
        if code is not None and (want is None or code == want):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


def create_links(control, count, path):
    """Creates `count` links to https://example.com/PATH/i, a batch of 1,000 at a time."""
    made = 0
    while made < count:
        batch = min(1000, count - made)
        items = [{"url": f"https://example.com/{path}/{i}"} for i in range(made, made + batch)]
        api(control, "POST", "/api/v1/links/batch", {"links": items})
        made += batch


def list_links(control):
    """Every link of the control plane, as (code, url), page by page."""
    links, cursor = [], None
    while True:
        page = api(control, "GET", "/api/v1/links?limit=1000" + (f"&cursor={cursor}" if cursor else ""))
        links += [(l["code"], l["url"]) for l in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            return links


def case_distinct(links):
    """The links whose codes stay distinct when lowercased.

    nginx compares map keys without regard to case, and base62 codes can
    differ only in case: every server is measured on these codes (all of
    them at 100k links, nearly all at a million), so they all answer the
    same requests.
    """
    lowered = {}
    for code, _ in links:
        lowered[code.lower()] = lowered.get(code.lower(), 0) + 1
    return [(c, u) for c, u in links if lowered[c.lower()] == 1]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def rss_mib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total / 1024


def child_pids(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def api(control, method, path, body=None):
    request = urllib.request.Request(
        f"http://{control}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.load(response)


def pin(cpus):
    return ["taskset", "-c", cpus] if cpus else []


class Servers:
    """The three servers for one link set."""

    def __init__(self, work, links, server_cpus, load_cpus, threads):
        self.work = work
        self.procs = []
        self.server_cpus = server_cpus
        try:
            self.start(links, load_cpus, threads)
        except BaseException:
            self.stop()
            raise

    def start(self, links, load_cpus, threads):
        work = self.work
        # Control and Shortline's proxy.
        control_port = free_port()
        self.control = f"127.0.0.1:{control_port}"
        env = dict(os.environ, SHORTLINE_DATA_DIR=os.path.join(work, "data"),
                   SHORTLINE_CONTROL_LISTEN=self.control, SHORTLINE_ADMIN_TOKEN=TOKEN, RUST_LOG="warn",
                   SHORTLINE_INTERNAL_TOKEN="side-by-side-internal-token-0123456789")
        # Control (click ingest) runs beside the load generator, so the
        # servers' core is theirs alone; its CPU is reported apart.
        self.control_proc = self.spawn(pin(load_cpus) + [os.path.join(BIN, "shortline-control"), "serve"], env,
                                       pinned=False)
        wait_http(f"http://{self.control}/readyz")
        started = time.time()
        create_links(self.control, links, "side-by-side")
        self.seed_seconds = time.time() - started
        self.links = case_distinct(list_links(self.control))
        self.case_collisions = links - len(self.links)
        with open(os.path.join(work, "links.tsv"), "w") as f:
            f.writelines(f"{c}\t{u}\n" for c, u in self.links)
        with open(os.path.join(work, "paths.txt"), "w") as f:
            f.writelines(f"/{c}\n" for c, _ in self.links)
        proxy_port, metrics_port = free_port(), free_port()
        self.proxy_env = dict(env, SHORTLINE_PROXY_LISTEN=f"127.0.0.1:{proxy_port}",
                              SHORTLINE_PROXY_METRICS_LISTEN=f"127.0.0.1:{metrics_port}",
                              SHORTLINE_PROXY_THREADS=str(threads))
        self.proxy = self.spawn([os.path.join(BIN, "shortline-proxy")], self.proxy_env)
        self.proxy_url = f"http://127.0.0.1:{proxy_port}"
        # The same proxy without click capture, in its own data directory:
        # what analytics costs the redirect path.
        plain_port, plain_metrics = free_port(), free_port()
        os.makedirs(os.path.join(work, "plain"), exist_ok=True)
        plain_env = dict(self.proxy_env, SHORTLINE_DATA_DIR=os.path.join(work, "plain"),
                         SHORTLINE_PROXY_LISTEN=f"127.0.0.1:{plain_port}",
                         SHORTLINE_PROXY_METRICS_LISTEN=f"127.0.0.1:{plain_metrics}",
                         SHORTLINE_CLICK_CAPTURE="false")
        self.plain = self.spawn([os.path.join(BIN, "shortline-proxy")], plain_env)
        self.plain_url = f"http://127.0.0.1:{plain_port}"
        # Every link must be served before measuring.
        wait_http(f"{self.proxy_url}/{self.links[-1][0]}", timeout=300, want=302)
        wait_http(f"{self.plain_url}/{self.links[-1][0]}", timeout=300, want=302)
        # nginx with the same links in a map, without a log and with one.
        with open(os.path.join(work, "links.map"), "w") as f:
            f.writelines(f"/{c} {u};\n" for c, u in self.links)
        self.nginx, self.nginx_url = self.start_nginx(threads, None)
        self.access_log = os.path.join(work, "access.log")
        self.nginx_log, self.nginx_log_url = self.start_nginx(threads, self.access_log)
        self.settle()
        bare_port = free_port()
        self.bare = self.spawn([os.path.join(BIN, "bench-bare"), "--listen", f"127.0.0.1:{bare_port}",
                                "--threads", str(threads), "--location", "https://example.com/side-by-side/0"],
                               dict(os.environ))
        self.bare_url = f"http://127.0.0.1:{bare_port}"
        wait_http(self.bare_url + "/")

    def start_nginx(self, threads, access_log):
        """nginx answering the links from a map; with `access_log`, a buffered
        log line per request with its referrer and user agent."""
        work = self.work
        name = "nginx-log" if access_log else "nginx"
        port = free_port()
        conf = os.path.join(work, f"{name}.conf")
        logging = (f'log_format clicks \'$time_iso8601 $remote_addr "$request" $status "$http_referer" '
                   f'"$http_user_agent"\';\n    access_log {access_log} clicks buffer=64k flush=1s;'
                   if access_log else "access_log off;")
        with open(conf, "w") as f:
            f.write(f"""
worker_processes {threads};
daemon off;
pid {work}/{name}.pid;
error_log {work}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    {logging}
    map_hash_max_size {max(2 * len(self.links), 1024)};
    map_hash_bucket_size 128;
    map $uri $target {{
        default "";
        include {work}/links.map;
    }}
    server {{
        listen 127.0.0.1:{port} reuseport;
        keepalive_requests 10000;
        location / {{
            if ($target = "") {{ return 404; }}
            return 302 $target;
        }}
    }}
}}
""")
        proc = self.spawn(["nginx", "-c", conf, "-p", work], dict(os.environ))
        url = f"http://127.0.0.1:{port}"
        # A million-entry map takes nginx a while to hash at start.
        wait_http(f"{url}/{self.links[-1][0]}", timeout=900, want=302)
        return proc, url

    def truncate_log(self):
        """Empties nginx's access log between runs (millions of lines each)."""
        with open(self.access_log, "w"):
            pass

    def settle(self, timeout=600):
        """Waits until the control plane and both proxies are idle (snapshot
        compaction and persisting after seeding done), so no run measures them."""
        pids = [self.control_proc.pid, self.proxy.pid, self.plain.pid]
        deadline = time.time() + timeout
        while time.time() < deadline:
            before = cpu_seconds(pids)
            time.sleep(2)
            if cpu_seconds(pids) - before < 0.1:
                return
        print("warning: the servers did not go idle before measuring", flush=True)

    def spawn(self, argv, env, pinned=True):
        proc = subprocess.Popen((pin(self.server_cpus) if pinned else []) + argv, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.procs.append(proc)
        return proc

    def targets(self):
        """Each server: its URL, every process of it (the whole host's cost),
        and its redirect process alone."""
        control = self.control_proc.pid
        return {
            "shortline": (self.proxy_url, lambda: [self.proxy.pid, control], lambda: [self.proxy.pid]),
            "shortline-nocapture": (self.plain_url, lambda: [self.plain.pid, control], lambda: [self.plain.pid]),
            "nginx": (self.nginx_url, lambda: [self.nginx.pid] + child_pids(self.nginx.pid),
                      lambda: child_pids(self.nginx.pid)),
            "nginx-log": (self.nginx_log_url, lambda: [self.nginx_log.pid] + child_pids(self.nginx_log.pid),
                          lambda: child_pids(self.nginx_log.pid)),
            "bare": (self.bare_url, lambda: [self.bare.pid], lambda: [self.bare.pid]),
        }

    def stop(self):
        for proc in reversed(self.procs):
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def run_wrk(url, args, work):
    script = os.path.join(work, "paths.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT)
    out = subprocess.run(pin(args.load_cpus) + ["wrk", "-t", str(args.wrk_threads), "-c", str(args.connections),
                          "-d", f"{args.seconds}s", "-s", script, url],
                         env=dict(os.environ, PATHS=os.path.join(work, "paths.txt"), PIPELINE=str(args.pipeline)),
                         capture_output=True, text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("JSON "))
    r = json.loads(line[5:])
    return {"requests": r["requests"], "errors": r["errors"] + r["non2xx3xx"], "p50": r["p50"],
            "p99": r["p99"], "p999": r["p999"]}


def run_loadtest(url, args, work, verify):
    report = os.path.join(work, "loadtest.json")
    links = os.path.join(work, "links.tsv")
    if not verify:
        # The bare server answers one Location for every path.
        links = os.path.join(work, "bare.tsv")
        with open(os.path.join(work, "links.tsv")) as src, open(links, "w") as dst:
            for line in src:
                dst.write(line.split("\t")[0] + "\thttps://example.com/side-by-side/0\n")
    subprocess.run(pin(args.load_cpus) + [os.path.join(BIN, "shortline-loadtest"), "--target", url,
                    "--links", links, "--scenario", "redirect-uniform", "--connections", str(args.connections),
                    "--seconds", str(args.seconds), "--json", report],
                   capture_output=True, text=True, check=False)
    with open(report) as f:
        r = json.load(f)
    l = r["latency_ms"]
    return {"requests": r["requests"], "errors": r["errors"] + r["mismatches"], "p50": l["p50"],
            "p99": l["p99"], "p999": l["p999"]}


def bar_chart(path, title, groups, unit):
    """Grouped horizontal bars: groups = [(label, [(series, value)])]."""
    colours = {"shortline": "#1f77b4", "shortline-nocapture": "#aec7e8", "nginx": "#2ca02c", "nginx-log": "#98df8a",
               "bare": "#7f7f7f"}
    rows = sum(len(s) for _, s in groups) + len(groups)
    height = 60 + rows * 22
    top = max((v for _, s in groups for _, v in s), default=1) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="760" height="{height}" font-family="sans-serif" font-size="12">',
           '<rect width="100%" height="100%" fill="white"/>',
           f'<text x="10" y="20" font-size="14">{title}</text>']
    y = 40
    for label, series in groups:
        out.append(f'<text x="10" y="{y + 12}" font-weight="bold">{label}</text>')
        y += 20
        for name, value in series:
            width = 440 * value / top
            out.append(f'<text x="20" y="{y + 12}">{name}</text>')
            out.append(f'<rect x="150" y="{y}" width="{width:.1f}" height="16" fill="{colours.get(name, "#999")}"/>')
            out.append(f'<text x="{155 + width:.1f}" y="{y + 12}">{value:,.0f} {unit}</text>')
            y += 22
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--links", default="100000,1000000")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1, help="server worker threads (each server)")
    parser.add_argument("--wrk-threads", type=int, default=1)
    parser.add_argument("--pipeline", type=int, default=1,
                        help="requests wrk sends per write on each connection (HTTP/1.1 pipelining)")
    parser.add_argument("--tools", default="wrk,loadtest", help="load generators to run, comma separated")
    parser.add_argument("--server-cpus", default=None, help="taskset list for the servers (default: 0 on 2+ cores)")
    parser.add_argument("--load-cpus", default=None, help="taskset list for the load generator (default: the rest)")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--no-build", action="store_true")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    if args.server_cpus is None and cores >= 2:
        args.server_cpus = "0"
    if args.load_cpus is None and cores >= 2:
        args.load_cpus = f"1-{cores - 1}"
    for tool in ("wrk", "nginx", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (Debian: apt-get install wrk nginx-light util-linux)")
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "shortline-control", "-p", "shortline-proxy",
                        "-p", "shortline-loadtest", "-p", "shortline-bench"], cwd=ROOT, check=True)
    os.makedirs(args.out, exist_ok=True)
    results = {"machine": {"cores": cores, "cpu": cpu_model(), "servers_on": args.server_cpus,
                           "load_on": args.load_cpus}, "runs": []}
    for n in [int(x) for x in args.links.split(",")]:
        work = tempfile.mkdtemp(prefix="shortline-sbs-")
        servers = Servers(work, n, args.server_cpus, args.load_cpus, args.threads)
        print(f"{n} links: seeded in {servers.seed_seconds:.1f} s; {servers.case_collisions} codes left out "
              f"of the request set (they differ from another only in case, which nginx's map ignores)", flush=True)
        try:
            order = list(servers.targets().items())
            for round_ in range(args.rounds):
                random.Random(round_).shuffle(order)
                for tool in args.tools.split(","):
                    for name, (url, pids, redirect_pids) in order:
                        if name == "nginx-log":
                            servers.truncate_log()
                        # The clicks of the previous run are counted before
                        # this one starts, so they are not charged to it.
                        servers.settle(timeout=60)
                        before = cpu_seconds(pids())
                        before_redirect = cpu_seconds(redirect_pids())
                        if tool == "wrk":
                            r = run_wrk(url, args, work)
                        else:
                            r = run_loadtest(url, args, work, verify=name != "bare")
                        if name == "shortline":
                            # Clicks still queued at the end are part of the
                            # run's cost: wait for control to count them.
                            servers.settle(timeout=60)
                        cpu = cpu_seconds(pids()) - before
                        redirect_cpu = cpu_seconds(redirect_pids()) - before_redirect
                        r.update(links=n, round=round_, tool=tool, server=name, cpu_seconds=cpu,
                                 redirect_cpu_seconds=redirect_cpu,
                                 rss_mib=rss_mib(pids()), rps=r["requests"] / args.seconds,
                                 per_cpu_second=r["requests"] / cpu if cpu > 0 else 0,
                                 redirect_per_cpu_second=r["requests"] / redirect_cpu if redirect_cpu > 0 else 0)
                        results["runs"].append(r)
                        print(f"  {tool:8} {name:19} {r['rps']:>9,.0f} req/s  p99 {r['p99']:.3f} ms  "
                              f"host cpu {cpu:.2f} s  {r['per_cpu_second']:,.0f} req/cpu-s  "
                              f"redirect process {r['redirect_per_cpu_second']:,.0f} req/cpu-s  errors {r['errors']}",
                              flush=True)
        finally:
            servers.stop()
            shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def report(results, args):
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    lines = [f"Machine: {results['machine']['cores']} cores ({results['machine']['cpu']}); servers on CPU "
             f"{results['machine']['servers_on']}, load generator on {results['machine']['load_on']}; "
             f"{args.connections} connections, {args.seconds} s per run, {args.rounds} rounds, medians shown"
             + (f"; wrk pipelines {args.pipeline} requests per write" if args.pipeline > 1 else "") + ".", ""]
    groups_eff, groups_rps = [], []
    for n in sorted({r["links"] for r in results["runs"]}):
        for tool in args.tools.split(","):
            runs = [r for r in results["runs"] if r["links"] == n and r["tool"] == tool]
            med = {}
            for name in SERVERS:
                rs = [r for r in runs if r["server"] == name]
                med[name] = {k: statistics.median(r[k] for r in rs) for k in
                             ("rps", "p50", "p99", "p999", "cpu_seconds", "redirect_cpu_seconds", "rss_mib",
                              "per_cpu_second", "redirect_per_cpu_second")}
                med[name]["errors"] = sum(r["errors"] for r in rs)
            lines += [f"### {n:,} links, {tool}", "",
                      "| server | req/s | p50 ms | p99 ms | p99.9 ms | host CPU s | RSS MiB | req per host CPU-s "
                      "| vs nginx-log | vs nginx | redirect process: req per CPU-s | vs nginx | vs bare | errors |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for name in SERVERS:
                m = med[name]
                lines.append(f"| {name} | {m['rps']:,.0f} | {m['p50']:.3f} | {m['p99']:.3f} | {m['p999']:.3f} | "
                             f"{m['cpu_seconds']:.2f} | {m['rss_mib']:.0f} | {m['per_cpu_second']:,.0f} | "
                             f"{m['per_cpu_second'] / med['nginx-log']['per_cpu_second']:.2f}x | "
                             f"{m['per_cpu_second'] / med['nginx']['per_cpu_second']:.2f}x | "
                             f"{m['redirect_per_cpu_second']:,.0f} | "
                             f"{m['redirect_per_cpu_second'] / med['nginx']['redirect_per_cpu_second']:.2f}x | "
                             f"{m['redirect_per_cpu_second'] / med['bare']['redirect_per_cpu_second']:.2f}x | "
                             f"{m['errors']} |")
            control = med["shortline"]["cpu_seconds"] - med["shortline"]["redirect_cpu_seconds"]
            requests = med["shortline"]["rps"] * args.seconds
            lines += ["", f"Host CPU is every process of the server: Shortline's proxy and control plane "
                          f"(control counted {control:.2f} s of CPU per run with capture on, "
                          f"{1e6 * control / requests if requests else 0:.2f} us per click), nginx's master "
                          f"and workers. The redirect process is Shortline's proxy, nginx's workers.", ""]
            label = f"{n:,} links, {tool}"
            groups_eff.append((label, [(k, med[k]["per_cpu_second"]) for k in SERVERS]))
            groups_rps.append((label, [(k, med[k]["rps"]) for k in SERVERS]))
    with open(os.path.join(args.out, "results.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    bar_chart(os.path.join(args.out, "requests-per-cpu-second.svg"),
              "Requests per CPU-second of the whole host (higher is better)", groups_eff, "req/CPU-s")
    bar_chart(os.path.join(args.out, "requests-per-second.svg"), "Requests per second", groups_rps, "req/s")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
