"""The payments routes of the blueprint: saving bank accounts, verifying, detaching, listing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sandbox_payments_support import ref

from flask_finconn import Holder, get_state, signals
from flask_finconn.testing import (
    captured_signals,
    link_accounts,
    sandbox_of,
    save_account_for_payments,
    save_bank_account,
)

PAYMENT_PERMISSIONS = ["balances", "ownership", "payment_method", "transactions"]
ADA = Holder("ada", email="ada@example.com", name="Ada Lovelace")
BOB = Holder("bob", email="bob@example.com", name="Bob")
JSON = {"Content-Type": "application/json"}


@pytest.fixture
def app(make_finconn_app: Callable[..., Flask]) -> Flask:
    return make_finconn_app(
        FINCONN_PERMISSIONS=PAYMENT_PERMISSIONS,
        FINCONN_MERCHANT_NAME="Acme Rent",
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
    )


def post(client: FlaskClient, path: str, body: Any, holder: str = "ada", **headers: str) -> Any:
    return client.post(
        f"/finconn{path}", json=body, headers={"X-Finconn-Holder": holder, **headers}
    )


def get(client: FlaskClient, path: str, holder: str = "ada") -> Any:
    return client.get(f"/finconn{path}", headers={"X-Finconn-Holder": holder})


def test_saving_a_linked_account_records_the_mandate_of_this_request(app: Flask) -> None:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    client = app.test_client()
    with captured_signals(signals.payment_method_saved, app) as saved:
        response = post(
            client,
            f"/accounts/{checking.id}/payment-method",
            {"mandate": {"accepted": True}},
            **{"User-Agent": "Mozilla/5.0 (Ada)"},
        )
    assert response.status_code == 201, response.json
    body = response.json
    assert body["account"] == checking.id
    assert body["status"] == "verified"
    assert body["last4"] == "6789"
    assert body["account_type"] == "checking"
    assert body["mandate"]["status"] == "active"
    assert body["mandate"]["accepted_at"].endswith("Z")
    assert body["verification"] is None
    assert len(saved) == 1
    with app.app_context():
        from flask_finconn.models import PaymentMethod

        row = get_state(app).db.session.get(PaymentMethod, body["id"])
        assert row is not None and row.mandate_id is not None
        mandate = sandbox_of(app).payments.mandate(row.mandate_id)
    online = mandate["customer_acceptance"]["online"]
    assert online == {"ip_address": "127.0.0.1", "user_agent": "Mozilla/5.0 (Ada)"}
    again = post(client, f"/accounts/{checking.id}/payment-method", {"mandate": {"accepted": True}})
    assert again.status_code == 201 and again.json["id"] == body["id"]
    listed = get(client, "/payment-methods").json["data"]
    assert [m["id"] for m in listed] == [body["id"]]
    assert get(client, f"/payment-methods/{body['id']}").json == body


@pytest.mark.parametrize(
    ("body", "field"),
    [({}, "mandate"), ({"mandate": {"accepted": False}}, "mandate"), ({"mandate": {}}, "mandate")],
)
def test_the_mandate_must_be_accepted(app: Flask, body: dict[str, Any], field: str) -> None:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    response = post(app.test_client(), f"/accounts/{checking.id}/payment-method", body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_request"
    assert field in response.json["error"]["fields"]


def test_accounts_that_cannot_be_debited_are_refused_with_the_reason(app: Flask) -> None:
    client = app.test_client()
    accepted = {"mandate": {"accepted": True}}
    # Stripe does not offer a credit card in a session asking for payment_method.
    [card] = link_accounts(app, ADA, accounts=["credit_card"], permissions=["balances"])
    response = post(client, f"/accounts/{card.id}/payment-method", accepted)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "account_not_debitable"
    [no_permission] = link_accounts(
        app, ADA, institution="test_nonoauth", accounts=["checking"], permissions=["balances"]
    )
    response = post(client, f"/accounts/{no_permission.id}/payment-method", accepted)
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "permission_missing"
    assert error["action"] == "relink_required"
    assert "payment_method" in error["message"]
    [savings] = link_accounts(app, ADA, accounts=["savings"], permissions=PAYMENT_PERMISSIONS)
    sandbox_of(app).deactivate(savings.stripe_id)
    from flask_finconn.testing import deliver_webhooks

    deliver_webhooks(app)
    response = post(client, f"/accounts/{savings.id}/payment-method", accepted)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "account_inactive"
    assert get(client, "/payment-methods").json == {"data": []}


def test_another_holders_objects_are_404(app: Flask) -> None:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    method = save_account_for_payments(app, ADA, checking)
    client = app.test_client()
    accepted = {"mandate": {"accepted": True}}
    assert (
        post(client, f"/accounts/{checking.id}/payment-method", accepted, "bob").status_code == 404
    )
    for path in (f"/payment-methods/{method.id}",):
        response = get(client, path, "bob")
        assert response.status_code == 404
        assert response.json["error"]["code"] == "payment_method_not_found"
    assert post(client, f"/payment-methods/{method.id}/detach", {}, "bob").status_code == 404
    assert (
        post(
            client, f"/payment-methods/{method.id}/verify", {"descriptor_code": "SM11AA"}, "bob"
        ).status_code
        == 404
    )
    assert get(client, "/payment-methods", "bob").json == {"data": []}
    new = post(client, "/setup-intents", {}).json
    stolen = post(client, f"/setup-intents/{new['id']}/complete", {}, "bob")
    assert stolen.status_code == 404
    assert stolen.json["error"]["code"] == "setup_intent_not_found"


def test_state_changing_payment_routes_refuse_cross_site_requests(app: Flask) -> None:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    client = app.test_client()
    response = post(
        client,
        f"/accounts/{checking.id}/payment-method",
        {"mandate": {"accepted": True}},
        Origin="https://evil.example",
    )
    assert response.status_code == 403
    assert response.json["error"]["code"] == "cross_site_request"
    form = client.post(
        "/finconn/setup-intents",
        data="x=1",
        headers={"X-Finconn-Holder": "ada", "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 415
    assert get(client, "/payment-methods").json == {"data": []}


def test_setup_intent_answer_carries_the_mandate_text(app: Flask) -> None:
    client = app.test_client()
    response = post(client, "/setup-intents", {})
    assert response.status_code == 201
    body = response.json
    assert body["id"].startswith("seti_")
    assert body["client_secret"].startswith(body["id"] + "_secret_")
    assert body["sandbox"] is True
    text = body["mandate_text"]
    assert "Acme Rent" in text and "30 (thirty) days" in text and "revoked" in text
    assert post(client, "/setup-intents", {}, holder="").status_code == 401


@pytest.mark.parametrize(
    ("holder", "expected"),
    [
        (ADA, {"name": "Ada Lovelace", "email": "ada@example.com"}),
        (
            Holder("cy", email="cy@example.com"),
            {"name": "cy@example.com", "email": "cy@example.com"},
        ),
        (Holder("dee"), {"name": "dee", "email": None}),
    ],
)
def test_the_setup_intent_carries_the_holders_billing_details(
    make_finconn_app: Callable[..., Flask], holder: Holder, expected: dict[str, Any]
) -> None:
    """What Stripe.js collectBankAccountForSetup needs (a name is required), from the holder
    the host's loader returns: pages need no billing attributes."""
    app = make_finconn_app(FINCONN_PERMISSIONS=PAYMENT_PERMISSIONS)
    get_state(app).extension.holder_loader(lambda: holder)
    response = app.test_client().post("/finconn/setup-intents", json={})
    assert response.status_code == 201 and response.json is not None
    assert response.json["billing_details"] == expected


