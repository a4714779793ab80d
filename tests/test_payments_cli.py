"""``flask finconn payments``: list, show, and re-read stuck debits with cron-safe exit codes."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.errors import StripeUnavailable
from flask_finconn.models import Payment
from flask_finconn.testing import link_accounts, sandbox_of, save_account_for_payments

PAYMENT_PERMISSIONS = ["balances", "payment_method"]
ADA = Holder("ada", email="ada@example.com", name="Ada Lovelace")


@pytest.fixture
def app(make_finconn_app: Callable[..., Flask]) -> Flask:
    app = make_finconn_app(FINCONN_PERMISSIONS=PAYMENT_PERMISSIONS)
    sandbox_of(app).payments.settlement_delay = 10**9
    return app


def start_debits(app: Flask, *keys: str) -> list[tuple[str, str]]:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    method = save_account_for_payments(app, ADA, checking)
    started = []
    with app.app_context():
        for key in keys:
            payment = get_state(app).extension.debit(
                "ada", method.id, 1234, description=f"Order {key}", idempotency_key=key
            )
            assert payment.stripe_id is not None
            started.append((payment.id, payment.stripe_id))
    return started


def test_list_and_show(app: Flask) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["finconn", "payments"]).output == "No payments stored.\n"
    [(first, intent), (second, _)] = start_debits(app, "a", "b")
    listed = runner.invoke(args=["finconn", "payments"])
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert [line.split()[0] for line in lines] == [second, first]
    assert "1234 usd  processing" in lines[0]
    assert runner.invoke(args=["finconn", "payments", "--holder", "bob"]).output == (
        "No payments match.\n"
    )
    shown = runner.invoke(args=["finconn", "payments", "show", intent])
    assert shown.exit_code == 0
    assert shown.output.startswith(first) and "idempotency key: a" in shown.output
    missing = runner.invoke(args=["finconn", "payments", "show", "fcpay_nope"])
    assert missing.exit_code == 1 and "There is no payment fcpay_nope" in missing.output


def test_refresh_stuck_reads_missed_settlements_and_fails_loudly(app: Flask) -> None:
    runner = app.test_cli_runner()
    [(settled, intent), (other, _)] = start_debits(app, "a", "b")
    # The bank settled it but the webhook never arrived.
    sandbox_of(app).payments.settle(intent)
    young = runner.invoke(args=["finconn", "payments", "--refresh-stuck"])
    assert young.exit_code == 0 and young.output == "No stuck payments.\n"
    result = runner.invoke(args=["finconn", "payments", "--refresh-stuck", "--older-than", "0"])
    assert result.exit_code == 0, result.output
    assert f"{settled}  processing -> succeeded" in result.output
    assert f"{other}  processing -> processing" in result.output
    sandbox_of(app).faults.fail_next(500, 500, 500)
    failed = runner.invoke(args=["finconn", "payments", "--refresh-stuck", "--older-than", "0"])
    assert failed.exit_code == 1
    assert "1 payment(s) could not be re-read" in failed.output


def test_refresh_stuck_leaves_a_day_old_unanswered_debit_for_review(app: Flask) -> None:
    [checking] = link_accounts(app, ADA, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    method = save_account_for_payments(app, ADA, checking)
    sandbox = sandbox_of(app)
    sandbox.faults.fail_next(500, 500, 500)
    with app.app_context(), pytest.raises(StripeUnavailable):
        get_state(app).extension.debit(
            "ada", method.id, 1234, description="Order c", idempotency_key="c"
        )
    with app.app_context():
        [payment_id] = get_state(app).db.session.scalars(sa.select(Payment.id)).all()
    sandbox.advance_time(24 * 3600)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["finconn", "payments", "--refresh-stuck", "--older-than", "0"])
    assert result.exit_code == 1
    assert f"{payment_id}  needs review:" in result.output
    assert "1 payment(s) need review by a person" in result.output
    assert "could not be re-read" not in result.output
    assert sandbox.events("payment_intent.created") == []
