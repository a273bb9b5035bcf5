// The storefront written with the official stripe-node SDK (pinned in package.json), run by
// ../run.py after the Python suite in each mode, with the same environment: STRIPE_BASE (payproxy
// in proxy mode, localstripe A in baseline), PROVIDER_A / PROVIDER_B (the localstripe servers),
// MODE, STRIPE_KEY, PROVIDER_KEY. The client is built as an integration builds it, changing only
// where it connects: the SDK's own defaults otherwise (its pinned API version, its retries with
// their automatic idempotency keys, its telemetry and client user-agent headers), because those
// are what a merchant's storefront sends. Cards are only ever Stripe's magic ids (pm_card_visa,
// pm_card_chargeCustomerFail): no card number goes through payproxy.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';

import Stripe from 'stripe';

const CURRENCY = 'eur';
const MODE = process.env.MODE ?? 'baseline';
const PROXY = MODE === 'proxy';
const KEY = process.env.STRIPE_KEY ?? 'sk_test_storefront';
const PROVIDER_KEY = process.env.PROVIDER_KEY ?? 'sk_test_direct_reader';
const PROVIDERS = [...new Set([process.env.PROVIDER_A, process.env.PROVIDER_B])];
const RUN = randomBytes(6).toString('hex');
// Bounds for listing a provider's payment intents (a run makes a few dozen).
const PAGE_LIMIT = 100;
const MAX_PAGES = 50;

function loopback(name) {
  const url = new URL(process.env[name] ?? '');
  assert.ok(['127.0.0.1', 'localhost', '[::1]'].includes(url.hostname), `${name} must be on loopback: ${url}`);
  return url;
}

function client(options = {}) {
  const base = loopback('STRIPE_BASE');
  return new Stripe(KEY, {
    host: base.hostname,
    port: base.port,
    protocol: base.protocol.replace(':', ''),
    ...options,
  });
}

const stripe = client();
let counter = 0;

function marker(name) {
  counter += 1;
  return `node-${RUN}-${counter}-${name}`;
}

function createIntent(run, amount, params = {}, options = undefined) {
  return stripe.paymentIntents.create({ amount, currency: CURRENCY, metadata: { run }, ...params }, options);
}

// How many payment intents carrying `run` each provider holds, read straight from them.
async function atProviders(run) {
  const counts = {};
  for (const base of PROVIDERS) {
    let count = 0;
    let after = null;
    for (let page = 0; ; page += 1) {
      assert.ok(page < MAX_PAGES, `${base} lists more than ${MAX_PAGES * PAGE_LIMIT} payment intents`);
      const query = new URLSearchParams({ limit: String(PAGE_LIMIT) });
      if (after) query.set('starting_after', after);
      const res = await fetch(`${base}/v1/payment_intents?${query}`, {
        headers: { authorization: `Bearer ${PROVIDER_KEY}` },
        signal: AbortSignal.timeout(10_000),
      });
      assert.equal(res.status, 200, `listing ${base}`);
      const body = await res.json();
      count += body.data.filter((pi) => pi.metadata?.run === run).length;
      if (!body.has_more || body.data.length === 0) break;
      after = body.data.at(-1).id;
    }
    counts[base] = count;
  }
  return counts;
}

async function assertOneIntentAtProviders(run) {
  const counts = await atProviders(run);
  const total = Object.values(counts).reduce((a, b) => a + b, 0);
  assert.equal(total, 1, `intents carrying ${run} per provider: ${JSON.stringify(counts)}`);
}

function proxyOnly(name, why, fn) {
  return test(name, { skip: PROXY ? false : why }, fn);
}

test('a confirmed card payment succeeds and reads back', async () => {
  const run = marker('card');
  const intent = await createIntent(run, 1100, { payment_method: 'pm_card_visa', confirm: true });
  assert.equal(intent.object, 'payment_intent');
  assert.equal(intent.status, 'succeeded');
  assert.deepEqual([intent.amount, intent.currency, intent.metadata.run], [1100, CURRENCY, run]);
  if (PROXY) assert.equal(intent.lastResponse.headers['x-payproxy-provider'], 'ls-a');
  const got = await stripe.paymentIntents.retrieve(intent.id);
  assert.deepEqual([got.id, got.status, got.amount], [intent.id, 'succeeded', 1100]);
  await assertOneIntentAtProviders(run);
});

