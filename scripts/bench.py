#!/usr/bin/env python3
"""Side-by-side proxy benchmark (run through scripts/bench.sh, which installs and builds).

One canned nginx upstream; in front of it nginx, HAProxy and payproxy (transparent route,
router-plugin route, payment chains). Each round measures every path once, in a rotated
order; the table shows the median over rounds. Load generators and the upstream run on CPU 0,
every proxy on CPU 1 (with three or more CPUs the upstream gets CPU 2). Only loopback
addresses are used; every load run is bounded in time.

Per path and protocol:
  - max throughput: wrk -t1 -c64 (HTTP/1.1) or h2load -t1 -c64 -m1 (h2c prior knowledge),
    keep-alive, BENCH_SECONDS each;
  - latency at a fixed rate below saturation: 4 h2load processes of one connection each at
    BENCH_RATE/4 req/s, with independent phases (not one h2load -c4, whose clients fire
    together),
    p50/p99 from their per-request logs; "added" is the path's minus the direct path's.
    The unique-key rows cannot use h2load (it repeats one request), so their latency is
    wrk -c4 closed loop, marked *.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "5"))
# payproxy's serving threads (runtime.worker_threads); unset: its default, one per CPU it may
# run on, which is one here, as every proxy is pinned to one core.
WORKER_THREADS = os.environ.get("BENCH_WORKER_THREADS")
RATE = int(os.environ.get("BENCH_RATE", "1000"))
PLUGINS = ROOT / "plugins/target/wasm32-wasip2/release"
PAYPROXY = ROOT / "target/release/payproxy"
RULES = ROOT / "examples/config/rules"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"

UP, UP_H2 = 18101, 18111
NGINX_H1, NGINX_H2 = 18102, 18112
HAPROXY_H1, HAPROXY_H2 = 18103, 18113
PP_MEMORY, PP_REDB, PP_TRANSLATED = 18104, 18105, 18106
PP_XML = 18108
# Each payproxy instance's admin listener (metrics) is on its storefront port plus this.
ADMIN_OFFSET = 20

STOREFRONT_KEY = "sk_bench_storefront"
PAYMENT_FORM = (
    "amount=1000&currency=eur&confirm=true"
    "&payment_method_data%5Btype%5D=card"
    "&payment_method_data%5Bcard%5D%5Btoken%5D=tok_visa"
    "&payment_method_data%5Bcard%5D%5Bbin%5D=424242"
    "&payment_method_data%5Bcard%5D%5Blast4%5D=4242"
    "&payment_method_data%5Bcard%5D%5Bnetwork%5D=visa"
    "&payment_method_data%5Bcard%5D%5Bcountry%5D=NL"
    "&payment_method_data%5Bbilling_details%5D%5Baddress%5D%5Bcountry%5D=NL"
    "&metadata%5Border_id%5D=bench"
)
# A shopper in Indonesia paying with a DANA wallet: the translated-to-XML path (issue 11's
# "another dialect, XML"). The KYC rules want a verified phone for an Indonesian e-wallet.
DANA_FORM = (
    "amount=150000&currency=idr&confirm=true"
    "&payment_method_data%5Btype%5D=dana"
    "&payment_method_data%5Bbilling_details%5D%5Bphone%5D=%2B6281234567890"
    "&payment_method_data%5Bbilling_details%5D%5Bphone_verified%5D=true"
    "&payment_method_data%5Bbilling_details%5D%5Baddress%5D%5Bcountry%5D=ID"
    "&metadata%5Border_id%5D=bench"
)
PAYMENT_HEADERS = {
    "authorization": f"Bearer {STOREFRONT_KEY}",
    "content-type": "application/x-www-form-urlencoded",
}
# What the canned upstream answers: a Stripe PaymentIntent, an Adyen authorisation, 1 KiB.
# Each payment gets an id of its own, as from a real provider (the upstream's start time,
# nginx's connection serial number and that connection's request count: see
# `upstream_conf`), so a chain stores a new record per payment instead of rewriting one.
# Letters between the numbers: 13-19 digits in a row may be taken for a card number, and a
# request id in hex can hold such a run.
UNIQUE_ID = "c${connection}r${connection_requests}"
CANNED_INTENT = json.dumps({
    "id": f"pi_{UNIQUE_ID}", "object": "payment_intent", "amount": 1000, "amount_received": 1000,
    "currency": "eur", "status": "succeeded", "capture_method": "automatic",
    "latest_charge": "ch_bench1", "payment_method": "pm_bench1", "livemode": False,
})
CANNED_ADYEN = json.dumps({
    "pspReference": f"PSP{UNIQUE_ID}", "resultCode": "Authorised",
    "amount": {"value": 1000, "currency": "EUR"}, "merchantReference": "bench",
})
# DANA's answer to an order create paid from a bound wallet: no checkoutUrl, so approved.
CANNED_DANA = (
    '<?xml version="1.0" encoding="UTF-8"?><response><head><version>2.0</version>'
    "<function>dana.acquiring.order.create</function><reqMsgId>bench</reqMsgId></head>"
    "<body><resultInfo><resultStatus>S</resultStatus><resultCodeId>00000000</resultCodeId>"
    "<resultCode>SUCCESS</resultCode><resultMsg>success</resultMsg></resultInfo>"
    f"<acquirementId>DANA{UNIQUE_ID}</acquirementId><merchantTransId>bench</merchantTransId>"
    "</body></response>"
)
KIB = "x" * 1024


def cpus():
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        sys.exit("bench: needs at least 2 CPUs (load generator and proxy on their own)")
    generator, proxy = available[0], available[1]
    upstream = available[2] if len(available) > 2 else generator
    return generator, proxy, upstream


GEN_CPU, PROXY_CPU, UP_CPU = cpus()


def pinned(cpu, argv):
    return ["taskset", "-c", str(cpu), *argv]


def wait_port(port, proc=None, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def request(url, body=None, headers=None):
    """(status, body) of one request; an error status is returned too, not raised, so that
    whoever asked can show what the proxy answered."""
    req = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


class Servers:
    def __init__(self, work):
        self.work = work
        self.procs = []

    def start(self, name, argv, port):
        log = open(self.work / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                env={**os.environ, "PAYPROXY_LOG": "warn"})
        self.procs.append((name, proc))
        try:
            wait_port(port, proc)
        except RuntimeError as e:
            raise RuntimeError(f"{name}: {e}; see {self.work / (name + '.log')}") from None

    def stop(self):
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


OUT_DIR = ROOT / "target/bench"


@contextlib.contextmanager
def run_dir(prefix):
    """A fresh run directory under target/bench and the servers to start in it: (work,
    servers). The servers are stopped at the end. The directory is removed after a run that
    worked (the audit logs alone reach hundreds of MB), and kept, for its logs, after one
    that failed, or with BENCH_KEEP=1."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=OUT_DIR))
    servers = Servers(work)
    try:
        yield work, servers
    finally:
        servers.stop()
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(work, ignore_errors=True)


