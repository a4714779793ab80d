"""``finconn.debit``: once per idempotency key through retries, faults and races; balance
checks; cancelling; comparing owners with the holder."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from sandbox_support import present

from flask_finconn import Holder, get_state, signals
from flask_finconn.errors import Conflict, InsufficientBalance, StripeUnavailable, ValidationError
from flask_finconn.models import Account, Customer, Payment, PaymentMethod
from flask_finconn.services.payments import apply_intent
from flask_finconn.services.refresh import request_refresh
from flask_finconn.testing import (
    captured_signals,
    finish_refreshes,
    link_accounts,
    sandbox_of,
    save_account_for_payments,
    save_bank_account,
    settle_payments,
)

PAYMENT_PERMISSIONS = ["balances", "ownership", "payment_method", "transactions"]
ADA = Holder("ada", email="ada@example.com", name="Ada Lovelace")


@pytest.fixture
def app(make_finconn_app: Callable[..., Flask]) -> Flask:
    return make_finconn_app(
        FINCONN_PERMISSIONS=PAYMENT_PERMISSIONS, FINCONN_SANDBOX_REFRESH_DELAY=3600
    )


@pytest.fixture
def method_id(app: Flask) -> str:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    return save_account_for_payments(app, ADA, checking).id


def intents_created(app: Flask) -> int:
    return len(sandbox_of(app).events("payment_intent.created"))


def rows(app: Flask) -> list[tuple[str, str | None, str]]:
    with app.app_context():
        session = get_state(app).db.session
        return [(p.id, p.stripe_id, p.status) for p in session.query(Payment).order_by(Payment.id)]


def debit(app: Flask, method: str, key: str, amount: int = 1500, **kwargs: Any) -> Payment:
    with app.app_context():
        payment = get_state(app).extension.debit(
            "ada", method, amount, description="March rent", idempotency_key=key, **kwargs
        )
        get_state(app).db.session.expunge(payment)
        return payment


def test_a_debit_starts_processing_and_a_retry_returns_it(app: Flask, method_id: str) -> None:
    with captured_signals(signals.payment_processing, app) as started:
        first = debit(app, method_id, "order-1", metadata={"order": "1"})
    assert first.id.startswith("fcpay_")
    assert first.status == "processing"
    assert first.stripe_id is not None and first.stripe_id.startswith("pi_")
    assert len(started) == 1
    with captured_signals(signals.payment_processing, app) as again:
        second = debit(app, method_id, "order-1", metadata={"order": "1"})
    assert second.id == first.id and second.stripe_id == first.stripe_id
    assert again == []
    assert intents_created(app) == 1
    intent = sandbox_of(app).payments.payment_intent(first.stripe_id)
    assert intent["amount"] == 1500 and intent["status"] == "processing"
    assert intent["metadata"] == {"order": "1", "finconn_payment_id": first.id}
    # The intent is for the saved account and its customer (the request is the SDK's raw
    # one: nothing typed checks its fields).
    with app.app_context():
        session = get_state(app).db.session
        method = session.get(PaymentMethod, method_id)
        assert method is not None
        customer = session.get(Customer, method.customer_id)
        assert customer is not None
        expected = (customer.stripe_id, method.stripe_id)
    assert (intent["customer"], intent["payment_method"]) == expected
    assert intent["payment_method_types"] == ["us_bank_account"]
    assert intent["description"] == "March rent" and intent["currency"] == "usd"
    with pytest.raises(Conflict) as reused:
        debit(app, method_id, "order-1", amount=1600)
    assert reused.value.code == "idempotency_key_reused"
    assert intents_created(app) == 1


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"amount": 0}, "invalid_amount"),
        ({"amount": 10.5}, "invalid_amount"),
        ({"currency": "eur"}, "invalid_currency"),
        ({"key": ""}, "invalid_idempotency_key"),
    ],
)
def test_invalid_debits_are_refused_before_stripe(
    app: Flask, method_id: str, kwargs: dict[str, Any], code: str
) -> None:
    kwargs = dict(kwargs)  # the parameter dict is shared by the sqlite and postgresql runs
    key = kwargs.pop("key", "order-x")
    with pytest.raises(ValidationError) as refused:
        debit(app, method_id, key, **kwargs)
    assert refused.value.code == code
    assert intents_created(app) == 0 and rows(app) == []


def test_an_answer_lost_after_stripe_committed_charges_once(app: Flask, method_id: str) -> None:
    sb = sandbox_of(app)
    # The SDK retries with the same Idempotency-Key and gets the committed PaymentIntent.
    sb.faults.fail_after_commit()
    payment = debit(app, method_id, "order-2")
    assert payment.status == "processing"
    assert intents_created(app) == 1
    # Every answer lost: the call fails, the row waits, and the host's retry finishes it.
    sb.faults.fail_after_commit(3)
    with pytest.raises(StripeUnavailable):
        debit(app, method_id, "order-3")
    waiting = [r for r in rows(app) if r[0] != payment.id]
    assert [(r[1], r[2]) for r in waiting] == [(None, "processing")]
    assert intents_created(app) == 2
    retried = debit(app, method_id, "order-3")
    assert retried.id == waiting[0][0]
    assert retried.stripe_id is not None
    assert intents_created(app) == 2
    assert len(rows(app)) == 2


def test_stripe_down_before_the_request_ran_leaves_a_retryable_row(
    app: Flask, method_id: str
) -> None:
    sandbox_of(app).faults.fail_next(500, 500, 500)
    with pytest.raises(StripeUnavailable):
        debit(app, method_id, "order-4")
    assert intents_created(app) == 0
    retried = debit(app, method_id, "order-4")
    assert retried.status == "processing"
    assert intents_created(app) == 1
    assert len(rows(app)) == 1


def test_twenty_workers_racing_one_key_make_one_payment(app: Flask, method_id: str) -> None:
    # More workers than the connection pool holds (5, and 10 more on demand): a debit
    # holding two connections at once would leave them all waiting for a second.
    barrier = threading.Barrier(20)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait()
            results.append(debit(app, method_id, "double-click").id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 20
    assert intents_created(app) == 1
    [(payment_id, stripe_id, status)] = rows(app)
    assert payment_id == results[0] and stripe_id is not None and status == "processing"


def bank_name(app: Flask, method_id: str) -> str | None:
    with app.app_context():
        method = get_state(app).db.session.get(PaymentMethod, method_id)
        assert method is not None
        return method.bank_name


def test_a_debit_in_a_session_holding_the_callers_write_commits_it_with_the_claim(
    app: Flask, method_id: str
) -> None:
    with app.app_context():
        session = get_state(app).db.session
        method = session.get(PaymentMethod, method_id)
        assert method is not None
        method.bank_name = "Renamed by the caller"
        session.flush()  # the caller's write is in the session's database transaction
        payment = get_state(app).extension.debit(
            "ada", method_id, 1500, description="March rent", idempotency_key="in-session"
        )
        made = (payment.id, payment.stripe_id, payment.status)
        session.rollback()  # nothing is left to roll back: the debit committed it
    assert bank_name(app, method_id) == "Renamed by the caller"
    assert made[1] is not None and made[2] == "processing"
    assert rows(app) == [made]
    assert intents_created(app) == 1


def test_a_reused_key_in_a_session_holding_the_callers_write_keeps_that_write(
    app: Flask, method_id: str
) -> None:
    first = debit(app, method_id, "order-5")
    with app.app_context():
        session = get_state(app).db.session
        method = session.get(PaymentMethod, method_id)
        assert method is not None
        method.bank_name = "Renamed with a retry"  # pending: not even flushed yet
        again = get_state(app).extension.debit(
            "ada", method_id, 1500, description="March rent", idempotency_key="order-5"
        )
        assert (again.id, again.stripe_id) == (first.id, first.stripe_id)
    # Losing the key to the stored debit rolled back the second claim, not the caller's work.
    assert bank_name(app, method_id) == "Renamed with a retry"
    assert intents_created(app) == 1 and len(rows(app)) == 1


def test_a_debit_in_an_idle_session_returns_its_row_in_that_session(
    app: Flask, method_id: str
) -> None:
    with app.app_context():
        session = get_state(app).db.session
        payment = get_state(app).extension.debit(
            "ada", method_id, 1500, description="March rent", idempotency_key="idle"
        )
        assert payment in session and payment not in session.dirty
        made = (payment.id, payment.stripe_id, payment.status)
        # The row is the session's like any loaded one: the caller's change to it is stored.
        payment.description = "March rent, flat 2"
        session.commit()
    assert rows(app) == [made]
    with app.app_context():
        stored = get_state(app).db.session.get(Payment, made[0])
        assert stored is not None and stored.description == "March rent, flat 2"
        assert stored.amount == 1500 and stored.idempotency_key == "idle"


def test_workers_racing_one_key_with_writes_of_their_own_make_one_payment(
    app: Flask, method_id: str
) -> None:
    barrier = threading.Barrier(4)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with app.app_context():
                session = get_state(app).db.session
                method = session.get(PaymentMethod, method_id)
                assert method is not None
                method.bank_name = f"Worker {n}"
                barrier.wait()
                payment = get_state(app).extension.debit(
                    "ada", method_id, 1500, description="March rent", idempotency_key="busy"
                )
                results.append(payment.id)
                session.rollback()  # the debit committed the worker's write already
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 4
    assert intents_created(app) == 1
    [(payment_id, stripe_id, status)] = rows(app)
    assert payment_id == results[0] and stripe_id is not None and status == "processing"
    assert bank_name(app, method_id) in {f"Worker {n}" for n in range(4)}


def test_unusable_payment_methods_are_refused(app: Flask, method_id: str) -> None:
    client = app.test_client()
    client.post(
        f"/finconn/payment-methods/{method_id}/detach",
        json={},
        headers={"X-Finconn-Holder": "ada"},
    )
    with pytest.raises(Conflict) as refused:
        debit(app, method_id, "order-5")
    assert refused.value.code == "payment_method_detached"
    with app.app_context(), pytest.raises(Exception) as missing:
        get_state(app).extension.debit(
            "bob", method_id, 100, description="x", idempotency_key="order-6"
        )
    assert getattr(missing.value, "code", None) == "payment_method_not_found"
    assert intents_created(app) == 0


ACCOUNT_CLOSED = "000111111113"


def shown(app: Flask, method_id: str) -> dict[str, Any]:
    response = app.test_client().get(
        f"/finconn/payment-methods/{method_id}", headers={"X-Finconn-Holder": "ada"}
    )
    assert response.status_code == 200 and response.json is not None
    body: dict[str, Any] = response.json
    return body


def test_a_blocked_account_is_shown_and_refused_with_the_reason(app: Flask) -> None:
    method = save_bank_account(app, ADA, ACCOUNT_CLOSED)
    assert shown(app, method.id)["blocked"] is None
    first = debit(app, method.id, "order-1")
    # The bank returns the debit: Stripe blocks the account (payment_method.automatically_updated).
    settle_payments(app)
    body = shown(app, method.id)
    assert body["status"] == "verified"
    assert body["blocked"]["reason"] == "bank_account_closed"
    assert body["blocked"]["network_code"] == "R02"
    assert "the bank says the account is closed" in body["blocked"]["message"]
    before = intents_created(app)
    with pytest.raises(Conflict) as refused:
        debit(app, method.id, "order-2")
    assert refused.value.code == "payment_method_blocked"
    assert refused.value.message == body["blocked"]["message"]
    assert intents_created(app) == before  # refused here, without asking Stripe
    # A retry of the debit made before the block still returns that debit.
    assert debit(app, method.id, "order-1").id == first.id


def test_a_block_stripe_reports_at_confirm_is_stored(app: Flask) -> None:
    closed = save_bank_account(app, ADA, ACCOUNT_CLOSED)
    other = save_bank_account(app, ADA, ACCOUNT_CLOSED)  # the same bank account again
    first = debit(app, closed.id, "order-1")
    assert first.stripe_id is not None
    # Returned and blocked at Stripe; the events are not delivered (yet).
    sandbox_of(app).payments.process(first.stripe_id)
    assert shown(app, other.id)["blocked"] is None
    refused = debit(app, other.id, "order-2")
    assert (refused.status, refused.failure_code) == ("failed", "bank_account_unusable")
    assert shown(app, other.id)["blocked"]["reason"] == "bank_account_closed"
    before = intents_created(app)
    with pytest.raises(Conflict) as again:
        debit(app, other.id, "order-3")
    assert again.value.code == "payment_method_blocked"
    assert intents_created(app) == before


def test_check_balance_refreshes_then_refuses_too_large_a_debit(app: Flask, method_id: str) -> None:
    with pytest.raises(Conflict) as pending:
        debit(app, method_id, "order-7", check_balance=True)
    assert pending.value.code == "balance_refresh_pending"
    assert rows(app) == []
    finish_refreshes(app)
    with app.app_context():
        session = get_state(app).db.session
        method = session.get(PaymentMethod, method_id)
        assert method is not None and method.account_id is not None
        account = session.get(Account, method.account_id)
        assert account is not None
        snapshot = account.latest_balance
        assert snapshot is not None and snapshot.available is not None
        available = snapshot.available
    with pytest.raises(InsufficientBalance) as short:
        debit(app, method_id, "order-8", amount=available + 1, check_balance=True)
    assert short.value.code == "insufficient_balance"
    assert short.value.extra == {"available": available, "amount": available + 1}
    assert intents_created(app) == 0
    ok = debit(app, method_id, "order-9", amount=available, check_balance=True)
    assert ok.status == "processing"


def test_cancelling_a_processing_debit(app: Flask, method_id: str) -> None:
    payment = debit(app, method_id, "order-10")
    with app.app_context():
        finconn = get_state(app).extension
        cancelled = finconn.cancel_payment("ada", payment.id)
        assert cancelled.status == "canceled"
        with pytest.raises(Conflict) as again:
            finconn.cancel_payment("ada", payment.id)
        assert again.value.code == "payment_not_cancelable"
    assert (
        sandbox_of(app).payments.payment_intent(present(payment.stripe_id))["status"] == "canceled"
    )


@pytest.mark.parametrize(
    ("holder", "expected"),
    [
        (Holder("ada", name="Jenny Rosen", email="jenny.rosen@example.com"), "match"),
        (Holder("ada", name="rosen, JENNY", email="JENNY.ROSEN@example.com "), "match"),
        (Holder("ada", name="Jenny Rosen", email="someone@example.com"), "partial"),
        (Holder("ada", name="Ada Lovelace", email="ada@example.com"), "no_match"),
        (Holder("ada"), "unavailable"),
    ],
)
def test_owners_are_compared_with_the_holder(app: Flask, holder: Holder, expected: str) -> None:
    [account] = link_accounts(
        app,
        ADA,
        institution="ownership",
        accounts=["single_owner"],
        permissions=PAYMENT_PERMISSIONS,
    )
    with app.app_context():
        finconn = get_state(app).extension
        assert finconn.match_owners(holder, account.id) == "unavailable"
    with app.app_context():
        request_refresh(get_state(app), ADA, account.id, ["ownership"])
    finish_refreshes(app)
    with app.app_context():
        assert get_state(app).extension.match_owners(holder, account.id) == expected


def unanswered(app: Flask, method_id: str, key: str) -> str:
    """A debit claimed but never answered: Stripe failed before the request ran."""
    sandbox_of(app).faults.fail_next(500, 500, 500)
    with pytest.raises(StripeUnavailable):
        debit(app, method_id, key)
    [(payment_id, stripe_id, status)] = [r for r in rows(app) if r[1] is None]
    assert (stripe_id, status) == (None, "processing")
    assert intents_created(app) == 0
    return payment_id


def test_cancelling_an_unanswered_debit_never_sends_it(app: Flask, method_id: str) -> None:
    payment_id = unanswered(app, method_id, "order-11")
    with app.app_context(), pytest.raises(Conflict) as refused:
        get_state(app).extension.cancel_payment("ada", payment_id)
    assert refused.value.code == "payment_not_submitted"
    assert "--refresh-stuck" in refused.value.message
    assert intents_created(app) == 0
    assert rows(app) == [(payment_id, None, "processing")]


def test_a_debit_unanswered_for_23_hours_is_not_sent_again(app: Flask, method_id: str) -> None:
    payment_id = unanswered(app, method_id, "order-12")
    # Stripe forgets an idempotency key after about 24 hours: a late retry could make a
    # second PaymentIntent for a debit Stripe may have created, so it is left for a person.
    sandbox_of(app).advance_time(23 * 3600 + 60)
    with pytest.raises(Conflict) as review:
        debit(app, method_id, "order-12")
    assert review.value.code == "payment_needs_review"
    assert f"finconn_payment_id={payment_id}" in review.value.message
    assert intents_created(app) == 0
    assert rows(app) == [(payment_id, None, "processing")]


def test_a_young_unanswered_debit_is_sent_again(app: Flask, method_id: str) -> None:
    payment_id = unanswered(app, method_id, "order-13")
    sandbox_of(app).advance_time(22 * 3600)
    retried = debit(app, method_id, "order-13")
    assert retried.id == payment_id and retried.stripe_id is not None
    assert intents_created(app) == 1


def test_an_intent_with_another_id_is_ignored(app: Flask, method_id: str) -> None:
    kept = debit(app, method_id, "order-14")
    other = debit(app, method_id, "order-15")
    with app.app_context():
        state = get_state(app)
        cancelled = state.extension.cancel_payment("ada", other.id)
        assert cancelled.status == "canceled"
        intent = state.stripe.retrieve_payment_intent(present(other.stripe_id)).to_dict()
        assert apply_intent(state, intent, payment_id=kept.id) is None
    assert (kept.id, kept.stripe_id, "processing") in rows(app)


def test_debits_waiting_for_stripe_hold_no_database_connection(
    make_finconn_app: Callable[..., Flask],
) -> None:
    # Two pooled connections, given up after a second: debits that kept their connection
    # through a slow call to Stripe would leave a third debit (and every other request of
    # the app) without one.
    app = make_finconn_app(
        FINCONN_PERMISSIONS=PAYMENT_PERMISSIONS,
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 2, "max_overflow": 0, "pool_timeout": 1},
    )
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    method = save_account_for_payments(app, ADA, checking).id
    barrier = threading.Barrier(3)
    results: list[str] = []
    errors: list[BaseException] = []

    def worker(key: str) -> None:
        try:
            with app.app_context():
                barrier.wait()
                payment = get_state(app).extension.debit(
                    "ada", method, 1500, description="March rent", idempotency_key=key
                )
                results.append(payment.status)
        except BaseException as exc:
            errors.append(exc)

    sandbox_of(app).faults.latency = 3
    keys = ("slow-1", "slow-2", "slow-3")
    threads = [threading.Thread(target=worker, args=(key,)) for key in keys]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sandbox_of(app).faults.latency = 0
    assert errors == []
    assert results == ["processing"] * 3
    assert intents_created(app) == 3
