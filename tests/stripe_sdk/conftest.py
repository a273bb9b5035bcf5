"""Shared setup for the Stripe SDK suite (see README.md; run it with run.py).

Environment (run.py sets all of it):
  STRIPE_BASE   base URL the SDK talks to: localstripe (baseline) or payproxy's storefront (proxy)
  STRIPE_KEY    API key the storefront uses; default sk_test_storefront
  PROVIDER_A    URL of the first localstripe server  } in baseline mode both are the one
  PROVIDER_B    URL of the second localstripe server } localstripe that STRIPE_BASE names
  PROVIDER_KEY  key for reading the providers directly; default sk_test_direct_reader
  MODE          baseline | proxy
  SIM_ADYEN       proxy mode: URL of provider-sim's simulated Adyen (its /__sim/ control API)
  SIM_PIX         proxy mode: URL of provider-sim's simulated Pix, which notifies payproxy
  SIM_DANA        proxy mode: URL of provider-sim's simulated DANA, which notifies payproxy
  PAYPROXY_ADMIN  proxy mode: URL of payproxy's admin listener (GET /metrics)
  WEBHOOK_LOG     proxy mode: the JSON-lines log of webhook_receiver.py (each delivery,
                  verified or not by stripe.Webhook.construct_event)
  LS_A_WEBHOOK_SECRET  proxy mode: ls-a's webhook_secret in payproxy's config, what payproxy
                  verifies localstripe A's signed events with at POST /webhooks/ls-a

SDK settings, fixed here so every run behaves the same:
  * stripe.max_network_retries = 0: the SDK never resends a request by itself, so each test
    call is exactly one HTTP request and an error surfaces as it came (the SDK's own default
    for the global client is 2 retries, which would hide a 409/5xx and could double-send).
  * stripe.enable_telemetry = False: no X-Stripe-Client-Telemetry header carrying timings of
    earlier requests, and no platform string in the user agent.
  * a requests session with trust_env = False: HTTP(S)_PROXY variables never redirect the
    loopback traffic; timeouts of 5 s (connect) and 30 s (read) bound every call.
Every POST still carries an Idempotency-Key: the SDK sends a random one when the test
gives none (that is the SDK's behaviour, not a setting).
"""

import collections
import hashlib
import ipaddress
import json
import os
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import requests
import stripe

MODES = ("baseline", "proxy")
RUN_ID = uuid.uuid4().hex[:10]
# Bounds for every paging loop against a provider: 100 items a page, at most 50 pages.
PAGE_LIMIT = 100
MAX_PAGES = 50
HTTP_TIMEOUT_S = 30


