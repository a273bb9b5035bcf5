#!/usr/bin/env python3
"""Run the Stripe SDK suite: baseline (straight at localstripe), then through payproxy.

    python3 tests/stripe_sdk/run.py --baseline-only
    python3 tests/stripe_sdk/run.py --payproxy target/debug/payproxy [--provider-sim BIN] [-k EXPR] [--keep-logs DIR]

Standard library only, any python3 >= 3.9. Steps:
  1. a venv (PAYPROXY_SDK_VENV, default <repo>/target/stripe-sdk-venv) with the pinned
     packages; pip runs only when the pins changed or the venv is missing or broken;
  2. two localstripe servers on free 127.0.0.1 ports, in memory only (localstripe_server.py);
  3. pytest in baseline mode, STRIPE_BASE = localstripe A, then the stripe-node suite
     (node/sdk.test.mjs, the official Node SDK pinned in node/package.json and installed with
     `npm ci` into PAYPROXY_SDK_NODE, default <repo>/target/stripe-sdk-node) in the same mode;
  4. with --payproxy BIN: both servers emptied, a simulated Adyen started
     (`provider-sim --provider adyen-sim=127.0.0.1:0`, awaited on its ready line), a payproxy
     config written to a temp dir, `BIN run --config FILE` started and awaited on
     GET /admin/status, pytest then the stripe-node suite in proxy mode with STRIPE_BASE =
     payproxy's storefront listener, SIM_ADYEN = the simulator and PAYPROXY_ADMIN = payproxy's admin listener;
     payproxy's webhooks go to webhook_receiver.py (in the venv), which verifies each with
     the SDK's stripe.Webhook.construct_event and logs it to WEBHOOK_LOG for the tests; after
     the run every delivery must have verified. ls-a has a webhook_secret
     (LS_A_WEBHOOK_SECRET, given to pytest): the tests register payproxy's /webhooks/ls-a with
     it at localstripe A, which then sends payproxy its own signed events.
Every process it starts is stopped by its pid at the end (terminate, then kill). One summary
line per mode; the exit status is 0 only when every mode that ran passed (2: setup failed).
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from harness import NO_PROXY_OPENER, Process, SetupError, free_ports  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PLUGIN_DIR = REPO / "plugins" / "target" / "wasm32-wasip2" / "release"
# The compliance plugins written in Python and in JavaScript, each built by its build.sh
# (Python: with the venv's componentize-py; JavaScript: componentize-js, which build.sh
# installs with `npm ci` under target/), rebuilt when their inputs change (the stamp beside
# the component holds their digest).
PYTHON_PLUGIN_SRC = REPO / "examples" / "plugins" / "compliance-python"
PYTHON_PLUGIN = REPO / "target" / "python-plugins" / "compliance_python.wasm"
JS_PLUGIN_SRC = REPO / "examples" / "plugins" / "compliance-js"
JS_PLUGIN = REPO / "target" / "js-plugins" / "compliance_js.wasm"
PLUGIN_BUILD_S = 900
# Where payproxy keeps compiled plugins between runs (the Python one is an 18 MB component).
PLUGIN_CACHE = REPO / "target" / "stripe-sdk-plugin-cache"
# Who the Python and JavaScript plugins refuse (their config in payproxy_config).
BLOCKED_EMAIL_DOMAIN = "blocked.example"
BLOCKED_CUSTOMER = "cus_js_blocked"

# What the venv must hold. stripe: the SDK major version under test. localstripe: exact,
# because the tests' baseline expectations (and the skips) follow its behaviour. aiohttp:
# localstripe's server; kept below 4 so an API break cannot slip in unnoticed.
# The key the storefront (the SDK) sends; payproxy's route accepts it by its SHA-256.
STOREFRONT_KEY = "sk_test_storefront"
# The webhook endpoint's signing secret: payproxy reads it from PAYPROXY_SDK_WHSEC, the
# receiver from WEBHOOK_SECRET.
WEBHOOK_SECRET = "whsec_payproxy_sdk_suite_5c1e"
# ls-a's `webhook_secret`: what payproxy verifies localstripe A's own signed events with
# (POST /webhooks/ls-a). The tests get it as LS_A_WEBHOOK_SECRET and register it, with that
# URL, as a webhook endpoint at localstripe A.
LS_A_WEBHOOK_SECRET = "whsec_localstripe_a_sdk_suite_7d2b"
# componentize-py: builds the Python compliance plugin of examples/plugins/compliance-python,
# which proxy mode puts in the route (exact: its CPython and bindings are in the component).
PINS = ("stripe>=16,<17", "localstripe==1.15.10", "aiohttp>=3.9,<4", "pytest>=8,<10",
        "componentize-py==0.25.1")
PIN_STAMP = ".payproxy-stripe-sdk-pins"

LOCALSTRIPE_START_S = 30  # until a localstripe answers HTTP
SIM_START_S = 30  # until provider-sim prints its ready line
# Until payproxy's admin answers: it compiles the wasm plugins first, the first time the
# Python and JavaScript ones too (30 MB of components; about 35 s under load, debug build).
PAYPROXY_START_S = 240
PYTEST_TIMEOUT_S = 900  # one pytest run
NODE_TIMEOUT_S = 300  # one stripe-node run
NPM_TIMEOUT_S = 600
NODE_DIR = HERE / "node"
NODE_FILES = ("package.json", "package-lock.json", "sdk.test.mjs")
PIP_TIMEOUT_S = 900
TAIL_LINES = 40


def say(message: str) -> None:
    print(f"[stripe-sdk] {message}", flush=True)


def loopback_env() -> dict:
    """The environment for the servers and pytest: no HTTP proxy for loopback traffic."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy")}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost,::1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# --- the venv ---------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


