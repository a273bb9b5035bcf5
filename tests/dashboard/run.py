#!/usr/bin/env python3
"""The Grafana dashboard and the Prometheus alert rules, checked by a real Prometheus.

    python3 tests/dashboard/run.py [--payproxy BIN] [--provider-sim BIN]
        [--prometheus BIN] [--promtool BIN] [--keep-logs DIR]

Standard library only. Steps (examples/grafana/README.md describes them for operators):
  1. `promtool check rules examples/prometheus/payproxy-alerts.yml`;
  2. provider-sim (six providers on port 0, awaited on its ready line) and payproxy with a temp
     copy of examples/config/payments.json (listeners on free ports, provider URLs from the
     simulator, plus one `canary` route whose fixture router plugin returns bad output, so the
     plugin-failure panel has something to show: fail-open, its requests are still served);
  3. Prometheus (the binary only, no service) scraping payproxy's admin /metrics every 1 s and
     evaluating a temp copy of the alert rules every 1 s, with every `for:` cut to 2 s (the
     expressions are untouched); traffic starts after its first scrape of payproxy;
  4. demo-like storefront traffic: the demo's payments (six providers, compliance allow, deny
     and challenge), an idempotent replay, an unauthenticated refusal, iDEAL answering 503 so
     its payments fail over to Adyen, slow Pix answers (700 ms), canary requests, a reload
     that works and one that fails;
  5. alerts: the success-rate alert's expression must be empty for the payments route
     (healthy so far) and the alert not pending or firing; PayproxyRequestLatencyHigh (slow
     Pix) and PayproxyReloadFailed must fire; then stripe-like (the only card provider)
     answers 503 to everything while card payments keep coming, and
     PayproxyPaymentSuccessRateLow{route="payments"}, PayproxyProviderFailureRateHigh and
     PayproxyBreakerOpen{provider="stripe-like"} must reach `firing` in /api/v1/alerts
     (before that, a Stripe event signed with stripe-like's webhook secret for a payment
     nobody made is held and dropped after the config's 1 s state.notice_hold_ms, and
     PayproxyProviderNotificationDropped{provider="stripe-like"} must fire);
     then one GrabPay answer cut off mid-body (an ambiguous attempt);
  6. every target `expr` of every dashboard panel, with Grafana's variables replaced by
     concrete values (VARIABLES below), and every template variable's label_values() query,
     evaluated through the HTTP API at the end of that traffic: each must return data
     (bounded wait), else the panel is named.
Every process started here is stopped by its pid at the end. Exit status 0 only when every
check passed; 1 when a check failed (each failure named), 2 when the setup failed.
"""

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import NO_PROXY_OPENER, Process, SetupError, free_ports  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLUGIN_DIR = REPO / "plugins" / "target" / "wasm32-wasip2" / "release"
DASHBOARD = REPO / "examples" / "grafana" / "payproxy-dashboard.json"
RULES = REPO / "examples" / "prometheus" / "payproxy-alerts.yml"
CONFIG = REPO / "examples" / "config" / "payments.json"

# Grafana's variables, as this test fills them in. $__rate_interval is at least four scrape
# intervals in Grafana; 1m covers the whole traffic phase at a 1 s scrape, so every counter
# that moved has two samples in the window. $route and $provider: "All" (allValue ".*").
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "5m",
    "${datasource}": "prometheus",
    "$datasource": "prometheus",
    "$route": ".*",
    "$provider": ".*",
}

STOREFRONT_KEY = "sk_test_storefront_demo"  # examples/config/payments.json keeps its SHA-256
# stripe-like's webhook signing secret in the check's config: its events reach payproxy.
STRIPE_LIKE_WEBHOOK_SECRET = "whsec_dashboard_check"
# The check's state.notice_hold_ms (the least payproxy takes): a held notification is dropped soon.
NOTICE_HOLD_MS = 1000
PROVIDERS = ("stripe-like", "adyen", "grabpay", "dana", "ideal", "pix")
RULE_FOR = "2s"  # every `for:` in the temp copy of the rules

START_S = 60  # each of provider-sim, payproxy (compiles the wasm plugins), Prometheus
PANELS_S = 30  # until every panel query returns data
ALERTS_S = 45  # until the alerts fire
RELOAD_S = 15  # until a reload shows in the metrics
HTTP_TIMEOUT_S = 10