def test_the_mandate_text_for_a_linked_account_is_one_get_away(app: Flask) -> None:
    client = app.test_client()
    response = get(client, "/mandate")
    assert response.status_code == 200
    assert response.json == {
        "mandate_text": post(client, "/setup-intents", {}).json["mandate_text"]
    }
    assert "Acme Rent" in response.json["mandate_text"]
    with app.app_context():
        assert get_state(app).extension.mandate_text == response.json["mandate_text"]
    assert get(client, "/mandate", holder="").status_code == 401


def test_a_closed_modal_completes_as_cancelled(app: Flask) -> None:
    client = app.test_client()
    new = post(client, "/setup-intents", {}).json
    done = post(client, f"/setup-intents/{new['id']}/complete", {})
    assert done.status_code == 200
    assert done.json == {"payment_method": None, "accounts": [], "cancelled": True}


def test_a_bank_account_collected_through_the_modal_brings_its_account(app: Flask) -> None:
    client = app.test_client()
    new = post(client, "/setup-intents", {}).json
    sb = sandbox_of(app)
    # What the modal does: link an account through Financial Connections into the intent.
    with app.app_context():
        customer = get_state(app).stripe.client.v1.setup_intents.retrieve(new["id"]).customer
    session = sb.stripe_client().v1.financial_connections.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": ref(customer)},
            "permissions": ["payment_method", "balances"],
        }
    )
    sb.complete_session(session.id, institution="bank_nonoauth", accounts=["checking"])
    fca = (
        sb.stripe_client()
        .v1.financial_connections.sessions.retrieve(session.id)
        .accounts.data[0]
        .id
    )
    sb.payments.collect(
        new["client_secret"],
        {
            "type": "us_bank_account",
            "us_bank_account": {"financial_connections_account": fca},
            "billing_details": {"name": "Ada Lovelace"},
        },
    )
    acceptance = {"type": "online", "online": {"ip_address": "203.0.113.7", "user_agent": "UA"}}
    sb.payments.confirm_setup_intent(
        new["id"],
        {
            "client_secret": new["client_secret"],
            "mandate_data": {"customer_acceptance": acceptance},
        },
    )
    done = post(client, f"/setup-intents/{new['id']}/complete", {}).json
    assert done["cancelled"] is False
    assert done["payment_method"]["status"] == "verified"
    assert [a["id"] for a in done["accounts"]] == [done["payment_method"]["account"]]
    assert done["payment_method"]["mandate"]["status"] == "active"
    assert post(client, f"/setup-intents/{new['id']}/complete", {}).json == done