test('two-step: a card intent created server-side, updated, then confirmed', async () => {
  const run = marker('update');
  const intent = await createIntent(run, 1000, { payment_method_types: ['card'] });
  assert.deepEqual([intent.status, intent.payment_method], ['requires_payment_method', null]);
  const updated = await stripe.paymentIntents.update(intent.id, {
    amount: 1350,
    payment_method: 'pm_card_visa',
    metadata: { order_id: `${run}-1` },
  });
  // Number(): localstripe's update answer echoes the amount as the form's string.
  assert.deepEqual([updated.id, updated.status, Number(updated.amount)], [intent.id, 'requires_confirmation', 1350]);
  assert.equal(updated.metadata.order_id, `${run}-1`);
  const confirmed = await stripe.paymentIntents.confirm(intent.id);
  assert.deepEqual([confirmed.status, Number(confirmed.amount)], ['succeeded', 1350]);
  await assertOneIntentAtProviders(run);
});

test('two-step: created, then confirmed with no parameters', async () => {
  const run = marker('two-step');
  const intent = await createIntent(run, 1500, { payment_method: 'pm_card_visa' });
  assert.equal(intent.status, 'requires_confirmation');
  const confirmed = await stripe.paymentIntents.confirm(intent.id);
  assert.deepEqual([confirmed.id, confirmed.status], [intent.id, 'succeeded']);
  await assertOneIntentAtProviders(run);
});

test('manual capture, then a partial refund', async () => {
  const run = marker('capture');
  const intent = await createIntent(run, 4000, {
    payment_method: 'pm_card_visa', capture_method: 'manual', confirm: true,
  });
  assert.deepEqual([intent.status, intent.capture_method], ['requires_capture', 'manual']);
  const captured = await stripe.paymentIntents.capture(intent.id);
  assert.deepEqual([captured.id, captured.status], [intent.id, 'succeeded']);
  const refund = await stripe.refunds.create({ payment_intent: intent.id, amount: 1500 });
  assert.equal(refund.object, 'refund');
  assert.deepEqual([refund.status, refund.amount, refund.payment_intent], ['succeeded', 1500, intent.id]);
  const got = await stripe.refunds.retrieve(refund.id);
  assert.deepEqual([got.id, got.amount, got.status], [refund.id, 1500, 'succeeded']);
  // A second capture is the provider's 400, which the SDK must not retry.
  await assert.rejects(stripe.paymentIntents.capture(intent.id), (e) => {
    assert.ok(e instanceof Stripe.errors.StripeInvalidRequestError, `${e?.type}: ${e?.message}`);
    assert.equal(e.statusCode, 400);
    assert.notEqual(e.headers?.['stripe-should-retry'], 'true');
    return true;
  });
});

test('a declined card is a StripeCardError, and the SDK does not retry it', async () => {
  // pm_card_chargeCustomerFail: a card that attaches and is declined when charged (in
  // localstripe as at Stripe; localstripe declines pm_card_visa_chargeDeclined only when it is
  // attached to a customer). The decline is Stripe's card_declined 402 with the charge's id
  // (Stripe adds the intent; localstripe does not). The client retries, as integrations do by default: a 402
  // is final, so the provider sees one intent.
  const retrying = client({ maxNetworkRetries: 2 });
  const sent = [];
  retrying.on('request', (request) => sent.push(request.path));
  const run = marker('declined');
  await assert.rejects(
    retrying.paymentIntents.create({
      amount: 1700, currency: CURRENCY, payment_method: 'pm_card_chargeCustomerFail', confirm: true,
      metadata: { run },
    }),
    (e) => {
      assert.ok(e instanceof Stripe.errors.StripeCardError, `${e?.type}: ${e?.message}`);
      assert.equal(e.statusCode, 402);
      assert.equal(e.code, 'card_declined');
      assert.match(e.raw.charge ?? '', /^ch_/);
      assert.notEqual(e.headers?.['stripe-should-retry'], 'true');
      return true;
    },
  );
  assert.equal(sent.length, 1, `requests sent: ${sent}`);
  await assertOneIntentAtProviders(run);
});

