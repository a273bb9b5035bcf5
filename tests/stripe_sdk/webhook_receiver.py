#!/usr/bin/env python3
"""A merchant's webhook endpoint, verified the way a Stripe integration does it.

    python webhook_receiver.py --port PORT --log FILE   (secret in WEBHOOK_SECRET)

Runs in the suite's venv (it needs the stripe package). Every POST is checked with the official
SDK's `stripe.Webhook.construct_event(payload, sig_header, secret)`: verified events are
answered 200 and appended to FILE as JSON lines {"verified": true, "id", "type", "object",
"object_id", "payment_intent", "amount_refunded" (a charge's), "previous_amount_refunded"
(data.previous_attributes.amount_refunded, when there), "metadata" (the object's)}; anything else is answered 400 and logged with "verified":
false and the SDK's error. GET /health answers 200 (readiness).
"""

import argparse
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe

LOCK = threading.Lock()
MAX_BODY = 1 << 20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--log", required=True)
    args = p.parse_args()
    secret = os.environ["WEBHOOK_SECRET"]

    def write(line: dict) -> None:
        with LOCK, open(args.log, "a") as f:
            f.write(json.dumps(line) + "\n")

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet: the JSON lines are the log
            pass

        def answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_GET(self):
            self.answer(200 if self.path == "/health" else 404)

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            if length > MAX_BODY:
                return self.answer(413)
            payload = self.rfile.read(length)
            sig = self.headers.get("stripe-signature") or ""
            try:
                event = stripe.Webhook.construct_event(payload, sig, secret)
            except (stripe.SignatureVerificationError, ValueError) as e:  # ValueError: not JSON
                write({"verified": False, "error": f"{type(e).__name__}: {e}"})
                return self.answer(400)
            # The SDK's Event object is not a dict: read the fields from the verified payload.
            body = json.loads(payload)
            obj = body["data"]["object"]
            write({
                "verified": True,
                "id": event.id,
                "type": event.type,
                "object": obj.get("object"),
                "object_id": obj.get("id"),
                "payment_intent": obj.get("payment_intent") if obj.get("object") == "charge" else obj.get("id"),
                "amount_refunded": obj.get("amount_refunded") if obj.get("object") == "charge" else None,
                "previous_amount_refunded": (body["data"].get("previous_attributes") or {}).get("amount_refunded"),
                "metadata": obj.get("metadata"),
            })
            self.answer(200)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"webhook receiver ready on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
