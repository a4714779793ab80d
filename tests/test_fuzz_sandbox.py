"""A seeded fuzz of every sandbox route: random methods, headers and form parameters (odd
names, unicode, control characters, deep nesting, huge numbers) on the ``/v1`` API, and
random JSON on the modal's routes. Any 5xx, or an answer that is not JSON (the Stripe.js
stand-in and the stylesheet excepted), fails the test with the request that caused it.

The seed is fixed so a failure reproduces; ``FINCONN_FUZZ_SEED`` tries another one.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from typing import Any, cast
from urllib.parse import quote

import pytest
from flask import Flask
from sandbox_support import link, present, sb_fixture  # noqa: F401
from werkzeug.test import Client

from flask_finconn.sandbox import Sandbox, browser
from flask_finconn.sandbox._routes import ROUTES

SEED = int(os.environ.get("FINCONN_FUZZ_SEED", "20261129"))
REQUESTS_PER_ROUTE = 12
MODAL_REQUESTS = 160

_PLACEHOLDER = "([A-Za-z0-9_]+)"
_METHODS = ["GET", "POST", "DELETE", "PUT", "PATCH", "OPTIONS", "HEAD"]
_CONTENT_TYPES = [
    "application/x-www-form-urlencoded",
    "application/x-www-form-urlencoded; charset=utf-8",
    "application/json",
    "text/plain",
    "multipart/form-data; boundary=x",
    "",
]
# Every parameter name the sandbox's routes know, so the fuzz reaches past "unknown".
_NAMES = [
    "limit", "starting_after", "ending_before", "expand", "email", "name", "phone",
    "description", "metadata", "address", "shipping", "preferred_locales", "invoice_settings",
    "tax_exempt", "test_clock", "balance", "created", "account_holder", "permissions",
    "prefetch", "filters", "limits", "manual_entry", "return_url", "session", "features",
    "ownership", "account", "transacted_at", "transaction_refresh", "type", "types",
    "delivery_success", "institution", "accounts", "status", "action", "size", "seconds",
    "retry_now", "query", "client_secret",
]  # fmt: skip
_SUBKEYS = [
    "type", "customer", "account", "after", "gt", "gte", "lt", "lte", "country", "mode",
    "accounts", "line1", "name", "custom_fields", "0", "1", "", "k", "99999999999",
    "\u0663", "\uff11", "\u00b2", "\x00", "a\x00b", "\u202e", "\U0001f600",
]  # fmt: skip


def _value(rng: random.Random, ids: list[str]) -> str:
    kind = rng.randrange(9)
    if kind == 0:
        return str(rng.choice([0, 1, -1, 7, 100, 101, 2**31, 2**63, 10**18, -(10**19), 10**40]))
    if kind == 1:
        return rng.choice(["nan", "inf", "-inf", "1e400", "1.5", "0x10", " 1", "1 ", "+1"])
    if kind == 2:
        return rng.choice(["true", "false", "", "null", "[]", "{}"])
    if kind == 3:
        return rng.choice(ids)
    if kind == 4:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(1, 12)))
    if kind == 5:
        return rng.choice(["\x00", "\u0663", "\uff11\uff10", "\ud7ff", "\U0001f600", "\u202e"])
    if kind == 6:
        return "x" * rng.choice([300, 5001, 40000])
    if kind == 7:
        return rng.choice(
            ["balance", "transactions", "ownership", "customer", "account", "data.ownership"]
        )
    return rng.choice(ids) + rng.choice(["", "x", "\u00e9", "%"])


def _key(rng: random.Random) -> str:
    name = rng.choice(_NAMES) if rng.random() < 0.9 else rng.choice(_SUBKEYS) or "x"
    depth = rng.choice([0, 0, 0, 1, 1, 2, 3, 20, 400])
    return name + "".join(f"[{rng.choice(_SUBKEYS)}]" for _ in range(depth))


def _form(rng: random.Random, ids: list[str], method: str = "GET") -> str:
    if rng.random() < 0.4:
        # A plausible request, to get past validation into the handlers.
        return rng.choice(["", "limit=3"] if method == "GET" else ["", "features[]=balance"])
    pairs = []
    for _ in range(rng.randrange(0, 7)):
        key, value = _key(rng), _value(rng, ids)
        if rng.random() < 0.05:
            pairs.append(rng.choice(["%ff=1", "a=%e9", "%", "=", "&&", "a[=1", "a]=1", "[]=1"]))
            continue
        pairs.append(f"{quote(key, safe='[]')}={quote(value)}")
    return "&".join(pairs)


def _headers(rng: random.Random) -> dict[str, str]:
    auth = rng.choice(
        ["Bearer sk_test_fuzz"] * 12 + ["Bearer rk_test_fuzz", "Bearer pk_test_x", "Basic !!", ""]
    )
    headers = {"Authorization": auth} if auth else {}
    if rng.random() < 0.3:
        headers["Idempotency-Key"] = rng.choice(["k1", "k2", "x" * 300, "\u00e9"])
    if rng.random() < 0.2:
        headers["Stripe-Version"] = rng.choice(["2026-10-28.endive", "1999-01-01", "x"])
    return headers


@pytest.fixture
def ids(sb: Sandbox) -> list[str]:
    """Real ids of every kind, plus a few that look right and exist nowhere."""
    client = sb.stripe_client()
    accounts = link(sb, client, accounts=["checking", "savings"])
    fc = client.v1.financial_connections
    fc.accounts.subscribe(accounts[0].id, {"features": ["transactions"]})
    sb.finish_refreshes()
    found = [a.id for a in accounts]
    # Not expanded, so the ownership is its id.
    found.append(cast(str, fc.accounts.retrieve(accounts[0].id).ownership or "fcaowns_x"))
    found += [t.id for t in fc.transactions.list({"account": accounts[0].id, "limit": 2}).data]
    customer = client.v1.customers.list({"limit": 1}).data[0].id
    found.append(customer)
    for _ in range(6):
        session = fc.sessions.create(
            {
                "account_holder": {"type": "customer", "customer": customer},
                "permissions": ["balances"],
            }
        )
        found += [session.id, present(session.client_secret)]
    found.append(sb.events()[0]["id"])
    return [*found, "fca_x", "cus_x", "fcsess_x", "evt_x", "fctxn_x", "x", "0"]


_PREFIXES = {"customers": "cus_", "sessions": "fcsess_", "accounts": "fca_", "events": "evt_"}


def _path_id(rng: random.Random, path: str, ids: list[str]) -> str:
    """Mostly an id of the kind the path names, else any id."""
    collection = path.split(_PLACEHOLDER, 1)[0].rstrip("/").rsplit("/", 1)[-1]
    prefix = _PREFIXES.get(collection, "fctxn_" if collection == "transactions" else "")
    fitting = [i for i in ids if prefix and i.startswith(prefix) and "_secret_" not in i]
    return rng.choice(fitting) if fitting and rng.random() < 0.8 else rng.choice(ids)


def _is_json(response: Any) -> bool:
    try:
        json.loads(response.get_data(as_text=True))
    except ValueError:
        return False
    return bool(response.mimetype == "application/json")


def test_fuzz_the_v1_api(sb: Sandbox, ids: list[str]) -> None:
    rng = random.Random(SEED)
    http = Client(sb.wsgi_app)
    statuses: list[int] = []
    for route_method, pattern, _ in ROUTES:
        for _ in range(REQUESTS_PER_ROUTE):
            path = pattern
            while _PLACEHOLDER in path:
                path = path.replace(_PLACEHOLDER, quote(_path_id(rng, path, ids), safe=""), 1)
            method = route_method if rng.random() < 0.8 else rng.choice(_METHODS)
            form = _form(rng, ids, method)
            query = _form(rng, ids) if method != "GET" and rng.random() < 0.2 else ""
            if method == "GET":
                query, form = form, ""
            content_type = rng.choice(_CONTENT_TYPES) if rng.random() < 0.2 else _CONTENT_TYPES[0]
            response = http.open(
                f"{path}?{query}" if query else path,
                method=method,
                data=form.encode() if form else None,
                headers=_headers(rng),
                content_type=content_type or None,
            )
            statuses.append(response.status_code)
            where = f"seed {SEED}: {method} {path}?{query} body={form!r}"
            assert response.status_code < 500, (where, response.get_data(as_text=True))
            assert _is_json(response), (where, response.get_data(as_text=True)[:300])
    assert len(statuses) >= 300
    # Enough requests get past authentication and validation to exercise the handlers.
    assert sum(200 <= s < 300 for s in statuses) >= 20, sorted(statuses)


def _json_value(rng: random.Random, ids: list[str], depth: int = 0) -> Any:
    kind = rng.randrange(10 if depth < 4 else 6)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 10**40, 1.5, float("1e308")])
    if kind == 2:
        return rng.choice(ids)
    if kind == 3:
        return "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(0, 10)))
    if kind == 4:
        return rng.choice(["", "\x00", "bank_nonoauth", "test_oauth", "hunter2", "x" * 5000])
    if kind == 5:
        return rng.choice(["checking", "savings", "credit_card", "fca_x"])
    if kind in (6, 7):
        return [_json_value(rng, ids, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {
        rng.choice(_MODAL_KEYS): _json_value(rng, ids, depth + 1) for _ in range(rng.randrange(4))
    }


_MODAL_KEYS = ["client_secret", "institution", "username", "password", "answer", "accounts", "x"]
_MODAL_ROUTES = [("GET", "session"), ("GET", "institutions")] + [
    ("POST", name) for name in ("login", "authorize", "complete", "cancel")
]


@pytest.fixture
def modal(sb: Sandbox) -> Iterator[Any]:
    app = Flask(__name__)
    app.register_blueprint(browser.make_blueprint(sb), url_prefix="/sb")
    yield app.test_client()


def _modal_body(rng: random.Random, ids: list[str]) -> bytes:
    kind = rng.randrange(10)
    if kind == 0:
        depth = rng.choice([50, 1000, 5000])
        return ("[" * depth + "]" * depth).encode()
    if kind == 1:
        return rng.choice([b"", b"{", b"\xff\xfe", b"null", b"[]", b'"x"', b"1e999", b"NaN"])
    if kind == 2:
        return json.dumps({"client_secret": rng.choice(ids), "x": "y" * 70000}).encode()
    body = {k: _json_value(rng, ids) for k in rng.sample(_MODAL_KEYS, rng.randrange(1, 6))}
    if rng.random() < 0.7:
        body["client_secret"] = rng.choice([i for i in ids if "_secret_" in i])
    return json.dumps(body).encode()


def test_fuzz_the_modal_routes(sb: Sandbox, ids: list[str], modal: Any) -> None:
    rng = random.Random(SEED + 1)
    statuses: list[int] = []
    for _ in range(MODAL_REQUESTS):
        method, name = rng.choice(_MODAL_ROUTES)
        path = f"/sb/api/{name}"
        if method == "GET":
            query = _form(rng, ids)
            if rng.random() < 0.7:
                secret = rng.choice([i for i in ids if "_secret_" in i])
                query += f"&client_secret={quote(secret)}"
            response = modal.get(f"{path}?{query}")
            where = f"seed {SEED + 1}: GET {path}?{query}"
        else:
            body = _modal_body(rng, ids)
            response = modal.post(
                path,
                data=body,
                content_type=rng.choice(["application/json", "text/plain", "application/json"]),
            )
            where = f"seed {SEED + 1}: POST {path} {body[:200]!r}"
        statuses.append(response.status_code)
        assert response.status_code < 500, (where, response.get_data(as_text=True))
        assert _is_json(response), (where, response.get_data(as_text=True)[:300])
    assert sum(200 <= s < 300 for s in statuses) >= 10, sorted(statuses)
    # The script and stylesheet are not JSON, but must never fail either.
    for page in ("/sb/stripe.js", "/sb/static/finconn-sandbox.css"):
        with modal.get(page) as response:
            assert response.status_code == 200
