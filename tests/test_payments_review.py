"""Settling a debit that needs review (``flask finconn payments attach`` / ``mark-failed``):
never a second charge, only a debit that needs review, the PaymentIntent checked at Stripe."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import sqlalchemy as sa
from flask import Flask
from stripe.params import PaymentIntentCreateParams

from flask_finconn import Conflict, Holder, NotFound, StripeUnavailable, get_state, signals
from flask_finconn.models import Customer, Payment, PaymentMethod
from flask_finconn.testing import (
    captured_signals,
    deliver_webhooks,
    sandbox_of,
    save_bank_account,
    settle_payments,
)

ADA = Holder("ada", email="ada@example.com", name="Ada Lovelace")
BOB = Holder("bob", email="bob@example.com", name="Bob Babbage")
ACCOUNT_CLOSED = "000111111113"
DAY = 24 * 3600


@pytest.fixture
def app(make_finconn_app: Callable[..., Flask]) -> Flask:
    app = make_finconn_app()
    sandbox_of(app).payments.settlement_delay = 10**9
    return app


@pytest.fixture
def method_id(app: Flask) -> str:
    return save_bank_account(app, ADA).id


def debit(app: Flask, method: str, key: str, amount: int = 1500) -> Payment:
    with app.app_context():
        payment = get_state(app).extension.debit(
            "ada", method, amount, description="March rent", idempotency_key=key
        )
        get_state(app).db.session.expunge(payment)
        return payment


def unanswered(app: Flask, method: str, key: str, *, reached_stripe: bool) -> str:
    """A debit whose every answer was lost; ``reached_stripe``: Stripe created its intent."""
    faults = sandbox_of(app).faults
    if reached_stripe:
        faults.fail_after_commit(3)  # the call and the SDK's two retries
    else:
        faults.fail_next(500, 500, 500)
    with pytest.raises(StripeUnavailable):
        debit(app, method, key)
    with app.app_context():
        payment = (
            get_state(app)
            .db.session.scalars(sa.select(Payment).where(Payment.idempotency_key == key))
            .one()
        )
        assert (payment.stripe_id, payment.status) == (None, "processing")
        return payment.id


def stored(app: Flask, payment_id: str) -> tuple[str | None, str, str | None]:
    with app.app_context():
        payment = get_state(app).db.session.get(Payment, payment_id)
        assert payment is not None
        return payment.stripe_id, payment.status, payment.failure_code


def intents_of(app: Flask, holder_id: str) -> list[Any]:
    with app.app_context():
        customer = (
            get_state(app)
            .db.session.scalars(
                sa.select(Customer.stripe_id).where(Customer.holder_id == holder_id)
            )
            .one()
        )
    listed = sandbox_of(app).stripe_client().v1.payment_intents.list({"customer": customer})
    return list(listed.auto_paging_iter())


def operator_log(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_finconn.payments" and r.getMessage().startswith("An operator")
    ]


def cli(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["finconn", "payments", *args])


def test_attach_stores_the_intent_stripe_created_and_applies_it(
    app: Flask, method_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    payment_id = unanswered(app, method_id, "order-1", reached_stripe=True)
    other = debit(app, method_id, "order-2")
    [intent] = [i for i in intents_of(app, "ada") if i.id != other.stripe_id]
    assert intent.metadata["finconn_payment_id"] == payment_id
    sandbox_of(app).advance_time(DAY)
    listed = cli(app, "--refresh-stuck", "--older-than", "0")
    assert listed.exit_code == 1
    assert f"finconn payments attach {payment_id} <pi_ id>" in listed.output

    wrong = cli(app, "attach", payment_id, other.stripe_id or "")
    assert wrong.exit_code == 1
    assert f"its metadata finconn_payment_id is not {payment_id}" in wrong.output
    missing = cli(app, "attach", payment_id, "pi_nope")
    assert missing.exit_code == 1
    assert "Stripe has no PaymentIntent pi_nope" in missing.output
    refused = cli(app, "mark-failed", payment_id)
    assert refused.exit_code == 1
    assert f"attach it instead: `flask finconn payments attach {payment_id} {intent.id}`" in (
        refused.output
    )
    assert stored(app, payment_id) == (None, "processing", None)

    with captured_signals(signals.payment_processing, app) as started:
        attached = cli(app, "attach", payment_id, intent.id)
        assert attached.exit_code == 0, attached.output
        assert attached.output == f"{payment_id}  {intent.id}  processing\n"
        again = cli(app, "attach", payment_id, intent.id)
        assert again.exit_code == 0 and again.output == attached.output
    assert [s["payment"].id for s in started] == [payment_id]
    assert stored(app, payment_id) == (intent.id, "processing", None)
    assert operator_log(caplog) == [
        f"An operator attached PaymentIntent {intent.id} to debit {payment_id} (needed "
        "review); it is processing."
    ]
    # The host's retry now returns the settled row; Stripe saw one PaymentIntent per debit.
    assert debit(app, method_id, "order-1").stripe_id == intent.id
    assert len(sandbox_of(app).events("payment_intent.created")) == 2
    with captured_signals(signals.payment_succeeded, app) as succeeded:
        settle_payments(app)
    assert payment_id in [s["payment"].id for s in succeeded]
    assert stored(app, payment_id) == (intent.id, "succeeded", None)


def test_mark_failed_when_stripe_never_created_the_intent(
    app: Flask, method_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    other = debit(app, method_id, "order-1")
    payment_id = unanswered(app, method_id, "order-2", reached_stripe=False)
    assert [i.id for i in intents_of(app, "ada")] == [other.stripe_id]
    sandbox_of(app).advance_time(DAY)
    with captured_signals(signals.payment_failed, app) as failed:
        result = cli(app, "mark-failed", payment_id)
        assert result.exit_code == 0, result.output
        assert result.output == f"{payment_id}  failed  payment_intent_missing\n"
        again = cli(app, "mark-failed", payment_id)
        assert again.exit_code == 0 and again.output == result.output
    assert [s["payment"].id for s in failed] == [payment_id]
    assert operator_log(caplog) == [
        f"An operator marked debit {payment_id} failed (needed review; Stripe has no "
        "PaymentIntent for it)."
    ]
    shown = cli(app, "show", payment_id)
    assert "the holder was not debited" in shown.output
    # Nothing is ever sent for it again, and it no longer waits for review.
    assert debit(app, method_id, "order-2").status == "failed"
    assert len(sandbox_of(app).events("payment_intent.created")) == 1
    stuck = cli(app, "--refresh-stuck", "--older-than", "0")
    assert stuck.exit_code == 0 and payment_id not in stuck.output
    late = cli(app, "attach", payment_id, other.stripe_id or "")
    assert late.exit_code == 1
    assert f"The debit {payment_id} does not need review" in late.output


@pytest.mark.parametrize("operation", ["attach", "mark-failed"])
def test_only_a_debit_that_needs_review_is_settled(
    app: Flask, method_id: str, operation: str
) -> None:
    young = unanswered(app, method_id, "order-1", reached_stripe=False)
    sent = debit(app, method_id, "order-2")
    # A closed account, returned once: Stripe refuses the next debit from it at once.
    closed = save_bank_account(app, ADA, ACCOUNT_CLOSED)
    again = save_bank_account(app, ADA, ACCOUNT_CLOSED)
    returned = debit(app, closed.id, "order-3")
    sandbox_of(app).payments.process(returned.stripe_id or "")
    failed = debit(app, again.id, "order-4")
    assert failed.status == "failed" and failed.stripe_id is None
    created = len(sandbox_of(app).events("payment_intent.created"))
    intent = sent.stripe_id or ""
    cases = [
        (young, "less than 23 hours old"),
        (sent.id, f"it already has the PaymentIntent {intent} and is processing"),
        (failed.id, "Stripe refused it at once and it is failed"),
    ]
    for payment_id, reason in cases:
        args = [payment_id, intent] if operation == "attach" else [payment_id]
        if operation == "attach" and payment_id == sent.id:
            args = [payment_id, "pi_other"]
        before = stored(app, payment_id)
        result = cli(app, operation, *args)
        assert result.exit_code == 1, result.output
        assert f"The debit {payment_id} does not need review: " in result.output
        assert reason in result.output
        assert stored(app, payment_id) == before
    not_a_debit = cli(app, operation, intent, *([intent] if operation == "attach" else []))
    assert not_a_debit.exit_code == 1 and "is not a debit id" in not_a_debit.output
    unknown = cli(app, operation, "fcpay_nope", *([intent] if operation == "attach" else []))
    assert unknown.exit_code == 1 and "There is no payment fcpay_nope" in unknown.output
    assert len(sandbox_of(app).events("payment_intent.created")) == created


def test_the_python_api_checks_the_intent_belongs_to_the_debit(app: Flask, method_id: str) -> None:
    payment_id = unanswered(app, method_id, "order-1", reached_stripe=False)
    bob_method = save_bank_account(app, BOB)
    sb = sandbox_of(app)
    with app.app_context():
        bob = (
            get_state(app)
            .db.session.scalars(sa.select(Customer.stripe_id).where(Customer.holder_id == "bob"))
            .one()
        )
    # Bob's intent claims Ada's debit in its metadata, with the right amount.
    forged = sb.stripe_client().v1.payment_intents.create(
        cast(
            PaymentIntentCreateParams,
            {
                "amount": 1500,
                "currency": "usd",
                "customer": bob,
                "payment_method": bob_method.stripe_id,
                "payment_method_types": ["us_bank_account"],
                "metadata": {"finconn_payment_id": payment_id},
            },
        )
    )
    sb.advance_time(DAY)
    with app.app_context():
        finconn = get_state(app).extension
        with pytest.raises(Conflict) as mismatch:
            finconn.attach_payment_intent(payment_id, forged.id)
        assert mismatch.value.code == "payment_intent_mismatch"
        assert "another Stripe customer" in mismatch.value.message
        with pytest.raises(NotFound) as missing:
            finconn.attach_payment_intent(payment_id, "pi_missing")
        assert missing.value.code == "payment_intent_not_found"
        # Bob's intent is not Ada's debit's: Ada's holds no intent, so it can be failed.
        payment = finconn.mark_payment_failed(payment_id)
        assert (payment.status, payment.failure_code) == ("failed", "payment_intent_missing")
        with pytest.raises(Conflict) as late:
            finconn.attach_payment_intent(payment_id, forged.id)
        assert late.value.code == "payment_not_in_review"


def test_an_intent_that_turns_up_after_mark_failed_is_reported_as_an_error(
    app: Flask, method_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    payment_id = unanswered(app, method_id, "order-1", reached_stripe=False)
    sandbox_of(app).advance_time(DAY)
    assert cli(app, "mark-failed", payment_id).exit_code == 0
    with app.app_context():
        ada = (
            get_state(app)
            .db.session.scalars(sa.select(Customer.stripe_id).where(Customer.holder_id == "ada"))
            .one()
        )
    # However unlikely, an intent for the debit appears at Stripe after all (say a request
    # stuck in a proxy for a day): money may move while the row says failed.
    with app.app_context():
        method = get_state(app).db.session.get(PaymentMethod, method_id)
        assert method is not None
        stripe_method = method.stripe_id
    late = (
        sandbox_of(app)
        .stripe_client()
        .v1.payment_intents.create(
            cast(
                PaymentIntentCreateParams,
                {
                    "amount": 1500,
                    "currency": "usd",
                    "customer": ada,
                    "payment_method": stripe_method,
                    "payment_method_types": ["us_bank_account"],
                    "metadata": {"finconn_payment_id": payment_id},
                },
            )
        )
    )
    caplog.set_level("ERROR", logger="flask_finconn.payments")
    assert deliver_webhooks(app) > 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any(late.id in m and payment_id in m and "marked failed" in m for m in errors), errors
    # The row is left for a person to reconcile.
    assert stored(app, payment_id) == (None, "failed", "payment_intent_missing")


def test_attach_takes_an_intent_whose_debit_the_bank_returned(app: Flask, method_id: str) -> None:
    # A failed PaymentIntent goes back to requires_payment_method and Stripe clears its
    # payment_method (the bank account is then in last_payment_error): it is still the
    # debit's, and the debit must be settled as failed rather than left needing review.
    payment_id = unanswered(app, method_id, "order-returned", reached_stripe=True)
    [intent] = intents_of(app, "ada")
    sandbox_of(app).payments.fail(intent.id, "insufficient_funds")
    returned = sandbox_of(app).stripe_client().v1.payment_intents.retrieve(intent.id)
    assert returned.status == "requires_payment_method" and returned.payment_method is None
    sandbox_of(app).advance_time(DAY)
    with captured_signals(signals.payment_failed, app) as failed:
        attached = cli(app, "attach", payment_id, intent.id)
        assert attached.exit_code == 0, attached.output
    assert attached.output == f"{payment_id}  {intent.id}  failed\n"
    assert stored(app, payment_id) == (intent.id, "failed", "insufficient_funds")
    assert [s["payment"].id for s in failed] == [payment_id]
