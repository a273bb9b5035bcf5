// A payproxy compliance plugin written in JavaScript: a customer blocklist.
// Same behaviour as examples/plugins/compliance-python/app.py, rule `js-blocklist`.
// Built with componentize-js against wit/payproxy-plugin@0.4.0, world `compliance-plugin`.

const RULE = "js-blocklist";
const KEYS = new Set(["blocked_customers", "blocked_email_domains"]);

// The config `init` accepted: module state lives as long as the instance.
let blockedCustomers = new Set();
let blockedDomains = new Set();

function strings(config, key) {
  const value = config[key] ?? [];
  if (!Array.isArray(value) || !value.every((v) => typeof v === "string" && v.trim() !== "")) {
    throw `${key}: a list of non-empty strings`;
  }
  return new Set(value.map((v) => v.trim().toLowerCase()));
}

function decision(verdict) {
  return { verdict, rule: RULE, annotations: [] };
}

export const compliance = {
  init(config) {
    let parsed;
    try {
      parsed = JSON.parse(config || "{}");
    } catch (e) {
      throw `config is not JSON: ${e && e.message ? e.message : e}`;
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw "config must be a JSON object";
    }
    const unknown = Object.keys(parsed).filter((k) => !KEYS.has(k)).sort();
    if (unknown.length) {
      throw `unknown config keys: ${JSON.stringify(unknown)}`;
    }
    const customers = strings(parsed, "blocked_customers");
    const domains = strings(parsed, "blocked_email_domains");
    blockedCustomers = customers;
    blockedDomains = domains;
  },

  check(payment, card) {
    if (payment.operation !== "authorize") {
      return decision({ tag: "allow" });
    }
    const customer = payment.customer;
    let blocked = blockedCustomers.has((customer.id ?? "").toLowerCase());
    const email = (customer.email ?? "").toLowerCase();
    const at = email.lastIndexOf("@");
    if (at >= 0 && blockedDomains.has(email.slice(at + 1))) {
      blocked = true;
    }
    if (!blocked) {
      return decision({ tag: "allow" });
    }
    return decision({
      tag: "deny",
      val: {
        kind: { tag: "compliance-denied" },
        status: 402,
        code: "customer_blocked",
        message: "This payment cannot be accepted. Please contact the merchant.",
      },
    });
  },
};
