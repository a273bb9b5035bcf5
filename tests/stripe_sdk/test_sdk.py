"""A storefront's Stripe integration, unchanged but for its base URL, through the official SDK.

Baseline mode runs straight at localstripe (what the SDK and the fake agree on); proxy mode
runs through payproxy in front of two localstripe servers. The same assertions hold in both,
except the tests marked proxy_only, for features localstripe does not have (each says why).

All amounts are EUR minor units, so payproxy's compliance rule `eur-card-max` applies.
Cards are magic ids (pm_card_visa …) or PaymentMethods made at localstripe itself, as Stripe.js
makes them in the shopper's browser: no raw card number goes through payproxy.
"""

import hashlib
import hmac
import itertools
import json
import time
import urllib.error
import urllib.request

import pytest
import stripe
from conftest import Admin

CURRENCY = "eur"
# Stripe's German test IBAN. localstripe accepts any 14..34 character IBAN and declines
# only DE62370400440532013001.
IBAN = "DE89370400440532013000"
# payproxy's compliance config (run.py) caps EUR card payments at this many cents.
EUR_CARD_MAX = 1_000_000
# Bound for auto-paging over everything a run created (a run makes a few dozen intents).
MAX_LISTED = 2_000


def create_intent(marker, amount, **params):
    return stripe.PaymentIntent.create(
        amount=amount, currency=CURRENCY, metadata={"run": marker}, **params
    )


def headers_lower(error):
    return {k.lower(): v for k, v in (error.headers or {}).items()}


def assert_one_intent_at_providers(providers, marker):
    counts = providers.count(marker)
    assert sum(counts.values()) == 1, f"intents carrying {marker} per provider: {counts}"


# --- customer, non-card payment method, confirmed intent -------------------------------


def test_customer_sepa_payment_method_and_confirmed_intent(marker, providers):
    email = "shopper@example.com"
    customer = stripe.Customer.create(name="SDK Shopper", email=email, metadata={"run": marker})
    assert customer.id and customer.object == "customer"
    assert (customer.email, customer.metadata["run"]) == (email, marker)

    pm = stripe.PaymentMethod.create(
        type="sepa_debit",
        sepa_debit={"iban": IBAN},
        billing_details={"name": "SDK Shopper", "email": email},
        metadata={"run": marker},
    )
    assert pm.id and pm.object == "payment_method" and pm.type == "sepa_debit"
    assert (pm.sepa_debit.country, pm.sepa_debit.last4) == ("DE", IBAN[-4:])
    assert pm.customer is None

    attached = stripe.PaymentMethod.attach(pm.id, customer=customer.id)
    assert (attached.id, attached.customer) == (pm.id, customer.id)

    intent = create_intent(
        marker,
        2500,
        customer=customer.id,
        payment_method=pm.id,
        payment_method_types=["sepa_debit"],
        confirm=True,
    )
    assert intent.status == "succeeded"
    assert (intent.amount, intent.currency) == (2500, CURRENCY)
    assert (intent.customer, intent.payment_method) == (customer.id, pm.id)
    assert intent.metadata["run"] == marker

    got_pm = stripe.PaymentMethod.retrieve(pm.id)
    assert (got_pm.id, got_pm.type, got_pm.customer) == (pm.id, "sepa_debit", customer.id)
    assert got_pm.sepa_debit.last4 == IBAN[-4:]
    got_customer = stripe.Customer.retrieve(customer.id)
    assert (got_customer.id, got_customer.email, got_customer.name) == (customer.id, email, "SDK Shopper")
    assert got_customer.metadata["run"] == marker
    assert stripe.PaymentIntent.retrieve(intent.id).status == "succeeded"
    assert_one_intent_at_providers(providers, marker)


# --- two-step confirmation -----------------------------------------------------------------


def test_two_step_confirm_with_empty_body(marker, providers, sent):
    intent = create_intent(marker, 1500, payment_method="pm_card_visa")
    assert intent.status == "requires_confirmation"
    assert intent.payment_method, "the intent keeps its payment method"

    confirmed = stripe.PaymentIntent.confirm(intent.id)
    request = sent[-1]
    assert request["method"] == "post" and request["url"].endswith(f"/v1/payment_intents/{intent.id}/confirm")
    assert not request["body"], f"confirm() without parameters sends an empty body, sent {request['body']!r}"
    assert (confirmed.id, confirmed.status) == (intent.id, "succeeded")

    got = stripe.PaymentIntent.retrieve(intent.id)
    assert (got.status, got.amount, got.currency) == ("succeeded", 1500, CURRENCY)
    assert_one_intent_at_providers(providers, marker)


def test_an_intent_updated_before_its_confirm_is_charged_as_updated(marker, providers, settings):
    # Create, then set the amount and the card as the cart settles, then confirm: what the
    # provider charges is the updated intent.
    intent = stripe.PaymentIntent.create(amount=1000, currency=CURRENCY, payment_method_types=["card"],
                                         metadata={"run": marker, "note": "draft"})
    updated = stripe.PaymentIntent.modify(intent.id, amount=1750, payment_method="pm_card_visa",
                                          metadata={"note": "", "order_id": f"{marker}-7"})
    # int(): localstripe's update answer echoes the amount as the form's string.
    assert (updated.id, updated.status, int(updated.amount)) == (intent.id, "requires_confirmation", 1750)
    expected = {"run": marker, "order_id": f"{marker}-7"}
    if settings.mode == "baseline":
        expected["note"] = ""  # localstripe keeps a key set to ""; Stripe (and payproxy) remove it
    assert updated.metadata.to_dict() == expected
    confirmed = stripe.PaymentIntent.confirm(intent.id)
    assert (confirmed.status, int(confirmed.amount)) == ("succeeded", 1750)
    charged = [pi for base in settings.providers for pi in providers.payment_intents(base, marker)]
    assert [(int(pi["amount"]), pi["status"]) for pi in charged] == [(1750, "succeeded")]

    # After the confirm its description and metadata still change ("shipped").
    shipped = stripe.PaymentIntent.modify(intent.id, metadata={"shipped": "yes"})
    assert (shipped.status, shipped.metadata["shipped"]) == ("succeeded", "yes")
    got = stripe.PaymentIntent.retrieve(intent.id)
    assert (got.metadata["shipped"], got.metadata["order_id"], int(got.amount)) == ("yes", f"{marker}-7", 1750)
    if settings.mode == "proxy":
        # (localstripe's intents have no description.)
        described = stripe.PaymentIntent.modify(intent.id, description="parcel 1")
        assert (described.description, described.metadata["shipped"]) == ("parcel 1", "yes")
        # Its amount no longer does (Stripe refuses it too; localstripe does not check).
        with pytest.raises(stripe.InvalidRequestError) as caught:
            stripe.PaymentIntent.modify(intent.id, amount=99)
        assert (caught.value.http_status, caught.value.code) == (400, "payment_intent_unexpected_state")
        assert stripe.PaymentIntent.retrieve(intent.id).amount == 1750


def test_create_without_payment_method_requires_one(marker):
    intent = create_intent(marker, 1200)
    assert intent.status == "requires_payment_method"
    assert intent.payment_method is None
    got = stripe.PaymentIntent.retrieve(intent.id)
    assert (got.id, got.status, got.amount) == (intent.id, "requires_payment_method", 1200)


# --- manual capture and refunds ----------------------------------------------------------


