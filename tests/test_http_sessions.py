"""POST /sessions and POST /sessions/<id>/complete, over HTTP, on the sandbox."""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from flask_finconn import account_linked, get_state
from flask_finconn.models import Account
from flask_finconn.testing import HOLDER_HEADER, captured_signals, sandbox_of

ACCOUNT_KEYS = {
    "id",
    "institution_name",
    "display_name",
    "last4",
    "category",
    "subcategory",
    "status",
    "action",
    "permissions",
    "subscriptions",
    "balance",
    "refresh",
    "linked_at",
    "updated_at",
}


def post(
    client: FlaskClient, url: str, body: Any = None, *, holder: str | None = "ada", **kw: Any
) -> TestResponse:
    headers = {HOLDER_HEADER: holder} if holder else {}
    headers.update(kw.pop("headers", {}))
    return client.post(url, json={} if body is None else body, headers=headers, **kw)


def open_session(client: FlaskClient, holder: str = "ada", body: Any = None) -> dict[str, Any]:
    response = post(client, "/finconn/sessions", body, holder=holder)
    assert response.status_code == 201, response.json
    data: dict[str, Any] = response.json  # type: ignore[assignment]
    return data


def link(
    app: Flask, client: FlaskClient, holder: str = "ada", accounts: list[str] | None = None
) -> TestResponse:
    session = open_session(client, holder)
    sandbox_of(app).complete_session(session["id"], "bank_nonoauth", accounts)
    return post(client, f"/finconn/sessions/{session['id']}/complete", holder=holder)


def error_code(response: TestResponse) -> str:
    assert response.mimetype == "application/json"
    body: dict[str, Any] = response.json  # type: ignore[assignment]
    return str(body["error"]["code"])


# POST /sessions


def test_create_session_gives_the_browser_what_it_needs(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    data = open_session(finconn_client)
    assert set(data) == {"id", "client_secret", "publishable_key", "stripe_js_url", "sandbox"}
    assert data["id"].startswith("fcsess_")
    assert data["client_secret"].startswith("fcsess_client_secret_")
    assert data["publishable_key"] == "pk_test_sandbox"
    assert data["sandbox"] is True
    assert data["stripe_js_url"] == "/finconn/sandbox/stripe.js"
    session = sandbox_of(finconn_app).session(data["id"])
    assert session["permissions"] == ["balances", "transactions"]
    assert session["filters"]["country"] == "US"


def test_each_holder_gets_one_customer_with_their_email(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    sandbox = sandbox_of(finconn_app)
    customers = [
        sandbox.session(open_session(finconn_client, holder)["id"])["account_holder"]["customer"]
        for holder in ("ada", "ada", "bob")
    ]
    assert customers[0] == customers[1] != customers[2]
    assert sandbox.customer(customers[0])["email"] == "ada@example.com"


def test_permissions_can_be_narrowed(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    data = open_session(finconn_client, body={"permissions": ["balances"]})
    assert sandbox_of(finconn_app).session(data["id"])["permissions"] == ["balances"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"permissions": ["ownership"]}, "permissions"),
        ({"permissions": ["moods"]}, "permissions"),
        ({"permissions": []}, "permissions"),
        ({"permissions": "balances"}, "permissions"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_invalid_session_bodies_name_the_field(
    finconn_client: FlaskClient, body: dict[str, Any], field: str
) -> None:
    response = post(finconn_client, "/finconn/sessions", body)
    assert response.status_code == 400
    assert error_code(response) == "invalid_request"
    assert field in response.json["error"]["fields"]  # type: ignore[index]


def test_no_holder_is_401(finconn_client: FlaskClient) -> None:
    response = post(finconn_client, "/finconn/sessions", holder=None)
    assert response.status_code == 401
    assert error_code(response) == "not_authenticated"


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 400, "invalid_json"),
        ("[1, 2]", "application/json", 400, "invalid_request"),
        (
            "permissions=balances",
            "application/x-www-form-urlencoded",
            415,
            "unsupported_media_type",
        ),
        ("", "text/plain", 415, "unsupported_media_type"),
    ],
)
def test_bodies_must_be_json_objects(
    finconn_client: FlaskClient, data: str, content_type: str, status: int, code: str
) -> None:
    response = finconn_client.post(
        "/finconn/sessions",
        data=data,
        content_type=content_type,
        headers={HOLDER_HEADER: "ada"},
    )
    assert response.status_code == status
    assert error_code(response) == code


