"""Debits followed to settlement by webhooks: each test bank account's outcome, forward only,
exactly once, whatever the order, and nothing for objects this app did not create."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
from flask import Flask
from stripe.params import PaymentIntentCreateParams

from flask_finconn import Holder, StripeUnavailable, get_state, signals
from flask_finconn.models import Customer, Payment, PaymentMethod, WebhookEvent
from flask_finconn.testing import (
    captured_signals,
    deliver_webhooks,
    sandbox_of,
    save_bank_account,
    settle_payments,
)

ADA = Holder("ada", email="ada@example.com", name="Ada Lovelace")
SUCCESS = "000123456789"
INSUFFICIENT_FUNDS = "000222222227"
ACCOUNT_CLOSED = "000111111113"
DISPUTE = "000555555559"


@pytest.fixture
def app(make_finconn_app: Callable[..., Flask]) -> Flask:
    app = make_finconn_app(FINCONN_SANDBOX_REFRESH_DELAY=3600)
    # Settlement only when a test says so.
    sandbox_of(app).payments.settlement_delay = 10**9
    return app


def start_debit(app: Flask, account_number: str, key: str = "order-1") -> tuple[str, str]:
    method = save_bank_account(app, ADA, account_number)
    assert method.status == "verified"
    with app.app_context():
        payment = get_state(app).extension.debit(
            "ada", method.id, 4200, description="Rent", idempotency_key=key
        )
        assert payment.stripe_id is not None
        return payment.id, payment.stripe_id


def stored(app: Flask, payment_id: str) -> dict[str, Any]:
    with app.app_context():
        payment = get_state(app).db.session.get(Payment, payment_id)
        assert payment is not None
        return {
            "status": payment.status,
            "failure_code": payment.failure_code,
            "failure_message": payment.failure_message,
        }


OUTCOMES = [
    (SUCCESS, "succeeded", None, signals.payment_succeeded),
    (INSUFFICIENT_FUNDS, "failed", "insufficient_funds", signals.payment_failed),
    (ACCOUNT_CLOSED, "failed", "account_closed", signals.payment_failed),
]


@pytest.mark.parametrize(("number", "status", "code", "signal"), OUTCOMES)
def test_each_test_account_settles_as_the_bank_says(
    app: Flask, number: str, status: str, code: str | None, signal: Any
) -> None:
    payment_id, _ = start_debit(app, number)
    deliver_webhooks(app)
    assert stored(app, payment_id)["status"] == "processing"
    with captured_signals(signal, app) as sent:
        assert settle_payments(app) == 1
    result = stored(app, payment_id)
    assert result["status"] == status
    assert result["failure_code"] == code
    if code is not None:
        assert result["failure_message"].startswith("The bank returned the debit")
    assert len(sent) == 1 and sent[0]["payment"].id == payment_id
    # Every event again, in reverse order: nothing moves back, nothing is announced twice.
    with captured_signals(signal, app) as again:
        replay_all(app, reverse=True)
    assert again == []
    assert stored(app, payment_id) == result


def replay_all(app: Flask, *, reverse: bool = False) -> None:
    """POST every sandbox event to the app once more under a fresh id (a duplicate delivery
    with a new id is processed, not deduplicated by the ledger)."""
    import json

    from flask_finconn.webhooks import sign

    events = sandbox_of(app).events()
    secret = get_state(app).settings.webhook_secrets[-1]
    client = app.test_client()
    for event in reversed(events) if reverse else events:
        copy = dict(event, id=event["id"] + "_again")
        raw = json.dumps(copy).encode()
        response = client.post(
            "/finconn/webhook",
            data=raw,
            headers={"Content-Type": "application/json", "Stripe-Signature": sign(raw, secret)},
        )
        assert response.status_code == 200, response.json


def test_a_dispute_after_success_is_recorded_and_ends_the_mandate(app: Flask) -> None:
    payment_id, intent_id = start_debit(app, DISPUTE)
    settle_payments(app)
    assert stored(app, payment_id)["status"] == "succeeded"
    with (
        captured_signals(signals.payment_disputed, app) as disputed,
        captured_signals(signals.mandate_inactive, app) as ended,
    ):
        sandbox_of(app).payments.dispute(intent_id)
        deliver_webhooks(app)
    assert stored(app, payment_id)["status"] == "disputed"
    assert len(disputed) == 1 and len(ended) == 1
    with app.app_context():
        method = get_state(app).db.session.query(PaymentMethod).one()
        assert method.mandate_status == "inactive"
        with pytest.raises(Exception) as refused:
            get_state(app).extension.debit(
                "ada", method.id, 100, description="Again", idempotency_key="order-2"
            )
    assert getattr(refused.value, "code", None) == "mandate_inactive"
    replay_all(app, reverse=True)
    assert stored(app, payment_id)["status"] == "disputed"


def test_events_about_objects_of_another_app_change_nothing(app: Flask) -> None:
    sb = sandbox_of(app)
    client = sb.stripe_client()
    stranger = client.v1.customers.create({"email": "other@example.com"})
    online = {"ip_address": "203.0.113.7", "user_agent": "UA"}
    intent = client.v1.payment_intents.create(
        cast(  # the SDK's types lack payment_method_types
            PaymentIntentCreateParams,
            {
                "amount": 500,
                "currency": "usd",
                "customer": stranger.id,
                "payment_method": "pm_usBankAccount_success",
                "payment_method_types": ["us_bank_account"],
                "confirm": True,
                "mandate_data": {"customer_acceptance": {"type": "online", "online": online}},
            },
        )
    )
    sb.payments.settle(intent.id)
    delivered = deliver_webhooks(app)
    assert delivered > 0
    with app.app_context():
        session = get_state(app).db.session
        assert session.query(Payment).count() == 0
        assert session.query(PaymentMethod).count() == 0
        statuses = {e.status for e in session.query(WebhookEvent)}
    assert statuses == {"processed"}


def test_a_webhook_can_store_a_saved_account_before_the_browser_completes(app: Flask) -> None:
    from flask_finconn.services import payment_methods

    sb = sandbox_of(app)
    with app.app_context():
        new = payment_methods.create_setup_intent(get_state(app), ADA)
    sb.payments.collect(
        new.client_secret,
        {
            "type": "us_bank_account",
            "us_bank_account": {
                "account_number": SUCCESS,
                "routing_number": "110000000",
                "account_holder_type": "individual",
            },
            "billing_details": {"name": "Ada Lovelace"},
        },
    )
    online = {"ip_address": "203.0.113.7", "user_agent": "UA"}
    sb.payments.confirm_setup_intent(
        new.id,
        {
            "client_secret": new.client_secret,
            "mandate_data": {"customer_acceptance": {"type": "online", "online": online}},
        },
    )
    with captured_signals(signals.payment_method_saved, app) as saved:
        deliver_webhooks(app)
    assert len(saved) == 1
    assert saved[0]["payment_method"].status == "requires_verification"
    sb.payments.verify_microdeposits(new.id, {"descriptor_code": "SM11AA"})
    with captured_signals(signals.payment_method_verified, app) as verified:
        deliver_webhooks(app)
    assert len(verified) == 1
    with app.app_context():
        done = payment_methods.complete_setup_intent(get_state(app), ADA, new.id)
        assert done.payment_method is not None
        assert done.payment_method.status == "verified"
        assert get_state(app).db.session.query(PaymentMethod).count() == 1


def unanswered_debit(app: Flask, method_id: str, key: str, *, reached_stripe: bool) -> str:
    """A debit whose every answer was lost; ``reached_stripe``: Stripe created its intent."""
    faults = sandbox_of(app).faults
    if reached_stripe:
        faults.fail_after_commit(3)  # the call and the SDK's two retries
    else:
        faults.fail_next(500, 500, 500)
    with app.app_context(), pytest.raises(StripeUnavailable):
        get_state(app).extension.debit(
            "ada", method_id, 4200, description="Rent", idempotency_key=key
        )
    with app.app_context():
        payment = get_state(app).db.session.query(Payment).filter_by(idempotency_key=key).one()
        assert (payment.stripe_id, payment.status) == (None, "processing")
        return payment.id


def test_an_event_that_beats_the_debits_answer_attaches_the_intent_once(app: Flask) -> None:
    method = save_bank_account(app, ADA, SUCCESS)
    payment_id = unanswered_debit(app, method.id, "order-1", reached_stripe=True)
    [created] = sandbox_of(app).events("payment_intent.created")
    intent_id = created["data"]["object"]["id"]
    with captured_signals(signals.payment_processing, app) as started:
        assert deliver_webhooks(app) > 0
        assert stored(app, payment_id)["status"] == "processing"
        with app.app_context():
            row = get_state(app).db.session.get(Payment, payment_id)
            assert row is not None and row.stripe_id == intent_id
            # The host's retry: Stripe answers with the same intent, already stored.
            retried = get_state(app).extension.debit(
                "ada", method.id, 4200, description="Rent", idempotency_key="order-1"
            )
            assert (retried.id, retried.stripe_id) == (payment_id, intent_id)
    assert [s["payment"].id for s in started] == [payment_id]
    assert len(sandbox_of(app).events("payment_intent.created")) == 1
    with captured_signals(signals.payment_succeeded, app) as succeeded:
        settle_payments(app)
        replay_all(app, reverse=True)
    assert len(succeeded) == 1 and stored(app, payment_id)["status"] == "succeeded"


def test_a_forged_finconn_payment_id_is_not_applied(app: Flask) -> None:
    method = save_bank_account(app, ADA, SUCCESS)
    bob_method = save_bank_account(app, Holder("bob", email="bob@example.com"), SUCCESS)
    payment_id = unanswered_debit(app, method.id, "order-1", reached_stripe=False)
    sb = sandbox_of(app)
    client = sb.stripe_client()
    with app.app_context():
        customers = dict(
            get_state(app).db.session.query(Customer.holder_id, Customer.stripe_id).all()
        )
    stranger = client.v1.customers.create({"email": "other@example.com"}).id
    online = {"ip_address": "203.0.113.7", "user_agent": "UA"}
    forged = []
    other_account = save_bank_account(app, ADA, SUCCESS)
    # Another installation's customer, another holder of ours, Ada's customer with another
    # amount or another bank account: each names Ada's waiting debit in its metadata.
    for customer, payment_method, amount in [
        (stranger, "pm_usBankAccount_success", 4200),
        (customers["bob"], bob_method.stripe_id, 4200),
        (customers["ada"], method.stripe_id, 99),
        (customers["ada"], other_account.stripe_id, 4200),
    ]:
        forged.append(
            client.v1.payment_intents.create(
                cast(
                    PaymentIntentCreateParams,
                    {
                        "amount": amount,
                        "currency": "usd",
                        "customer": customer,
                        "payment_method": payment_method,
                        "payment_method_types": ["us_bank_account"],
                        "confirm": True,
                        "metadata": {"finconn_payment_id": payment_id},
                        "mandate_data": {
                            "customer_acceptance": {"type": "online", "online": online}
                        },
                    },
                )
            ).id
        )
    with captured_signals(signals.payment_processing, app) as started:
        assert deliver_webhooks(app) > 0
    assert started == []
    with app.app_context():
        session = get_state(app).db.session
        row = session.get(Payment, payment_id)
        assert row is not None and (row.stripe_id, row.status) == (None, "processing")
        assert session.query(Payment).count() == 1
        assert {e.status for e in session.query(WebhookEvent)} == {"processed"}
        # The debit is still free to take its own intent when the host retries.
        retried = get_state(app).extension.debit(
            "ada", method.id, 4200, description="Rent", idempotency_key="order-1"
        )
    assert retried.stripe_id is not None and retried.stripe_id not in forged


def test_an_event_for_a_returned_debit_that_beats_its_answer_fails_it(app: Flask) -> None:
    # A returned debit's intent has no payment_method any more (Stripe moves it into
    # last_payment_error); it is still this debit's, so its event settles the debit.
    method = save_bank_account(app, ADA, SUCCESS)
    payment_id = unanswered_debit(app, method.id, "order-1", reached_stripe=True)
    [created] = sandbox_of(app).events("payment_intent.created")
    intent_id = created["data"]["object"]["id"]
    sandbox_of(app).payments.fail(intent_id, "account_closed")
    with captured_signals(signals.payment_failed, app) as failed:
        assert deliver_webhooks(app) > 0
    assert [s["payment"].id for s in failed] == [payment_id]
    with app.app_context():
        row = get_state(app).db.session.get(Payment, payment_id)
        assert row is not None
        assert (row.stripe_id, row.status, row.failure_code) == (
            intent_id,
            "failed",
            "account_closed",
        )
