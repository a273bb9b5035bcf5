#!/usr/bin/env python3
"""What a durable payment costs the redb store, in counts that move far less with the
machine than throughput (through scripts/store_profile.sh, which installs the tools).

    scripts/store_profile.sh [BINARY]        # default target/release/payproxy

Throughput on a shared machine moves by 10-60% between rounds; how many payments one
fsync settles, how many page writes a payment makes and how many context switches it
costs move far less, so a change to the store shows in them first. For each store (the
payment chain on bench.py's memory and redb configs) and each concurrency, every round
starts a payproxy of its own with a fresh store (the compiled plugins are shared), pinned
like the benchmark, and drives it with wrk (unique Idempotency-Keys, PROFILE_SECONDS s),
with `perf stat` attached to payproxy for the middle of the run, and payproxy's own
histograms of its store writer read before and after it (the share of batches settled for
a single call, the mean settle). Each round reverses the
order of the stores and of the concurrencies. Needs `perf` and the permission to read
syscall tracepoints (root, or kernel.perf_event_paranoid at most 1 with access to tracefs).

PROFILE_ROUNDS (default 3), PROFILE_CONNS (default "64,256"), PROFILE_SECONDS (default 5).
Only loopback addresses; every load run is bounded by PROFILE_SECONDS.
"""

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(os.environ.get("PROFILE_ROUNDS", "3"))
CONNS = [int(c) for c in os.environ.get("PROFILE_CONNS", "64,256").split(",")]
bench.SECONDS = int(os.environ.get("PROFILE_SECONDS", "5"))
STORES = ["memory", "redb"]
EVENTS = ["task-clock", "context-switches", "syscalls:sys_enter_fdatasync",
          "syscalls:sys_enter_pwrite64"]
PATH = "/v1/payment_intents"


# perf formats numbers by locale: a decimal comma would split its `-x,` fields.
PERF_ENV = {**os.environ, "LC_ALL": "C"}


def perf_counts(text):
    """{event: count} from `perf stat -x,` output (task-clock in ms)."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in EVENTS:
            value = fields[0].strip()
            if not re.fullmatch(r"[\d.]+", value):
                raise RuntimeError(f"perf could not count {fields[2]}: {line}")
            if fields[2] == "task-clock" and fields[1] != "msec":
                raise RuntimeError(f"perf counted task-clock in {fields[1]!r}, not msec: {line}")
            counts[fields[2]] = float(value)
    missing = [e for e in EVENTS if e not in counts]
    if missing:
        raise RuntimeError(f"perf counted no {', '.join(missing)}:\n{text}")
    return counts


# perf counts from LEAD s after wrk starts for SECONDS - 2 * LEAD s, so that wrk's start
# and end stay out of its window; payments are wrk's rate times the window.
LEAD = 0.5


def writer_metrics(port):
    """payproxy's own counts of its store writer (`payproxy_store_writer_*` from /metrics on
    its admin listener): {series: value}; empty on the memory store, which has no writer."""
    status, body = bench.request(f"http://127.0.0.1:{port + bench.ADMIN_OFFSET}/metrics")
    if status != 200:
        raise RuntimeError(f"metrics of the payproxy on {port}: {status}")
    return {name: float(value) for name, value in
            (line.rsplit(" ", 1) for line in body.decode().splitlines()
             if line.startswith("payproxy_store_writer_"))}


def measure(store, port, pid, conns, work):
    """One wrk run with perf attached for its middle: the per-payment figures."""
    window = bench.SECONDS - 2 * LEAD
    perf = {}

    def count():
        time.sleep(LEAD)
        perf["out"] = subprocess.run(
            ["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(pid), "--",
             "sleep", str(window)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=PERF_ENV,
            timeout=window + 30)

    before = writer_metrics(port)
    counting = threading.Thread(target=count)
    counting.start()
    try:
        rps, _, _, failed = bench.wrk(f"http://127.0.0.1:{port}{PATH}", conns, work,
                                      unique=True, payment=True)
    finally:
        counting.join()
    out = perf.get("out")
    if out is None or out.returncode != 0:
        raise RuntimeError(f"perf stat failed: {out.stderr if out else 'did not run'}")
    if failed:
        raise RuntimeError(f"{store}, -c{conns}: {failed} failed requests")
    counts = perf_counts(out.stderr)
    after = writer_metrics(port)
    # The writer's batches over the whole wrk run: the share settled for one call, and the
    # mean settle (commit and journal sync).
    delta = {name: value - before.get(name, 0) for name, value in after.items()}
    batches = delta.get("payproxy_store_writer_batch_calls_count")
    lone = delta.get('payproxy_store_writer_batch_calls_bucket{le="1"}')
    settled = delta.get("payproxy_store_writer_settle_seconds_sum")
    # perf counts while its `sleep` runs: the window itself.
    payments = rps * window
    cpu_s = counts["task-clock"] / 1000
    syncs = counts["syscalls:sys_enter_fdatasync"]
    return {
        "rps": rps,
        "cpus": cpu_s / window,
        "cpu_us": cpu_s * 1e6 / payments,
        "per_sync": payments / syncs if syncs else None,
        "pages": counts["syscalls:sys_enter_pwrite64"] / payments,
        "switches": counts["context-switches"] / payments,
        "lone": 100 * lone / batches if batches and lone is not None else None,
        "settle_ms": 1000 * settled / batches if batches and settled is not None else None,
    }


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–" \
           f"{fmt.format(max(values))})"


def preflight(binary):
    """Refuse to start anything when a tool, the plugins or perf's permission is missing."""
    if len(sys.argv) > 2:
        sys.exit("usage: scripts/store_profile.sh [BINARY]")
    if not binary.is_file():
        sys.exit(f"store_profile: {binary} is not a file (build it: cargo build --release)")
    if bench.SECONDS < 2:
        sys.exit("store_profile: PROFILE_SECONDS must be at least 2")
    for tool in ("wrk", "taskset", "perf"):
        if shutil.which(tool) is None:
            sys.exit(f"store_profile: no {tool} (scripts/store_profile.sh installs it)")
    if not (bench.PLUGINS / "dialect_stripe.wasm").is_file():
        sys.exit(f"store_profile: no plugins in {bench.PLUGINS} (scripts/build-plugins.sh)")
    probe = subprocess.run(["perf", "stat", "-x,", "-e", "syscalls:sys_enter_fdatasync",
                            "--", "true"], capture_output=True, text=True, env=PERF_ENV)
    if probe.returncode != 0 or "not supported" in probe.stderr:
        sys.exit(f"store_profile: perf cannot count syscall tracepoints here:\n{probe.stderr}")