def say(msg: str) -> None:
    print(f"[observability] {msg}", flush=True)


def http(url: str, method: str = "GET", data: bytes = None, headers=None):
    """(status, body bytes, headers); status None when nothing answered."""
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with NO_PROXY_OPENER.open(req, timeout=HTTP_TIMEOUT_S) as r:
            return r.status, r.read(), r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.read(), e.headers
    except (urllib.error.URLError, OSError):
        return None, b"", {}


def check_alive(proc: Process) -> None:
    if proc.exited() is not None:
        raise SetupError(proc.died_message())


def wait_for(what: str, seconds: float, probe, procs=()):
    """Poll probe() every 0.1 s until it returns a truthy value; bounded by time."""
    deadline = time.monotonic() + seconds
    while True:
        for p in procs:
            check_alive(p)
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise SetupError(f"{what}: not within {seconds:.0f} s")
        time.sleep(0.1)


# --- payproxy, the simulator and Prometheus -------------------------------------------------


def start_sim(binary: Path, logs: Path, procs: list):
    """provider-sim with PROVIDERS on ports of its choosing: (Process, {name: URL})."""
    argv = [binary] + [a for p in PROVIDERS for a in ("--provider", f"{p}=127.0.0.1:0")]
    sim = Process("provider-sim", argv, logs, None, logs, log=say)
    procs.append(sim)  # stopped at the end whatever happens next

    def ready():
        for line in sim.stdout_path.read_text(errors="replace").splitlines():
            if line.startswith("provider-sim ready:"):
                return dict(pair.split("=", 1) for pair in line.split(":", 1)[1].split())
        return None

    addrs = wait_for("provider-sim ready line", START_S, ready, [sim])
    return sim, {name: f"http://{addr}" for name, addr in addrs.items()}


def payproxy_config(work: Path, sims: dict, storefront: int, admin: int) -> Path:
    """The demo config in `work`: free ports, the simulator's URLs, absolute plugin paths,
    plus the canary route (see the module doc)."""
    config = json.loads(CONFIG.read_text())
    shutil.copytree(CONFIG.parent / "rules", work / "rules")
    config["listeners"] = [{"addr": f"127.0.0.1:{storefront}"}]
    config["admin"] = {"addr": f"127.0.0.1:{admin}"}
    for plugin in config["plugins"].values():
        plugin["path"] = str((CONFIG.parent / plugin["path"]).resolve())
    for name, provider in config["providers"].items():
        provider["url"] = sims[name]
    config["providers"]["stripe-like"]["credentials"]["webhook_secret"] = STRIPE_LIKE_WEBHOOK_SECRET
    config.setdefault("state", {})["notice_hold_ms"] = NOTICE_HOLD_MS
    config["plugins"]["canary-router"] = {
        "path": str(PLUGIN_DIR / "fixture_hostile.wasm"), "role": "router",
        "config": {"mode": "output"}, "on_error": "fail-open",
    }
    config["routes"].append({"name": "canary", "path_prefix": "/canary",
                             "plugins": ["canary-router"], "providers": ["stripe-like"]})
    path = work / "payments.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def rules_copy(work: Path) -> Path:
    """The alert rules with every `for:` cut to RULE_FOR; the expressions are untouched."""
    text, n = re.subn(r"(?m)^(\s*for:\s*)\S+\s*$", lambda m: m.group(1) + RULE_FOR, RULES.read_text())
    if n == 0:
        raise SetupError(f"no `for:` found in {RULES}")
    path = work / "payproxy-alerts.yml"
    path.write_text(text)
    return path


