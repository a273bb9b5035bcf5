"""A payproxy compliance plugin written in Python: a customer blocklist.

Built into a WebAssembly component with componentize-py against payproxy's contract
(`wit/payproxy-plugin@0.4.0`, world `compliance-plugin`): see README.md. The host calls
`init` once per instance with the plugin's JSON config, then `check` for every payment it
is about to charge.

Config: {"blocked_customers": ["cus_…"], "blocked_email_domains": ["example.com"]}. A
payment whose customer id is listed, or whose customer email is at a listed domain (case
does not matter), is denied with code `customer_blocked`; everything else is allowed. Only
authorisations are checked (captures, refunds and voids are allowed as they come).
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import compliance
from wit_world.imports import types

RULE = "python-blocklist"

# The config `init` accepted: module state lives as long as the instance.
BLOCKED_CUSTOMERS = set()
BLOCKED_DOMAINS = set()


def strings(config: dict, key: str) -> set:
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise Err(f"{key}: a list of non-empty strings")
    return {v.strip().lower() for v in value}


def decision(verdict) -> compliance.Decision:
    return compliance.Decision(verdict=verdict, rule=RULE, annotations=[])


class Compliance(exports.Compliance):
    def init(self, config: str) -> None:
        try:
            parsed = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"config is not JSON: {e}")
        if not isinstance(parsed, dict):
            raise Err("config must be a JSON object")
        unknown = set(parsed) - {"blocked_customers", "blocked_email_domains"}
        if unknown:
            raise Err(f"unknown config keys: {sorted(unknown)}")
        customers = strings(parsed, "blocked_customers")
        domains = strings(parsed, "blocked_email_domains")
        BLOCKED_CUSTOMERS.clear()
        BLOCKED_CUSTOMERS.update(customers)
        BLOCKED_DOMAINS.clear()
        BLOCKED_DOMAINS.update(domains)

    def check(self, payment: types.Payment, card) -> compliance.Decision:
        if payment.operation != types.Operation.AUTHORIZE:
            return decision(compliance.Verdict_Allow())
        customer = payment.customer
        blocked = (customer.id or "").lower() in BLOCKED_CUSTOMERS
        email = (customer.email or "").lower()
        if "@" in email and email.rsplit("@", 1)[1] in BLOCKED_DOMAINS:
            blocked = True
        if not blocked:
            return decision(compliance.Verdict_Allow())
        refusal = types.Refusal(
            kind=types.RefusalKind_ComplianceDenied(),
            status=402,
            code="customer_blocked",
            message="This payment cannot be accepted. Please contact the merchant.",
        )
        return decision(compliance.Verdict_Deny(refusal))
