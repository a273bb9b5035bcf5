#!/usr/bin/env python3
"""What a durable payment costs the redb store, in counts that do not move with the machine
(through scripts/store_profile.sh, which installs the tools).

    scripts/store_profile.sh [BINARY]        # default target/release/payproxy

Throughput on a shared machine moves by 10-30% between rounds; how many payments one
fsync settles, how many 4 KiB pages a payment writes and how many context switches it
costs do not, so a change to the store shows in them first. Each round starts one payproxy
per store (bench.py's config: the payment chain on the memory store, then on redb, each
with a fresh store), pinned like the benchmark, and drives it with wrk at each
concurrency (unique Idempotency-Keys, PROFILE_SECONDS s), with `perf stat` attached to
payproxy for the middle of the run. Needs `perf` and the permission to read syscall
tracepoints (root, or kernel.perf_event_paranoid at most 1 with access to tracefs).

PROFILE_ROUNDS (default 3), PROFILE_CONNS (default "64,256"), PROFILE_SECONDS (default 5).
Only loopback addresses; every load run is bounded by PROFILE_SECONDS.
"""

import os
import re
import statistics
import subprocess
import sys
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


def perf_counts(text):
    """{event: count} from `perf stat -x,` output."""
    counts = {}
    for line in text.splitlines():
        fields = line.split(",")
        if len(fields) > 2 and fields[2] in EVENTS:
            value = fields[0].strip()
            if not re.fullmatch(r"[\d.]+", value):
                raise RuntimeError(f"perf could not count {fields[2]}: {line}")
            counts[fields[2]] = float(value)
    missing = [e for e in EVENTS if e not in counts]
    if missing:
        raise RuntimeError(f"perf counted no {', '.join(missing)}:\n{text}")
    return counts


def measure(store, port, pid, conns, work):
    """One wrk run with perf attached for its middle: the per-payment figures."""
    # perf counts for a window inside the wrk run, so start-up and wind-down stay out.
    window = max(1, bench.SECONDS - 1)
    stat = subprocess.Popen(
        ["perf", "stat", "-x,", "-e", ",".join(EVENTS), "-p", str(pid), "--",
         "sleep", str(window)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rps, _, _, failed = bench.wrk(f"http://127.0.0.1:{port}{PATH}", conns, work, unique=True,
                                  payment=True)
    _, err = stat.communicate(timeout=bench.SECONDS + 30)
    if stat.returncode != 0:
        raise RuntimeError(f"perf stat failed: {err}")
    if failed:
        raise RuntimeError(f"{store}, -c{conns}: {failed} failed requests")
    counts = perf_counts(err)
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
    }


def spread(values, fmt):
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–" \
           f"{fmt.format(max(values))})"


def main():
    binary = Path(sys.argv[1] if len(sys.argv) > 1 else bench.PAYPROXY).resolve()
    if not binary.is_file():
        sys.exit(f"store_profile: {binary} is not a file (build it: cargo build --release)")
    results = {}
    with bench.run_dir("store-profile-") as (work, servers):
        bench.start_upstream(work, servers)
        for round_ in range(ROUNDS):
            order = STORES if round_ % 2 == 0 else list(reversed(STORES))
            for store in order:
                # A fresh payproxy and store for each round: a store that grows over the
                # rounds would make the later ones slower.
                home = work / f"{store}-{round_}"
                home.mkdir()
                port, kind, dialect = bench.INSTANCES[store]
                config = bench.payproxy_conf(home, store, port, kind, dialect)
                servers.start(f"payproxy-{store}-{round_}", bench.pinned(
                    bench.PROXY_CPU, [str(binary), "run", "--config", str(config)]), port)
                name, proc = servers.procs[-1]
                bench.check(bench.Path_(store, port, None, PATH, payment=True, unique=True))
                for conns in CONNS:
                    print(f"round {round_ + 1}/{ROUNDS}: {store}, -c{conns}", file=sys.stderr)
                    results.setdefault((store, conns), []).append(
                        measure(store, port, proc.pid, conns, work))
                proc.terminate()
                proc.wait(timeout=30)
                servers.procs.remove((name, proc))
    lines = [
        f"{ROUNDS} rounds, payment chain with unique Idempotency-Keys, wrk -t1, "
        f"{bench.SECONDS} s each, perf for the middle {max(1, bench.SECONDS - 1)} s; "
        f"{binary}. Medians, the rounds' range in parentheses.",
        "",
        "| store | connections | payments/s | CPUs used | CPU µs a payment "
        "| payments a fsync | 4 KiB writes a payment | context switches a payment |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for conns in CONNS:
        for store in STORES:
            rows = results[(store, conns)]

            def col(key, fmt, rows=rows):
                return spread([r[key] for r in rows], fmt)
            lines.append(
                f"| {store} | {conns} | {col('rps', '{:,.0f}')} | {col('cpus', '{:.3f}')} "
                f"| {col('cpu_us', '{:.0f}')} | {col('per_sync', '{:.1f}')} "
                f"| {col('pages', '{:.2f}')} | {col('switches', '{:.2f}')} |")
        ratios = [r["rps"] / m["rps"] for r, m in zip(results[("redb", conns)],
                                                       results[("memory", conns)])]
        lines.append(f"| redb ÷ memory | {conns} | {spread(ratios, '{:.2f}')} "
                     "| | | | | |")
    report = "\n".join(lines)
    print(report)
    (bench.OUT_DIR / "store-profile.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