def start_prometheus(binary: Path, work: Path, logs: Path, admin: int, rules: Path, procs: list):
    (port,) = free_ports(1)
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules}\n"
        "scrape_configs:\n  - job_name: payproxy\n    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{admin}']\n"
    )
    argv = [binary, f"--config.file={config}", f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"]
    prom = Process("prometheus", argv, logs, None, work, log=say)
    procs.append(prom)
    url = f"http://127.0.0.1:{port}"
    wait_for("Prometheus /-/ready", START_S, lambda: http(f"{url}/-/ready")[0] == 200, [prom])

    # Traffic only after the first scrape: rate() and increase() never see what a counter
    # counted before Prometheus's first sample of it.
    def scraped():
        result = prom_get(url, "/api/v1/query", query='up{job="payproxy"}')["result"]
        return result and result[0]["value"][1] == "1"

    wait_for("Prometheus's first scrape of payproxy", START_S, scraped, [prom])
    return prom, url


def prom_get(prom_url: str, path: str, **params):
    status, body, _ = http(f"{prom_url}{path}?{urllib.parse.urlencode(params)}")
    if status != 200:
        raise SetupError(f"Prometheus {path} {params}: HTTP {status}: {body[:500]!r}")
    return json.loads(body)["data"]


# --- traffic --------------------------------------------------------------------------------


class Storefront:
    """A Stripe-speaking storefront: the demo's payments, each with its own Idempotency-Key."""

    def __init__(self, url: str, admin: str):
        self.url = url
        self.admin = admin
        self.seq = 0
        self.lock = threading.Lock()
        self.tag = f"obs-{os.getpid()}-{int(time.time())}"

    def pay(self, fields, key=None, auth=STOREFRONT_KEY):
        """POST /v1/payment_intents (confirm=true): (status, provider header, key, body)."""
        with self.lock:  # payments may be sent from several threads
            self.seq += 1
            key = key or f"{self.tag}-{self.seq}"
        data = urllib.parse.urlencode([("confirm", "true")] + list(fields)).encode()
        headers = {"Idempotency-Key": key, "Content-Type": "application/x-www-form-urlencoded",
                   "Authorization": "Basic " + base64.b64encode(f"{auth}:".encode()).decode()}
        status, body, h = http(f"{self.url}/v1/payment_intents", "POST", data, headers)
        if status is None:
            raise SetupError("payproxy did not answer a payment")
        return status, h.get("x-payproxy-provider"), key, body

    def card(self, amount, country, order, *extra):
        return self.pay([("amount", str(amount)), ("currency", "eur"),
                         ("payment_method", f"pm_card_{country.lower()}"),
                         ("payment_method_data[billing_details][address][country]", country),
                         ("metadata[order_id]", order), *extra])

    def ideal(self, order):
        return self.pay([("amount", "2500"), ("currency", "eur"), ("payment_method_data[type]", "ideal"),
                         ("payment_method_data[ideal][bank]", "ing"),
                         ("payment_method_data[ideal][iban]", "NL91ABNA0417164300"),
                         ("payment_method_data[billing_details][address][country]", "NL"),
                         ("return_url", "https://shop.example/return"), ("metadata[order_id]", order)])

    def pix(self, order):
        return self.pay([("amount", "5000"), ("currency", "brl"), ("payment_method_data[type]", "pix"),
                         ("payment_method_data[pix][tax_id]", "529.982.247-25"),
                         ("receipt_email", "joao@example.com.br"),
                         ("payment_method_data[billing_details][address][country]", "BR"),
                         ("metadata[order_id]", order)])

    def dana(self, order, verified=True):
        fields = [("amount", "15000000"), ("currency", "idr"), ("payment_method_data[type]", "dana"),
                  ("payment_method_data[billing_details][phone]", "+6281234567890"),
                  ("payment_method_data[billing_details][address][country]", "ID"),
                  ("metadata[order_id]", order)]
        if verified:
            fields.append(("payment_method_data[billing_details][phone_verified]", "true"))
        return self.pay(fields)

    def grabpay(self, amount, currency, country, order):
        return self.pay([("amount", str(amount)), ("currency", currency),
                         ("payment_method_data[type]", "grabpay"),
                         ("payment_method_data[billing_details][address][country]", country),
                         ("metadata[order_id]", order)])


def set_faults(sims: dict, provider: str, faults: dict) -> None:
    status, body, _ = http(f"{sims[provider]}/__sim/faults", "POST", json.dumps(faults).encode(),
                           {"Content-Type": "application/json"})
    if status != 200:
        raise SetupError(f"setting faults on {provider}: HTTP {status} {body[:200]!r}")


def metric_sum(admin: str, name: str, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels`, from payproxy's /metrics."""
    status, body, _ = http(f"{admin}/metrics")
    if status != 200:
        return 0.0
    total = 0.0
    for line in body.decode().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def expect(failures: list, ok: bool, what: str) -> None:
    if not ok:
        failures.append(what)
        say(f"FAIL: {what}")


def wait_scraped(prom_url: str, query: str) -> None:
    """Until Prometheus has a sample for `query`: a counter's increments before its first
    sample are invisible to rate(), so slow answers must come after it."""
    wait_for(f"Prometheus has scraped {query}", PANELS_S,
             lambda: prom_get(prom_url, "/api/v1/query", query=query)["result"])


def drive_traffic(sf: Storefront, sims: dict, config_dir: Path, prom_url: str, failures: list) -> None:
    admin = sf.admin
    say("traffic: the demo's payments")
    for label, (status, provider, *_rest) in [
        ("ID / DANA", sf.dana("ID-1001")),
        ("ID / DANA, phone not verified (kyc deny)", sf.dana("ID-1002", verified=False)),
        ("NL / iDEAL", sf.ideal("NL-2001")),
        ("BR / Pix", sf.pix("BR-3001")),
        ("SG / GrabPay", sf.grabpay(4200, "sgd", "SG", "SG-4001")),
        ("VN / GrabPay", sf.grabpay(100000, "vnd", "VN", "VN-4002")),
        ("DE / card 25.00", sf.card(2500, "DE", "DE-5001")),
        ("DE / card 250.00 (psd2 challenge)", sf.card(25000, "DE", "DE-5002")),
        ("DE / card 250.00 3DS", sf.card(25000, "DE", "DE-5003",
                                        ("payment_method_options[card][three_d_secure][authenticated]", "true"))),
        ("DE / card 12000.00 3DS (limits)", sf.card(1200000, "DE", "DE-5004",
                                                   ("payment_method_options[card][three_d_secure][authenticated]", "true"))),
        ("KP / card (sanctions deny)", sf.card(1000, "KP", "KP-6001")),
    ]:
        say(f"  {label}: HTTP {status} via {provider or '-'}")
        expect(failures, status < 500, f"demo payment {label} answered {status}")

    say("traffic: an idempotent replay")
    status, provider, key, first = sf.card(2500, "DE", "DE-5005")
    replay = sf.pay([("amount", "2500"), ("currency", "eur"), ("payment_method", "pm_card_de"),
                     ("payment_method_data[billing_details][address][country]", "DE"),
                     ("metadata[order_id]", "DE-5005")], key=key)
    expect(failures, replay[0] == status and replay[3] == first, "the replay returned the stored answer")
    expect(failures, metric_sum(admin, "payproxy_idempotent_replays_total") >= 1,
           "payproxy_idempotent_replays_total counted the replay")

    say("traffic: a storefront refusal (wrong key)")
    status, *_ = sf.pay([("amount", "100"), ("currency", "eur")], auth="sk_test_wrong")
    expect(failures, status == 401, f"a wrong storefront key answered {status}, want 401")

    say("traffic: canary route (fixture router with bad output, fail-open)")
    for _ in range(3):
        status, *_ = http(f"{sf.url}/canary/echo")
        expect(failures, status is not None and status < 500, f"canary request answered {status}")

    say("traffic: iDEAL answers 503 (did nothing): its payments fail over to Adyen")
    set_faults(sims, "ideal", {"error_status": 503, "error_rate": 1.0})
    for i in range(6):
        status, provider, *_ = sf.ideal(f"NL-21{i:02d}")
        expect(failures, (status, provider) == (200, "adyen"),
               f"iDEAL outage payment {i}: HTTP {status} via {provider}, want 200 via adyen")
    set_faults(sims, "ideal", {})
    expect(failures, metric_sum(admin, "payproxy_failovers_total", to="adyen") >= 1,
           "payproxy_failovers_total counted the failover")

    say("traffic: Pix answers after 700 ms (latency above the 500 ms p99 threshold)")
    wait_scraped(prom_url, 'payproxy_request_duration_seconds_count{route="payments"}')
    set_faults(sims, "pix", {"latency_ms": 700})
    slow = []  # (status, provider) of each slow payment; sent at once, so 700 ms in all
    threads = [threading.Thread(target=lambda order: slow.append(sf.pix(order)[:2]), args=(f"BR-31{i:02d}",))
               for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HTTP_TIMEOUT_S + 5)
    set_faults(sims, "pix", {})
    expect(failures, sorted(slow) == [(200, "pix")] * 3, f"slow Pix payments answered {slow}, want 3 × 200 via pix")

    say("traffic: a reload that works and one that fails")
    rules = config_dir / "rules" / "router.json"
    original = rules.read_text()
    ok_before = metric_sum(admin, "payproxy_reloads_total", result="ok")
    changed = original.replace('"providers": [ { "name": "adyen" }, { "name": "ideal" } ]',
                               '"providers": [ { "name": "adyen" } ]')
    if changed == original:
        raise SetupError(f"the nl-ideal rule in {rules} was not found")
    rules.write_text(changed)
    wait_for("reload ok counted", RELOAD_S,
             lambda: metric_sum(admin, "payproxy_reloads_total", result="ok") > ok_before)
    rules.write_text("{ not json")
    wait_for("reload error counted", RELOAD_S,
             lambda: metric_sum(admin, "payproxy_reloads_total", result="error") >= 1)
    ok_before = metric_sum(admin, "payproxy_reloads_total", result="ok")
    rules.write_text(original)
    wait_for("reload ok after the fix", RELOAD_S,
             lambda: metric_sum(admin, "payproxy_reloads_total", result="ok") > ok_before)
    status, provider, *_ = sf.ideal("NL-2002")
    expect(failures, status == 200, f"iDEAL after the reloads: HTTP {status}")


# --- checks ---------------------------------------------------------------------------------


def substitute(expr: str) -> str:
    for var in sorted(VARIABLES, key=len, reverse=True):
        expr = expr.replace(var, VARIABLES[var])
    if "$" in expr:
        raise SetupError(f"unknown Grafana variable left in {expr!r}: add it to VARIABLES")
    return expr


def panel_queries(dashboard: dict):
    """(panel title, refId, expr) of every target of every panel, rows' panels included."""
    out = []

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                out.append((p.get("title", "?"), t.get("refId", "?"), t["expr"]))

    walk(dashboard["panels"])
    return out


def check_panels(prom_url: str, failures: list) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = panel_queries(dashboard)
    if not queries:
        raise SetupError(f"no panel targets in {DASHBOARD}")
    say(f"dashboard: {len(queries)} panel queries")
    empty = {}

    def all_have_data():
        empty.clear()
        for title, ref, expr in queries:
            result = prom_get(prom_url, "/api/v1/query", query=substitute(expr))["result"]
            if not result:
                empty[(title, ref)] = expr
        return not empty

    try:
        wait_for("every panel query returns data", PANELS_S, all_have_data)
    except SetupError:
        pass
    for (title, ref), expr in empty.items():
        expect(failures, False, f"panel {title!r} target {ref} returned no data: {substitute(expr)}")
    if not empty:
        say(f"dashboard: all {len(queries)} panel queries returned data")
    for var in dashboard["templating"]["list"]:
        if var.get("type") != "query":
            continue
        q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", q)
        if not m:
            raise SetupError(f"variable {var['name']}: unsupported query {q!r}")
        values = prom_get(prom_url, f"/api/v1/label/{m.group(2)}/values", **{"match[]": m.group(1)})
        expect(failures, bool(values), f"variable ${var['name']} ({q}) has no values")
        say(f"variable ${var['name']}: {values}")


def alert_rules(path: Path) -> dict:
    """{alert name: expr} from the rule file (a small reader for this file's layout)."""
    rules, name = {}, None
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"\s*- alert:\s*(\S+)", line)
        if m:
            name = m.group(1)
            continue
        m = re.match(r"(\s*)expr:\s*(.*)$", line)
        if m and name:
            if m.group(2).strip() == "|":
                indent, body = None, []
                for cont in lines[i + 1:]:
                    if not cont.strip():
                        break
                    ind = len(cont) - len(cont.lstrip())
                    if ind <= len(m.group(1)):
                        break
                    body.append(cont.strip())
                rules[name] = " ".join(body)
            else:
                rules[name] = m.group(2)
    return rules


def firing(prom_url: str):
    """{(alert name, route or provider label or ''): state} from /api/v1/alerts."""
    alerts = prom_get(prom_url, "/api/v1/alerts")["alerts"]
    return {(a["labels"]["alertname"], a["labels"].get("route") or a["labels"].get("provider") or ""): a["state"]
            for a in alerts}


def wait_firing(prom_url: str, want: set, failures: list, step=None) -> None:
    """Until every (alert, label) in `want` is firing (bounded by ALERTS_S); step() between polls."""
    deadline = time.monotonic() + ALERTS_S
    state = {}
    while True:
        state = firing(prom_url)
        if all(state.get(k) == "firing" for k in want) or time.monotonic() >= deadline:
            break
        if step:
            step()
        time.sleep(0.2)
    for k in sorted(want):
        name = f"{k[0]}{{{k[1]}}}" if k[1] else k[0]
        expect(failures, state.get(k) == "firing", f"alert {name} is {state.get(k, 'absent')}, want firing")
        if state.get(k) == "firing":
            say(f"alert {name} firing")


def check_alerts(prom_url: str, sf: Storefront, sims: dict, failures: list) -> None:
    exprs = alert_rules(RULES)
    success = exprs.get("PayproxyPaymentSuccessRateLow")
    if not success:
        raise SetupError(f"PayproxyPaymentSuccessRateLow not found in {RULES}")
    before = [r for r in prom_get(prom_url, "/api/v1/query", query=success)["result"]
              if r["metric"].get("route") == "payments"]
    expect(failures, not before,
           f"the success-rate alert's expression already holds for route payments before the outage: {before}")
    state = firing(prom_url).get(("PayproxyPaymentSuccessRateLow", "payments"))
    expect(failures, state is None, f"the success-rate alert is {state} before the outage")

    # From the traffic already sent: the slow Pix answers and the failed reload.
    wait_firing(prom_url, {("PayproxyRequestLatencyHigh", "payments"), ("PayproxyReloadFailed", "")}, failures)

    say("a notification for a payment nobody made: held, then dropped after state.notice_hold_ms")
    event = json.dumps({
        "id": f"evt_{sf.tag}_dropped", "object": "event", "type": "payment_intent.succeeded",
        "created": int(time.time()), "livemode": False,
        "data": {"object": {"id": f"pi_{sf.tag.replace('-', '_')}_nobody", "object": "payment_intent",
                            "amount": 1000, "amount_received": 1000, "currency": "eur",
                            "status": "succeeded", "capture_method": "automatic"}},
    }).encode()
    t = int(time.time())
    signature = hmac.new(STRIPE_LIKE_WEBHOOK_SECRET.encode(), f"{t}.".encode() + event, hashlib.sha256)
    status, body, _ = http(f"{sf.url}/webhooks/stripe-like", "POST", event,
                           {"content-type": "application/json",
                            "stripe-signature": f"t={t},v1={signature.hexdigest()}"})
    expect(failures, status == 200, f"the signed event answered {status} {body[:200]!r}, want 200 (held)")
    wait_firing(prom_url, {("PayproxyProviderNotificationDropped", "stripe-like")}, failures)
    expect(failures, metric_sum(sf.admin, "payproxy_webhook_notifications_total",
                                provider="stripe-like", result="expired") == 1,
           "payproxy_webhook_notifications_total{provider=stripe-like, result=expired} is not 1")

    say("outage: stripe-like (the only card provider) answers 503 to everything")
    set_faults(sims, "stripe-like", {"error_status": 503, "error_rate": 1.0})
    statuses = {}

    def card_payment():
        status, *_ = sf.card(1000, "DE", f"DE-OUT-{sf.seq}")
        statuses[status] = statuses.get(status, 0) + 1

    wait_firing(prom_url, {("PayproxyPaymentSuccessRateLow", "payments"),
                           ("PayproxyProviderFailureRateHigh", "stripe-like"),
                           ("PayproxyBreakerOpen", "stripe-like")}, failures, step=card_payment)
    set_faults(sims, "stripe-like", {})
    say(f"outage: {sum(statuses.values())} card payments answered {statuses}")

    say("GrabPay cuts its answers off mid-body: ambiguous attempts, settled by resend / pending")
    set_faults(sims, "grabpay", {"reset_mid_response": True})
    status, provider, *_ = sf.grabpay(4200, "sgd", "SG", "SG-4101")
    set_faults(sims, "grabpay", {})
    expect(failures, status == 502, f"a payment cut off mid-answer answered {status}, want 502 (outcome unknown)")


# --- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--payproxy", type=Path, default=REPO / "target" / "debug" / "payproxy")
    ap.add_argument("--provider-sim", type=Path, default=REPO / "target" / "debug" / "provider-sim")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--promtool", default=shutil.which("promtool") or "/usr/bin/promtool")
    ap.add_argument("--keep-logs", type=Path, help="keep the work dir (logs, configs, tsdb) here")
    args = ap.parse_args()
    # The children run in the work dir: relative paths (as scripts/test.sh passes) must not
    # depend on it.
    args.payproxy, args.provider_sim = args.payproxy.resolve(), args.provider_sim.resolve()
    args.prometheus = Path(shutil.which(args.prometheus) or args.prometheus).resolve()
    args.promtool = Path(shutil.which(args.promtool) or args.promtool).resolve()

    started = time.monotonic()
    failures = []
    procs = []
    work = Path(tempfile.mkdtemp(prefix="payproxy-observability-"))
    logs = work / "logs"
    logs.mkdir()
    try:
        for binary in (args.payproxy, args.provider_sim, args.prometheus, args.promtool):
            if not (Path(binary).is_file() and os.access(binary, os.X_OK)):
                raise SetupError(f"{binary} is missing or not executable")

        say(f"promtool check rules {RULES.relative_to(REPO)}")
        check = subprocess.run([args.promtool, "check", "rules", str(RULES)], capture_output=True,
                               text=True, timeout=60)
        print(check.stdout + check.stderr, end="")
        expect(failures, check.returncode == 0, "promtool check rules failed")

        _, sims = start_sim(args.provider_sim, logs, procs)
        storefront, admin = free_ports(2)
        config = payproxy_config(work, sims, storefront, admin)
        env = {**os.environ, "PAYPROXY_LOG": os.environ.get("PAYPROXY_LOG", "info")}
        proxy = Process("payproxy", [args.payproxy, "run", "--config", config], logs, env, work, log=say)
        procs.append(proxy)
        admin_url = f"http://127.0.0.1:{admin}"
        wait_for("payproxy admin /admin/status", START_S,
                 lambda: http(f"{admin_url}/admin/status")[0] == 200, [proxy])
        rules = rules_copy(work)
        check = subprocess.run([args.promtool, "check", "rules", str(rules)], capture_output=True,
                               text=True, timeout=60)
        if check.returncode != 0:
            raise SetupError(f"the temp copy of the rules does not check:\n{check.stdout}{check.stderr}")
        _, prom_url = start_prometheus(args.prometheus, work, logs, admin, rules, procs)
        say(f"payproxy {admin_url}, Prometheus {prom_url}, work dir {work}")

        sf = Storefront(f"http://127.0.0.1:{storefront}", admin_url)
        drive_traffic(sf, sims, work, prom_url, failures)
        check_alerts(prom_url, sf, sims, failures)
        check_panels(prom_url, failures)
        for p in procs:
            check_alive(p)
        (logs / "metrics.txt").write_bytes(http(f"{admin_url}/metrics")[1])
    except SetupError as e:
        say(f"SETUP FAILED: {e}")
        for p in procs:
            say(f"--- {p.name} stderr tail:\n{p.tail() or '(empty)'}")
        return 2
    finally:
        for p in reversed(procs):
            p.stop()
        if args.keep_logs:
            shutil.copytree(work, args.keep_logs, dirs_exist_ok=True, ignore=shutil.ignore_patterns("tsdb"))
        shutil.rmtree(work, ignore_errors=True)
    took = time.monotonic() - started
    if failures:
        say(f"FAILED ({took:.0f} s): {len(failures)} check(s):")
        for f in failures:
            print(f"  - {f}", flush=True)
        return 1
    say(f"passed in {took:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
