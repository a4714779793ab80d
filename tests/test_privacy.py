"""Erasing a holder, and deleting a disconnected account's data when the host asks for it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import (
    Account,
    BalanceSnapshot,
    Customer,
    LinkSession,
    Owner,
    Transaction,
    WebhookEvent,
)
from flask_finconn.testing import HOLDER_HEADER, finish_refreshes, link_accounts, sandbox_of

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
    assert all(before.values()), before
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
        erased = state.extension.erase_holder("ada", scrub_customer=True)
    assert erased.accounts == before["accounts"]
    assert erased.transactions == before["transactions"] and erased.owners == before["owners"]
    assert sorted(erased.disconnected) == sorted(a.stripe_id for a in ada)
    assert set(counts(app, "ada").values()) == {0}
    assert counts(app, "bob") == bob_before  # nobody else's data is touched
    sb = sandbox_of(app)
    assert {sb.account(a.stripe_id)["status"] for a in ada} == {"disconnected"}
    assert erased.customer is not None and not sb.customer(erased.customer)["email"]
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