def start_upstream(work, servers):
    """The canned nginx upstream every path ends at."""
    (work / "upstream.conf").write_text(upstream_conf(work))
    servers.start("upstream", pinned(UP_CPU, [NGINX, "-p", str(work), "-c", str(work / "upstream.conf"),
                                              "-e", str(work / "upstream.stderr")]), UP)


def nginx_conf(work, name, server):
    pid = work / f"{name}.pid"
    return f"""
worker_processes 1;
daemon off;
pid {pid};
error_log {work / (name + '.error.log')} warn;
events {{ worker_connections 8192; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {work / (name + '-body')};
    proxy_temp_path {work / (name + '-proxy')};
    {server}
}}
"""


def upstream_conf(work):
    # nginx numbers its connections from 1 again at every start: the start time keeps the ids
    # of a restarted upstream apart from those a store already holds.
    start = f"s{int(time.time())}"

    def canned(body):
        body = body.replace(UNIQUE_ID, start + UNIQUE_ID)
        return body.replace("\\", "\\\\").replace("'", "\\'")
    server = f"""
    server {{
        listen 127.0.0.1:{UP};
        listen 127.0.0.1:{UP_H2} http2;
        location /v1/payment_intents {{ default_type application/json; return 200 '{canned(CANNED_INTENT)}'; }}
        location /adyen/ {{ default_type application/json; return 200 '{canned(CANNED_ADYEN)}'; }}
        location /dana/ {{ default_type application/xml; return 200 '{canned(CANNED_DANA)}'; }}
        location / {{ default_type text/plain; return 200 '{KIB}'; }}
    }}"""
    return nginx_conf(work, "upstream", server)


def nginx_proxy_conf(work):
    server = f"""
    upstream up {{ server 127.0.0.1:{UP}; keepalive 128; }}
    server {{
        listen 127.0.0.1:{NGINX_H1};
        listen 127.0.0.1:{NGINX_H2} http2;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    return nginx_conf(work, "nginx", server)


def haproxy_conf():
    return f"""
global
    nbthread 1
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend bench
    bind 127.0.0.1:{HAPROXY_H1}
    bind 127.0.0.1:{HAPROXY_H2} proto h2
    default_backend up
backend up
    server up 127.0.0.1:{UP}