def test_microdeposits_are_verified_with_attempts_counted(app: Flask) -> None:
    method = save_bank_account(app, ADA, verify=False)
    assert method.status == "requires_verification"
    client = app.test_client()
    shown = get(client, f"/payment-methods/{method.id}").json
    assert shown["account"] is None
    assert shown["verification"]["type"] == "descriptor_code"
    # Stripe allows 10 tries of a descriptor code: shown before the first one.
    assert shown["verification"]["attempts_remaining"] == 10
    assert shown["verification"]["arrival_date"].endswith("Z")
    assert shown["mandate"]["status"] == "pending"
    wrong = post(client, f"/payment-methods/{method.id}/verify", {"descriptor_code": "SM99ZZ"})
    assert wrong.status_code == 400
    assert wrong.json["error"]["code"] == "verification_failed"
    assert wrong.json["error"]["attempts_remaining"] == 9
    # A wrong code is told as a code: the holder looks at the deposit's description.
    assert wrong.json["error"]["message"] == (
        "That code does not match the one on the deposit. 9 attempts left."
    )
    shown = get(client, f"/payment-methods/{method.id}").json
    assert shown["verification"]["attempts_remaining"] == 9
    both = post(
        client,
        f"/payment-methods/{method.id}/verify",
        {"descriptor_code": "SM11AA", "amounts": [32, 45]},
    )
    assert both.status_code == 400 and "_schema" in both.json["error"]["fields"]
    # A later read of the intent (a webhook) does not put the count back up.
    from flask_finconn.testing import deliver_webhooks

    deliver_webhooks(app)
    assert (
        get(client, f"/payment-methods/{method.id}").json["verification"]["attempts_remaining"] == 9
    )
    with captured_signals(signals.payment_method_verified, app) as verified:
        ok = post(client, f"/payment-methods/{method.id}/verify", {"descriptor_code": "SM11AA"})
    assert ok.status_code == 200, ok.json
    assert ok.json["status"] == "verified"
    assert ok.json["mandate"]["status"] == "active"
    assert len(verified) == 1
    again = post(client, f"/payment-methods/{method.id}/verify", {"descriptor_code": "SM11AA"})
    assert again.status_code == 409
    assert again.json["error"]["code"] == "verification_not_required"


def test_too_many_wrong_attempts_fail_the_payment_method(app: Flask) -> None:
    method = save_bank_account(app, ADA, verify=False)
    client = app.test_client()
    response = post(client, f"/payment-methods/{method.id}/verify", {"amounts": [10, 11]})
    assert response.status_code == 400
    assert response.json["error"]["attempts_remaining"] == 0
    shown = get(client, f"/payment-methods/{method.id}").json
    assert shown["status"] == "verification_failed"


def test_detaching_revokes_the_mandate(app: Flask) -> None:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    method = save_account_for_payments(app, ADA, checking)
    client = app.test_client()
    with captured_signals(signals.mandate_inactive, app) as ended:
        response = post(client, f"/payment-methods/{method.id}/detach", {})
    assert response.status_code == 200
    assert response.json["status"] == "detached"
    assert response.json["mandate"]["status"] == "inactive"
    assert len(ended) == 1
    assert post(client, f"/payment-methods/{method.id}/detach", {}).json == response.json
    # A new mandate can be given for the same account afterwards.
    fresh = post(client, f"/accounts/{checking.id}/payment-method", {"mandate": {"accepted": True}})
    assert fresh.status_code == 201 and fresh.json["id"] != method.id


def test_payments_are_listed_newest_first_for_their_holder_only(app: Flask) -> None:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    method = save_account_for_payments(app, ADA, checking)
    with app.app_context():
        finconn = get_state(app).extension
        first = finconn.debit("ada", method.id, 1000, description="Rent", idempotency_key="o-1").id
        second = finconn.debit("ada", method.id, 2500, description="Fee", idempotency_key="o-2").id
    client = app.test_client()
    listed = get(client, "/payments").json["data"]
    assert [p["id"] for p in listed] == [second, first]
    assert listed[0] == {
        "id": second,
        "payment_method": method.id,
        "amount": 2500,
        "currency": "usd",
        "description": "Fee",
        "status": "processing",
        "failure": None,
        "created_at": listed[0]["created_at"],
        "updated_at": listed[0]["updated_at"],
    }
    assert get(client, f"/payments/{first}").json["amount"] == 1000
    assert get(client, "/payments", "bob").json == {"data": []}
    missing = get(client, f"/payments/{first}", "bob")
    assert missing.status_code == 404
    assert missing.json["error"]["code"] == "payment_not_found"
