"""Erasing a holder, and deleting a disconnected account's data when the host asks for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.errors import Conflict
from flask_finconn.models import (
    Account,
    BalanceSnapshot,
    Customer,
    LinkSession,
    Owner,
    Payment,
    PaymentMethod,
    Transaction,
    WebhookEvent,
)
from flask_finconn.sandbox import ApiError
from flask_finconn.testing import (
    HOLDER_HEADER,
    deliver_webhooks,
    finish_refreshes,
    link_accounts,
    sandbox_of,
    save_account_for_payments,
    save_bank_account,
)

EVERYTHING = {
    "FINCONN_PERMISSIONS": ["balances", "ownership", "transactions"],
    "FINCONN_PREFETCH": ["balances", "ownership", "transactions"],
    "FINCONN_SANDBOX_REFRESH_DELAY": 3600.0,
}


def counts(app: Flask, holder_id: str) -> dict[str, int]:
    with app.app_context():
        session = get_state(app).db.session
        ids = sa.select(Account.id).where(Account.holder_id == holder_id)

        def count(model: Any, condition: Any) -> int:
            return (
                session.scalar(sa.select(sa.func.count()).select_from(model).where(condition)) or 0
            )

        return {
            "accounts": count(Account, Account.holder_id == holder_id),
            "balances": count(BalanceSnapshot, BalanceSnapshot.account_id.in_(ids)),
            "owners": count(Owner, Owner.account_id.in_(ids)),
            "transactions": count(Transaction, Transaction.account_id.in_(ids)),
            "sessions": count(LinkSession, LinkSession.holder_id == holder_id),
            "customers": count(Customer, Customer.holder_id == holder_id),
            "payment_methods": count(PaymentMethod, PaymentMethod.holder_id == holder_id),
            "payments": count(Payment, Payment.holder_id == holder_id),
        }


def linked_with_data(app: Flask, holder_id: str) -> list[Account]:
    accounts = link_accounts(app, Holder(holder_id, email=f"{holder_id}@example.com"))
    finish_refreshes(app)
    return accounts


def test_erase_holder_deletes_their_data_and_keeps_the_ledger(
    make_finconn_app: Callable[..., Flask], post_webhook: Callable[..., Any]
) -> None:
    app = make_finconn_app(**EVERYTHING)
    ada = linked_with_data(app, "ada")
    linked_with_data(app, "bob")
    before = counts(app, "ada")
    assert all(v for k, v in before.items() if not k.startswith("payment")), before
    bob_before = counts(app, "bob")
    state = get_state(app)
    with app.app_context():
        about_ada = {
            e.id: e.payload
            for e in state.db.session.scalars(
                sa.select(WebhookEvent).where(
                    WebhookEvent.account_stripe_id.in_([a.stripe_id for a in ada])
                )
            )
        }
        assert about_ada
        erased = state.extension.erase_holder("ada")
    assert erased.accounts == before["accounts"]
    assert erased.transactions == before["transactions"] and erased.owners == before["owners"]
    assert sorted(erased.disconnected) == sorted(a.stripe_id for a in ada)
    assert set(counts(app, "ada").values()) == {0}
    assert counts(app, "bob") == bob_before  # nobody else's data is touched
    sb = sandbox_of(app)
    assert {sb.account(a.stripe_id)["status"] for a in ada} == {"disconnected"}
    # The extension created Ada's Stripe Customer, so it is deleted at Stripe too.
    assert erased.customer is not None and erased.customer_deleted
    with pytest.raises(ApiError, match="No such customer"):
        sb.customer(erased.customer)
    with app.app_context():
        rows = {
            e.id: e
            for e in state.db.session.scalars(
                sa.select(WebhookEvent).where(WebhookEvent.id.in_(list(about_ada)))
            )
        }
        # Every event kept its id and status; no payload mentions Ada any more.
        assert set(rows) == set(about_ada)
        assert {e.status for e in rows.values()} == {"processed"}
        assert all(e.payload == {} for e in rows.values())
        texts = [json.dumps(e.payload) for e in state.db.session.scalars(sa.select(WebhookEvent))]
        assert not any(erased.customer in t for t in texts)
    # Stripe redelivers an old event: recognised as a duplicate, nothing comes back.
    replayed = next(iter(about_ada.values()))
    assert post_webhook(app, replayed).status_code == 200
    assert set(counts(app, "ada").values()) == {0}


def test_erase_holder_cli_is_safe_for_cron(make_finconn_app: Callable[..., Flask]) -> None:
    app = make_finconn_app(**EVERYTHING)
    linked_with_data(app, "ada")
    runner = app.test_cli_runner()
    refused = runner.invoke(args=["finconn", "erase-holder", "ada"])
    assert refused.exit_code == 2 and "--yes" in refused.output
    assert counts(app, "ada")["accounts"] > 0
    sandbox_of(app).faults.fail_next(500, 500, 500)  # Stripe down for the first call
    failed = runner.invoke(args=["finconn", "erase-holder", "ada", "--yes"])
    assert failed.exit_code == 1 and "Could not erase holder ada" in failed.output
    assert counts(app, "ada")["accounts"] > 0  # nothing was deleted; run it again later
    done = runner.invoke(args=["finconn", "erase-holder", "ada", "--yes"])
    assert done.exit_code == 0, done.output
    assert done.output.startswith("Erased holder ada:")
    assert set(counts(app, "ada").values()) == {0}
    again = runner.invoke(args=["finconn", "erase-holder", "ada", "--yes"])
    assert again.exit_code == 0 and "Nothing is stored" in again.output


def test_disconnect_deletes_transactions_and_owners_when_configured(
    make_finconn_app: Callable[..., Flask],
) -> None:
    # Two apps on one database, each with a sandbox of its own: one holder each.
    kept = make_finconn_app(**EVERYTHING)
    erasing = make_finconn_app(**EVERYTHING, FINCONN_DELETE_DATA_ON_DISCONNECT=True)
    for app, holder in ((kept, "ada"), (erasing, "bob")):
        [account] = link_accounts(app, Holder(holder), accounts=["checking"])
        finish_refreshes(app)
        assert counts(app, holder)["transactions"] and counts(app, holder)["owners"]
        response = app.test_client().post(
            f"/finconn/accounts/{account.id}/disconnect", json={}, headers={HOLDER_HEADER: holder}
        )
        assert response.status_code == 200 and response.get_json()["status"] == "disconnected"
    assert counts(kept, "ada")["transactions"] and counts(kept, "ada")["owners"]
    after = counts(erasing, "bob")
    assert (after["transactions"], after["owners"]) == (0, 0)
    assert after["accounts"] == 1 and after["balances"] > 0


PAYMENT_PERMISSIONS = ["balances", "payment_method"]


def test_erase_holder_detaches_payment_methods_and_deletes_debits(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(
        FINCONN_PERMISSIONS=PAYMENT_PERMISSIONS, FINCONN_SANDBOX_REFRESH_DELAY=3600.0
    )
    ada = Holder("ada", email="ada@example.com", name="Ada Lovelace")
    [checking] = link_accounts(app, ada, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    linked = save_account_for_payments(app, ada, checking)
    typed = save_bank_account(app, ada)
    state = get_state(app)
    with app.app_context():
        intent = state.extension.debit(
            "ada", linked.id, 1200, description="Rent", idempotency_key="rent-1"
        ).stripe_id
    assert intent is not None
    # A debit in flight refuses the erasure; a settled one is erased with the rest.
    sandbox_of(app).payments.settle(intent)
    deliver_webhooks(app)
    assert counts(app, "ada")["payments"] == 1
    with app.app_context():
        erased = state.extension.erase_holder("ada")
    assert sorted(erased.detached) == sorted([linked.stripe_id, typed.stripe_id])
    assert (erased.payment_methods, erased.payments) == (2, 1)
    sb = sandbox_of(app)
    # Detached at Stripe: no mandate is left to debit the holder with.
    for method in (linked, typed):
        pm = sb.stripe_client().v1.payment_methods.retrieve(method.stripe_id)
        assert pm.customer is None
    assert erased.customer_deleted
    assert set(counts(app, "ada").values()) == {0}
    with app.app_context():
        events = list(state.db.session.scalars(sa.select(WebhookEvent)))
    texts = [json.dumps(e.payload) for e in events]
    assert len(events) > 5  # the ledger keeps every event; only the payloads went
    gone = (intent, linked.stripe_id, typed.stripe_id)
    assert not any(s in text for s in gone for text in texts)


def test_a_customer_kept_at_stripe_is_scrubbed_on_request(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(**EVERYTHING)
    linked_with_data(app, "ada")
    linked_with_data(app, "bob")
    state = get_state(app)
    with app.app_context():
        kept = state.extension.erase_holder("ada", delete_customer=False, scrub_customer=True)
    sb = sandbox_of(app)
    assert kept.customer is not None and not kept.customer_deleted and kept.customer_scrubbed
    assert sb.customer(kept.customer)["email"] is None
    # A Customer this installation did not create (another installation's, by its
    # metadata) is never deleted, whatever delete_customer says.
    with app.app_context():
        bob = state.db.session.scalars(sa.select(Customer).where(Customer.holder_id == "bob")).one()
    sb.update_customer(bob.stripe_id, {"metadata": {"finconn_installation": "another"}})
    with app.app_context():
        erased = state.extension.erase_holder("bob")
    assert erased.customer == bob.stripe_id and not erased.customer_deleted
    assert not erased.customer_scrubbed
    assert sb.customer(bob.stripe_id)["email"] == "bob@example.com"
    assert set(counts(app, "bob").values()) == {0}


def test_erase_holder_refuses_while_a_debit_is_in_flight(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(
        FINCONN_PERMISSIONS=PAYMENT_PERMISSIONS, FINCONN_SANDBOX_REFRESH_DELAY=3600.0
    )
    sb = sandbox_of(app)
    sb.payments.settlement_delay = 10**9
    ada = Holder("ada", email="ada@example.com", name="Ada Lovelace")
    [checking] = link_accounts(app, ada, accounts=["checking"], permissions=PAYMENT_PERMISSIONS)
    linked = save_account_for_payments(app, ada, checking)
    state = get_state(app)
    with app.app_context():
        payment = state.extension.debit(
            "ada", linked.id, 1200, description="Rent", idempotency_key="rent-1"
        )
        payment_id, intent = payment.id, payment.stripe_id
    assert intent is not None
    before = counts(app, "ada")
    with app.app_context(), pytest.raises(Conflict) as refused:
        state.extension.erase_holder("ada")
    assert refused.value.code == "payments_in_flight"
    assert payment_id in refused.value.message and "settle" in refused.value.message
    assert counts(app, "ada") == before
    # Nothing happened at Stripe either: the payment method is still attached.
    assert sb.stripe_client().v1.payment_methods.retrieve(linked.stripe_id).customer is not None
    runner = app.test_cli_runner()
    cli = runner.invoke(args=["finconn", "erase-holder", "ada", "--yes"])
    assert cli.exit_code == 1
    assert "still in flight" in cli.output and counts(app, "ada") == before
    sb.payments.settle(intent)
    deliver_webhooks(app)
    with app.app_context():
        erased = state.extension.erase_holder("ada")
    assert erased.payments == 1
    assert set(counts(app, "ada").values()) == {0}
