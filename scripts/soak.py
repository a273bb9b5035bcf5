#!/usr/bin/env python3
"""Soaks (run through scripts/soak.sh, which installs and builds): payproxy's memory over
many reloads under load, and with many idle keep-alive connections.

1. Reloads: payproxy (release) with a router-plugin route, a transparent route and the
   payment chain (memory store) in front of a canned nginx upstream. wrk keeps a steady load
   on the router route while SOAK_RELOADS reloads alternate a new plugin binary (the router
   component with a different custom section: new bytes, a new sha256, the same code) and a
   new config (a rule's weight changed). RSS is sampled after reloads 10, 100, 250, 500, 750
   and the last; every reload must succeed and wrk must see no failed request.
   Targets: RSS after the last reload within 10% of RSS after reload 10; 0 failed requests.
2. Idle connections: SOAK_IDLE keep-alive connections each send one request, read the answer
   and stay open. RSS is sampled before, with all of them idle, and after they close.
   Target: at most 100 MiB with 2,000 idle connections.

Everything listens on 127.0.0.1; every load run and loop is bounded in count and time.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the same upstream, config and process helpers)

RELOADS = int(os.environ.get("SOAK_RELOADS", "1000"))
IDLE = int(os.environ.get("SOAK_IDLE", "2000"))
PORT = 18121
ADMIN = PORT + 20
MIB = 1024 * 1024


def rss(pid):
    """Resident set size in bytes (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def with_custom_section(component, tag):
    """The component with a custom section appended: other bytes, the same code."""
    def leb(n):
        out = bytearray()
        while True:
            byte, n = n & 0x7F, n >> 7
            out.append(byte | (0x80 if n else 0))
            if not n:
                return bytes(out)
    name = b"payproxy-soak"
    payload = leb(len(name)) + name + tag.encode()
    return component + b"\x00" + leb(len(payload)) + payload


def config(work, weight):
    """bench.py's memory instance, reloaded by hand, with the router reading a copy of its
    component from `work` and a weighted rule whose weight changes between reloads."""
    path = bench.payproxy_conf(work, "memory", PORT, "memory", "stripe")
    cfg = json.loads(path.read_text())
    cfg["reload"] = {"watch": False}
    cfg["plugins"]["path-router"]["path"] = str(work / "router.wasm")
    cfg["plugins"]["path-router"]["config"] = {"rules": [
        {"name": "all", "match": {"path_prefix": ["/r"]},
         "providers": [{"name": "plain", "weight": weight}]}]}
    path.write_text(json.dumps(cfg, indent=1))
    return path


def reload(n):
    """Reload number `n`; it must be the n-th that succeeded."""
    req = urllib.request.Request(f"http://127.0.0.1:{ADMIN}/admin/reload", data=b"",
                                 method="POST")
    with urllib.request.urlopen(req, timeout=60) as answer:
        body = answer.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/admin/status", timeout=10) as answer:
        last = json.loads(answer.read())["last_reload"]
    if last["result"] != "ok" or last.get("ok_total") != n:
        raise RuntimeError(f"reload {n} failed: {body[:300]!r} / {last}")


def soak_reloads(work, servers):
    original = (bench.PLUGINS / "router_regional.wasm").read_bytes()
    variants = [original, with_custom_section(original, "b")]
    (work / "router.wasm").write_bytes(variants[0])
    path = config(work, 1)
    servers.start("payproxy-soak", bench.pinned(bench.PROXY_CPU, [
        str(bench.PAYPROXY), "run", "--config", str(path)]), PORT)
    proc = servers.procs[-1][1]
    budget = 60 + RELOADS * 0.5
    wrk = subprocess.Popen(
        bench.pinned(bench.GEN_CPU, ["wrk", "-t1", "-c8", f"-d{int(budget)}s", "-s",
                                     str(work / "count.lua"), f"http://127.0.0.1:{PORT}/r"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    samples = {}
    started = time.monotonic()
    try:
        time.sleep(2)  # the load is steady before the first reload
        samples[0] = rss(proc.pid)
        for i in range(1, RELOADS + 1):
            if time.monotonic() - started > budget - 5:
                raise RuntimeError(f"reloads too slow: {i - 1} in {budget:.0f} s")
            if i % 2:
                bench_tmp = work / "router.wasm.tmp"
                bench_tmp.write_bytes(variants[(i // 2 + 1) % 2])
                os.replace(bench_tmp, work / "router.wasm")
            else:
                config(work, 1 + i % 7)
            reload(i)
            if i in (10, 100, 250, 500, 750) or i == RELOADS:
                time.sleep(0.5)
                samples[i] = rss(proc.pid)
                print(f"reload {i}: RSS {samples[i] / MIB:.1f} MiB", file=sys.stderr)
        elapsed = time.monotonic() - started
    finally:
        wrk.send_signal(signal.SIGINT)  # wrk stops and prints its summary
        out, _ = wrk.communicate(timeout=30)
    if not re.search(r"FAILED (\d+)", out):
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    failed = int(re.search(r"FAILED (\d+)", out).group(1))
    served = int(re.search(r"(\d+) requests in", out).group(1))
    return samples, elapsed, failed, served


def soak_idle(proc_pid):
    """Open IDLE keep-alive connections, one request each; RSS before, idle, after close."""
    before = rss(proc_pid)
    conns = []
    started = time.monotonic()
    request = b"GET / HTTP/1.1\r\nhost: soak\r\n\r\n"
    try:
        for _ in range(IDLE):
            if time.monotonic() - started > 120:
                raise RuntimeError("opening connections took over 120 s")
            s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
            s.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer:
                answer += s.recv(4096)
            head, _, body = answer.partition(b"\r\n\r\n")
            length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length")))
            while len(body) < length:
                body += s.recv(4096)
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"idle soak: {head[:40]!r}")
            conns.append(s)
        time.sleep(1)
        idle = rss(proc_pid)
        open_ = sum(1 for s in conns if s.fileno() >= 0)
    finally:
        for s in conns:
            s.close()
    time.sleep(3)
    after = rss(proc_pid)
    return before, idle, after, open_


def main():
    for tool in ("wrk", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"soak: {tool} is missing (run scripts/soak.sh, which installs it)")
    out_dir = bench.ROOT / "target/soak"
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=out_dir))
    (work / "count.lua").write_text(
        'function done(summary, latency, requests)\n'
        '  io.write(string.format("FAILED %d\\n", summary.errors.status + '
        'summary.errors.connect + summary.errors.read + summary.errors.write + '
        'summary.errors.timeout))\nend\n')
    servers = bench.Servers(work)
    ok = False
    try:
        (work / "upstream.conf").write_text(bench.upstream_conf(work))
        servers.start("upstream", bench.pinned(bench.UP_CPU, [
            bench.NGINX, "-p", str(work), "-c", str(work / "upstream.conf"),
            "-e", str(work / "upstream.stderr")]), bench.UP)
        samples, elapsed, failed, served = soak_reloads(work, servers)
        proc = servers.procs[-1][1]
        before, idle, after, open_ = soak_idle(proc.pid)
        first, last = samples[10], samples[RELOADS]
        growth = (last - first) / first
        lines = [
            f"Reloads: {RELOADS} in {elapsed:.0f} s (plugin binary and config alternating) under "
            f"wrk -c8 on the router route: {served} requests, {failed} failed.",
            "",
            "| after reload | RSS |",
            "|---|---|",
            *[f"| {i} | {v / MIB:.1f} MiB |" for i, v in sorted(samples.items())],
            "",
            f"RSS after reload {RELOADS} vs reload 10: {growth * 100:+.1f}% (target within 10%); "
            f"failed requests: {failed} (target 0).",
            "",
            f"Idle keep-alive connections: {open_} open. RSS before {before / MIB:.1f} MiB, "
            f"with them idle {idle / MIB:.1f} MiB (target at most 100 MiB), after they closed "
            f"{after / MIB:.1f} MiB.",
        ]
        report = "\n".join(lines)
        print(report)
        (out_dir / "results.md").write_text(report + "\n")
        ok = True
    finally:
        servers.stop()
        if ok and not os.environ.get("SOAK_KEEP"):
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