"""


def plugin(file, role, plugins=PLUGINS, **extra):
    return {"path": str(plugins / file), "role": role, **extra}


# The payproxy instances: name -> (port, state store, the dialect its provider speaks).
INSTANCES = {"memory": (PP_MEMORY, "memory", "stripe"),
             "redb": (PP_REDB, "redb", "stripe"),
             "translated": (PP_TRANSLATED, "memory", "adyen"),
             "xml": (PP_XML, "memory", "dana")}
INSTANCE_PORTS = {port for port, _, _ in INSTANCES.values()}


def payproxy_conf(work, name, port, store, provider_dialect, plugins=PLUGINS):
    """A payproxy config: the payment chain (Stripe dialect, PSD2 SCA, KYC, limits, regional
    router) at /v1 to a canned provider speaking `provider_dialect`; on the memory instance
    also a router-plugin route at /r, and on it and the redb instance a transparent route at
    /. The plugins' files are
    taken from the directory `plugins`."""
    def wasm(file, role, **extra):
        return plugin(file, role, plugins, **extra)

    provider = {
        "url": f"http://127.0.0.1:{UP}", "region": "eu", "tags": ["card"], "cost": 1.0,
        "dialect": provider_dialect, "credentials": {"api_key": "sk_upstream_bench"},
    }
    router_rules = {"rules": [{"name": "cards", "match": {"payment_method": ["card"]},
                               "providers": [{"name": "canned"}]}]}
    if provider_dialect == "dana":
        # An Indonesian DANA wallet, as the demo's router sends it.
        provider.update(region="sea", tags=["ewallet"],
                        credentials={"client_id": "bench-client", "merchant_id": "bench-merchant"})
        router_rules = {"rules": [{"name": "id-dana",
                                   "match": {"country": ["ID"], "payment_method": ["dana"]},
                                   "providers": [{"name": "canned"}]}]}
    key = hashlib.sha256(STOREFRONT_KEY.encode()).hexdigest()
    config = {
        "listeners": [{"addr": f"127.0.0.1:{port}"}],
        "admin": {"addr": f"127.0.0.1:{port + ADMIN_OFFSET}"},
        "limits": {"max_body_bytes": 65536, "request_timeout_ms": 25000},
        "plugin_host": {"instance_mode": "reuse", "deadline_ms": 20, "memory_mb": 32,
                        "compile_cache_dir": str(work / "plugin-cache")},
        "state": {"kind": store, "path": str(work / f"{name}.redb")},
        "log": {"audit_path": str(work / f"{name}.audit.log")},
        "plugins": {
            "stripe": wasm("dialect_stripe.wasm", "dialect",
                           config={"server_errors": "answered_not_processed"}),
            "adyen": wasm("dialect_adyen.wasm", "dialect",
                          config={"merchant_account": "BenchECOM"}),
            "dana": wasm("dialect_dana.wasm", "dialect", config={"order_title": "bench"}),
            "psd2-sca": wasm("compliance_psd2_sca.wasm", "compliance",
                             config_file=str(RULES / "psd2-sca.json")),
            "kyc": wasm("compliance_kyc.wasm", "compliance",
                        config_file=str(RULES / "kyc.json")),
            "limits": wasm("compliance_limits.wasm", "compliance",
                           config_file=str(RULES / "limits.json")),
            "regional-router": wasm("router_regional.wasm", "router", config=router_rules),
        },
        "providers": {"canned": provider},
        "routes": [{
            "name": "payments", "path_prefix": "/v1", "dialect": "stripe", "home": "canned",
            "storefront_keys": [{"sha256": key}],
            "plugins": ["psd2-sca", "kyc", "limits", "regional-router"],
            "providers": ["canned"],
        }],
    }
    if name == "memory":
        config["plugins"]["path-router"] = wasm(
            "router_regional.wasm", "router",
            config={"rules": [{"name": "all", "match": {"path_prefix": ["/r"]},
                               "providers": [{"name": "plain"}]}]})
        config["routes"].append({"name": "router", "path_prefix": "/r",
                                 "plugins": ["path-router"], "providers": ["plain"]})
    if name in ("memory", "redb"):
        # The redb instance's for the flood beside its payments (`beside_a_flood`).
        config["providers"]["plain"] = {"url": f"http://127.0.0.1:{UP}"}
        config["routes"].append({"name": "transparent", "path_prefix": "/", "providers": ["plain"]})
    if WORKER_THREADS:
        config["runtime"] = {"worker_threads": int(WORKER_THREADS)}
    if provider_dialect != "stripe":
        # The home takes what the storefront dialect forwards unchanged: a Stripe provider.
        del config["routes"][0]["home"]
    path = work / f"payproxy-{name}.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


def parse_duration_us(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 1, "ms": 1000, "s": 1_000_000}[unit]


def payment_form(payment):
    """The form a path posts: `payment` is False (a GET), True (the card payment) or a form."""
    return PAYMENT_FORM if payment is True else payment or None


def wrk(url, conns, work, unique=False, payment=False, seconds=None):
    """wrk -t1: (req/s, p50 us, p99 us, failed requests). `payment` as in `payment_form`.
    Its script is written to `work`: one directory per wrk running at once."""
    seconds = seconds or SECONDS
    script = work / "wrk.lua"
    lines = []
    form = payment_form(payment)
    if form:
        headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in PAYMENT_HEADERS.items())
        lines.append(f'wrk.method = "POST"\nwrk.body = "{form}"\n{headers}')
    if unique:
        # A random key per payment, as storefronts send them (Stripe suggests V4 UUIDs): keys
        # that count up put each batch's new records side by side in the store's B-tree,
        # where random ones each take a leaf (docs/benchmarks.md: 1.6x the page writes per
        # payment on redb). 24 random letters from a 48-bit seed per wrk run (one seed for
        # all of wrk's threads: this is for -t1), and no digits: payproxy refuses a header
        # with what may be a card number (13-19 digits passing Luhn).
        seed = int.from_bytes(os.urandom(6), "big")
        lines.append(f'math.randomseed({seed})\n'
                     'function request()\n  local key = {}\n'
                     '  for i = 1, 24 do key[i] = string.char(96 + math.random(26)) end\n'
                     '  wrk.headers["Idempotency-Key"] = "bench-" .. table.concat(key)\n'
                     '  return wrk.format()\nend\n')
    lines.append('function done(summary, latency, requests)\n'
                 '  io.write(string.format("FAILED %d\\n", summary.errors.status + '
                 'summary.errors.connect + summary.errors.read + summary.errors.write + '
                 'summary.errors.timeout))\nend\n')
    script.write_text("\n".join(lines))
    out = subprocess.run(
        pinned(GEN_CPU, ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency",
                         "-s", str(script), url]),
        capture_output=True, text=True, timeout=seconds + 60, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = parse_duration_us(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = parse_duration_us(re.search(r"\s99%\s+(\S+)", out).group(1))
    failed = int(re.search(r"FAILED (\d+)", out).group(1))
    return rps, p50, p99, failed


# Payments beside a flood: payments with unique keys on the redb instance (FLOOD_PAYERS
# connections), alone, then while FLOOD_CONNS connections flood the same instance's transparent
# route. The flood starts FLOOD_LEAD seconds before the payments and ends as long after.
FLOOD_PAYERS, FLOOD_CONNS, FLOOD_LEAD = 8, 64, 1


def beside_a_flood(work):
    """{"alone": wrk result, "beside": wrk result, "flood": wrk result} (wrk's tuples)."""
    url = f"http://127.0.0.1:{PP_REDB}"
    check(Path_("the flood's route", PP_REDB, None, "/1k"))
    pay, flood_dir = work / "payments", work / "flood"
    pay.mkdir(exist_ok=True)
    flood_dir.mkdir(exist_ok=True)
    alone = wrk(f"{url}/v1/payment_intents", FLOOD_PAYERS, pay, unique=True, payment=True)
    flood = {}
    flooding = threading.Thread(target=lambda: flood.update(
        result=wrk(f"{url}/1k", FLOOD_CONNS, flood_dir, seconds=SECONDS + 2 * FLOOD_LEAD)))
    flooding.start()
    time.sleep(FLOOD_LEAD)
    beside = wrk(f"{url}/v1/payment_intents", FLOOD_PAYERS, pay, unique=True, payment=True)
    flooding.join()
    return {"alone": alone, "beside": beside, "flood": flood.get("result")}


def flood_table(rounds):
    """The payments-beside-a-flood rounds as a markdown table, with the medians."""
    lines = [
        f"Payments beside a flood (redb store, unique keys, wrk -c{FLOOD_PAYERS}; the flood: "
        f"wrk -c{FLOOD_CONNS} on the same instance's transparent route):",
        "",
        "| round | payments/s alone | p50 / p99 alone | payments/s beside the flood | "
        "p50 / p99 beside | beside / alone | the flood, req/s | failed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shares = []
    for k, r in enumerate(rounds, 1):
        alone, beside, flood = r["alone"], r["beside"], r["flood"]
        if flood is None:
            lines.append(f"| {k} | the flood's wrk failed | | | | | | |")
            continue
        share = beside[0] / alone[0] if alone[0] else 0.0
        shares.append(share)
        lines.append(
            f"| {k} | {alone[0]:,.0f} | {fmt_us(alone[1])} / {fmt_us(alone[2])} | {beside[0]:,.0f} | "
            f"{fmt_us(beside[1])} / {fmt_us(beside[2])} | {share:.2f} | {flood[0]:,.0f} | "
            f"{alone[3] + beside[3] + flood[3]} |")
    if shares:
        lines.append(f"| median | | | | | {statistics.median(shares):.2f} | | |")
    return "\n".join(lines)


def h2load_args(h1, payment, work):
    args = ["--h1"] if h1 else []
    form = payment_form(payment)
    if form:
        body = work / "payment.form"
        body.write_text(form)
        args += ["-d", str(body)]
        for k, v in PAYMENT_HEADERS.items():
            args += ["-H", f"{k}: {v}"]
    return args


def h2load_throughput(url, h1, payment, work):
    out = subprocess.run(
        pinned(GEN_CPU, ["h2load", "-t1", "-c64", "-m1", "-D", str(SECONDS),
                         "--warm-up-time=1", *h2load_args(h1, payment, work), url]),
        capture_output=True, text=True, timeout=SECONDS + 60, check=True).stdout
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    return rps, failures(out)


def failures(h2load_out):
    """Requests that did not end in a 2xx, or None (and a warning) when h2load's summary
    cannot be read: an unknown count is shown as one, never as a number. h2load's `failed`
    counts the errored requests and those answered other than 2xx or 3xx; a 3xx is a failure
    here too (every path answers 200). Not `done` minus the 2xx count: with -D, answers to
    requests cut at the deadline are counted in the status codes but not in `done`, which
    made that difference negative."""
    failed = re.search(r"requests: \d+ total, \d+ started, \d+ done, \d+ succeeded, (\d+) failed",
                       h2load_out)
    codes = re.search(r"status codes: \d+ 2xx, (\d+) 3xx", h2load_out)
    if failed and codes:
        return int(failed.group(1)) + int(codes.group(1))
    tail = "\n".join(h2load_out.strip().splitlines()[-8:])
    print(f"bench: cannot read h2load's summary; failures unknown:\n{tail}", file=sys.stderr)
    return None


def h2load_latency(url, h1, payment, work):
    """p50, p99 and failures at BENCH_RATE req/s: 4 h2load processes of one connection each
    at BENCH_RATE/4 req/s, started one after another. Their start-up (taskset, connect, the
    warm-up) varies by far more than a period, so their phases are independent, as separate
    storefronts' are: requests may still meet, but not all four every period. (One h2load
    with -c4 fires its four clients' timers together: 4 requests arrived at once every period
    and each waited for the other three on the proxy's one core, which measured the burst
    rather than the path.)"""
    # Written once: a process mapping the body file while the next one rewrote it would
    # find it empty.
    request = h2load_args(h1, payment, work)
    procs = []
    try:
        for n in range(4):
            log = work / f"h2load-requests-{n}.log"
            log.unlink(missing_ok=True)
            argv = ["h2load", "-t1", "-c1", "-m1", f"--rps={RATE // 4}", "-D", str(SECONDS),
                    "--warm-up-time=1", f"--log-file={log}", *request, url]
            procs.append((log, subprocess.Popen(pinned(GEN_CPU, argv), stdout=subprocess.PIPE,
                                                stderr=subprocess.STDOUT, text=True)))
            time.sleep(1 / RATE)
        times, failed = [], 0
        for log, proc in procs:
            out, _ = proc.communicate(timeout=SECONDS + 60)
            if proc.returncode != 0:
                tail = "\n".join(out.strip().splitlines()[-12:])
                raise RuntimeError(f"h2load exited {proc.returncode} on {url}:\n{tail}")
            times += [float(line.split("\t")[2]) for line in log.read_text().splitlines()
                      if line.count("\t") >= 2]
            counted = failures(out)
            failed = None if counted is None or failed is None else failed + counted
    finally:
        # On a failure or a timeout, none is left running.
        for _, proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    times.sort()
    return percentile(times, 50), percentile(times, 99), failed


class Path_:
    def __init__(self, name, port_h1, port_h2, path, payment=False, unique=False):
        self.name, self.port_h1, self.port_h2, self.path = name, port_h1, port_h2, path
        self.payment, self.unique = payment, unique


PATHS = [
    Path_("direct to upstream", UP, UP_H2, "/1k"),
    Path_("nginx proxy_pass", NGINX_H1, NGINX_H2, "/1k"),
    Path_("HAProxy", HAPROXY_H1, HAPROXY_H2, "/1k"),
    Path_("payproxy, transparent route", PP_MEMORY, PP_MEMORY, "/1k"),
    Path_("payproxy, router plugin", PP_MEMORY, PP_MEMORY, "/r/1k"),
    Path_("payproxy, payment chain, same-dialect forward (memory store)", PP_MEMORY,
          PP_MEMORY, "/v1/payment_intents", payment=True),
    Path_("payproxy, payment chain, same-dialect forward (redb store)", PP_REDB, PP_REDB,
          "/v1/payment_intents", payment=True),
    Path_("payproxy, payment chain, unique Idempotency-Key (memory store)", PP_MEMORY, None,
          "/v1/payment_intents", payment=True, unique=True),
    Path_("payproxy, payment chain, unique Idempotency-Key (redb store, fsync)", PP_REDB, None,
          "/v1/payment_intents", payment=True, unique=True),
    Path_("payproxy, payment chain translated to Adyen JSON (memory store)", PP_TRANSLATED,
          PP_TRANSLATED, "/v1/payment_intents", payment=True),
    Path_("payproxy, payment chain translated to DANA XML (memory store)", PP_XML, PP_XML,
          "/v1/payment_intents", payment=DANA_FORM),
]


def check(p):
    """One request through the path: refuse to measure a path that does not work."""
    url = f"http://127.0.0.1:{p.port_h1}{p.path}"
    if p.payment:
        # Two payments: each must succeed, and get an id of its own (the canned upstream's
        # ids come from nginx variables; one id for all would make the chain rewrite one
        # record instead of storing a payment each).
        ids = set()
        for _ in range(2):
            # Digits glued to a letter, not a bare run of them: a bare run of 13-19 digits
            # could pass for a card number, which payproxy refuses in a header.
            headers = {**PAYMENT_HEADERS, "idempotency-key": f"check-t{time.monotonic_ns()}"}
            status, body = request(url, payment_form(p.payment).encode(), headers)
            answer = json.loads(body)
            if status != 200 or answer.get("status") != "succeeded":
                raise RuntimeError(f"{p.name}: {status} {body[:300]!r}")
            ids.add(answer.get("id", ""))
        if len(ids) != 2 or any("$" in i for i in ids):
            raise RuntimeError(f"{p.name}: two payments answered the ids {sorted(ids)}")
    else:
        status, body = request(url)
        if status != 200 or len(body) != 1024:
            raise RuntimeError(f"{p.name}: {status}, {len(body)} bytes")


def measure(p, proto, work):
    h1 = proto == "http/1.1"
    port = p.port_h1 if h1 else p.port_h2
    url = f"http://127.0.0.1:{port}{p.path}"
    if h1:
        rps, _, _, failed = wrk(url, 64, work, unique=p.unique, payment=p.payment)
    else:
        rps, failed = h2load_throughput(url, False, p.payment, work)
    inside = None
    if p.unique:
        _, p50, p99, lat_failed = wrk(url, 4, work, unique=True, payment=True)
    else:
        before = settled_sums(port) if port in INSTANCE_PORTS else None
        p50, p99, lat_failed = h2load_latency(url, h1, p.payment, work)
        if before is not None:
            inside = time_inside(before, proxy_sums(port))
    unknown = failed is None or lat_failed is None
    return {"rps": rps, "p50": p50, "p99": p99, "inside": inside,
            "failed": None if unknown else failed + lat_failed}


HISTOGRAM = re.compile(r"payproxy_(request|upstream|plugin_call)_duration_seconds_(sum|count)"
                       r"(?:\{[^}]*\})? (\S+)$")


def proxy_sums(port):
    """payproxy's own latency histograms (request, upstream, plugin call), each one's sum and
    count added over its labels, from the instance's metrics."""
    status, body = request(f"http://127.0.0.1:{port + ADMIN_OFFSET}/metrics")
    if status != 200:
        raise RuntimeError(f"metrics of the payproxy on {port}: {status}")
    sums = {}
    for line in body.decode().splitlines():
        m = HISTOGRAM.match(line)
        if m:
            key = (m.group(1), m.group(2))
            sums[key] = sums.get(key, 0.0) + float(m.group(3))
    return sums


def settled_sums(port):
    """proxy_sums once the instance is done with the throughput run before: a payment whose
    client went away when wrk stopped still runs to its end (and is observed), so the counts
    are read until two readings 200 ms apart agree (at most 5 s)."""
    sums = proxy_sums(port)
    for _ in range(25):
        time.sleep(0.2)
        again = proxy_sums(port)
        if again == sums:
            break
        sums = again
    return sums


def time_inside(before, after):
    """Where a request's time went inside payproxy between two readings of its histograms,
    means per storefront request in µs: in the proxy (request head read to response head), waiting for
    the upstream's answer, in plugin calls. Only the measured path had traffic in between,
    so every observation is its."""
    def delta(name, kind):
        return after.get((name, kind), 0.0) - before.get((name, kind), 0.0)
    n = delta("request", "count")
    if n <= 0:
        return None
    return {"proxy": 1e6 * delta("request", "sum") / n,
            "upstream": 1e6 * delta("upstream", "sum") / n,
            "plugins": 1e6 * delta("plugin_call", "sum") / n}


def fmt_us(us):
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def table(proto, results, paths):
    def med(p, key):
        return statistics.median(r[key] for r in results[(p.name, proto)])
    direct = paths[0]
    rows = [f"**{proto}**", "",
            "| path | max req/s (c=64) | × nginx | p50 / p99 at "
            f"{RATE} req/s | added p50 / p99 over direct | failed |",
            "|---|---|---|---|---|---|"]
    nginx_rps = med(paths[1], "rps")
    for p in paths:
        if (p.name, proto) not in results:
            continue
        rps, p50, p99 = med(p, "rps"), med(p, "p50"), med(p, "p99")
        star = "*" if p.unique else ""
        added = ("—" if p is direct or p.unique else
                 f"{fmt_us(p50 - med(direct, 'p50'))} / {fmt_us(p99 - med(direct, 'p99'))}")
        counts = [r["failed"] for r in results[(p.name, proto)]]
        failed = "unknown" if None in counts else sum(counts)
        rows.append(f"| {p.name} | {rps:,.0f} | {rps / nginx_rps:.2f} | "
                    f"{fmt_us(p50)} / {fmt_us(p99)}{star} | {added} | {failed} |")
    return "\n".join(rows)


# HAProxy's added p99 below this (µs) makes the transparent route's p99 ratio unreadable.
P99_FLOOR_US = 50


def ratios(results, paths):
    """Each target's figure per round (every path is measured once a round, so a ratio pairs
    measurements minutes apart at most), as the median over rounds and the rounds' range."""
    rounds = min(len(r) for r in results.values())

    def at(i, key, k):
        return results[(paths[i].name, "http/1.1")][k][key]

    def row(name, value, fmt, goal):
        values = [v for v in (value(k) for k in range(rounds)) if v is not None]
        if not values:
            return f"| {name} | n/a | no round could be read | {goal} |"
        left_out = "" if len(values) == rounds else f" ({rounds - len(values)} left out)"
        return (f"| {name} | {fmt(statistics.median(values))} | "
                f"{fmt(min(values))} – {fmt(max(values))}{left_out} | {goal} |")

    def ratio(x):
        return f"{x:.2f}"

    def count(x):
        return f"{x:,.0f}"

    def added_p99_ratio(k):
        # A round where HAProxy adds next to nothing at p99 gives a ratio of noise (a few µs
        # of denominator): such a round is left out and counted as left out.
        direct = at(0, "p99", k)
        haproxy = at(2, "p99", k) - direct
        return (at(3, "p99", k) - direct) / haproxy if haproxy >= P99_FLOOR_US else None

    lines = [
        "| target (HTTP/1.1) | median of rounds | rounds (min – max) | goal |",
        "|---|---|---|---|",
        row("transparent max throughput / nginx", lambda k: at(3, "rps", k) / at(1, "rps", k),
            ratio, "≥ 1.00"),
        row("transparent added p99 / HAProxy added p99", added_p99_ratio, ratio, "≤ 1.2"),
        row("router route / transparent throughput", lambda k: at(4, "rps", k) / at(3, "rps", k),
            ratio, "≥ 0.80"),
        row("payment chain req/s (memory)", lambda k: at(5, "rps", k), count, "≥ 15,000"),
        row("payment chain / transparent throughput", lambda k: at(5, "rps", k) / at(3, "rps", k),
            ratio, "≥ 0.50"),
        row("payment chain added p50 over direct", lambda k: at(5, "p50", k) - at(0, "p50", k),
            fmt_us, "≤ 150 µs"),
        row("unique keys, redb (fsync) payments/s", lambda k: at(8, "rps", k), count,
            "≥ 10,000"),
        row("unique keys redb / unique keys memory", lambda k: at(8, "rps", k) / at(7, "rps", k),
            ratio, "≥ 0.70"),
        row("translated chain (DANA XML) payments/s", lambda k: at(10, "rps", k), count,
            "≥ 8,000"),
        row("translated chain (Adyen JSON) payments/s", lambda k: at(9, "rps", k), count,
            "≥ 8,000"),
    ]
    return "\n".join(lines)


def inside_table(results, paths):
    """Where the time of a request at the fixed rate went inside payproxy (HTTP/1.1), from
    its own histograms: medians over rounds of each round's means."""
    direct = results[(paths[0].name, "http/1.1")]
    rows = [f"**Inside payproxy at {RATE} req/s** (HTTP/1.1; means per request from its own "
            "histograms, medians over rounds; \"in payproxy\" is request head read to response head, "
            "\"own work\" is that minus the upstream wait and the plugin calls)", "",
            "| path | added p50 seen by the client | in payproxy | upstream wait | "
            "plugin calls | own work |", "|---|---|---|---|---|---|"]
    for p in paths:
        measured = [r["inside"] for r in results.get((p.name, "http/1.1"), []) if r["inside"]]
        if not measured:
            continue

        def med(key):
            return statistics.median(m[key] for m in measured)
        added = statistics.median(r["p50"] - d["p50"] for r, d in
                                  zip(results[(p.name, "http/1.1")], direct))
        own = statistics.median(m["proxy"] - m["upstream"] - m["plugins"] for m in measured)
        rows.append(f"| {p.name} | {fmt_us(added)} | {fmt_us(med('proxy'))} | "
                    f"{fmt_us(med('upstream'))} | {fmt_us(med('plugins'))} | {fmt_us(own)} |")
    return "\n".join(rows)


DEMO_CONFIG = ROOT / "examples/config/payments.json"
PP_STARTUP = 18107
STARTS = 5


def startup(work):
    """Start-up of the demo config (examples/config/payments.json: 10 plugins): from exec to
    the first answer on the storefront listener, which binds only once the first snapshot is
    built. Once with an empty compile cache, then STARTS times with it warm. Returns
    (cold ms, median warm ms, every warm ms)."""
    config = json.loads(DEMO_CONFIG.read_text())
    for plugin_entry in config["plugins"].values():
        for field in ("path", "config_file"):
            if field in plugin_entry:
                plugin_entry[field] = str((DEMO_CONFIG.parent / plugin_entry[field]).resolve())
    config["listeners"] = [{"addr": f"127.0.0.1:{PP_STARTUP}"}]
    config["admin"] = {"addr": f"127.0.0.1:{PP_STARTUP + 20}"}
    config["plugin_host"]["compile_cache_dir"] = str(work / "startup-cache")
    config["reload"] = {"watch": False}
    # The demo's default store (redb), in this run's directory.
    config["state"] = {"kind": "redb", "path": str(work / "startup.redb")}
    path = work / "payproxy-startup.json"
    path.write_text(json.dumps(config, indent=1))

    def once():
        started = time.monotonic()
        proc = subprocess.Popen(pinned(PROXY_CPU, [str(PAYPROXY), "run", "--config", str(path)]),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PAYPROXY_LOG": "warn"})
        try:
            deadline = started + 120
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"start-up payproxy exited with {proc.returncode}")
                try:
                    # Anything answered counts: an unknown path gets payproxy's own 404.
                    urllib.request.urlopen(f"http://127.0.0.1:{PP_STARTUP}/__ready", timeout=1)
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("start-up payproxy never answered") from None
                    time.sleep(0.002)
            return (time.monotonic() - started) * 1000
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    cold = once()
    warm = [once() for _ in range(STARTS)]
    return cold, statistics.median(warm), warm


def startup_table(cold, warm_median, warm):
    return "\n".join([
        "**start-up, demo config (10 plugins)**: exec to the first answer on the storefront "
        "listener",
        "",
        "| compile cache | ms | goal |",
        "|---|---|---|",
        f"| empty (compiles every plugin) | {cold:,.0f} | — |",
        f"| warm, median of {len(warm)} ({', '.join(f'{w:.0f}' for w in warm)}) "
        f"| {warm_median:,.0f} | ≤ 200 |",
    ])


def main():
    for tool in ("wrk", "h2load", "taskset"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} is missing (run scripts/bench.sh, which installs it)")
    if not PAYPROXY.exists():
        sys.exit("bench: target/release/payproxy is missing (run scripts/bench.sh)")
    with run_dir("run-") as (work, servers):
        start_upstream(work, servers)
        (work / "nginx.conf").write_text(nginx_proxy_conf(work))
        (work / "haproxy.cfg").write_text(haproxy_conf())
        servers.start("nginx", pinned(PROXY_CPU, [NGINX, "-p", str(work), "-c", str(work / "nginx.conf"),
                                                  "-e", str(work / "nginx.stderr")]), NGINX_H1)
        servers.start("haproxy", pinned(PROXY_CPU, [HAPROXY, "-db", "-f",
                                                    str(work / "haproxy.cfg")]), HAPROXY_H1)
        for name, (port, store, dialect) in INSTANCES.items():
            config = payproxy_conf(work, name, port, store, dialect)
            servers.start(f"payproxy-{name}",
                          pinned(PROXY_CPU, [str(PAYPROXY), "run", "--config", str(config)]),
                          port)
        for p in PATHS:
            check(p)
        protos = ["http/1.1", "h2"]
        results = {}
        floods = []
        started = time.monotonic()
        for round_ in range(ROUNDS):
            order = PATHS[round_ % len(PATHS):] + PATHS[:round_ % len(PATHS)]
            for proto in protos:
                for p in order:
                    if proto == "h2" and p.port_h2 is None:
                        continue
                    print(f"round {round_ + 1}/{ROUNDS} {proto}: {p.name}", file=sys.stderr)
                    results.setdefault((p.name, proto), []).append(measure(p, proto, work))
            print(f"round {round_ + 1}/{ROUNDS}: payments beside a flood", file=sys.stderr)
            floods.append(beside_a_flood(work))
        elapsed = time.monotonic() - started
        print("start-up: demo config, cold then warm compile cache", file=sys.stderr)
        starts = startup(work)
        cpu = next((line.split(":", 1)[1].strip() for line in
                    Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), "unknown CPU")
        report = "\n\n".join([
            f"Machine: {len(os.sched_getaffinity(0))} CPUs ({cpu}); load generator on CPU "
            f"{GEN_CPU}, proxies on CPU {PROXY_CPU}, upstream on CPU {UP_CPU}. "
            f"{ROUNDS} rounds of {SECONDS} s per measurement, medians, {elapsed:.0f} s in all. "
            f"Upstream: nginx answering 1 KiB, a canned PaymentIntent, Adyen authorisation or DANA order.",
            table("http/1.1", results, PATHS),
            table("h2", results, PATHS),
            "\\* closed loop, wrk -c4 (h2load repeats one request, so it cannot send unique keys).",
            ratios(results, PATHS),
            inside_table(results, PATHS),
            flood_table(floods),
            startup_table(*starts),
        ])
        print(report)
        (OUT_DIR / "results.md").write_text(report + "\n")


if __name__ == "__main__":
    main()