def start(work, servers, binary, store, label):
    """A payproxy of its own with a fresh store, on the compiled plugins all share."""
    home = work / label
    home.mkdir()
    port, kind, dialect = bench.INSTANCES[store]
    path = bench.payproxy_conf(home, store, port, kind, dialect)
    config = json.loads(path.read_text())
    config["plugin_host"]["compile_cache_dir"] = str(work / "plugin-cache")
    path.write_text(json.dumps(config, indent=1))
    servers.start(f"payproxy-{label}", bench.pinned(
        bench.PROXY_CPU, [str(binary), "run", "--config", str(path)]), port)
    bench.check(bench.Path_(store, port, None, PATH, payment=True, unique=True))
    return port, servers.procs[-1]


def main():
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else bench.PAYPROXY).resolve()
    preflight(binary)
    results = {}
    with bench.run_dir("store-profile-") as (work, servers):
        bench.start_upstream(work, servers)
        for round_ in range(ROUNDS):
            forward = round_ % 2 == 0
            for store in STORES if forward else list(reversed(STORES)):
                for conns in CONNS if forward else list(reversed(CONNS)):
                    print(f"round {round_ + 1}/{ROUNDS}: {store}, -c{conns}", file=sys.stderr)
                    port, (name, proc) = start(work, servers, binary, store,
                                               f"{store}-c{conns}-{round_}")
                    results.setdefault((store, conns), []).append(
                        measure(store, port, proc.pid, conns, work))
                    proc.terminate()
                    proc.wait(timeout=30)
                    servers.procs.remove((name, proc))
    lines = [
        f"{ROUNDS} rounds, payment chain with unique Idempotency-Keys, wrk -t1 for "
        f"{bench.SECONDS} s, perf for the middle {bench.SECONDS - 2 * LEAD:g} s, a fresh "
        f"payproxy and store for each run; {binary}. Medians, the rounds' range in "
        "parentheses. A page write is one pwrite: redb writes each dirty page with one (all "
        "4 KiB when measured on 6 December) and its header with one more per durable commit "
        "(since 6 December 14:20 a checkpoint, every 4 MiB of journal), and the writer "
        "appends each batch's journal entry with one. The writer's batches (from payproxy's "
        "/metrics, over the whole run): the share settled for a single call, and the mean "
        "settle (commit and journal sync).",
        "",
        "| store | connections | payments/s | CPUs used | CPU µs a payment "
        "| payments a fsync | page writes a payment | context switches a payment "
        "| batches of one call | settle ms a batch |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for conns in CONNS:
        for store in STORES:
            rows = results[(store, conns)]

            def col(key, fmt, rows=rows):
                return spread([r[key] for r in rows], fmt)
            lines.append(
                f"| {store} | {conns} | {col('rps', '{:,.0f}')} | {col('cpus', '{:.3f}')} "
                f"| {col('cpu_us', '{:.0f}')} | {col('per_sync', '{:.1f}')} "
                f"| {col('pages', '{:.2f}')} | {col('switches', '{:.2f}')} "
                f"| {col('lone', '{:.0f}%')} | {col('settle_ms', '{:.2f}')} |")
        ratios = [r["rps"] / m["rps"] for r, m in zip(results[("redb", conns)],
                                                       results[("memory", conns)])]
        lines.append(f"| redb ÷ memory | {conns} | {spread(ratios, '{:.2f}')} "
                     "| | | | | | | |")
    report = "\n".join(lines)
    print(report)
    (bench.OUT_DIR / "store-profile.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