def test_an_empty_json_body_is_fine(finconn_client: FlaskClient) -> None:
    response = finconn_client.post(
        "/finconn/sessions", content_type="application/json", headers={HOLDER_HEADER: "ada"}
    )
    assert response.status_code == 201


def test_oversized_bodies_are_413(finconn_client: FlaskClient) -> None:
    big = {"permissions": ["balances"] * 20_000}
    response = post(finconn_client, "/finconn/sessions", big)
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"Origin": "https://evil.example"}, 403),
        ({"Origin": "null"}, 403),
        ({"Sec-Fetch-Site": "cross-site"}, 403),
        ({"Origin": "http://localhost"}, 201),
        ({"Origin": "https://shop.example"}, 201),
        ({"Sec-Fetch-Site": "same-origin"}, 201),
    ],
)
def test_cross_site_requests_are_refused(
    make_finconn_app: Callable[..., Flask], headers: dict[str, str], status: int
) -> None:
    app = make_finconn_app(FINCONN_ALLOWED_ORIGINS=["https://shop.example"])
    response = post(app.test_client(), "/finconn/sessions", headers=headers)
    assert response.status_code == status
    if status == 403:
        assert error_code(response) == "cross_site_request"


def test_stripe_outage_is_502_without_secrets(
    finconn_app: Flask, finconn_client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox_of(finconn_app).faults.fail_next(500, 503, 500)
    response = post(finconn_client, "/finconn/sessions")
    assert response.status_code == 502
    assert error_code(response) == "stripe_unavailable"
    text = response.get_data(as_text=True) + caplog.text
    assert "sk_test_sandbox" not in text
    assert "client_secret" not in text
    # The outage is over: the same request now works.
    assert post(finconn_client, "/finconn/sessions").status_code == 201


def test_one_failure_is_retried(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    sandbox_of(finconn_app).faults.fail_next(500)
    assert post(finconn_client, "/finconn/sessions").status_code == 201


# POST /sessions/<id>/complete


def test_complete_stores_the_linked_accounts(make_finconn_app: Callable[..., Flask]) -> None:
    # Refreshes stay pending until the test finishes them, however slow the machine.
    finconn_app = make_finconn_app(FINCONN_SANDBOX_REFRESH_DELAY=3600.0)
    finconn_client = finconn_app.test_client()
    with captured_signals(account_linked, finconn_app) as linked:
        response = link(finconn_app, finconn_client, accounts=["checking", "savings"])
    assert response.status_code == 200
    body = response.json
    assert body is not None
    assert body["cancelled"] is False
    accounts = body["accounts"]
    assert [a["display_name"] for a in accounts] == [
        "Sample Checking Account",
        "Sample Savings Account",
    ]
    first = accounts[0]
    assert set(first) == ACCOUNT_KEYS
    assert first["id"].startswith("fcacct_")
    assert first["institution_name"] == "Bank (Non-OAuth)"
    assert (first["last4"], first["category"], first["subcategory"]) == ("6789", "cash", "checking")
    assert (first["status"], first["action"]) == ("active", "none")
    assert first["permissions"] == ["balances", "transactions"]
    assert first["subscriptions"] == ["transactions"]
    assert first["balance"] is None
    assert first["refresh"]["transactions"]["status"] == "pending"
    assert first["linked_at"].endswith("Z")
    assert sorted(s["account"].id for s in linked) == sorted(a["id"] for a in accounts)


def test_completing_twice_is_harmless(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    session = open_session(finconn_client)
    sandbox_of(finconn_app).complete_session(session["id"], "bank_nonoauth", ["checking"])
    url = f"/finconn/sessions/{session['id']}/complete"
    with captured_signals(account_linked, finconn_app) as linked:
        first = post(finconn_client, url).json
        second = post(finconn_client, url).json
    assert first is not None and second is not None
    assert [a["id"] for a in first["accounts"]] == [a["id"] for a in second["accounts"]]
    assert len(linked) == 1
    listed = finconn_client.get("/finconn/accounts", headers={HOLDER_HEADER: "ada"}).json
    assert listed is not None and len(listed["data"]) == 1


def test_cancelled_session_links_nothing(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    cancelled = open_session(finconn_client)
    sandbox_of(finconn_app).cancel_session(cancelled["id"])
    closed_early = open_session(finconn_client)
    with captured_signals(account_linked, finconn_app) as linked:
        for session in (cancelled, closed_early):
            response = post(finconn_client, f"/finconn/sessions/{session['id']}/complete")
            assert response.status_code == 200
            assert response.json == {"accounts": [], "cancelled": True}
    assert linked == []


def test_another_holders_session_is_404(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    session = open_session(finconn_client, "ada")
    sandbox_of(finconn_app).complete_session(session["id"], "bank_nonoauth")
    url = f"/finconn/sessions/{session['id']}/complete"
    response = post(finconn_client, url, holder="bob")
    assert response.status_code == 404
    assert error_code(response) == "session_not_found"
    bobs = finconn_client.get("/finconn/accounts", headers={HOLDER_HEADER: "bob"}).json
    assert bobs == {"data": []}
    assert post(finconn_client, url, holder="ada").status_code == 200


def test_unknown_session_is_404(finconn_client: FlaskClient) -> None:
    response = post(finconn_client, "/finconn/sessions/fcsess_nope/complete")
    assert response.status_code == 404
    assert error_code(response) == "session_not_found"


def test_account_ids_from_the_browser_are_refused(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    bobs = link(finconn_app, finconn_client, holder="bob", accounts=["checking"])
    with finconn_app.app_context():
        bob_account = get_state(finconn_app).db.session.get(Account, bobs.json["accounts"][0]["id"])  # type: ignore[index]
        assert bob_account is not None
        bob_stripe_id = bob_account.stripe_id
    session = open_session(finconn_client)
    response = post(
        finconn_client,
        f"/finconn/sessions/{session['id']}/complete",
        {"accounts": [bob_stripe_id]},
    )
    assert response.status_code == 400
    assert response.json["error"]["fields"] == {"accounts": ["Unknown field."]}  # type: ignore[index]
    listed = finconn_client.get("/finconn/accounts", headers={HOLDER_HEADER: "ada"})
    assert listed.json == {"data": []}


def test_a_session_listing_another_customers_account_is_refused(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    from flask_finconn.models import LinkSession
    from flask_finconn.services.customers import find_customer

    open_session(finconn_client, "ada")  # Ada's customer
    bobs = open_session(finconn_client, "bob")
    sandbox_of(finconn_app).complete_session(bobs["id"], "bank_nonoauth", ["checking"])
    with finconn_app.app_context():
        db = get_state(finconn_app).db
        ada = find_customer(get_state(finconn_app), "ada")
        stored = db.session.get(LinkSession, bobs["id"])
        assert ada is not None and stored is not None
        # Our row says Ada's; at Stripe the session is Bob's customer's.
        stored.holder_id, stored.customer_id = "ada", ada.id
        db.session.commit()
    response = post(finconn_client, f"/finconn/sessions/{bobs['id']}/complete", holder="ada")
    assert response.status_code == 404
    assert error_code(response) == "session_not_found"
    with finconn_app.app_context():
        assert get_state(finconn_app).db.session.query(Account).count() == 0


def test_complete_needs_a_holder(finconn_client: FlaskClient) -> None:
    session = open_session(finconn_client)
    response = post(finconn_client, f"/finconn/sessions/{session['id']}/complete", holder=None)
    assert response.status_code == 401


def test_complete_during_an_outage_is_502_then_works(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    session = open_session(finconn_client)
    sandbox = sandbox_of(finconn_app)
    sandbox.complete_session(session["id"], "bank_nonoauth", ["checking"])
    url = f"/finconn/sessions/{session['id']}/complete"
    sandbox.faults.fail_next(503, 503, 503)
    response = post(finconn_client, url)
    assert response.status_code == 502
    assert error_code(response) == "stripe_unavailable"
    again = post(finconn_client, url).json
    assert again is not None and len(again["accounts"]) == 1


def test_prefetch_starts_refreshes_at_link(make_finconn_app: Callable[..., Flask]) -> None:
    app = make_finconn_app(FINCONN_PREFETCH=["balances"], FINCONN_SANDBOX_REFRESH_DELAY=3600.0)
    client = app.test_client()
    session = open_session(client)
    assert sandbox_of(app).session(session["id"])["prefetch"] == ["balances"]
    sandbox_of(app).complete_session(session["id"], "bank_nonoauth", ["checking"])
    body = post(client, f"/finconn/sessions/{session['id']}/complete").json
    assert body is not None
    assert body["accounts"][0]["refresh"]["balance"]["status"] == "pending"


@pytest.mark.parametrize(
    ("config", "body"),
    [
        ({"FINCONN_SUBSCRIBE_TRANSACTIONS": False}, None),
        ({}, {"permissions": ["balances"]}),
    ],
)
def test_no_subscription_unless_enabled_and_permitted(
    make_finconn_app: Callable[..., Flask], config: dict[str, Any], body: Any
) -> None:
    app = make_finconn_app(**config)
    client = app.test_client()
    session = open_session(client, body=body)
    sandbox_of(app).complete_session(session["id"], "bank_nonoauth", ["checking"])
    result = post(client, f"/finconn/sessions/{session['id']}/complete").json
    assert result is not None
    assert result["accounts"][0]["subscriptions"] == []


def test_relinking_keeps_one_account(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    first = link(finconn_app, finconn_client, accounts=["checking"]).json
    second = link(finconn_app, finconn_client, accounts=["checking"]).json
    assert first is not None and second is not None
    assert first["accounts"][0]["id"] == second["accounts"][0]["id"]
    listed = finconn_client.get("/finconn/accounts", headers={HOLDER_HEADER: "ada"}).json
    assert listed is not None and len(listed["data"]) == 1
    # The replaced link is disconnected at Stripe, so it is not refreshed (and billed) twice.
    with finconn_app.app_context():
        account = get_state(finconn_app).db.session.get(Account, first["accounts"][0]["id"])
        assert account is not None and len(account.previous_stripe_ids) == 1
        sandbox = sandbox_of(finconn_app)
        assert sandbox.account(account.previous_stripe_ids[0])["status"] == "disconnected"
        assert sandbox.account(account.stripe_id)["status"] == "active"


def test_host_csrf_protection_is_honoured(make_finconn_app: Callable[..., Flask]) -> None:
    from flask_wtf.csrf import CSRFProtect, generate_csrf

    app = make_finconn_app(SECRET_KEY="csrf-test")
    CSRFProtect(app)

    @app.get("/token")
    def token() -> str:
        return str(generate_csrf())

    client = app.test_client()
    refused = post(client, "/finconn/sessions")
    assert refused.status_code == 400
    assert error_code(refused) == "csrf_failed"
    csrf = client.get("/token").get_data(as_text=True)
    accepted = post(client, "/finconn/sessions", headers={"X-CSRFToken": csrf})
    assert accepted.status_code == 201


def test_bodies_without_a_length_are_limited_too(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(FINCONN_MAX_CONTENT_LENGTH=1024)
    client = app.test_client()
    small = b'{"permissions": ["balances", "balances"]}'
    big = b'{"permissions": [' + b'"balances", ' * 200 + b'"balances"]}'
    for body, status in ((small, 201), (big, 413)):
        response = client.post(
            "/finconn/sessions",
            input_stream=io.BytesIO(body),
            headers={
                HOLDER_HEADER: "ada",
                "Content-Type": "application/json",
                "Transfer-Encoding": "chunked",
            },
            # What a server that de-chunks (Werkzeug's, gunicorn's) tells the app.
            environ_overrides={"wsgi.input_terminated": True},
        )
        assert response.status_code == status
    assert error_code(response) == "payload_too_large"


@pytest.mark.parametrize("csrf_first", [True, False])
def test_only_the_webhook_is_exempt_from_csrf(database_url: str, csrf_first: bool) -> None:
    from flask_sqlalchemy import SQLAlchemy
    from flask_wtf.csrf import CSRFProtect

    from flask_finconn import FinConn, Holder

    app = Flask("host")
    app.config.update(
        TESTING=True,
        SECRET_KEY="csrf-test",
        SQLALCHEMY_DATABASE_URI=database_url,
        FINCONN_SANDBOX_DATABASE=":memory:",
    )
    db = SQLAlchemy(app)
    finconn = FinConn(db=db)
    finconn.holder_loader(lambda: Holder("ada"))
    csrf = CSRFProtect()
    if csrf_first:
        csrf.init_app(app)
    finconn.init_app(app)
    if not csrf_first:
        csrf.init_app(app)
    client = app.test_client()
    session = post(client, "/finconn/sessions")
    assert (session.status_code, error_code(session)) == (400, "csrf_failed")
    hook = client.post("/finconn/webhook", data=b"{}", content_type="application/json")
    # Refused for its missing signature, not for a CSRF token it can never have.
    assert hook.status_code == 400
    assert error_code(hook) == "missing_signature"
    with app.app_context():
        db.engine.dispose()


def test_sandbox_events_reach_the_webhook_signed(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    link(finconn_app, finconn_client, accounts=["checking"])
    sandbox = sandbox_of(finconn_app)
    assert sandbox.deliver_events(retry_now=True) >= 1
    attempts = sandbox.webhook_attempts()
    assert attempts
    assert {attempt["status"] for attempt in attempts} == {200}


def test_relink_stored_by_a_webhook_first_still_retires_the_old_link(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    first = link(finconn_app, finconn_client, accounts=["checking"]).json
    assert first is not None
    sandbox = sandbox_of(finconn_app)
    sandbox.deliver_events(retry_now=True)
    session = open_session(finconn_client)
    sandbox.complete_session(session["id"], "bank_nonoauth", ["checking"])
    with captured_signals(account_linked, finconn_app) as linked:
        sandbox.deliver_events(retry_now=True)  # the webhook beats the browser
        second = post(finconn_client, f"/finconn/sessions/{session['id']}/complete").json
    assert second is not None
    assert second["accounts"][0]["id"] == first["accounts"][0]["id"]
    assert len(linked) == 1
    with finconn_app.app_context():
        account = get_state(finconn_app).db.session.get(Account, first["accounts"][0]["id"])
        assert account is not None
        assert sandbox.account(account.previous_stripe_ids[-1])["status"] == "disconnected"
        assert sandbox.account(account.stripe_id)["status"] == "active"


def test_a_changed_email_reaches_the_customer(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    from flask_finconn import Holder
    from flask_finconn.services.customers import get_or_create_customer

    first = open_session(finconn_client)
    sandbox = sandbox_of(finconn_app)
    customer_id = sandbox.session(first["id"])["account_holder"]["customer"]
    with finconn_app.app_context():
        state = get_state(finconn_app)
        customer = get_or_create_customer(state, Holder("ada", email="ada@new.example"))
        assert customer.stripe_id == customer_id
        assert customer.email == "ada@new.example"
    assert sandbox.customer(customer_id)["email"] == "ada@new.example"
