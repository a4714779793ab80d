"""Raw HTTP against the sandbox: bad input always gets Stripe's JSON error, never a 500 or HTML.

Also the standalone server: ``python -m flask_finconn.sandbox`` on loopback, driven by the
SDK, and its state surviving a restart.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from typing import Any, cast

import pytest
import stripe
from click.testing import CliRunner
from sandbox_support import free_port, present, sb_fixture, server_factory_fixture  # noqa: F401
from stripe.params.financial_connections import TransactionListParams
from werkzeug.test import Client

from flask_finconn.sandbox import Sandbox
from flask_finconn.sandbox._routes import ROUTES

AUTH = {"Authorization": "Bearer sk_test_sandbox"}
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def http(sb: Sandbox) -> Client:
    return Client(sb.wsgi_app)


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Request-Id"].startswith("req_")
    body = json.loads(response.get_data(as_text=True))
    assert set(body) == {"error"} and body["error"]["message"]
    return dict(body["error"])


FC = "/v1/financial_connections"
TH = "/v1/test_helpers/financial_connections"
JSON_BODY = {"data": '{"email": "a@b.c"}', "content_type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("GET", "/v1/nothing", {}, 404, None),
        ("DELETE", "/v1/customers", {}, 404, None),
        ("GET", "/", {}, 404, None),
        ("GET", "/v1/customers?limit=abc", {}, 400, "parameter_invalid_integer"),
        ("GET", "/v1/customers?limit=1e3", {}, 400, "parameter_invalid_integer"),
        ("GET", "/v1/customers?a[b=1", {}, 400, None),
        ("GET", "/v1/customers?email[x]=1", {}, 400, None),
        ("GET", "/v1/customers?expand=data", {}, 400, None),
        ("GET", "/v1/customers?%ff=1", {}, 400, None),
        ("POST", "/v1/customers", {"data": "metadata[a]=1&metadata=2"}, 400, None),
        ("POST", "/v1/customers", {"data": "metadata[0]=x"}, 400, None),
        ("POST", "/v1/customers", {"data": b"email=\xff\xfe"}, 400, None),
        ("POST", "/v1/customers", JSON_BODY, 400, None),
        ("POST", "/v1/customers", {"data": "x=" + "a" * (1 << 20)}, 400, None),
        ("POST", f"{FC}/sessions", {"data": "permissions=balances"}, 400, "parameter_missing"),
        ("POST", f"{FC}/sessions", {"data": "account_holder=x&permissions[]=balances"}, 400, None),
        ("GET", f"{FC}/accounts/fca_x/owners?ownership[]=1", {}, 400, None),
        (
            "GET",
            f"{FC}/transactions?account=fca_x&transacted_at[gte]=x",
            {},
            400,
            "parameter_invalid_integer",
        ),
        ("GET", "/v1/events?created[between]=1", {}, 400, "parameter_unknown"),
        ("POST", f"{TH}/advance_time", {"data": "seconds=-5"}, 400, "parameter_invalid_integer"),
        (
            "POST",
            f"{TH}/finish_refreshes",
            {"data": "status=maybe"},
            400,
            "parameter_invalid_string",
        ),
        (
            "POST",
            f"{TH}/deliver_events",
            {"data": "retry_now=yes"},
            400,
            "parameter_invalid_boolean",
        ),
        ("POST", f"{TH}/sessions/fcsess_x/complete", {}, 404, "resource_missing"),
    ],
)
def test_bad_requests_get_stripe_errors(
    http: Client, method: str, path: str, kwargs: dict[str, Any], status: int, code: str | None
) -> None:
    kwargs.setdefault("content_type", FORM)
    response = http.open(path, method=method, headers=AUTH, **kwargs)
    error = _error(response, status)
    assert error["type"] == "invalid_request_error"
    assert error.get("code") == code


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer sk_test_"},
        {"Authorization": "Bearer pk_test_sandbox"},
        {"Authorization": "Token sk_test_sandbox"},
        {"Authorization": "Basic !!!"},
        {"Authorization": "Bearer sk_live_abcdef"},
    ],
)
def test_missing_or_bad_keys_are_401(http: Client, headers: dict[str, str]) -> None:
    error = _error(http.get("/v1/customers", headers=headers), 401)
    assert error["type"] == "invalid_request_error"


def test_basic_auth_and_bracket_forms_are_accepted(http: Client) -> None:
    basic = "Basic " + base64.b64encode(b"sk_test_anything:").decode()
    created = http.post(
        "/v1/customers",
        data="email=a%40b.c&metadata%5Bplan%5D=gold&expand[]=test_clock",
        headers={"Authorization": basic},
        content_type=FORM,
    )
    assert created.status_code == 200, created.get_data(as_text=True)
    assert created.json is not None and created.json["metadata"] == {"plan": "gold"}
    listed = http.get("/v1/customers?limit=%31", headers=AUTH)
    assert listed.json is not None and len(listed.json["data"]) == 1


def test_idempotency_is_per_key_and_replays_headers(http: Client) -> None:
    headers = {**AUTH, "Idempotency-Key": "k1"}
    first = http.post("/v1/customers", data="email=a%40b.c", headers=headers, content_type=FORM)
    again = http.post("/v1/customers", data="email=a%40b.c", headers=headers, content_type=FORM)
    assert first.get_data() == again.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    other_path = http.post(
        "/v1/financial_connections/sessions",
        data="email=a%40b.c",
        headers=headers,
        content_type=FORM,
    )
    assert _error(other_path, 400)["type"] == "idempotency_error"
    # A request that failed validation stores nothing: the key stays usable.
    bad = {**AUTH, "Idempotency-Key": "k2"}
    assert (
        http.post("/v1/customers", data="nope=1", headers=bad, content_type=FORM).status_code == 400
    )
    assert (
        http.post("/v1/customers", data="email=x", headers=bad, content_type=FORM).status_code
        == 200
    )


def test_random_input_never_breaks_the_sandbox(sb: Sandbox, http: Client) -> None:
    """A small fuzz: random params on every route give 2xx or a 4xx JSON error, never a 500."""
    rng = random.Random(7)
    tokens = [
        "|",
        "x",
        "0",
        "-1",
        "101",
        "true",
        "fca_x",
        "cus_x",
        "fcsess_x",
        "%ff",
        "[",
        "]",
        "balance",
        "transactions",
        "customer",
    ]
    tokens += ["", "\u00e9", "a" * 300]
    keys = [
        "limit",
        "expand[]",
        "expand[0]",
        "account",
        "features[]",
        "features[0]",
        "type",
        "account_holder[type]",
        "account_holder[customer]",
        "permissions[0]",
        "session",
        "starting_after",
        "ending_before",
        "transacted_at[gt]",
        "transaction_refresh[after]",
        "ownership",
        "filters[country]",
        "limits[accounts]",
        "seconds",
        "status",
        "size",
        "a[b][c]",
        "a[]",
        "metadata[k]",
        "email",
    ]
    for method, pattern, _ in ROUTES:
        path = pattern.replace("([A-Za-z0-9_]+)", rng.choice(["fca_x", "fcsess_x", "cus_x", "x"]))
        for _ in range(15):
            pairs = [(rng.choice(keys), rng.choice(tokens)) for _ in range(rng.randint(0, 5))]
            query = "&".join(f"{k}={v}" for k, v in pairs)
            if method == "GET":
                response = http.get(f"{path}?{query}", headers=AUTH)
            else:
                response = http.post(path, data=query, headers=AUTH, content_type=FORM)
            assert response.status_code < 500, (method, path, query, response.get_data())
            json.loads(response.get_data(as_text=True))


# --- the standalone server -------------------------------------------------------------------


def test_standalone_server_speaks_to_the_sdk_and_keeps_state(
    server_factory: Any, tmp_path: Any
) -> None:
    database, port = str(tmp_path / "server.sqlite3"), free_port()
    url = server_factory(database, port, "--refresh-delay", "0.2")
    client = stripe.StripeClient("sk_test_anything", base_addresses={"api": url})
    fc = client.v1.financial_connections
    customer = client.v1.customers.create({"email": "jenny.rosen@example.com"})
    session = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances", "transactions"],
        }
    )
    helpers = "/v1/test_helpers/financial_connections"
    client.raw_request(
        "post", f"{helpers}/sessions/{session.id}/complete", institution="bank_oauth"
    )
    accounts = list(fc.accounts.list({"session": session.id, "limit": 1}).auto_paging_iter())
    assert len(accounts) == 3
    checking = next(a for a in accounts if a.subcategory == "checking")
    assert present(
        fc.accounts.refresh(checking.id, {"features": ["balance"]}).balance_refresh
    ).status == ("pending")
    deadline = time.monotonic() + 10
    while present(fc.accounts.retrieve(checking.id).balance_refresh).status == "pending":
        assert time.monotonic() < deadline, "the refresh should finish after its delay"
        time.sleep(0.1)
    with pytest.raises(stripe.InvalidRequestError) as info:
        fc.transactions.list(cast("TransactionListParams", {}))  # deliberately malformed
    assert info.value.code == "parameter_missing"

    server_factory.stop()
    url = server_factory(database, port, "--refresh-delay", "0.2")
    client = stripe.StripeClient("sk_test_anything", base_addresses={"api": url})
    again = client.v1.financial_connections.accounts.retrieve(checking.id)
    assert present(again.balance_refresh).status == "succeeded"
    assert client.v1.customers.retrieve(customer.id).email == "jenny.rosen@example.com"


def test_cli_serve_help_and_mount() -> None:
    from flask_finconn.sandbox.cli import sandbox_cli

    result = CliRunner().invoke(sandbox_cli, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output and "--database" in result.output
    from flask_finconn.cli import finconn_cli

    result = CliRunner().invoke(finconn_cli, ["sandbox", "serve", "--help"])
    assert result.exit_code == 0 and "--webhook-url" in result.output


def test_serve_under_flask_uses_the_apps_sandbox_database(tmp_path: Any) -> None:
    import click
    from flask import Flask
    from flask.cli import ScriptInfo

    from flask_finconn.sandbox.cli import _app_database, sandbox_cli

    app = Flask("host", instance_path=str(tmp_path))
    with click.Context(sandbox_cli, obj=ScriptInfo(create_app=lambda: app)):
        assert _app_database() == os.path.join(str(tmp_path), "finconn-sandbox.sqlite3")
        app.config["FINCONN_SANDBOX_DATABASE"] = "elsewhere.sqlite3"
        assert _app_database() == "elsewhere.sqlite3"
    with click.Context(sandbox_cli):
        assert _app_database() is None