VERSIONS_SCRIPT = r"""
import importlib.metadata as m, json, sys
import aiohttp, localstripe, pytest, stripe
print(json.dumps({p: m.version(p) for p in ("stripe", "localstripe", "aiohttp", "pytest")}))
"""


def installed_versions(python: Path):
    """{package: version} when the venv imports everything it needs, else None."""
    if not python.exists():
        return None
    try:
        out = subprocess.run(
            [str(python), "-c", VERSIONS_SCRIPT], capture_output=True, text=True, timeout=60, check=True
        ).stdout
        return json.loads(out.strip().splitlines()[-1])
    except (subprocess.SubprocessError, OSError, ValueError, IndexError):
        return None


def plugin_inputs(files, pins: str) -> str:
    """The digest of what a plugin is built from: `files` (with the contract's) and `pins`."""
    digest = hashlib.sha256()
    wit = REPO / "wit" / "payproxy-plugin@0.4.0"
    for path in [*files, *sorted(wit.glob("*.wit"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(pins.encode())
    return digest.hexdigest()


def ensure_plugin(what: str, src: Path, out: Path, inputs: list, pins: str, env: dict) -> Path:
    """`src`'s build.sh run into `out`, unless `out` is up to date."""
    stamp = out.with_suffix(".inputs")
    wanted = plugin_inputs([src / name for name in inputs], pins)
    if out.is_file() and stamp.is_file() and stamp.read_text() == wanted:
        say(f"{what} plugin {out}: up to date")
        return out
    say(f"{what} plugin: building {out}")
    # In a process group of its own: a build that runs past its time is stopped whole (npm,
    # node, componentize-py), not just its shell.
    build = subprocess.Popen(["bash", str(src / "build.sh"), str(out)], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                             start_new_session=True)
    try:
        output, _ = build.communicate(timeout=PLUGIN_BUILD_S)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)
        build.communicate()
        raise SetupError(f"building the {what} plugin took more than {PLUGIN_BUILD_S} s") from None
    except BaseException:
        os.killpg(build.pid, signal.SIGKILL)
        build.communicate()
        raise
    if build.returncode != 0:
        tail = "\n".join(output.splitlines()[-TAIL_LINES:])
        raise SetupError(f"building the {what} plugin failed (exit {build.returncode}):\n{tail}")
    stamp.write_text(wanted)
    return out


def ensure_language_plugins(venv: Path) -> None:
    """The Python and JavaScript compliance plugins proxy mode puts in the route."""
    ensure_plugin("python", PYTHON_PLUGIN_SRC, PYTHON_PLUGIN, ["app.py", "build.sh"], " ".join(PINS),
                  dict(os.environ, COMPONENTIZE_PY=str(venv / "bin" / "componentize-py")))
    ensure_plugin("javascript", JS_PLUGIN_SRC, JS_PLUGIN,
                  ["app.js", "build.mjs", "build.sh", "package.json", "package-lock.json"], "",
                  dict(os.environ))


def check_versions(versions: dict) -> None:
    if not versions["stripe"].startswith("16.") or versions["localstripe"] != "1.15.10":
        raise SetupError(f"the venv holds {versions}, not the pins {PINS}")


def ensure_venv(venv: Path) -> dict:
    python = venv_python(venv)
    wanted = "\n".join(PINS) + "\n"
    stamp = venv / PIN_STAMP
    versions = installed_versions(python)
    if versions and stamp.exists() and stamp.read_text() == wanted:
        check_versions(versions)
        say(f"venv {venv}: up to date ({versions_text(versions)})")
        return versions
    if venv.exists() and not (venv / "pyvenv.cfg").exists() and any(venv.iterdir()):
        raise SetupError(f"{venv} exists and is not a venv; set PAYPROXY_SDK_VENV to another path")
    if versions is None:
        say(f"venv {venv}: creating with {sys.executable} ({sys.version.split()[0]})")
        venv.parent.mkdir(parents=True, exist_ok=True)
        run_step([sys.executable, "-m", "venv", "--clear", str(venv)], "python -m venv", 300)
    say(f"venv {venv}: pip install {' '.join(PINS)}")
    run_step(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet", *PINS],
        "pip install",
        PIP_TIMEOUT_S,
    )
    versions = installed_versions(python)
    if versions is None:
        raise SetupError(f"after pip install, {python} still cannot import stripe, localstripe and pytest")
    check_versions(versions)
    stamp.write_text(wanted)
    say(f"venv {venv}: installed {versions_text(versions)}")
    return versions


def ensure_node_modules(target: Path) -> str:
    """stripe-node as pinned in node/package-lock.json, installed with `npm ci` into `target`
    (only when the lock changed or the install is missing); the suite's files are copied there
    so that `import 'stripe'` resolves to it. Returns the installed SDK's version."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise SetupError(f"{tool} not found: the stripe-node suite needs Node.js >= 20 with npm")
    target.mkdir(parents=True, exist_ok=True)
    lock = (NODE_DIR / "package-lock.json").read_bytes()
    stamp = target / ".payproxy-stripe-node-lock"
    installed = target / "node_modules" / "stripe" / "package.json"
    for name in NODE_FILES:
        shutil.copy2(NODE_DIR / name, target / name)
    if not (installed.exists() and stamp.exists() and stamp.read_bytes() == lock):
        say(f"stripe-node: npm ci in {target}")
        run_step(["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(target)], "npm ci", NPM_TIMEOUT_S)
        stamp.write_bytes(lock)
    try:
        return json.loads(installed.read_text())["version"]
    except (OSError, ValueError, KeyError) as e:
        raise SetupError(f"stripe-node is not installed in {target}: {e}") from None


def tap_counts(text: str) -> dict:
    """The closing counts of a `node --test` TAP report (`# pass N` ...), as junit_counts'."""
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    names = {"tests": "tests", "fail": "failures", "cancelled": "errors", "skipped": "skipped"}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "#" and parts[1] in names and parts[2].isdigit():
            counts[names[parts[1]]] = int(parts[2])
    return counts


def run_node(target: Path, mode: str, base: str, url_a: str, url_b: str, logs: Path, env: dict) -> dict:
    """The stripe-node suite in `mode`, against `base`; its TAP report in logs/node-MODE.tap."""
    env = dict(env, MODE=mode, STRIPE_BASE=base, PROVIDER_A=url_a, PROVIDER_B=url_b)
    env.setdefault("STRIPE_KEY", STOREFRONT_KEY)
    say(f"stripe-node, {mode} mode: STRIPE_BASE={base}")
    report = logs / f"node-{mode}.tap"
    started = time.monotonic()
    argv = ["node", "--test", "--test-reporter=tap", "sdk.test.mjs"]
    # Its own process group: `node --test` runs the file in a child process, and a timeout
    # stops both.
    proc = subprocess.Popen(argv, env=env, cwd=str(target), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        text, _ = proc.communicate(timeout=NODE_TIMEOUT_S)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        text, _ = proc.communicate()
        code = None
    report.write_text(text)
    counts = tap_counts(text)
    if code != 0:
        # What failed, as node reports it (the whole report is in the logs).
        failing = [line for line in text.splitlines() if line.startswith(("not ok", "  not ok"))]
        say(f"stripe-node, {mode} mode, failed: {failing or text.splitlines()[-TAIL_LINES:]}")
        for line in text.splitlines():
            if "error:" in line or "AssertionError" in line or "expected" in line or "actual" in line:
                print(f"    {line.strip()}", flush=True)
    result = {"mode": f"node-{mode}", "code": code, "seconds": time.monotonic() - started}
    result.update(counts)
    return result


def run_step(argv, what: str, timeout: int) -> None:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{what} did not finish within {timeout} s") from None
    except OSError as e:
        raise SetupError(f"{what}: {e}") from None
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-TAIL_LINES:])
        hint = " (on Debian/Ubuntu: apt-get install python3-venv)" if "venv" in what else ""
        raise SetupError(f"{what} failed with exit code {done.returncode}{hint}:\n{tail}")


def versions_text(versions: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in versions.items())


# --- processes ----------------------------------------------------------------------------


def http_status(url: str, method: str = "GET", headers=None, timeout: float = 2.0):
    """The HTTP status of one request, or None when nothing answered."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with NO_PROXY_OPENER.open(req, timeout=timeout) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def wait_until_answers(proc: Process, url: str, seconds: float, headers=None, want: int = 200) -> None:
    """Poll url until it answers `want`; bounded by time and count, and fails fast if proc exits."""
    deadline = time.monotonic() + seconds
    last = None
    for _ in range(int(seconds * 10) + 1):
        if proc.exited() is not None:
            raise SetupError(f"{proc.name} exited before {url} answered. {proc.died_message()}")
        last = http_status(url, headers=headers, timeout=1.0)
        if last == want:
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    raise SetupError(
        f"{proc.name} (pid {proc.popen.pid}) did not answer {url} with {want} within {seconds:.0f} s "
        f"(last: {last or 'no answer'}); last lines of its stderr:\n{proc.tail() or '(empty)'}"
    )


def start_localstripe(name: str, python: Path, logs: Path, env: dict, processes: list) -> tuple:
    """A localstripe on a free port: (Process, URL). A port lost to a race gets 3 tries."""
    for attempt in range(3):
        (port,) = free_ports(1)
        argv = [python, HERE / "localstripe_server.py", "--port", port]
        proc = Process(f"{name}-{attempt}" if attempt else name, argv, logs, env, logs, log=say)
        processes.append(proc)  # stopped at the end whatever happens next
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_answers(
                proc, f"{url}/v1/payment_intents?limit=1", LOCALSTRIPE_START_S,
                headers={"Authorization": "Bearer sk_test_readiness"},
            )
            return proc, url
        except SetupError:
            proc.stop()
            if "address already in use" not in proc.tail().lower() or attempt == 2:
                raise
            say(f"{name}: port {port} was taken meanwhile; trying another")
    raise AssertionError("unreachable")


def flush_localstripe(url: str) -> None:
    """Empty a localstripe's store (its DELETE /_config/data)."""
    status = http_status(f"{url}/_config/data", method="DELETE", timeout=10)
    if status != 200:
        raise SetupError(f"DELETE {url}/_config/data answered {status}")


# --- provider-sim ----------------------------------------------------------------------------

SIM_NAME = "adyen-sim"
# Simulated local-method providers (Pix in Brazil, DANA in Indonesia): their payments finish
# later, and payproxy learns of it by their signed notifications, as it does from Adyen.
PIX_NAME = "pix-sim"
DANA_NAME = "dana-sim"
SIM_NAMES = (SIM_NAME, PIX_NAME, DANA_NAME)
# What each simulated provider signs its notifications with (Adyen: its HMAC key, hex), and
# the credential its dialect verifies them with.
NOTIFY_SECRETS = {
    SIM_NAME: ("hmac_key", "44782DEF547AAA06C910C43932B1EB0C71FC68D9D0C057550C48EC2ACF6BA056"),
    PIX_NAME: ("webhook_secret", "pix-sim-webhook-secret"),
    DANA_NAME: ("webhook_secret", "dana-sim-webhook-secret"),
}
SIM_READY = "provider-sim ready:"


def check_sim_inputs(binary: Path) -> None:
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise SetupError(
            f"provider-sim binary {binary} is missing or not executable "
            "(build it: cargo build -p provider-sim, or pass --provider-sim BIN)"
        )


def sim_ready_urls(line: str):
    """The simulated providers' URLs from the simulator's ready line
    `provider-sim ready: adyen-sim=127.0.0.1:PORT pix-sim=127.0.0.1:PORT …`, when all are there."""
    if not line.startswith(SIM_READY):
        return None
    urls = {}
    for item in line[len(SIM_READY):].split():
        name, _, addr = item.partition("=")
        host, _, port = addr.rpartition(":")
        if name in SIM_NAMES and host == "127.0.0.1" and port.isdigit():
            urls[name] = f"http://127.0.0.1:{port}"
    return urls if len(urls) == len(SIM_NAMES) else None


def start_provider_sim(binary: Path, logs: Path, env: dict, processes: list) -> tuple:
    """The simulated Adyen, Pix and DANA on ports of their own choosing: (Process, {name: URL}).
    It prints one ready line on stdout once it listens; that line is awaited (bounded), then
    its control API."""
    check_sim_inputs(binary)
    args = [binary] + [a for name in SIM_NAMES for a in ("--provider", f"{name}=127.0.0.1:0")]
    proc = Process("provider-sim", args, logs, env, logs, log=say)
    processes.append(proc)
    deadline = time.monotonic() + SIM_START_S
    url = None
    for _ in range(SIM_START_S * 10 + 1):
        try:
            lines = proc.stdout_path.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        urls = next((u for u in map(sim_ready_urls, lines) if u), None)
        if urls:
            break
        if proc.exited() is not None:
            raise SetupError(f"provider-sim exited before its ready line. {proc.died_message()}")
        if time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    if not urls:
        raise SetupError(
            f"provider-sim (pid {proc.popen.pid}) printed no '{SIM_READY} {SIM_NAME}=… …' "
            f"line within {SIM_START_S} s; its stdout:\n{proc.tail('stdout') or '(empty)'}\n"
            f"its stderr:\n{proc.tail() or '(empty)'}"
        )
    for url in urls.values():
        wait_until_answers(proc, f"{url}/__sim/health", 10)
    say(f"provider-sim ready: {urls}")
    return proc, urls


def point_notifications_at(sims: dict, storefront: str) -> None:
    """Each simulated provider sends its signed notifications to payproxy's /webhooks/NAME."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    for name, url in sims.items():
        body = json.dumps({"url": f"{storefront}/webhooks/{name}", "secret": NOTIFY_SECRETS[name][1]}).encode()
        req = urllib.request.Request(f"{url}/__sim/webhooks", data=body, method="POST",
                                     headers={"content-type": "application/json"})
        with opener.open(req, timeout=10) as resp:
            if resp.status != 200:
                raise SetupError(f"POST {url}/__sim/webhooks: HTTP {resp.status}")


# --- payproxy -------------------------------------------------------------------------------


def start_webhook_receiver(python: Path, logs: Path, workdir: Path, env: dict, processes: list) -> tuple:
    """webhook_receiver.py on a free port: (Process, endpoint URL, log path). A port lost to a
    race gets 3 tries."""
    log = workdir / "webhooks.jsonl"
    for attempt in range(3):
        (port,) = free_ports(1)
        name = f"webhook-receiver-{attempt}" if attempt else "webhook-receiver"
        proc = Process(name, [python, HERE / "webhook_receiver.py", "--port", port, "--log", log], logs,
                       dict(env, WEBHOOK_SECRET=WEBHOOK_SECRET), logs, log=say)
        processes.append(proc)
        try:
            wait_until_answers(proc, f"http://127.0.0.1:{port}/health", LOCALSTRIPE_START_S)
            return proc, f"http://127.0.0.1:{port}/hook", log
        except SetupError:
            proc.stop()
            if "address already in use" not in proc.tail().lower() or attempt == 2:
                raise
            say(f"{name}: port {port} was taken meanwhile; trying another")
    raise AssertionError("unreachable")


def check_webhooks(path: Path):
    """Every delivery the receiver got verified with construct_event. Returns what is wrong,
    or None."""
    try:
        lines = [json.loads(line) for line in path.read_text().splitlines()]
    except (OSError, ValueError) as e:
        return f"webhook log {path}: {e}"
    bad = [line for line in lines if not line.get("verified")]
    if bad:
        return f"{len(bad)} of {len(lines)} deliveries did not verify, first: {bad[0]}"
    if not lines:
        return "no webhook delivery arrived"
    say(f"webhooks: {len(lines)} deliveries, all verified, types {sorted({l['type'] for l in lines})}")
    return None


def payproxy_config(workdir: Path, storefront: int, admin: int, url_a: str, url_b: str, sims: dict,
                    webhook_url: str) -> dict:
    plugin = lambda name: str(PLUGIN_DIR / f"{name}.wasm")  # noqa: E731
    notify = lambda name: dict([NOTIFY_SECRETS[name]])  # noqa: E731
    return {
        "listeners": [{"addr": f"127.0.0.1:{storefront}"}],
        "admin": {"addr": f"127.0.0.1:{admin}"},
        "state": {"kind": "redb", "path": str(workdir / "payproxy.redb")},
        "log": {"audit_path": str(workdir / "audit.jsonl")},
        "reload": {"watch": False},
        "plugin_host": {"compile_cache_dir": str(PLUGIN_CACHE)},
        "plugins": {
            "stripe": {"path": plugin("dialect_stripe"), "role": "dialect"},
            # Regional teams' rules in Python and in JavaScript (examples/plugins/
            # compliance-python, compliance-js): every payment the suite confirms goes
            # through both.
            "blocklist": {
                "path": str(PYTHON_PLUGIN),
                "role": "compliance",
                "config": {"blocked_email_domains": [BLOCKED_EMAIL_DOMAIN]},
            },
            "blocklist-js": {
                "path": str(JS_PLUGIN),
                "role": "compliance",
                "config": {"blocked_customers": [BLOCKED_CUSTOMER]},
            },
            "limits": {
                "path": plugin("compliance_limits"),
                "role": "compliance",
                # plugins/compliance-limits/src/config.rs: limits[] {name, method, currency,
                # country, min, max}, blocked_countries, taxes, merchant_country.
                "config": {
                    "limits": [{"name": "eur-card-max", "method": "card", "currency": "EUR", "max": 1000000}],
                    "blocked_countries": ["KP"],
                },
            },
            "adyen": {"path": plugin("dialect_adyen"), "role": "dialect",
                      "config": {"merchant_account": "PayproxyTest"}},
            "pix": {"path": plugin("dialect_pix"), "role": "dialect",
                    "config": {"pix_key": "payproxy-test@example.com.br"}},
            "dana": {"path": plugin("dialect_dana"), "role": "dialect",
                     "config": {"order_title": "payproxy SDK suite"}},
            # plugins/router-regional/src/config.rs: rules[] {name, match, providers | reject},
            # default. card_country is the card's issuing country, which the host learns from
            # the home provider's PaymentMethod (localstripe's pm_card_visa: FR).
            "router": {
                "path": plugin("router_regional"),
                "role": "router",
                "config": {
                    "rules": [{
                        "name": "br-pix",
                        "match": {"country": ["BR"], "payment_method": ["pix"]},
                        "providers": [{"name": PIX_NAME}],
                    }, {
                        "name": "id-dana",
                        "match": {"country": ["ID"], "payment_method": ["dana"]},
                        "providers": [{"name": DANA_NAME}],
                    }, {
                        "name": "nl-ideal",
                        "match": {"country": ["NL"], "payment_method": ["ideal"]},
                        "providers": [{"name": SIM_NAME}],
                    }, {
                        "name": "fr-cards-for-de-shoppers",
                        "match": {"country": ["DE"], "card_country": ["FR"]},
                        "reject": {"status": 402, "code": "card_country_mismatch",
                                   "message": "cards issued in France are not accepted for shoppers in Germany"},
                    }],
                    # adyen-sim first on purpose: a Stripe token must still never go there.
                    "default": [SIM_NAME, "ls-a", "ls-b"],
                },
            },
        },
        "providers": {
            "ls-a": {"url": url_a, "dialect": "stripe", "issuer": "stripe-acct",
                     "credentials": {"api_key": "sk_test_provider_a", "webhook_secret": LS_A_WEBHOOK_SECRET}},
            "ls-b": {"url": url_b, "dialect": "stripe", "credentials": {"api_key": "sk_test_provider_b"}},
            SIM_NAME: {"url": sims[SIM_NAME], "dialect": "adyen",
                       "credentials": {"api_key": "test-adyen-key", **notify(SIM_NAME)}},
            PIX_NAME: {"url": sims[PIX_NAME], "dialect": "pix",
                       "credentials": {"api_key": "test-pix-key", **notify(PIX_NAME)}},
            DANA_NAME: {"url": sims[DANA_NAME], "dialect": "dana",
                        "credentials": {"client_id": "sdk-client", "merchant_id": "sdk-merchant",
                                        **notify(DANA_NAME)}},
        },
        "routes": [{"name": "stripe", "path_prefix": "/v1", "dialect": "stripe", "home": "ls-a",
                    # The storefront's key, by digest: the SDK authenticates as it does at Stripe.
                    "storefront_keys": [{"sha256": hashlib.sha256(STOREFRONT_KEY.encode()).hexdigest()}],
                    "plugins": ["limits", "blocklist", "blocklist-js", "router"],
                    "providers": [SIM_NAME, "ls-a", "ls-b", PIX_NAME, DANA_NAME],
                    "webhooks": {"endpoints": [{"url": webhook_url, "secret": {"env": "PAYPROXY_SDK_WHSEC"}}],
                                 "retry": {"initial_ms": 200, "max_ms": 2000}}}],
        "webhook_delivery": {"poll_ms": 50},
    }


def check_audit(path: Path):
    """The audit trail the official SDK's requests left: every line a JSON payment decision,
    approvals, refusals and idempotent replays among them, no card number or key in it.
    Returns what is wrong, or None."""
    try:
        text = path.read_text()
    except OSError as e:
        return f"audit file {path}: {e}"
    lines = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            lines.append(json.loads(line))
        except ValueError as e:
            return f"audit line {n} is not JSON ({e}): {line[:200]}"
    if any(l.get("event") != "payment" or not l.get("route") for l in lines):
        return "an audit line without event=payment and a route"
    decisions = {l.get("decision") for l in lines}
    missing = {"approved", "refused", "replayed"} - decisions
    if missing:
        return f"no audit line with decision {sorted(missing)} (saw {sorted(d for d in decisions if d)})"
    for secret in ("4242424242424242", "sk_test_"):
        if secret in text:
            return f"{secret!r} in the audit file"
    say(f"audit: {len(lines)} lines, decisions {sorted(d for d in decisions if d)}")
    return None


def check_payproxy_inputs(binary: Path) -> None:
    """The binary and the plugins the config names exist: checked before anything starts."""
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise SetupError(f"payproxy binary {binary} is missing or not executable (build it: cargo build -p payproxy)")
    wanted = ("dialect_stripe", "compliance_limits", "dialect_adyen", "dialect_pix", "dialect_dana",
              "router_regional")
    missing = [f"{name}.wasm" for name in wanted if not (PLUGIN_DIR / f"{name}.wasm").is_file()]
    if missing:
        raise SetupError(f"plugins {missing} missing in {PLUGIN_DIR} (build them: scripts/build-plugins.sh)")


def start_payproxy(binary: Path, logs: Path, workdir: Path, env: dict, url_a: str, url_b: str, sims: dict,
                   webhook_url: str, processes: list) -> tuple:
    """payproxy in front of both localstripes and the simulated Adyen and Pix: (Process, storefront
    URL, admin URL)."""
    check_payproxy_inputs(binary)
    storefront, admin = free_ports(2)
    config = workdir / "payproxy.json"
    config.write_text(json.dumps(payproxy_config(workdir, storefront, admin, url_a, url_b, sims, webhook_url),
                                 indent=2) + "\n")
    say(f"payproxy config: {config}")
    env = dict(env, PAYPROXY_SDK_WHSEC=WEBHOOK_SECRET)
    env.setdefault("PAYPROXY_LOG", "info")
    proc = Process("payproxy", [binary, "run", "--config", config], logs, env, workdir, log=say)
    processes.append(proc)
    wait_until_answers(proc, f"http://127.0.0.1:{admin}/admin/status", PAYPROXY_START_S)
    # The admin answers once the server runs; the storefront listener must accept too.
    deadline = time.monotonic() + 10
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", storefront), timeout=1).close()
            break
        except OSError:
            if proc.exited() is not None:
                raise SetupError(proc.died_message()) from None
            if time.monotonic() >= deadline:
                raise SetupError(f"payproxy's storefront listener 127.0.0.1:{storefront} does not accept connections") from None
            time.sleep(0.1)
    say(f"payproxy ready: storefront http://127.0.0.1:{storefront}, admin http://127.0.0.1:{admin}")
    return proc, f"http://127.0.0.1:{storefront}", f"http://127.0.0.1:{admin}"


# --- pytest -----------------------------------------------------------------------------------


def run_pytest(python: Path, mode: str, base: str, url_a: str, url_b: str, k, logs: Path, env: dict,
               extra_env=None) -> dict:
    junit = logs / f"junit-{mode}.xml"
    argv = [str(python), "-m", "pytest", str(HERE), "-q", "-rfEs", "--tb=short", f"--junitxml={junit}", "-o", "junit_family=xunit2"]
    if k:
        argv += ["-k", k]
    env = dict(env, MODE=mode, STRIPE_BASE=base, PROVIDER_A=url_a, PROVIDER_B=url_b)
    # Only what this mode has: a SIM_ADYEN or PAYPROXY_ADMIN from the caller's shell never leaks in.
    for name in ("SIM_ADYEN", "PAYPROXY_ADMIN", "WEBHOOK_LOG", "LS_A_WEBHOOK_SECRET"):
        env.pop(name, None)
    env.update(extra_env or {})
    env.setdefault("STRIPE_KEY", STOREFRONT_KEY)
    extra = "".join(f" {k}={v}" for k, v in (extra_env or {}).items())
    say(f"pytest, {mode} mode: STRIPE_BASE={base} PROVIDER_A={url_a} PROVIDER_B={url_b}{extra}")
    started = time.monotonic()
    try:
        code = subprocess.run(argv, env=env, cwd=str(HERE), stdin=subprocess.DEVNULL, timeout=PYTEST_TIMEOUT_S).returncode
    except subprocess.TimeoutExpired:
        code = None
    result = {"mode": mode, "code": code, "seconds": time.monotonic() - started}
    result.update(junit_counts(junit))
    return result


def junit_counts(path: Path) -> dict:
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError):
        return counts
    for suite in [root] if root.tag == "testsuite" else root.iter("testsuite"):
        for key in counts:
            counts[key] += int(suite.get(key, 0))
    return counts


def summary_line(r: dict) -> str:
    """`MODE: N passed, N failed, N skipped`, the plain closing-line shape; errors and a
    pytest run that failed without a failing test (timeout, nothing selected) count as failed."""
    passed = r["tests"] - r["failures"] - r["errors"] - r["skipped"]
    failed = r["failures"] + r["errors"]
    if r["code"] != 0 and failed == 0:
        failed = 1
    return f"{r['mode']}: {passed} passed, {failed} failed, {r['skipped']} skipped"


def verdict_line(r: dict) -> str:
    if r["code"] is None:
        limit = NODE_TIMEOUT_S if r["mode"].startswith("node-") else PYTEST_TIMEOUT_S
        how = f"FAILED: timed out after {limit} s"
    elif r["code"] == 0:
        how = "PASSED"
    elif r["code"] == 5 and not r["mode"].startswith("node-"):
        how = "FAILED: no test selected"
    else:
        runner = "node --test" if r["mode"].startswith("node-") else "pytest"
        how = f"FAILED: {runner} exit {r['code']}"
    return f"{r['mode']} {how} in {r['seconds']:.1f}s"


# --- main -------------------------------------------------------------------------------------


def parse_args():
    p = argparse.ArgumentParser(description="Run the Stripe SDK suite against localstripe and through payproxy.")
    p.add_argument("--payproxy", metavar="BIN", type=Path, help="payproxy binary: also run the suite through it")
    p.add_argument("--provider-sim", metavar="BIN", type=Path,
                   help="provider-sim binary for the simulated Adyen in proxy mode "
                        "(default with --payproxy: <repo>/target/debug/provider-sim)")
    p.add_argument("--baseline-only", action="store_true", help="run only the baseline (straight at localstripe)")
    p.add_argument("-k", metavar="EXPR", help="pytest -k expression")
    p.add_argument("--keep-logs", metavar="DIR", type=Path, help="copy logs, configs and junit files here")
    return p.parse_args()


def on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main() -> int:
    args = parse_args()
    venv = Path(os.environ.get("PAYPROXY_SDK_VENV") or REPO / "target" / "stripe-sdk-venv").resolve()
    binary = args.payproxy.resolve() if args.payproxy else None
    sim_binary = (args.provider_sim or REPO / "target" / "debug" / "provider-sim").resolve()
    # A SIGTERM (e.g. a CI timeout) unwinds like Ctrl-C, so the finally below stops everything.
    signal.signal(signal.SIGTERM, on_sigterm)

    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="payproxy-stripe-sdk-"))
    logs = workdir / "logs"
    logs.mkdir()
    processes = []
    results = []
    modes_skipped = []
    failed_setup = None
    interrupted = False
    mode = "baseline"  # the mode being set up or run, for the summary when setup fails
    try:
        if binary is not None and not args.baseline_only:
            check_payproxy_inputs(binary)
            check_sim_inputs(sim_binary)
        versions = ensure_venv(venv)
        python = venv_python(venv)
        if binary is not None and not args.baseline_only:
            ensure_language_plugins(venv)
        env = loopback_env()
        proc_a, url_a = start_localstripe("localstripe-a", python, logs, env, processes)
        proc_b, url_b = start_localstripe("localstripe-b", python, logs, env, processes)
        say(f"localstripe {versions['localstripe']}: A {url_a}, B {url_b}")

        results.append(run_pytest(python, "baseline", url_a, url_a, url_a, args.k, logs, env))
        node = None
        if args.k is None:
            node = Path(os.environ.get("PAYPROXY_SDK_NODE") or REPO / "target" / "stripe-sdk-node").resolve()
            say(f"stripe-node {ensure_node_modules(node)} on node {subprocess.run(['node', '--version'], capture_output=True, text=True).stdout.strip()}")
            results.append(run_node(node, "baseline", url_a, url_a, url_a, logs, env))
        else:
            modes_skipped.append("node: not run (-k selects pytest tests only)")

        if args.baseline_only or binary is None:
            modes_skipped.append("proxy: not run (" + ("--baseline-only" if args.baseline_only else "no --payproxy BIN") + ")")
        else:
            mode = "proxy"
            for proc, url in ((proc_a, url_a), (proc_b, url_b)):
                if proc.exited() is not None:
                    raise SetupError(proc.died_message())
                flush_localstripe(url)
            sim, sims = start_provider_sim(sim_binary, logs, env, processes)
            receiver, webhook_url, webhook_log = start_webhook_receiver(python, logs, workdir, env, processes)
            payproxy, storefront, admin = start_payproxy(binary, logs, workdir, env, url_a, url_b, sims,
                                                         webhook_url, processes)
            point_notifications_at(sims, storefront)
            results.append(run_pytest(python, "proxy", storefront, url_a, url_b, args.k, logs, env,
                                      {"SIM_ADYEN": sims[SIM_NAME], "SIM_PIX": sims[PIX_NAME],
                                       "SIM_DANA": sims[DANA_NAME], "PAYPROXY_ADMIN": admin,
                                       "WEBHOOK_LOG": str(webhook_log),
                                       "LS_A_WEBHOOK_SECRET": LS_A_WEBHOOK_SECRET}))
            proxy_result = results[-1]
            if node is not None:
                results.append(run_node(node, "proxy", storefront, url_a, url_b, logs, env))
            problem = check_webhooks(webhook_log)
            if problem:
                say(f"webhooks: {problem}")
                proxy_result["code"] = proxy_result["code"] or 1
            for proc in (payproxy, sim, receiver):
                if proc.exited() is not None:
                    say(f"{proc.name} died during the proxy run. {proc.died_message()}")
                    proxy_result["code"] = proxy_result["code"] or 1
            # Only the whole suite makes every kind of decision.
            if args.k is None:
                problem = check_audit(workdir / "audit.jsonl")
                if problem:
                    say(f"audit trail: {problem}")
                    proxy_result["code"] = proxy_result["code"] or 1
    except SetupError as e:
        failed_setup = str(e)
    except KeyboardInterrupt:
        interrupted = True
        failed_setup = "SIGINT or SIGTERM: stopped everything it had started"
    finally:
        for proc in reversed(processes):
            try:
                proc.stop()
            except Exception as e:  # keep stopping the others
                say(f"stopping {proc.name}: {e}")
        if args.keep_logs:
            args.keep_logs.mkdir(parents=True, exist_ok=True)
            for item in workdir.rglob("*"):
                if item.is_file() and item.suffix != ".redb":
                    shutil.copy2(item, args.keep_logs / item.name)
            say(f"logs kept in {args.keep_logs}")
        shutil.rmtree(workdir, ignore_errors=True)

    if failed_setup:
        say(f"{'interrupted' if interrupted else 'setup failed'}: {failed_setup}")
    for r in results:
        say(verdict_line(r))
    say(f"total {time.monotonic() - started:.1f}s")
    for line in modes_skipped:
        print(line, flush=True)
    for r in results:
        print(summary_line(r), flush=True)
    if failed_setup and mode not in [r["mode"] for r in results]:
        print(f"{mode}: not run ({'interrupted' if interrupted else 'setup failed, see above'})", flush=True)
    if failed_setup:
        return 2
    return 0 if results and all(r["code"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
