#!/usr/bin/env python3
"""A/B of two payproxy builds in one run (through scripts/ab.sh, which installs the tools).

    scripts/ab.sh BEFORE_BINARY AFTER_BINARY

To compare two builds of the plugins instead (or as well), point AB_PLUGINS_BEFORE and
AB_PLUGINS_AFTER at the directories holding each build's .wasm files (default: the
benchmark's, plugins/target/wasm32-wasip2/release).

AB_ONLY=text measures only the paths whose name holds that text (AB_ONLY=DANA, AB_ONLY=translated).

BENCH_WORKER_THREADS=N gives both builds N serving threads (runtime.worker_threads; default
one per CPU the proxy may run on, which is one, since it is pinned to one core).

Both builds get the benchmark's configs (scripts/bench.py) and the same canned nginx
upstream, pinned like the benchmark (load generator and upstream on CPU 0, proxies on CPU 1).
Each round measures every path on both builds, alternating which goes first; the table shows
the median req/s (wrk -t1 -c64, AB_SECONDS each), the after/before ratio, each round's ratio
(the two builds measured one right after the other) and how many rounds the after build won.
A ratio is worth quoting when it is clear of the spread between rounds, or when the after
build won every round: the machine drifts between rounds, which shifts both builds of a round
alike.
Only loopback addresses; every load run is bounded in time.
"""

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROUNDS = int(os.environ.get("AB_ROUNDS", "3"))
bench.SECONDS = int(os.environ.get("AB_SECONDS", "5"))

# (name, instance, path, payment, unique)
PATHS = [
    ("transparent route", "memory", "/1k", False, False),
    ("router plugin", "memory", "/r/1k", False, False),
    ("payment chain (memory store)", "memory", "/v1/payment_intents", True, False),
    ("unique keys (memory store)", "memory", "/v1/payment_intents", True, True),
    ("unique keys (redb store, fsync)", "redb", "/v1/payment_intents", True, True),
    ("translated to Adyen (memory store)", "translated", "/v1/payment_intents", True, False),
    ("translated to DANA XML (memory store)", "xml", "/v1/payment_intents", bench.DANA_FORM,
     False),
]
# AB_ONLY=text keeps the paths whose name holds that text (e.g. AB_ONLY=DANA).
PATHS = [p for p in PATHS if os.environ.get("AB_ONLY", "") in p[0]]
if not PATHS:
    sys.exit(f"ab: no path's name holds AB_ONLY={os.environ['AB_ONLY']!r}")
# The benchmark's instances (bench.INSTANCES) and ports for the first build; the second's
# ports are 30 higher (admin is +20).
SHIFT = 30


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: scripts/ab.sh BEFORE_BINARY AFTER_BINARY")
    builds = {"before": Path(sys.argv[1]).resolve(), "after": Path(sys.argv[2]).resolve()}
    plugins = {build: Path(os.environ.get(f"AB_PLUGINS_{build.upper()}", bench.PLUGINS))
               for build in builds}
    for name, binary in builds.items():
        if not binary.is_file():
            sys.exit(f"ab: {name} build {binary} is not a file")
        if not (plugins[name] / "dialect_stripe.wasm").is_file():
            sys.exit(f"ab: {name} plugins: no dialect_stripe.wasm in {plugins[name]}")

    def port(build, instance):
        return bench.INSTANCES[instance][0] + list(builds).index(build) * SHIFT

    with bench.run_dir("ab-") as (work, servers):
        bench.start_upstream(work, servers)
        for build, binary in builds.items():
            home = work / build
            home.mkdir()
            for instance, (_, store, dialect) in bench.INSTANCES.items():
                config = bench.payproxy_conf(home, instance, port(build, instance), store,
                                             dialect, plugins[build])
                servers.start(f"{build}-{instance}", bench.pinned(bench.PROXY_CPU, [
                    str(binary), "run", "--config", str(config)]), port(build, instance))
        for build in builds:
            for name, instance, path, payment, unique in PATHS:
                bench.check(bench.Path_(name, port(build, instance), None, path,
                                        payment=payment, unique=unique))
        rps = {}
        for round_ in range(ROUNDS):
            order = list(builds) if round_ % 2 == 0 else list(reversed(builds))
            for name, instance, path, payment, unique in PATHS:
                for build in order:
                    print(f"round {round_ + 1}/{ROUNDS}: {name}, {build}", file=sys.stderr)
                    url = f"http://127.0.0.1:{port(build, instance)}{path}"
                    got, _, _, failed = bench.wrk(url, 64, work, unique=unique, payment=payment)
                    if failed:
                        raise RuntimeError(f"{name}, {build}: {failed} failed requests")
                    rps.setdefault((name, build), []).append(got)
        lines = [
            f"{ROUNDS} rounds of {bench.SECONDS} s, wrk -t1 -c64, medians "
            f"(before: {builds['before']}, plugins {plugins['before']}; "
            f"after: {builds['after']}, plugins {plugins['after']})",
            "",
            "| path | before req/s | after req/s | after / before | each round's after / before "
            "| rounds (before; after) |",
            "|---|---|---|---|---|---|",
        ]
        for name, *_ in PATHS:
            before = statistics.median(rps[(name, "before")])
            after = statistics.median(rps[(name, "after")])
            # A round measures the two builds one right after the other, so its ratio is
            # clear of the machine's drift between rounds, which the medians are not.
            pairs = [a / b for b, a in zip(rps[(name, "before")], rps[(name, "after")])]
            ahead = sum(r > 1 for r in pairs)
            paired = (f"{min(pairs):.2f}–{max(pairs):.2f}, after ahead in {ahead} of "
                      f"{len(pairs)}")
            spread = "; ".join(", ".join(f"{v:,.0f}" for v in rps[(name, b)]) for b in builds)
            lines.append(f"| {name} | {before:,.0f} | {after:,.0f} | {after / before:.2f} "
                         f"| {paired} | {spread} |")
        report = "\n".join(lines)
        print(report)
        (bench.OUT_DIR / "ab.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