def _loopback_url(name: str, url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    ok = host == "localhost"
    if not ok:
        try:
            ok = ipaddress.ip_address(host).is_loopback
        except ValueError:
            ok = False
    if parts.scheme not in ("http", "https") or not ok:
        raise pytest.UsageError(f"{name}={url!r}: only http(s) URLs on a loopback address are allowed")
    return url.rstrip("/")


class Settings:
    """The environment, read and checked once."""

    def __init__(self) -> None:
        missing = [v for v in ("STRIPE_BASE", "PROVIDER_A", "PROVIDER_B") if not os.environ.get(v)]
        if missing:
            raise pytest.UsageError(
                f"{', '.join(missing)} not set: run this suite with tests/stripe_sdk/run.py"
            )
        self.mode = os.environ.get("MODE", "baseline")
        if self.mode not in MODES:
            raise pytest.UsageError(f"MODE={self.mode!r}: must be one of {MODES}")
        self.base = _loopback_url("STRIPE_BASE", os.environ["STRIPE_BASE"])
        self.key = os.environ.get("STRIPE_KEY", "sk_test_storefront")
        self.provider_key = os.environ.get("PROVIDER_KEY", "sk_test_direct_reader")
        a = _loopback_url("PROVIDER_A", os.environ["PROVIDER_A"])
        b = _loopback_url("PROVIDER_B", os.environ["PROVIDER_B"])
        # In baseline mode A and B are the same server: count it once.
        self.providers = [a] if a == b else [a, b]
        self.provider_a = a
        # Proxy mode only (run.py sets them then); the tests that need them are proxy_only.
        self.sim_adyen = _optional_url("SIM_ADYEN")
        self.sim_pix = _optional_url("SIM_PIX")
        self.admin = _optional_url("PAYPROXY_ADMIN")
        self.webhook_log = os.environ.get("WEBHOOK_LOG") or None
        self.ls_a_webhook_secret = os.environ.get("LS_A_WEBHOOK_SECRET") or None


def _optional_url(name: str):
    value = os.environ.get(name)
    return _loopback_url(name, value) if value else None


class RecordingClient(stripe.RequestsClient):
    """The SDK's requests client, remembering the last few requests it sent."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sent = collections.deque(maxlen=20)

    def request(self, method, url, headers, post_data=None):
        self.sent.append({"method": method, "url": url, "headers": dict(headers or {}), "body": post_data})
        return super().request(method, url, headers, post_data)


SETTINGS = None
CLIENT = None


def pytest_configure(config):
    global SETTINGS, CLIENT
    SETTINGS = Settings()
    session = requests.Session()
    session.trust_env = False
    CLIENT = RecordingClient(timeout=(5, HTTP_TIMEOUT_S), session=session)
    stripe.api_base = SETTINGS.base
    stripe.api_key = SETTINGS.key
    stripe.max_network_retries = 0
    stripe.enable_telemetry = False
    stripe.default_http_client = CLIENT


def pytest_report_header(config):
    return (
        f"stripe-sdk: mode={SETTINGS.mode} base={SETTINGS.base} providers={SETTINGS.providers} "
        f"stripe {stripe.VERSION} (API version {stripe.api_version}) run={RUN_ID}"
    )


def pytest_runtest_setup(item):
    mark = item.get_closest_marker("proxy_only")
    if mark is not None and SETTINGS.mode == "baseline":
        reason = mark.kwargs.get("reason") or (mark.args[0] if mark.args else "proxy mode only")
        pytest.skip(f"baseline: {reason}")


@pytest.fixture
def settings():
    return SETTINGS


@pytest.fixture
def sent():
    """The requests the SDK sent (newest last), so a test can look at what went out."""
    CLIENT.sent.clear()
    return CLIENT.sent


@pytest.fixture
def marker(request):
    """A value for metadata[run] that no other test or run uses."""
    return f"{RUN_ID}-{request.node.name}"[:200]


class Provider:
    """Plain HTTP straight to the localstripe servers, bypassing STRIPE_BASE and the SDK."""

    def __init__(self, settings: Settings):
        self.settings = settings
        # No proxy handler: loopback traffic never goes through an HTTP(S)_PROXY.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def call(self, base: str, method: str, path: str, form=None):
        """(status, parsed JSON body) of one request to one provider."""
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(base + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.settings.provider_key}")
        if data is not None:
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        try:
            with self.opener.open(req, timeout=HTTP_TIMEOUT_S) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def payment_intents(self, base: str, marker: str):
        """Every payment intent at `base` whose metadata[run] is `marker` (pages bounded)."""
        found, after = [], None
        for _ in range(MAX_PAGES):
            query = {"limit": PAGE_LIMIT}
            if after:
                query["starting_after"] = after
            status, page = self.call(base, "GET", "/v1/payment_intents?" + urllib.parse.urlencode(query))
            assert status == 200, f"listing payment intents at {base}: HTTP {status} {page}"
            found += [pi for pi in page["data"] if (pi.get("metadata") or {}).get("run") == marker]
            if not page["has_more"] or not page["data"]:
                return found
            after = page["data"][-1]["id"]
        raise AssertionError(f"{base} lists more than {MAX_PAGES * PAGE_LIMIT} payment intents")

    def count(self, marker: str):
        """{provider URL: number of payment intents carrying marker}."""
        return {base: len(self.payment_intents(base, marker)) for base in self.settings.providers}


@pytest.fixture
def providers(settings):
    return Provider(settings)


def _json_call(opener, url: str, method: str = "GET"):
    """(status, parsed JSON body) of one request without a body."""
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    try:
        with opener.open(req, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


class Sim:
    """provider-sim's control API for one simulated provider (`adyen-sim`, `pix-sim`): never
    counted by it."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _get(self, path: str, method: str = "GET"):
        status, body = _json_call(self.opener, self.url + path, method)
        assert status == 200, f"{method} {self.url}{path}: HTTP {status} {body}"
        return body

    def ledger(self) -> list:
        """Every charge the simulator recorded."""
        return self._get("/__sim/ledger")

    def post(self, path: str) -> dict:
        """POST with no body to a path of the simulated provider (a shopper's action)."""
        return self._get(path, "POST")

    def stats(self) -> dict:
        """{provider, requests (API requests received, control API excluded), charges, refunds}."""
        return self._get("/__sim/stats")


@pytest.fixture
def sim(settings):
    if not settings.sim_adyen:
        pytest.fail("SIM_ADYEN not set: proxy mode needs the simulated Adyen (run the suite with run.py)")
    return Sim(settings.sim_adyen)


@pytest.fixture
def pix_sim(settings):
    if not settings.sim_pix:
        pytest.fail("SIM_PIX not set: proxy mode needs the simulated Pix (run the suite with run.py)")
    return Sim(settings.sim_pix)


# One sample of the Prometheus text format: name, optional {labels}, value (timestamp ignored).
_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(r"\\(.)")  # \\ \" \n inside a label value


def parse_metrics(text: str) -> list:
    """[(name, {label: value}, float)] from Prometheus text; comments and blank lines skipped."""
    samples = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = {k: _ESCAPE.sub(lambda e: "\n" if e.group(1) == "n" else e.group(1), v)
                  for k, v in _LABEL.findall(m.group(2) or "")}
        samples.append((m.group(1), labels, float(m.group(3))))
    return samples


class Admin:
    """payproxy's admin listener."""

    def __init__(self, url: str):
        self.url = url
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def metrics(self) -> list:
        """Every sample of GET /metrics, parsed."""
        with self.opener.open(self.url + "/metrics", timeout=HTTP_TIMEOUT_S) as resp:
            assert resp.status == 200, f"GET {self.url}/metrics: HTTP {resp.status}"
            return parse_metrics(resp.read().decode())

    @staticmethod
    def select(samples: list, name: str, **labels) -> list:
        """The samples named `name` whose labels include all of `labels`."""
        return [(n, l, v) for n, l, v in samples if n == name and all(l.get(k) == w for k, w in labels.items())]

    @staticmethod
    def value(samples: list, name: str, **labels) -> float:
        """The sum of the matching samples' values (0 when there is none)."""
        return sum(v for _, _, v in Admin.select(samples, name, **labels))


@pytest.fixture
def admin(settings):
    if not settings.admin:
        pytest.fail("PAYPROXY_ADMIN not set: proxy mode needs payproxy's admin URL (run the suite with run.py)")
    return Admin(settings.admin)


@pytest.fixture
def direct_a(settings):
    """The official SDK pointed straight at provider A (not at STRIPE_BASE), with the direct
    reader key and the same HTTP client and settings as the storefront's."""
    return stripe.StripeClient(
        settings.provider_key,
        base_addresses={"api": settings.provider_a},
        max_network_retries=0,
        http_client=CLIENT,
    )


class WebhookLog:
    """What webhook_receiver.py logged: one dict per delivery, oldest first."""

    def __init__(self, path: str):
        self.path = path

    def lines(self) -> list:
        try:
            with open(self.path) as f:
                return [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []


@pytest.fixture
def webhook_log(settings):
    if not settings.webhook_log:
        pytest.fail("WEBHOOK_LOG not set: proxy mode needs the webhook receiver's log (run the suite with run.py)")
    return WebhookLog(settings.webhook_log)


@pytest.fixture
def events_if_proxied(settings):
    """The webhook receiver's log in proxy mode (payproxy's storefront events), else None:
    for tests that run in both modes and check the events only where there are some."""
    return WebhookLog(settings.webhook_log) if settings.mode == "proxy" else None


class LocalstripeHooks:
    """Webhook endpoints at localstripe A (its `POST /_config/webhooks/{id}`: url, secret,
    events[]). localstripe signs each event it sends to one like Stripe
    (`Stripe-Signature: t=<created>,v1=<HMAC-SHA256(secret, "<t>.<body>")>`) and POSTs it one
    second after making it, to the endpoints registered then, once, whatever the answer. It
    cannot delete an endpoint: each one registered here is muted when the test ends (registered
    again for an event type that never happens), so no later test gets its deliveries."""

    # The events localstripe sends about payment intents (1.15.10 sends no charge.* events).
    EVENTS = ("payment_intent.succeeded", "payment_intent.payment_failed")
    MUTED = "payproxy.sdk_suite.muted"

    def __init__(self, providers: Provider, settings: Settings, marker: str):
        self.providers = providers
        self.base = settings.provider_a
        self.prefix = hashlib.sha256(marker.encode()).hexdigest()[:16]
        self.registered = {}

    def _post(self, hook: str, url: str, secret: str, events) -> None:
        form = [("url", url), ("secret", secret)] + [("events[]", e) for e in events]
        status, body = self.providers.call(self.base, "POST", f"/_config/webhooks/{hook}", form)
        assert status == 200, f"POST {self.base}/_config/webhooks/{hook}: HTTP {status} {body}"

    def register(self, name: str, url: str, secret: str, events=EVENTS) -> None:
        """Have localstripe A send `events` to `url`, signed with `secret`."""
        hook = f"{self.prefix}-{name}"
        self._post(hook, url, secret, events)
        self.registered[hook] = (url, secret)

    def mute(self, name: str) -> None:
        hook = f"{self.prefix}-{name}"
        self._post(hook, *self.registered[hook], [self.MUTED])

    def mute_all(self) -> None:
        for hook, (url, secret) in self.registered.items():
            self._post(hook, url, secret, [self.MUTED])


@pytest.fixture
def localstripe_hooks(settings, providers, marker):
    if not settings.ls_a_webhook_secret:
        pytest.fail("LS_A_WEBHOOK_SECRET not set: proxy mode needs ls-a's webhook secret (run the suite with run.py)")
    hooks = LocalstripeHooks(providers, settings, marker)
    yield hooks
    hooks.mute_all()
