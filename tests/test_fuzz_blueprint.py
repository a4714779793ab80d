"""Seeded fuzzing of every blueprint route: any 5xx or non-JSON answer fails.

Random methods, JSON bodies (deep, wide, unicode, huge numbers), query strings, headers,
content types and path segments, plus Stripe-signed events of random shapes. The seed
makes a failure reproducible: the assertion message carries the request that broke.
"""

from __future__ import annotations

import json
import random
import string
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.testing import HOLDER_HEADER, link_accounts
from flask_finconn.webhooks import sign

SEED = 20261129
REQUESTS = 300
PATHS = (
    "/finconn/sessions",
    "/finconn/sessions/{id}/complete",
    "/finconn/accounts",
    "/finconn/accounts/{id}",
    "/finconn/webhook",
    "/finconn/accounts/{id}/refresh",
    "/finconn/accounts/{id}/disconnect",
    "/finconn/accounts/{id}/transactions",
    "/finconn/accounts/{id}/owners",
    "/finconn/setup-intents",
    "/finconn/setup-intents/{id}/complete",
    "/finconn/accounts/{id}/payment-method",
    "/finconn/payment-methods",
    "/finconn/payment-methods/{id}",
    "/finconn/payment-methods/{id}/verify",
    "/finconn/payment-methods/{id}/detach",
    "/finconn/payments",
    "/finconn/payments/{id}",
)
METHODS = ("GET", "HEAD", "POST", "POST", "POST", "PUT", "PATCH", "DELETE", "TRACE")
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "",
)
FIELDS = (
    "permissions",
    "features",
    "limit",
    "cursor",
    "status",
    "since",
    "until",
    "id",
    "object",
    "type",
    "data",
)
WORDS = (
    "balance",
    "ownership",
    "transactions",
    "balances",
    "posted",
    "pending",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-05:00",
    "2026-02-30",
    "-1",
    "1e309",
    "NaN",
    "fca_x",
    "fcacct_x",
    "☃",
    "\u202e",
    "\x00",
    "' OR 1=1 --",
)


def text(rng: random.Random, size: int = 12) -> str:
    alphabet = string.printable + "äé☃\u202e\U0001f4b8\ud7ff"
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, size)))


def value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randint(0, 9 if depth < 4 else 5)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice((True, False))
    if kind == 2:
        return rng.choice((0, -1, 2**63, -(2**64), 10**400, 1.5, 1e308))
    if kind == 3:
        return rng.choice(WORDS)
    if kind in (4, 5):
        return text(rng, rng.choice((8, 8, 5000)))
    if kind in (6, 7):
        return [value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    keys = [rng.choice(FIELDS) if rng.random() < 0.7 else text(rng, 6) for _ in range(4)]
    return {k: value(rng, depth + 1) for k in keys[: rng.randint(0, 4)]}


def body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.1:
        return b""
    if roll < 0.2:
        depth = rng.choice((10, 500, 1000, 5000))
        return b"[" * depth + b"]" * depth
    if roll < 0.3:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    if roll < 0.35:
        return b'{"limit": 1' + b"0" * 5000 + b"}"
    return json.dumps(value(rng), allow_nan=rng.random() < 0.1).encode()


def segment(rng: random.Random, real: str) -> str:
    """A path segment: real, unknown, or random text (quoted; a ``/`` would be another URL)."""
    random_text = text(rng, 8).replace("/", "") or "x"
    chosen = rng.choice((real, real, "fcacct_nope", "fcsess_x", random_text, "☃" * 300))
    return quote(chosen, safe="")


def query(rng: random.Random) -> dict[str, str]:
    return {
        rng.choice(FIELDS): rng.choice((rng.choice(WORDS), text(rng, 10)))
        for _ in range(rng.randint(0, 3))
    }


def headers(rng: random.Random) -> dict[str, str]:
    found: dict[str, str] = {}
    if rng.random() < 0.8:
        found[HOLDER_HEADER] = rng.choice(("ada", "ada", "bob", "☃", "x" * 300))
    content_type = rng.choice(CONTENT_TYPES)
    if content_type:
        found["Content-Type"] = content_type
    if rng.random() < 0.3:
        found["Origin"] = rng.choice(("http://localhost", "https://evil.example", "null", ""))
    if rng.random() < 0.2:
        found["Stripe-Signature"] = rng.choice(("t=1,v1=00", "garbage", "t=abc", ""))
    if rng.random() < 0.1:
        found["Sec-Fetch-Site"] = "cross-site"
    return found


def signed_event(rng: random.Random, app: Flask, account: str) -> bytes:
    obj = value(rng)
    if not isinstance(obj, dict) or rng.random() < 0.5:
        obj = {
            "id": rng.choice((account, "fca_gone", value(rng))),
            "object": "financial_connections.account",
            "account_holder": value(rng),
        }
    event = {
        "id": "evt_" + "".join(rng.choice(string.hexdigits) for _ in range(20)),
        "object": "event",
        "type": rng.choice(
            (
                "financial_connections.account.deactivated",
                "financial_connections.account.created",
                "financial_connections.account.refreshed_balance",
                "customer.created",
                text(rng, 20) or "x",
            )
        ),
        "created": rng.choice((0, 1_700_000_000, 10**20, -(10**15), 2**63)),
        "data": {"object": obj},
        "livemode": value(rng),
    }
    return json.dumps(event).encode()


def check(response: Any, request: str, method: str = "POST") -> int:
    assert response.status_code < 500, request
    if method != "HEAD":  # a HEAD answer has headers only
        assert response.mimetype == "application/json", request
        json.loads(response.get_data())
    return int(response.status_code)


def test_fuzz_every_route(finconn_app: Flask, post_webhook: Callable[..., Any]) -> None:
    rng = random.Random(SEED)
    [account] = link_accounts(finconn_app, Holder("ada", email="ada@example.com"))[:1]
    client = finconn_app.test_client()
    secret = get_state(finconn_app).settings.webhook_secrets[0]
    seen: Counter[int] = Counter()
    for number in range(REQUESTS):
        path = rng.choice(PATHS).format(id=segment(rng, account.id))
        if path == "/finconn/webhook" and rng.random() < 0.6:
            raw = signed_event(rng, finconn_app, account.stripe_id)
            response = client.post(
                path,
                data=raw,
                headers={"Content-Type": "application/json", "Stripe-Signature": sign(raw, secret)},
            )
            seen[check(response, f"#{number} signed event {raw[:300]!r}")] += 1
            continue
        method = rng.choice(METHODS)
        data = body(rng)
        response = client.open(
            path,
            method=method,
            data=data,
            query_string=query(rng),
            headers=headers(rng),
        )
        seen[check(response, f"#{number} {method} {path} body {data[:200]!r}", method)] += 1
    # The requests reach past the first checks: successes and each kind of refusal.
    assert {200, 400, 401, 404, 405, 415} <= set(seen), seen