def test_manual_capture_then_partial_refund(marker):
    intent = create_intent(marker, 4000, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    assert (intent.status, intent.capture_method) == ("requires_capture", "manual")

    captured = stripe.PaymentIntent.capture(intent.id)
    assert (captured.id, captured.status) == (intent.id, "succeeded")

    refund = stripe.Refund.create(payment_intent=intent.id, amount=1500)
    assert refund.id and refund.object == "refund"
    assert (refund.status, refund.amount, refund.currency) == ("succeeded", 1500, CURRENCY)
    assert refund.payment_intent == intent.id

    got = stripe.Refund.retrieve(refund.id)
    assert (got.id, got.amount, got.payment_intent, got.status) == (refund.id, 1500, intent.id, "succeeded")


# --- provider 4xx errors ----------------------------------------------------------------


def test_second_capture_is_a_400_not_to_be_retried(marker):
    intent = create_intent(marker, 3000, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    assert stripe.PaymentIntent.capture(intent.id).status == "succeeded"

    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.PaymentIntent.capture(intent.id)
    error = caught.value
    assert error.http_status == 400
    assert error.error.type == "invalid_request_error"
    assert error.json_body["error"]["type"] == "invalid_request_error"
    assert headers_lower(error).get("stripe-should-retry", "").lower() != "true", dict(error.headers)
    assert stripe.PaymentIntent.retrieve(intent.id).status == "succeeded"


def test_unknown_parameter_is_the_providers_own_400(marker, providers, settings):
    # A confirmed create reaches a provider: its own refusal must come back unchanged.
    with pytest.raises(stripe.InvalidRequestError) as caught:
        # The SDK does not check parameter names: this one goes out as unexpected_param=x.
        create_intent(marker, 1300, payment_method="pm_card_visa", confirm=True, unexpected_param="x")
    error = caught.value
    assert error.http_status == 400
    assert error.error.type == "invalid_request_error"
    assert "unexpected_param" in error.error.message

    # The same request straight at the provider: the storefront must see the provider's own
    # status, type and message, passed through unchanged.
    status, body = providers.call(
        settings.providers[0],
        "POST",
        "/v1/payment_intents",
        {
            "amount": 1300,
            "currency": CURRENCY,
            "metadata[run]": marker,
            "payment_method": "pm_card_visa",
            "confirm": "true",
            "unexpected_param": "x",
        },
    )
    assert status == 400, body
    assert (error.error.type, error.error.message) == (body["error"]["type"], body["error"]["message"])
    assert headers_lower(error).get("stripe-should-retry", "").lower() != "true"
    assert sum(providers.count(marker).values()) == 0, "a refused create left an intent behind"


@pytest.mark.proxy_only(reason="localstripe's confirm takes no payment_method (its 500 'Not implemented')")
def test_a_card_intent_created_server_side_takes_its_card_at_the_confirm(marker, providers):
    # The most common server-side create: the intent says it takes cards, the card comes with
    # the confirm.
    intent = create_intent(marker, 1250, payment_method_types=["card"])
    assert (intent.status, intent.payment_method) == ("requires_payment_method", None)
    confirmed = stripe.PaymentIntent.confirm(intent.id, payment_method="pm_card_visa")
    assert (confirmed.id, confirmed.status, confirmed.amount) == (intent.id, "succeeded", 1250)
    got = stripe.PaymentIntent.retrieve(intent.id)
    assert (got.status, got.amount_received) == ("succeeded", 1250)
    assert_one_intent_at_providers(providers, marker)


@pytest.mark.proxy_only(reason="localstripe ignores Stripe-Account, and refuses the parameters "
                        "itself as unknown to it")
def test_an_unconfirmed_create_refuses_what_its_confirm_could_not_carry(marker, providers):
    # payproxy holds an intent created without confirm until its confirm, and the request it
    # then sends has no place for these: refused at create, never dropped unseen.
    cases = [
        ({"setup_future_usage": "off_session"}, "setup_future_usage", "parameter_unsupported"),
        ({"transfer_data": {"destination": "acct_1Connected"}}, "transfer_data", "parameter_unsupported"),
        ({"statement_descriptor_suffix": "ORDER 7"}, "statement_descriptor_suffix", "parameter_unsupported"),
        ({"stripe_account": "acct_1Connected"}, None, "header_unsupported"),
    ]
    for params, param, code in cases:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            create_intent(marker, 1300, payment_method="pm_card_visa", **params)
        error = caught.value
        assert (error.http_status, error.error.type, error.code, error.param) == (
            400, "invalid_request_error", code, param), params
        assert "confirm=true" in error.error.message, error.error.message
    assert sum(providers.count(marker).values()) == 0
    # Created and confirmed in one request, the request reaches Stripe as it is.
    paid = create_intent(marker, 1300, payment_method="pm_card_visa", confirm=True,
                         stripe_account="acct_1Connected")
    assert paid.status == "succeeded"
    assert_one_intent_at_providers(providers, marker)


@pytest.mark.proxy_only(reason="localstripe ignores Stripe-Account, and refuses setup_future_usage "
                        "itself as unknown to it")
def test_a_held_intents_update_confirm_and_capture_refuse_what_they_could_not_carry(marker, providers):
    # payproxy confirms and captures an intent created without confirm from its own record:
    # a parameter or header that record has no place for is refused, before anything is sent.
    intent = create_intent(marker, 1400, payment_method="pm_card_visa", capture_method="manual")
    for call in (stripe.PaymentIntent.confirm, stripe.PaymentIntent.modify):
        with pytest.raises(stripe.InvalidRequestError) as caught:
            call(intent.id, setup_future_usage="off_session")
        error = caught.value
        assert (error.http_status, error.code, error.param) == (400, "parameter_unsupported", "setup_future_usage")
    assert sum(providers.count(marker).values()) == 0
    assert stripe.PaymentIntent.retrieve(intent.id).status == "requires_confirmation"

    # A capture method payproxy's record keeps once asked for.
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.PaymentIntent.modify(intent.id, capture_method="automatic")
    assert (caught.value.code, caught.value.param) == ("parameter_unsupported", "capture_method")

    confirmed = stripe.PaymentIntent.confirm(intent.id)
    assert confirmed.status == "requires_capture"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.PaymentIntent.capture(intent.id, stripe_account="acct_1Connected")
    assert (caught.value.http_status, caught.value.code) == (400, "header_unsupported")
    assert stripe.PaymentIntent.retrieve(intent.id).status == "requires_capture"
    assert stripe.PaymentIntent.capture(intent.id).status == "succeeded"
    assert_one_intent_at_providers(providers, marker)


def test_unknown_parameter_on_an_unconfirmed_create_is_refused(marker, providers):
    # Without confirm nothing reaches a provider through payproxy, so payproxy checks the
    # parameters itself, as Stripe does at create (localstripe refuses it too, in its words).
    with pytest.raises(stripe.InvalidRequestError) as caught:
        create_intent(marker, 1300, unexpected_param="x")
    error = caught.value
    assert error.http_status == 400
    assert error.error.type == "invalid_request_error"
    assert "unexpected_param" in error.error.message
    assert sum(providers.count(marker).values()) == 0


# --- listing ------------------------------------------------------------------------------


def make_five(marker):
    """Five intents of this run, ids oldest → newest (amounts 1000..1004)."""
    return [
        stripe.PaymentIntent.create(amount=1000 + i, currency=CURRENCY, metadata={"run": marker, "seq": str(i)}).id
        for i in range(5)
    ]


def list_everything(**params):
    """Every intent by auto-paging with limit=2 (bounded), ids in listing order."""
    items = list(itertools.islice(stripe.PaymentIntent.list(limit=2, **params).auto_paging_iter(), MAX_LISTED))
    assert len(items) < MAX_LISTED, "auto-paging did not end"
    return items


def test_list_pages_with_starting_after(marker):
    ids = make_five(marker)

    page1 = stripe.PaymentIntent.list(limit=2)
    assert page1.object == "list" and len(page1.data) == 2 and page1.has_more is True
    page2 = stripe.PaymentIntent.list(limit=2, starting_after=page1.data[-1].id)
    assert 1 <= len(page2.data) <= 2
    first_two = [pi.id for pi in page1.data + page2.data]
    assert len(set(first_two)) == len(first_two), "page 2 repeats page 1"

    listed = list_everything()
    everything = [pi.id for pi in listed]
    assert len(set(everything)) == len(everything), "auto-paging returned an intent twice"
    assert set(ids) <= set(everything), "auto-paging missed some of this run's intents"
    assert everything[: len(first_two)] == first_two, "pages disagree with auto-paging"
    ours = [pi for pi in listed if pi.metadata.to_dict().get("run") == marker]
    assert sorted(pi.id for pi in ours) == sorted(ids)
    assert sorted(pi.amount for pi in ours) == [1000, 1001, 1002, 1003, 1004]


@pytest.mark.proxy_only(reason="localstripe lists in insertion order (oldest first); Stripe lists newest first")
def test_list_newest_first(marker):
    ids = make_five(marker)  # created oldest → newest; nothing is created after them below
    page1 = stripe.PaymentIntent.list(limit=2)
    assert [pi.id for pi in page1.data] == [ids[4], ids[3]] and page1.has_more is True
    page2 = stripe.PaymentIntent.list(limit=2, starting_after=page1.data[-1].id)
    assert [pi.id for pi in page2.data] == [ids[2], ids[1]]
    ours = [pi.id for pi in list_everything() if pi.id in ids]
    assert ours == ids[::-1]


@pytest.mark.proxy_only(reason="localstripe's PaymentIntent list takes only limit and starting_after "
                        "(customer= is a 400 'Unexpected customer')")
def test_list_filter_by_customer(marker):
    customer = stripe.Customer.create(email="filter@example.com", metadata={"run": marker})
    mine = [create_intent(marker, 1100 + i, customer=customer.id).id for i in range(3)]
    create_intent(marker, 1199)  # same run, no customer: must not be listed
    listed = list_everything(customer=customer.id)
    assert sorted(pi.id for pi in listed) == sorted(mine)
    assert all(pi.customer == customer.id for pi in listed)
    page = stripe.PaymentIntent.list(limit=2, customer=customer.id)
    assert len(page.data) == 2 and page.has_more is True


@pytest.mark.proxy_only(reason="localstripe's PaymentIntent list takes only limit and starting_after "
                        "(created= is a 400 'Unexpected created')")
def test_list_filter_by_created(marker):
    first = create_intent(marker, 1400)
    ids = [first.id] + [create_intent(marker, 1401 + i).id for i in range(2)]
    since = list_everything(created={"gte": first.created})
    assert set(ids) <= {pi.id for pi in since}
    assert all(pi.created >= first.created for pi in since)
    before = list_everything(created={"lt": first.created})
    assert not set(ids) & {pi.id for pi in before}
    assert all(pi.created < first.created for pi in before)


# --- idempotency ----------------------------------------------------------------------------


@pytest.mark.proxy_only(reason="localstripe ignores Idempotency-Key: the same key twice creates two intents")
def test_idempotent_create_reaches_the_providers_once(marker, providers):
    key = f"idem-{marker}"
    first = create_intent(marker, 2100, payment_method="pm_card_visa", confirm=True, idempotency_key=key)
    again = create_intent(marker, 2100, payment_method="pm_card_visa", confirm=True, idempotency_key=key)
    assert first.status == "succeeded"
    assert (again.id, again.status, again.amount) == (first.id, "succeeded", 2100)
    assert stripe.PaymentIntent.retrieve(first.id).status == "succeeded"
    assert_one_intent_at_providers(providers, marker)


# --- compliance -------------------------------------------------------------------------------


@pytest.mark.proxy_only(reason="the EUR card limit is payproxy's compliance plugin; localstripe has no limits")
def test_compliance_limit_refuses_before_any_provider(marker, providers):
    with pytest.raises(stripe.StripeError) as caught:
        create_intent(
            marker, EUR_CARD_MAX + 1, payment_method="pm_card_visa", payment_method_types=["card"], confirm=True
        )
    error = caught.value
    assert error.http_status is not None and 400 <= error.http_status < 500, repr(error)
    assert error.error is not None and error.error.message, "the refusal says why"
    assert sum(providers.count(marker).values()) == 0, "a refused payment reached a provider"


# What run.py's payproxy config gives the Python plugin (blocked_email_domains) and the
# JavaScript one (blocked_customers).
BLOCKED_EMAIL_DOMAIN = "blocked.example"
BLOCKED_CUSTOMER = "cus_js_blocked"


def assert_a_language_plugin_refuses(marker, providers, admin, plugin, rule, **refused):
    """A confirmed card payment with `refused` is a CardError 402 `customer_blocked` that no
    provider sees, one without succeeds, and compliance plugin `plugin` counted one deny and
    one allow under `rule`, with no failure."""
    labels = dict(plugin=plugin, rule=rule)
    before = admin.metrics()
    with pytest.raises(stripe.CardError) as caught:
        create_intent(marker, 1800, payment_method="pm_card_visa", confirm=True, **refused)
    error = caught.value
    assert (error.http_status, error.code) == (402, "customer_blocked"), repr(error)
    assert error.user_message == "This payment cannot be accepted. Please contact the merchant."
    assert sum(providers.count(marker).values()) == 0, "a refused payment reached a provider"
    # (localstripe takes no receipt_email and knows no such customer: the payment that goes
    # through carries neither.)
    allowed = create_intent(marker, 1800, payment_method="pm_card_visa", confirm=True)
    assert allowed.status == "succeeded"
    after = admin.metrics()
    counted = {verdict: Admin.value(after, "payproxy_compliance_verdicts_total", verdict=verdict, **labels)
               - Admin.value(before, "payproxy_compliance_verdicts_total", verdict=verdict, **labels)
               for verdict in ("deny", "allow")}
    assert counted == {"deny": 1, "allow": 1}, counted
    failures = Admin.value(after, "payproxy_plugin_failures_total", plugin=plugin)
    assert failures == 0, f"{plugin} trapped or timed out"


@pytest.mark.proxy_only(reason="the rule is a payproxy compliance plugin written in Python "
                                "(examples/plugins/compliance-python), which only proxy mode runs")
def test_a_compliance_plugin_written_in_python_refuses_before_any_provider(marker, providers, admin):
    # Every payment of the suite goes through the blocklist plugin (CPython in a component
    # built by componentize-py); this one's receipt email is at the blocked domain.
    assert_a_language_plugin_refuses(marker, providers, admin, "blocklist", "python-blocklist",
                                     receipt_email=f"shopper@{BLOCKED_EMAIL_DOMAIN.upper()}")


@pytest.mark.proxy_only(reason="the rule is a payproxy compliance plugin written in JavaScript "
                                "(examples/plugins/compliance-js), which only proxy mode runs")
def test_a_compliance_plugin_written_in_javascript_refuses_before_any_provider(marker, providers, admin):
    # The blocklist again, in JavaScript (componentize-js's engine in a component), on the
    # customer id; every payment the Python plugin allows goes through it.
    assert_a_language_plugin_refuses(marker, providers, admin, "blocklist-js", "js-blocklist",
                                     customer=BLOCKED_CUSTOMER)

# --- routing across dialects (proxy mode: a simulated Adyen beside the two localstripes) -----
#
# run.py's payproxy config puts adyen-sim (a provider-sim speaking the Adyen dialect) first in
# the route and in the router's default order, and the router refuses FR-issued cards for
# shoppers in DE. ls-a is the route's home and the issuer (`stripe-acct`) of every token here.

INVALID_REQUESTS = 200
# Wall-clock bound for the INVALID_REQUESTS loop (it takes a few seconds).
INVALID_LOOP_S = 60


def response_headers(obj):
    """The HTTP response headers the SDK got for `obj`, names in lower case."""
    assert obj.last_response is not None, "the SDK kept no response for this object"
    return {k.lower(): v for k, v in obj.last_response.headers.items()}


@pytest.mark.proxy_only(reason="routing between providers is payproxy's; baseline has one localstripe and no simulated Adyen")
def test_stripe_token_never_goes_to_a_non_stripe_provider(marker, providers, settings, sim):
    # Compared with before, not reset: a reset would also turn off the simulator's
    # notifications to payproxy, which later tests need.
    ledger, before = sim.ledger(), sim.stats()
    intent = create_intent(marker, 2000, payment_method="pm_card_visa", confirm=True)
    assert intent.status == "succeeded"
    assert response_headers(intent).get("x-payproxy-provider") == "ls-a", dict(intent.last_response.headers)
    # Although the router's default order names adyen-sim first, the token is ls-a's (issuer
    # stripe-acct) and only ls-a may see it: adyen-sim got no request at all.
    assert sim.ledger() == ledger, "a Stripe token was charged at adyen-sim"
    stats = sim.stats()
    assert (stats["requests"], stats["charges"]) == (before["requests"], before["charges"]), \
        f"adyen-sim was offered the payment: {before} -> {stats}"
    counts = providers.count(marker)
    assert counts == {settings.providers[0]: 1, settings.providers[1]: 0}, f"intents per provider: {counts}"


@pytest.mark.proxy_only(reason="the routing rule is payproxy's router plugin; localstripe does not know shipping")
def test_routing_rule_on_card_issuing_country(marker, providers):
    de = {"name": "A", "address": {"country": "DE"}}
    # localstripe's pm_card_visa is issued in FR; payproxy learns that from ls-a's PaymentMethod.
    with pytest.raises(stripe.CardError) as caught:
        create_intent(marker, 2000, payment_method="pm_card_visa", confirm=True, shipping=de)
    error = caught.value
    assert error.http_status == 402, repr(error)
    assert error.code == "card_country_mismatch", (error.code, error.json_body)
    assert error.error is not None and error.error.message, "the refusal says why"
    assert sum(providers.count(marker).values()) == 0, "a refused payment reached a provider"

    # Control: a SEPA debit has no card, so the rule cannot hold. localstripe does not know
    # `shipping` (400 "Unexpected shipping"): anything but the rule's 402 will do here.
    pm = stripe.PaymentMethod.create(type="sepa_debit", sepa_debit={"iban": IBAN},
                                     billing_details={"name": "A"}, metadata={"run": marker})
    try:
        create_intent(marker, 2000, payment_method=pm.id, payment_method_types=["sepa_debit"],
                      confirm=True, shipping=de)
    except stripe.StripeError as e:
        assert e.http_status != 402 and e.code != "card_country_mismatch", (
            f"the card-country rule refused a SEPA debit: HTTP {e.http_status} {e.json_body}")


@pytest.mark.proxy_only(reason="circuit breakers and /metrics are payproxy's")
def test_invalid_requests_open_no_breaker(marker, providers, admin):
    def rejected(samples):
        return admin.value(samples, "payproxy_attempts_total", provider="ls-a", outcome="rejected")

    before = rejected(admin.metrics())
    deadline = time.monotonic() + INVALID_LOOP_S
    refused = []
    for i in range(INVALID_REQUESTS):
        assert time.monotonic() < deadline, f"{i} invalid requests took over {INVALID_LOOP_S} s"
        try:
            create_intent(marker, 1300, payment_method="pm_card_visa", confirm=True, unexpected_param="x")
        except stripe.InvalidRequestError as e:
            refused.append((e.http_status, e.error.type if e.error else None, (e.error.message if e.error else "") or ""))
            continue
        pytest.fail(f"request {i} with unexpected_param was accepted")
    assert len(refused) == INVALID_REQUESTS
    odd = [r for r in refused if r[0] != 400 or r[1] != "invalid_request_error" or "unexpected_param" not in r[2]]
    assert not odd, f"{len(odd)} of {INVALID_REQUESTS} were not localstripe's 400, first: {odd[0]}"

    samples = admin.metrics()
    state = admin.select(samples, "payproxy_breaker_state", provider="ls-a")
    assert all(v == 0 for _, _, v in state), f"ls-a's breaker is not closed: {state}"
    opened = [s for s in admin.select(samples, "payproxy_breaker_transitions_total", provider="ls-a", to="open")
              if s[2] != 0]
    assert not opened, f"ls-a's breaker opened: {opened}"
    assert rejected(samples) - before >= INVALID_REQUESTS, (
        f"payproxy_attempts_total{{provider=\"ls-a\",outcome=\"rejected\"}} went {before} -> {rejected(samples)}")

    intent = create_intent(marker, 1300, payment_method="pm_card_visa", confirm=True)
    assert intent.status == "succeeded"
    assert_one_intent_at_providers(providers, marker)


@pytest.mark.proxy_only(reason="in baseline the SDK already talks straight to localstripe")
def test_intent_made_at_home_before_payproxy(marker, providers, settings, direct_a):
    made = direct_a.v1.payment_intents.create(params={
        "amount": 3000, "currency": CURRENCY, "payment_method": "pm_card_visa",
        "capture_method": "manual", "metadata": {"run": marker},
    })
    assert made.status == "requires_confirmation"

    got = stripe.PaymentIntent.retrieve(made.id)
    assert (got.id, got.status, got.amount) == (made.id, "requires_confirmation", 3000)
    # An update of it goes to the provider that has it, unchanged.
    updated = stripe.PaymentIntent.modify(made.id, metadata={"run": marker, "step": "updated"})
    assert updated.metadata["step"] == "updated"
    assert direct_a.v1.payment_intents.retrieve(made.id).metadata["step"] == "updated"
    confirmed = stripe.PaymentIntent.confirm(made.id)
    assert (confirmed.id, confirmed.status) == (made.id, "requires_capture")
    captured = stripe.PaymentIntent.capture(made.id)
    assert (captured.id, captured.status) == (made.id, "succeeded")

    at_home = direct_a.v1.payment_intents.retrieve(made.id)
    assert (at_home.id, at_home.status, at_home.amount) == (made.id, "succeeded", 3000)
    assert providers.count(marker) == {settings.providers[0]: 1, settings.providers[1]: 0}


# --- storefront authentication and card data -------------------------------------------


@pytest.mark.proxy_only(reason="localstripe accepts any API key")
def test_wrong_or_missing_key_is_a_401_in_stripes_shape(marker, providers, settings):
    with pytest.raises(stripe.AuthenticationError) as caught:
        stripe.PaymentIntent.create(amount=1300, currency=CURRENCY, payment_method="pm_card_visa",
                                    confirm=True, metadata={"run": marker},
                                    api_key="sk_test_not_the_storefronts")
    error = caught.value
    assert error.http_status == 401
    assert error.error is not None and error.error.type == "invalid_request_error"
    assert "not_the_storefronts" not in str(error.json_body), "the key given was repeated"
    # The SDK will not send without a key; a plain request without one gets the same answer.
    import requests
    session = requests.Session()
    session.trust_env = False
    answer = session.post(f"{settings.base}/v1/payment_intents", timeout=10, data={
        "amount": 1300, "currency": CURRENCY, "payment_method": "pm_card_visa", "confirm": "true",
        "metadata[run]": marker})
    assert answer.status_code == 401
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert sum(providers.count(marker).values()) == 0


@pytest.mark.proxy_only(reason="localstripe stores whatever it is sent")
def test_card_number_anywhere_is_refused_and_reaches_no_provider(marker, providers):
    canary = "4000 0566 5566 5556"
    placements = [
        {"metadata": {"run": marker, "note": canary}},
        {"metadata": {"run": marker, "n": canary.replace(" ", ".")}},
        {"metadata": {"run": marker, canary.replace(" ", ""): "x"}},
        {"description": "４０００056655665556", "metadata": {"run": marker}},
        {"metadata": {"run": marker, "cc1": "4000056655", "cc2": "665556"}},
    ]
    for extra in placements:
        with pytest.raises(stripe.InvalidRequestError) as caught:
            stripe.PaymentIntent.create(amount=1300, currency=CURRENCY, payment_method="pm_card_visa",
                                        confirm=True, **extra)
        error = caught.value
        assert error.http_status == 400 and error.code == "card_number_not_accepted", extra
        body = json_digits(error.json_body)
        assert "4000056655665556" not in body, f"the card number was echoed: {error.json_body}"
    assert sum(providers.count(marker).values()) == 0


def json_digits(value) -> str:
    """Every digit in a JSON value, in order (full-width ones as ASCII)."""
    import json as _json
    text = _json.dumps(value, ensure_ascii=False)
    return "".join(str(int(c)) for c in text if c.isdecimal())


# --- signed events out ---------------------------------------------------------------------

WEBHOOK_WAIT_S = 30


@pytest.mark.proxy_only(reason="the events of payments made through payproxy come from payproxy's outbox; "
                                "localstripe sends no webhooks")
def test_webhook_events_verify_with_construct_event(marker, webhook_log):
    intent = create_intent(marker, 2100, payment_method="pm_card_visa", confirm=True)
    assert intent.status == "succeeded"
    for amount in (700, 500):
        refund = stripe.Refund.create(payment_intent=intent.id, amount=amount)
        assert refund.status == "succeeded"

    want = ["payment_intent.created", "payment_intent.succeeded", "charge.refunded", "charge.refunded"]
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    seen = []
    for _ in range(WEBHOOK_WAIT_S * 10 + 1):
        seen = [line for line in webhook_log.lines() if line.get("payment_intent") == intent.id]
        if len(seen) >= len(want) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    # The receiver logs only what stripe.Webhook.construct_event verified under these keys.
    assert [line["type"] for line in seen] == want, seen
    assert all(line["verified"] for line in seen)
    assert len({line["id"] for line in seen}) == len(want), "one event id per change"
    assert (seen[0]["object"], seen[0]["object_id"]) == ("payment_intent", intent.id)
    assert seen[2]["object"] == "charge"
    # As Stripe's since API version 2022-11-15: the charge's cumulative amount_refunded, and
    # the total before in data.previous_attributes, from which each refund's amount is read.
    refunded = [(line["amount_refunded"], line["previous_amount_refunded"]) for line in seen[2:]]
    assert refunded == [(700, 0), (1200, 700)], refunded
    unverified = [line for line in webhook_log.lines() if not line.get("verified")]
    assert not unverified, unverified


def test_an_update_its_provider_accepted_shows_in_lists_and_events(marker, events_if_proxied):
    # The common shape of a checkout: the intent is made (here authorised, to be captured at
    # shipping), then the order id is attached, and the merchant's fulfilment reads it from
    # the list and the payment_intent.succeeded event. The intent lives at ls-a under its own
    # id, so payproxy relays the update there; what ls-a accepted must show in what payproxy
    # renders from its own record (the list, the storefront events), not only in a retrieve.
    intent = create_intent(marker, 2600, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    assert intent.status == "requires_capture"
    order = {"run": marker, "order_id": f"{marker}-9"}
    updated = stripe.PaymentIntent.modify(intent.id, metadata={"order_id": order["order_id"]})
    assert (updated.id, updated.metadata.to_dict()) == (intent.id, order)

    listed = [pi for pi in itertools.islice(stripe.PaymentIntent.list(limit=100).auto_paging_iter(), MAX_LISTED)
              if pi.id == intent.id]
    assert [pi.metadata.to_dict() for pi in listed] == [order]
    captured = stripe.PaymentIntent.capture(intent.id)
    assert (captured.status, captured.metadata.to_dict()) == ("succeeded", order)
    if events_if_proxied is None:
        return
    succeeded = []
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    for _ in range(WEBHOOK_WAIT_S * 10 + 1):
        succeeded = [line for line in events_if_proxied.lines()
                     if line.get("payment_intent") == intent.id and line["type"] == "payment_intent.succeeded"]
        if succeeded or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert [(line["verified"], line["metadata"]) for line in succeeded] == [(True, order)], succeeded


# --- provider notifications in -------------------------------------------------------------

@pytest.mark.proxy_only(reason="a Pix payment through payproxy: the simulated Pix notifies payproxy, "
                                "which tells the storefront; localstripe has no Pix")
def test_pix_paid_at_the_bank_reaches_the_storefront_as_a_verified_event(marker, pix_sim, webhook_log):
    intent = stripe.PaymentIntent.create(
        amount=5000, currency="brl", confirm=True,
        payment_method_data={"type": "pix", "pix": {"tax_id": "529.982.247-25"},
                             "billing_details": {"address": {"country": "BR"}}},
        receipt_email="joao@example.com.br",
        metadata={"run": marker, "order_id": marker},
    )
    assert intent.status == "requires_action", intent
    assert intent.next_action["type"] == "pix_display_qr_code", intent.next_action
    # The shopper pays the QR code at the bank; nobody retrieves the payment. The simulated
    # Pix sends its signed notification to payproxy (/webhooks/pix-sim).
    (cob,) = [c for c in pix_sim.ledger() if c.get("merchant_reference") == marker]
    pix_sim.post(f"/pix/v2/cob/{cob['id']}/pay")

    assert events_until(webhook_log, intent.id, "payment_intent.succeeded") == WAITED_THEN_PAID
    assert stripe.PaymentIntent.retrieve(intent.id).status == "succeeded"


WAITED_THEN_PAID = ["payment_intent.created", "payment_intent.requires_action", "payment_intent.succeeded"]


def events_until(webhook_log, intent_id, last):
    """The types of the events about `intent_id` the receiver verified (with
    stripe.Webhook.construct_event: it logs nothing else as verified), once `last` is among
    them (or after WEBHOOK_WAIT_S)."""
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    seen = []
    for _ in range(WEBHOOK_WAIT_S * 10 + 1):
        seen = [line for line in webhook_log.lines() if line.get("payment_intent") == intent_id]
        if any(line["type"] == last for line in seen) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    assert all(line["verified"] for line in seen), seen
    return [line["type"] for line in seen]


def shopper_finishes(intent, query=""):
    """The shopper at the provider: the intent's redirect URL, opened (the simulator's page)."""
    url = intent.next_action["redirect_to_url"]["url"]
    url += ("&" if "?" in url else "?") + query if query else ""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as resp:
        assert resp.status < 400, (url, resp.status)


@pytest.mark.proxy_only(reason="a DANA payment through payproxy: the simulated DANA notifies payproxy; "
                                "localstripe has no DANA")
def test_dana_paid_in_the_app_reaches_the_storefront_as_a_verified_event(marker, webhook_log):
    intent = stripe.PaymentIntent.create(
        amount=150000, currency="idr", confirm=True,
        payment_method_data={"type": "dana", "billing_details": {
            "phone": "+6281234567890", "phone_verified": "true", "address": {"country": "ID"}}},
        # DANA's merchantTransId: at most 64 characters.
        metadata={"run": marker, "order_id": "dana-" + hashlib.sha256(marker.encode()).hexdigest()[:16]},
    )
    assert intent.status == "requires_action", intent
    shopper_finishes(intent)
    assert events_until(webhook_log, intent.id, "payment_intent.succeeded") == WAITED_THEN_PAID
    assert stripe.PaymentIntent.retrieve(intent.id).status == "succeeded"


def ideal_at_adyen(marker):
    """An iDEAL payment (routed to the simulated Adyen), waiting for the shopper's bank."""
    intent = stripe.PaymentIntent.create(
        amount=2500, currency="eur", confirm=True,
        payment_method_data={"type": "ideal", "ideal": {"bank": "ing", "iban": "NL91ABNA0417164300"},
                             "billing_details": {"address": {"country": "NL"}}},
        return_url="https://shop.example/return",
        metadata={"run": marker, "order_id": marker},
    )
    assert intent.status == "requires_action", intent
    return intent


@pytest.mark.proxy_only(reason="Adyen reports redirect outcomes only by notification; localstripe has no Adyen")
def test_adyen_notifications_succeed_fail_and_refund_a_payment(marker, sim, webhook_log):
    paid = ideal_at_adyen(marker)
    shopper_finishes(paid, "result=authorised")
    assert events_until(webhook_log, paid.id, "payment_intent.succeeded") == WAITED_THEN_PAID
    assert stripe.PaymentIntent.retrieve(paid.id).status == "succeeded"

    # The merchant refunds €10 in Adyen's Customer Area: Adyen's REFUND notification is how
    # payproxy, and so the storefront, learn of it.
    (charge,) = [c for c in sim.ledger() if c.get("merchant_reference") == marker]
    body = json.dumps({"merchantAccount": "PayproxyTest", "amount": {"value": 1000, "currency": "EUR"},
                       "reference": f"{marker}-dashboard-refund"}).encode()
    req = urllib.request.Request(f"{sim.url}/adyen/v71/payments/{charge['id']}/refunds", data=body,
                                 method="POST", headers={"content-type": "application/json",
                                                         "x-api-key": "test-adyen-key"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
        assert resp.status in (200, 201, 202), resp.status
    assert events_until(webhook_log, paid.id, "charge.refunded")[-1] == "charge.refunded"

    refused = ideal_at_adyen(f"{marker}-refused")
    shopper_finishes(refused, "result=refused")
    assert events_until(webhook_log, refused.id, "payment_intent.payment_failed")[-1] == \
        "payment_intent.payment_failed"
    assert stripe.PaymentIntent.retrieve(refused.id).status == "requires_payment_method"


# --- localstripe's own notifications in ------------------------------------------------------
#
# localstripe, like Stripe, sends signed events to the webhook endpoints registered with it: here
# payproxy's POST /webhooks/ls-a, signed with ls-a's webhook_secret. A payment made through
# payproxy in the Stripe dialect is owned by ls-a under its own id (pi_…), which is also the
# event's reference. payproxy counts each request (payproxy_webhooks_received_total: verified,
# rejected, failed) and each notification in a verified one (payproxy_webhook_notifications_total:
# applied; duplicate; stale = its payment found, already there or past it; held = no payment
# known under that reference, yet; unmatched; expired; failed).

LS_A = "ls-a"
NOTICE_WAIT_S = 10
# The only IBAN localstripe declines: asynchronously, as a bank does a SEPA debit.
DECLINED_IBAN = "DE62370400440532013001"


def ls_a_counts(admin) -> dict:
    """ls-a's rows of payproxy's notification counters: {(kind, result): value}, kind
    `requests` (payproxy_webhooks_received_total) or `notifications`."""
    samples = admin.metrics()
    return {(kind, labels["result"]): value
            for kind, name in (("requests", "payproxy_webhooks_received_total"),
                               ("notifications", "payproxy_webhook_notifications_total"))
            for _, labels, value in admin.select(samples, name, provider=LS_A)}


def ls_a_growth_until(admin, before: dict, enough) -> dict:
    """How ls-a's notification counters grew since `before` ({(kind, result): n}, only those
    that moved), once `enough(growth)` holds or after NOTICE_WAIT_S."""
    deadline = time.monotonic() + NOTICE_WAIT_S
    growth = {}
    for _ in range(NOTICE_WAIT_S * 10 + 1):
        now = ls_a_counts(admin)
        growth = {k: now.get(k, 0) - before.get(k, 0) for k in set(now) | set(before)
                  if now.get(k, 0) != before.get(k, 0)}
        if enough(growth) or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    return growth


def localstripe_quiet(settings, admin, providers, localstripe_hooks, marker) -> None:
    """Returns once localstripe A is done with every event it made before. It sends each one a
    second after making it, to the endpoints registered then: an endpoint registered at once
    would also get the last second of earlier tests' events. So first an event of its own, a
    product.created (no test makes one; payproxy verifies it and reads nothing from it), to an
    endpoint that takes only that: once payproxy has it, every earlier event has gone its way."""
    before = ls_a_counts(admin)
    localstripe_hooks.register("quiet", f"{settings.base}/webhooks/{LS_A}", settings.ls_a_webhook_secret,
                               events=("product.created",))
    status, body = providers.call(settings.provider_a, "POST", "/v1/products", {"name": f"quiet {marker}"})
    assert status == 200, f"POST {settings.provider_a}/v1/products: HTTP {status} {body}"
    growth = ls_a_growth_until(admin, before, lambda g: any(kind == "requests" for kind, _ in g))
    localstripe_hooks.mute("quiet")
    assert growth == {("requests", "verified"): 1}, f"localstripe's product.created at payproxy: {growth}"


def payproxy_notified_by_ls_a(settings, admin, providers, localstripe_hooks, marker) -> None:
    """From now on localstripe A sends its payment intent events, and only those, to payproxy,
    signed with ls-a's secret."""
    localstripe_quiet(settings, admin, providers, localstripe_hooks, marker)
    localstripe_hooks.register("payproxy", f"{settings.base}/webhooks/{LS_A}", settings.ls_a_webhook_secret)


@pytest.mark.proxy_only(reason="payproxy verifies and matches localstripe's events; in baseline nothing receives them")
def test_localstripe_notification_of_a_card_payment_is_verified_and_matched(marker, settings, admin, providers,
                                                                           localstripe_hooks):
    payproxy_notified_by_ls_a(settings, admin, providers, localstripe_hooks, marker)
    before = ls_a_counts(admin)
    intent = create_intent(marker, 1000, payment_method="pm_card_visa", confirm=True)
    assert intent.status == "succeeded"
    assert response_headers(intent).get("x-payproxy-provider") == LS_A, dict(intent.last_response.headers)

    # localstripe's payment_intent.succeeded for it, a second later, is the only event sent:
    # verified with ls-a's secret, and found (ls-a owns the payment under the intent's id),
    # already succeeded: stale. A notification payproxy could not match would be held.
    growth = ls_a_growth_until(admin, before, lambda g: g.get(("notifications", "stale"), 0) >= 1)
    assert growth == {("requests", "verified"): 1, ("notifications", "stale"): 1}, \
        f"localstripe's payment_intent.succeeded for {intent.id} at payproxy: {growth}"


@pytest.mark.proxy_only(reason="payproxy learns the bank's refusal from localstripe's event; in baseline nothing receives it")
def test_localstripe_notification_of_a_late_sepa_failure_fails_the_payment(marker, settings, admin, providers,
                                                                          localstripe_hooks, webhook_log):
    payproxy_notified_by_ls_a(settings, admin, providers, localstripe_hooks, marker)
    pm = stripe.PaymentMethod.create(type="sepa_debit", sepa_debit={"iban": DECLINED_IBAN},
                                     billing_details={"name": "SDK Shopper"}, metadata={"run": marker})
    before = ls_a_counts(admin)
    intent = create_intent(marker, 2500, payment_method=pm.id, payment_method_types=["sepa_debit"], confirm=True)
    assert intent.status == "processing", intent
    assert response_headers(intent).get("x-payproxy-provider") == LS_A, dict(intent.last_response.headers)

    # The bank refuses the debit half a second later; localstripe then sends
    # payment_intent.payment_failed. Nobody retrieves the payment, and payproxy does not query a
    # payment of the storefront's own dialect itself: that event is the only way it can learn
    # the refusal, and the storefront's payment_intent.payment_failed (verified with
    # construct_event) shows it was applied to this payment.
    seen = events_until(webhook_log, intent.id, "payment_intent.payment_failed")
    assert seen == ["payment_intent.created", "payment_intent.processing",
                    "payment_intent.payment_failed"], seen
    growth = ls_a_growth_until(admin, before, lambda g: g.get(("notifications", "applied"), 0) >= 1)
    assert growth == {("requests", "verified"): 1, ("notifications", "applied"): 1}, growth

    # This retrieve reads the intent at ls-a: the same decline, in localstripe's words (its
    # message and the amount; the event's decline has a fixed message and no amount). A
    # failure read again is no new attempt: the storefront gets no second
    # payment_intent.payment_failed for it.
    got = stripe.PaymentIntent.retrieve(intent.id)
    assert (got.id, got.status) == (intent.id, "requires_payment_method"), got
    # payproxy delivers a payment's events in order: the cancel's payment_intent.canceled is
    # the fence, anything the retrieve had sent would have come before it.
    canceled = stripe.PaymentIntent.cancel(intent.id)
    assert (canceled.id, canceled.status) == (intent.id, "canceled"), canceled
    seen = events_until(webhook_log, intent.id, "payment_intent.canceled")
    assert seen == ["payment_intent.created", "payment_intent.processing",
                    "payment_intent.payment_failed", "payment_intent.canceled"], seen


@pytest.mark.proxy_only(reason="payproxy learns of a capture made at localstripe from its event; in baseline nothing receives it")
def test_localstripe_notification_of_a_capture_made_at_ls_a_captures_the_payment(marker, settings, admin, providers,
                                                                                 localstripe_hooks, webhook_log,
                                                                                 direct_a):
    payproxy_notified_by_ls_a(settings, admin, providers, localstripe_hooks, marker)
    intent = create_intent(marker, 2200, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    assert (intent.status, intent.capture_method) == ("requires_capture", "manual"), intent
    assert response_headers(intent).get("x-payproxy-provider") == LS_A, dict(intent.last_response.headers)
    seen = events_until(webhook_log, intent.id, "payment_intent.amount_capturable_updated")
    assert seen == ["payment_intent.created", "payment_intent.amount_capturable_updated"], seen

    # The merchant captures it at the provider itself (its dashboard, another integration),
    # not through payproxy. localstripe then sends payment_intent.succeeded (capture_method
    # manual): for such an intent that is its capture, applied to the payment, and the
    # storefront hears of it. (Before, it was read as the authorisation again and counted
    # stale: the record stayed requires_capture, and the storefront heard nothing.)
    before = ls_a_counts(admin)
    captured = direct_a.v1.payment_intents.capture(intent.id)
    assert (captured.id, captured.status) == (intent.id, "succeeded"), captured
    growth = ls_a_growth_until(admin, before, lambda g: g.get(("notifications", "applied"), 0) >= 1)
    assert growth == {("requests", "verified"): 1, ("notifications", "applied"): 1}, \
        f"localstripe's payment_intent.succeeded for {intent.id} at payproxy: {growth}"
    seen = events_until(webhook_log, intent.id, "payment_intent.succeeded")
    assert seen == ["payment_intent.created", "payment_intent.amount_capturable_updated",
                    "payment_intent.succeeded"], seen

    # A capture through payproxy now is localstripe's own 400 and a retrieve reads succeeded:
    # both are forwarded to localstripe unchanged (ls-a speaks the storefront's dialect), so
    # they show localstripe's state. payproxy's record shows in what it sends the storefront:
    # neither sends an event, and the refund's charge.refunded is one only because the record
    # is captured (a refund counts only up to what was captured).
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe.PaymentIntent.capture(intent.id)
    assert caught.value.http_status == 400
    assert stripe.PaymentIntent.retrieve(intent.id).status == "succeeded"
    refund = stripe.Refund.create(payment_intent=intent.id, amount=700)
    assert (refund.status, refund.amount) == ("succeeded", 700)
    seen = events_until(webhook_log, intent.id, "charge.refunded")
    assert seen == ["payment_intent.created", "payment_intent.amount_capturable_updated",
                    "payment_intent.succeeded", "charge.refunded"], seen


@pytest.mark.proxy_only(reason="payproxy learns of a cancel made at localstripe from its event; in baseline nothing receives it")
def test_an_authorisation_canceled_at_ls_a_is_canceled_by_its_event(marker, settings, admin, providers, webhook_log):
    intent = create_intent(marker, 1900, payment_method="pm_card_visa", capture_method="manual", confirm=True)
    assert intent.status == "requires_capture", intent
    assert response_headers(intent).get("x-payproxy-provider") == LS_A, dict(intent.last_response.headers)

    # Canceled at the provider (its dashboard; or Stripe itself, an authorisation left
    # uncaptured for 7 days). Stripe then sends payment_intent.canceled; localstripe 1.15.10
    # sends none, so the test sends it, as Stripe would: the intent exactly as localstripe
    # serialises it now, in an event signed with ls-a's secret.
    status, _ = providers.call(settings.provider_a, "POST", f"/v1/payment_intents/{intent.id}/cancel", [])
    assert status == 200
    status, at_ls_a = providers.call(settings.provider_a, "GET", f"/v1/payment_intents/{intent.id}")
    assert (status, at_ls_a["status"]) == (200, "canceled"), at_ls_a
    event = {"id": f"evt_cancel_{hashlib.sha256(marker.encode()).hexdigest()[:20]}", "object": "event",
             "type": "payment_intent.canceled", "created": int(time.time()), "data": {"object": at_ls_a}}
    body = json.dumps(event).encode()
    before = ls_a_counts(admin)
    signature = signed(settings.ls_a_webhook_secret, body, event["created"])
    assert post_notification(settings, body, signature) == (200, {"received": True})
    growth = ls_a_growth_until(admin, before, lambda g: g.get(("notifications", "applied"), 0) >= 1)
    assert growth == {("requests", "verified"): 1, ("notifications", "applied"): 1}, growth
    seen = events_until(webhook_log, intent.id, "payment_intent.canceled")
    assert seen == ["payment_intent.created", "payment_intent.amount_capturable_updated",
                    "payment_intent.canceled"], seen
    # Delivered again (Stripe retries until answered 2xx): nothing new.
    before = ls_a_counts(admin)
    assert post_notification(settings, body, signature) == (200, {"received": True})
    growth = ls_a_growth_until(admin, before, lambda g: g.get(("notifications", "duplicate"), 0) >= 1)
    assert growth == {("requests", "verified"): 1, ("notifications", "duplicate"): 1}, growth


def signed(secret: str, body: bytes, t: int) -> str:
    """A Stripe-Signature header for `body` at `t`, as Stripe and localstripe sign."""
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def post_notification(settings, body: bytes, signature: str):
    """(status, parsed JSON body) of one POST to payproxy's /webhooks/ls-a."""
    req = urllib.request.Request(f"{settings.base}/webhooks/{LS_A}", data=body, method="POST",
                                 headers={"content-type": "application/json", "stripe-signature": signature})
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.mark.proxy_only(reason="payproxy's verification of localstripe's events; in baseline nothing receives them")
def test_localstripe_notification_under_a_wrong_secret_is_refused(marker, settings, admin, providers,
                                                                 localstripe_hooks):
    # localstripe sends this payment's event to payproxy twice: signed with ls-a's secret, and
    # with another.
    payproxy_notified_by_ls_a(settings, admin, providers, localstripe_hooks, marker)
    localstripe_hooks.register("forged", f"{settings.base}/webhooks/{LS_A}", "whsec_not_the_secret_of_ls_a")
    before = ls_a_counts(admin)
    intent = create_intent(marker, 1000, payment_method="pm_card_visa", confirm=True)
    assert intent.status == "succeeded"
    both = {("requests", "verified"): 1, ("notifications", "stale"): 1, ("requests", "rejected"): 1}
    growth = ls_a_growth_until(admin, before, lambda g: all(g.get(k, 0) >= n for k, n in both.items()))
    assert growth == both, f"localstripe's event for {intent.id}, under ls-a's secret and another: {growth}"

    # What such a request is answered (localstripe only logs it): an event signed with ls-a's
    # secret is taken; the same with its body changed after signing is a 401 and changes nothing.
    event = {"id": f"evt_{hashlib.sha256(marker.encode()).hexdigest()[:24]}", "object": "event",
             "type": "payment_intent.succeeded", "created": int(time.time()),
             "data": {"object": {"id": intent.id, "object": "payment_intent", "amount": 1000,
                                 "amount_received": 1000, "currency": CURRENCY, "status": "succeeded"}}}
    body = json.dumps(event).encode()
    signature = signed(settings.ls_a_webhook_secret, body, event["created"])
    tampered = body.replace(b'"amount_received": 1000', b'"amount_received": 9000')
    assert tampered != body
    before = ls_a_counts(admin)
    assert post_notification(settings, body, signature) == (200, {"received": True})
    status, answer = post_notification(settings, tampered, signature)
    assert (status, answer["error"]["code"]) == (401, "invalid_signature"), (status, answer)
    growth = ls_a_growth_until(admin, before, lambda g: all(g.get(k, 0) >= n for k, n in both.items()))
    assert growth == both, f"the event as signed, then changed: {growth}"



def card_needing_3d_secure(providers, settings) -> str:
    """A PaymentMethod of localstripe's 3-D Secure test card, made at ls-a itself, as
    Stripe.js makes one in the shopper's browser: the card number never reaches the
    merchant's server, nor payproxy. Its id."""
    status, pm = providers.call(settings.provider_a, "POST", "/v1/payment_methods", [
        ("type", "card"), ("card[number]", "4000002760003184"), ("card[exp_month]", "12"),
        ("card[exp_year]", "2034"), ("card[cvc]", "123")])
    assert status == 200, f"POST {settings.provider_a}/v1/payment_methods: HTTP {status} {pm}"
    return pm["id"]


@pytest.mark.proxy_only(reason="payproxy records the wait for 3-D Secure and learns its end from localstripe's event")
def test_a_card_payment_waiting_for_3d_secure_is_followed_to_its_success(marker, settings, admin, providers,
                                                                         localstripe_hooks, webhook_log):
    payproxy_notified_by_ls_a(settings, admin, providers, localstripe_hooks, marker)
    pm = card_needing_3d_secure(providers, settings)
    intent = create_intent(marker, 1000, payment_method=pm, confirm=True)
    # Confirmed without a return_url: Stripe (and localstripe) answer `use_stripe_sdk`, the
    # action Stripe.js runs. payproxy read that answer as unreadable before, so it kept no
    # record of the payment: no event reached the storefront, and localstripe's
    # payment_intent.succeeded found no payment (held, then dropped).
    assert (intent.status, intent.next_action.type) == ("requires_action", "use_stripe_sdk"), intent
    assert response_headers(intent).get("x-payproxy-provider") == LS_A, dict(intent.last_response.headers)
    seen = events_until(webhook_log, intent.id, "payment_intent.requires_action")
    assert seen == ["payment_intent.created", "payment_intent.requires_action"], seen

    # The shopper passes the challenge (Stripe.js at Stripe; here localstripe's own
    # _authenticate): localstripe charges the card and sends payment_intent.succeeded.
    before = ls_a_counts(admin)
    status, body = providers.call(settings.provider_a, "POST", f"/v1/payment_intents/{intent.id}/_authenticate",
                                  [("success", "true"), ("client_secret", intent.client_secret)])
    assert (status, body["status"]) == (200, "succeeded"), body
    growth = ls_a_growth_until(admin, before, lambda g: g.get(("notifications", "applied"), 0) >= 1)
    assert growth == {("requests", "verified"): 1, ("notifications", "applied"): 1}, growth
    seen = events_until(webhook_log, intent.id, "payment_intent.succeeded")
    assert seen == ["payment_intent.created", "payment_intent.requires_action",
                    "payment_intent.succeeded"], seen
    assert stripe.PaymentIntent.retrieve(intent.id).status == "succeeded"





# The PaymentIntent fields a Stripe integration reads as attributes (the SDK raises
# AttributeError for one that is missing, where a null reads as None).
INTENT_ATTRIBUTES = (
    "id", "object", "amount", "amount_capturable", "amount_received", "application",
    "application_fee_amount", "automatic_payment_methods", "canceled_at", "cancellation_reason",
    "capture_method", "client_secret", "confirmation_method", "created", "currency", "customer",
    "description", "invoice", "last_payment_error", "latest_charge", "livemode", "metadata",
    "next_action", "on_behalf_of", "payment_method", "payment_method_options",
    "payment_method_types", "processing", "receipt_email", "review", "setup_future_usage",
    "shipping", "source", "statement_descriptor", "statement_descriptor_suffix", "status",
    "transfer_data", "transfer_group",
)
REFUND_ATTRIBUTES = (
    "id", "object", "amount", "balance_transaction", "charge", "currency", "metadata",
    "payment_intent", "reason", "receipt_number", "status",
)


def missing_attributes(obj, names):
    missing = []
    for name in names:
        try:
            getattr(obj, name)
        except AttributeError:
            missing.append(name)
    return missing


@pytest.mark.proxy_only(reason="localstripe's own objects lack most of these fields (application, "
                                "canceled_at, shipping, transfer_data ...): only payproxy's renderings are checked")
def test_what_payproxy_renders_has_every_field_an_integration_reads(marker):
    # An intent created without confirm is payproxy's record until its confirm; the confirm
    # is answered from the provider's outcome; retrieve, list and the refund are payproxy's
    # renderings too. Each is read attribute by attribute, as integrations read them.
    intent = create_intent(marker, 2500, payment_method="pm_card_visa")
    confirmed = stripe.PaymentIntent.confirm(intent.id)
    got = stripe.PaymentIntent.retrieve(intent.id)
    listed = [pi for pi in itertools.islice(stripe.PaymentIntent.list(limit=100).auto_paging_iter(), MAX_LISTED)
              if pi.id == intent.id]
    refund = stripe.Refund.create(payment_intent=intent.id, amount=900)
    missing = {name: missing_attributes(obj, INTENT_ATTRIBUTES)
               for name, obj in (("create", intent), ("confirm", confirmed), ("retrieve", got))}
    missing["list"] = [missing_attributes(pi, INTENT_ATTRIBUTES) for pi in listed]
    missing["refund"] = missing_attributes(refund, REFUND_ATTRIBUTES)
    # The confirm's answer has no `created`: it is rendered from the provider's outcome,
    # without payproxy's record (Stripe never sends it null, which typed SDKs cannot read).
    assert missing == {"create": [], "confirm": ["created"], "retrieve": [], "list": [[]], "refund": []}
    assert (confirmed.status, got.status, refund.status) == ("succeeded", "succeeded", "succeeded")
    # What payproxy does not keep reads as None, what it knows as itself.
    assert (got.latest_charge, got.shipping, got.transfer_data, refund.charge) == (None, None, None, None)
    assert isinstance(got.created, int) and got.created == listed[0].created
    assert refund.payment_intent == intent.id