test('auto-paging lists every intent of the run once', async () => {
  const run = marker('list');
  const ids = [];
  for (let i = 0; i < 5; i += 1) ids.push((await createIntent(run, 1000 + i)).id);
  const page = await stripe.paymentIntents.list({ limit: 2 });
  assert.equal(page.object, 'list');
  assert.equal(page.data.length, 2);
  assert.equal(page.has_more, true);
  const listed = await stripe.paymentIntents.list({ limit: 3 }).autoPagingToArray({ limit: 10_000 });
  const all = listed.map((pi) => pi.id);
  assert.equal(new Set(all).size, all.length, 'auto-paging returned an intent twice');
  const ours = listed.filter((pi) => pi.metadata?.run === run);
  assert.deepEqual(ours.map((pi) => pi.id).sort(), [...ids].sort());
  assert.deepEqual(ours.map((pi) => pi.amount).sort(), [1000, 1001, 1002, 1003, 1004]);
});

proxyOnly('the same Idempotency-Key reaches the providers once', 'localstripe ignores Idempotency-Key', async () => {
  const run = marker('idem');
  const key = `idem-${run}`;
  const params = { payment_method: 'pm_card_visa', confirm: true };
  const first = await createIntent(run, 2100, params, { idempotencyKey: key });
  const again = await createIntent(run, 2100, params, { idempotencyKey: key });
  assert.equal(first.status, 'succeeded');
  assert.deepEqual([again.id, again.status, again.amount], [first.id, 'succeeded', 2100]);
  // The same key with other parameters is refused, as Stripe does.
  await assert.rejects(createIntent(run, 2200, params, { idempotencyKey: key }), (e) => {
    assert.ok(e instanceof Stripe.errors.StripeError, `${e?.type}: ${e?.message}`);
    assert.ok(e.statusCode >= 400 && e.statusCode < 500, `${e.statusCode}`);
    return true;
  });
  await assertOneIntentAtProviders(run);
});

test('a client that retries (with its automatic idempotency keys) pays once', async () => {
  // stripe-node gives a POST of a client with retries an Idempotency-Key of its own
  // (stripe-node-retry-<uuid>) when the caller sets none.
  const retrying = client({ maxNetworkRetries: 3 });
  const sent = [];
  retrying.on('request', (request) => sent.push(request.idempotency_key));
  const run = marker('retrying');
  const intent = await retrying.paymentIntents.create({
    amount: 1300, currency: CURRENCY, payment_method: 'pm_card_visa', confirm: true, metadata: { run },
  });
  assert.equal(intent.status, 'succeeded');
  assert.equal(sent.length, 1);
  assert.match(sent[0] ?? '', /^stripe-node-retry-/, 'the SDK sent its own key');
  const got = await retrying.paymentIntents.retrieve(intent.id);
  assert.deepEqual([got.id, got.status], [intent.id, 'succeeded']);
  await assertOneIntentAtProviders(run);
});

proxyOnly('a wrong API key is a 401 in Stripe\'s shape', 'localstripe accepts any API key', async () => {
  const wrong = new Stripe('sk_test_not_the_storefronts', {
    host: loopback('STRIPE_BASE').hostname, port: loopback('STRIPE_BASE').port, protocol: 'http',
  });
  const run = marker('wrong-key');
  await assert.rejects(
    wrong.paymentIntents.create({ amount: 1000, currency: CURRENCY, metadata: { run } }),
    (e) => {
      assert.ok(e instanceof Stripe.errors.StripeAuthenticationError, `${e?.type}: ${e?.message}`);
      assert.equal(e.statusCode, 401);
      return true;
    },
  );
  assert.deepEqual(Object.values(await atProviders(run)), PROVIDERS.map(() => 0));
});

proxyOnly('a card number in metadata is refused and reaches no provider', 'localstripe stores it', async () => {
  const run = marker('pan');
  await assert.rejects(
    createIntent(run, 1000, { metadata: { run, note: '4242 4242 4242 4242' } }),
    (e) => {
      assert.ok(e instanceof Stripe.errors.StripeInvalidRequestError, `${e?.type}: ${e?.message}`);
      assert.equal(e.statusCode, 400);
      assert.ok(!JSON.stringify(e.raw).includes('4242 4242'), 'the error repeats the number');
      return true;
    },
  );
  assert.deepEqual(Object.values(await atProviders(run)), PROVIDERS.map(() => 0));
});
