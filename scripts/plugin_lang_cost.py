#!/usr/bin/env python3
"""What a compliance plugin written in Python or JavaScript costs on the payment chain.

Three payproxy instances (release build) in front of bench.py's canned upstream, each with
bench.py's memory-store payment chain (Stripe dialect, PSD2 SCA, KYC, limits, router): as it
is, with the Python blocklist (examples/plugins/compliance-python) added to the chain, and
with the JavaScript one (examples/plugins/compliance-js). Each round runs wrk -t1 -c64 for
BENCH_SECONDS against each instance, in alternating order, and reads payproxy's own
payproxy_plugin_call_duration_seconds before and after: payments/s and the mean time of a
check by the Rust `limits` plugin and by the language plugin.

    scripts/build-plugins.sh && cargo build --release -p payproxy
    examples/plugins/compliance-python/build.sh && examples/plugins/compliance-js/build.sh
    ROUNDS=3 python3 scripts/plugin_lang_cost.py

Pinned like bench.py (load generator and upstream on CPU 0, payproxy on CPU 1); loopback
only; every load run bounded by BENCH_SECONDS.
"""

import json
import os
import sys
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

ROOT = bench.ROOT
LANGUAGE_PLUGINS = {
    "python": ROOT / "target/python-plugins/compliance_python.wasm",
    "javascript": ROOT / "target/js-plugins/compliance_js.wasm",
}
ROUNDS = int(os.environ.get("ROUNDS", "3"))
PORTS = {"rust only": 18104, "python": 18105, "javascript": 18106}


def check_durations(port, plugin):
    """(sum of seconds, count) of `plugin`'s calls so far."""
    url = f"http://127.0.0.1:{port + bench.ADMIN_OFFSET}/metrics"
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as r:
        text = r.read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if f'plugin="{plugin}"' not in line:
            continue
        if line.startswith("payproxy_plugin_call_duration_seconds_sum"):
            total += float(line.split()[-1])
        elif line.startswith("payproxy_plugin_call_duration_seconds_count"):
            count += float(line.split()[-1])
    return total, count


def main():
    missing = [str(p) for p in [bench.PAYPROXY, *LANGUAGE_PLUGINS.values()] if not p.is_file()]
    if missing:
        sys.exit(f"plugin_lang_cost: missing {missing} (see the docstring for the build commands)")
    with bench.run_dir("lang-") as (work, servers):
        bench.start_upstream(work, servers)
        for name, port in PORTS.items():
            conf = json.loads(Path(bench.payproxy_conf(work, "memory", port, "memory", "stripe")).read_text())
            conf["routes"] = conf["routes"][:1]
            if name in LANGUAGE_PLUGINS:
                conf["plugins"]["blocklist"] = {"path": str(LANGUAGE_PLUGINS[name]), "role": "compliance",
                                                "config": {"blocked_email_domains": ["blocked.example"]}}
                conf["routes"][0]["plugins"] = ["psd2-sca", "kyc", "limits", "blocklist", "regional-router"]
            path = work / f"lang-{port}.json"
            path.write_text(json.dumps(conf))
            servers.start(name, bench.pinned(bench.PROXY_CPU, [str(bench.PAYPROXY), "run", "--config", str(path)]),
                          port)
        print("| round | instance | payments/s | limits (Rust) µs a check | blocklist µs a check |")
        print("|---|---|---|---|---|")
        for round_ in range(ROUNDS):
            order = list(PORTS.items())
            order = order[round_ % len(order):] + order[:round_ % len(order)]
            for name, port in order:
                before = {p: check_durations(port, p) for p in ("limits", "blocklist")}
                rps = bench.wrk(f"http://127.0.0.1:{port}/v1/payment_intents", 64, work, payment=True)[0]
                means = []
                for p in ("limits", "blocklist"):
                    s, c = check_durations(port, p)
                    ds, dc = s - before[p][0], c - before[p][1]
                    means.append(f"{ds / dc * 1e6:.1f}" if dc else "–")
                print(f"| {round_ + 1} | {name} | {rps:,.0f} | {means[0]} | {means[1]} |", flush=True)


if __name__ == "__main__":
    main()
