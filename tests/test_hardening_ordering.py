"""An older read of an account never overwrites a newer one, and nothing is announced twice.

Two deliveries for one account can overlap (Stripe sends concurrently, hosts run threads)
and, where the database has no row locks, commit in the wrong order. Here the two reads
are applied in the wrong order on purpose, through the service that applies a fresh read.
"""

from __future__ import annotations

from flask import Flask

from flask_finconn import Holder, balance_refreshed, get_state
from flask_finconn.models import Account
from flask_finconn.services import refresh, sync
from flask_finconn.testing import captured_signals, link_accounts, sandbox_of


def test_an_older_read_applied_last_changes_nothing(webhook_app: Flask) -> None:
    ada = Holder("ada", email="ada@example.com")
    [linked] = link_accounts(webhook_app, ada, accounts=["checking"])
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    state = get_state(webhook_app)
    with webhook_app.app_context():
        refresh.request_refresh(state, ada, linked.id, ["balance"])
        pending = state.stripe.retrieve_account(linked.stripe_id).to_dict()
    sb.advance_time(60)
    sb.finish_refreshes(account=linked.stripe_id)
    with webhook_app.app_context(), captured_signals(balance_refreshed, webhook_app) as sent:
        done = state.stripe.retrieve_account(linked.stripe_id).to_dict()
        assert pending["balance_refresh"]["status"] == "pending"
        assert done["balance_refresh"]["status"] == "succeeded"

        def apply(raw: dict[str, object]) -> sync.Applied:
            account = state.db.session.get(Account, linked.id, populate_existing=True)
            assert account is not None
            return sync.apply_account(state, account, raw)

        newer = apply(done)
        assert newer.finished["balance"] == "succeeded"
        newest_balance = newer.account.latest_balance_id
        older = apply(pending)  # the slower worker's read, made before the refresh ended
        assert older.finished == {} and older.balance is None
        stored = state.db.session.get(Account, linked.id, populate_existing=True)
        assert stored is not None
        assert stored.balance_refresh is not None
        assert stored.balance_refresh["status"] == "succeeded"
        assert stored.latest_balance_id == newest_balance
        again = apply(done)  # the next event's read: nothing new has finished
        assert again.finished == {}
    sb.deliver_events()  # the refreshed_balance event itself announces nothing new either
    assert [s["status"] for s in sent] == ["succeeded"]
