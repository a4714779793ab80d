"""Incremental transaction sync against the sandbox, through the real SDK, on SQLite and PG."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state, signals
from flask_finconn.errors import StripeUnavailable
from flask_finconn.models import Account, Transaction
from flask_finconn.services import refresh, sync, transactions
from flask_finconn.testing import captured_signals, link_accounts, sandbox_of

ADA = Holder("ada", email="ada@example.com")


def link_checking(app: Flask) -> str:
    """Link the sandbox's checking account for Ada; returns our account id."""
    return link_accounts(app, ADA)[0].id


def stored(app: Flask, account_id: str) -> dict[str, dict[str, Any]]:
    """The account's stored transactions by id, as plain dicts."""
    with app.app_context():
        rows = get_state(app).db.session.scalars(
            sa.select(Transaction).where(Transaction.account_id == account_id)
        )
        return {
            row.id: {"status": row.status, "amount": row.amount, "at": row.transacted_at}
            for row in rows
        }


def stripe_id_of(app: Flask, account_id: str) -> str:
    with app.app_context():
        account = get_state(app).db.session.get(Account, account_id)
        assert account is not None
        return account.stripe_id


def settle(app: Flask, account_id: str, status: str = "succeeded") -> sync.Applied:
    """Finish the account's pending refreshes at the sandbox and apply them (as a webhook)."""
    stripe_id = stripe_id_of(app, account_id)
    sandbox_of(app).finish_refreshes(stripe_id, status=status)
    with app.app_context():
        applied = sync.sync_account_from_stripe(get_state(app), stripe_id)
        assert applied is not None
        return applied


def refresh_transactions(app: Flask, account_id: str) -> None:
    """Start another transaction refresh once the sandbox allows it."""
    sandbox_of(app).advance_time(sandbox_of(app).refresh_cooldown + 1)
    with app.app_context():
        state = get_state(app)
        refresh.request_refresh(state, ADA, account_id, ["transactions"])


def at_stripe(app: Flask, account_id: str) -> dict[str, str]:
    """Every transaction the sandbox lists for the account now: id → status."""
    with app.app_context():
        state = get_state(app)
        pages = state.stripe.transaction_pages(stripe_id_of(app, account_id))
        return {txn.id: txn.status for page, _ in pages for txn in page}


def test_first_sync_takes_the_whole_history(data_app: Flask) -> None:
    account_id = link_checking(data_app)
    with captured_signals(signals.transactions_synced, data_app) as synced:
        applied = settle(data_app, account_id)
    rows = stored(data_app, account_id)
    assert applied.sync is not None
    assert len(rows) == applied.sync.added > 300  # 180 days of a busy checking account
    assert rows.keys() == at_stripe(data_app, account_id).keys()
    assert synced == [
        {"account": applied.account, "added": len(rows), "updated": 0},
    ]


def test_pending_rows_post_or_void_in_place(data_app: Flask) -> None:
    account_id = link_checking(data_app)
    settle(data_app, account_id)
    voided: set[str] = set()
    for _ in range(20):  # each day settles a few pending rows; a fifth of them are voided
        before = stored(data_app, account_id)
        pending = {i for i, row in before.items() if row["status"] == "pending"}
        assert pending
        sandbox_of(data_app).advance_time(86_400)  # a day on: the subscription's daily refresh
        applied = settle(data_app, account_id)
        after = stored(data_app, account_id)
        assert applied.sync is not None
        assert applied.sync.updated == len(pending)
        assert len(after) == len(before) + applied.sync.added
        assert all(after[i]["status"] in ("posted", "void") for i in pending)
        assert all(after[i]["amount"] == before[i]["amount"] for i in pending)
        voided |= {i for i in pending if after[i]["status"] == "void"}
        if voided:
            break
    assert voided
    assert {txn_id: row["status"] for txn_id, row in after.items()} == at_stripe(
        data_app, account_id
    )


def test_update_only_refresh_adds_nothing(data_app: Flask) -> None:
    account_id = link_checking(data_app)
    settle(data_app, account_id)
    before = stored(data_app, account_id)
    refresh_transactions(data_app, account_id)  # seconds later: no new activity at the bank
    applied = settle(data_app, account_id)
    assert applied.sync is not None
    assert applied.sync.added == 0
    assert applied.sync.updated == sum(row["status"] == "pending" for row in before.values()) > 0
    assert stored(data_app, account_id).keys() == before.keys()


def test_a_failed_refresh_changes_nothing_and_the_next_one_catches_up(data_app: Flask) -> None:
    account_id = link_checking(data_app)
    settle(data_app, account_id)
    before = stored(data_app, account_id)
    refresh_transactions(data_app, account_id)
    with captured_signals(signals.transactions_synced, data_app) as synced:
        applied = settle(data_app, account_id, status="failed")
    assert applied.finished == {"transactions": "failed"}
    assert synced == []
    assert stored(data_app, account_id) == before
    refresh_transactions(data_app, account_id)
    settle(data_app, account_id)
    assert stored(data_app, account_id).keys() == at_stripe(data_app, account_id).keys()


@pytest.mark.parametrize("commit_interval", [0.0, transactions.COMMIT_INTERVAL])
def test_a_sync_that_dies_on_page_3_resumes_without_gaps_or_repeats(
    data_app: Flask, monkeypatch: pytest.MonkeyPatch, commit_interval: float
) -> None:
    monkeypatch.setattr(transactions, "COMMIT_INTERVAL", commit_interval)  # 0: every page
    sandbox = sandbox_of(data_app)
    account_id = link_checking(data_app)
    stripe_id = stripe_id_of(data_app, account_id)
    sandbox.set_history_size(stripe_id, 1000)
    sandbox.finish_refreshes(stripe_id)
    total = len(at_stripe(data_app, account_id))

    def fail_page_3(rows: int, pages: int) -> None:
        if pages == 2:  # every try of the third page fails, the SDK's retries included
            sandbox.faults.fail_next(500, 500, 500)

    with data_app.app_context(), captured_signals(signals.transactions_synced, data_app) as synced:
        state = get_state(data_app)
        with pytest.raises(StripeUnavailable):
            sync.sync_account_from_stripe(state, stripe_id, on_page=fail_page_3)
        state.db.session.rollback()
        assert synced == []
        kept = len(stored(data_app, account_id))  # what was committed before the failure
        assert kept in (0, 100, 200)
        if commit_interval == 0:
            assert kept == 200

        pages: list[int] = []
        applied = sync.sync_account_from_stripe(
            state, stripe_id, on_page=lambda rows, page: pages.append(rows)
        )
    assert applied is not None and applied.sync is not None
    assert applied.sync.added == total - kept
    assert len(pages) == -(-(total - kept) // 100)  # only the pages not yet committed
    assert synced == [{"account": applied.account, "added": total - kept, "updated": 0}]
    assert stored(data_app, account_id).keys() == at_stripe(data_app, account_id).keys()
    with data_app.app_context():
        account = get_state(data_app).db.session.get(Account, account_id)
        assert account is not None and account.transaction_refresh is not None
        assert account.transactions_sync is None
        assert account.transactions_cursor == account.transaction_refresh["id"]


def test_a_pending_refresh_never_becomes_the_cursor(data_app: Flask) -> None:
    account_id = link_checking(data_app)
    settle(data_app, account_id)
    refresh_transactions(data_app, account_id)
    with data_app.app_context():
        state = get_state(data_app)
        # A nudge while the refresh is still running: nothing to sync yet.
        applied = sync.sync_account_from_stripe(state, stripe_id_of(data_app, account_id))
        assert applied is not None and applied.sync is None
    applied = settle(data_app, account_id)
    assert applied.sync is not None and applied.sync.updated > 0


def test_duplicate_and_late_nudges_do_not_count_twice(data_app: Flask) -> None:
    account_id = link_checking(data_app)
    settle(data_app, account_id)
    with data_app.app_context(), captured_signals(signals.transactions_synced, data_app) as synced:
        state = get_state(data_app)
        for _ in range(3):
            applied = sync.sync_account_from_stripe(state, stripe_id_of(data_app, account_id))
            assert applied is not None
            assert applied.finished == {} and applied.sync is None
    assert synced == []


def test_a_relinked_account_continues_its_history(data_app: Flask) -> None:
    sandbox = sandbox_of(data_app)
    account_id = link_checking(data_app)
    settle(data_app, account_id)
    old_stripe_id = stripe_id_of(data_app, account_id)
    before = stored(data_app, account_id)
    settled = max(row["at"] for row in before.values() if row["status"] != "pending")
    sandbox.deactivate(old_stripe_id)
    with data_app.app_context():
        sync.sync_account_from_stripe(get_state(data_app), old_stripe_id)

    sandbox.advance_time(3600)  # an hour of new activity at the bank before the relink
    relinked = link_accounts(data_app, ADA)[0]
    assert relinked.id == account_id
    assert relinked.stripe_id != old_stripe_id
    assert relinked.status == "active"
    applied = settle(data_app, account_id)
    after = stored(data_app, account_id)
    assert applied.sync is not None
    kept = {i for i, row in before.items() if row["status"] != "pending"}
    assert kept <= after.keys()  # the settled history is kept as it was
    new = after.keys() - before.keys()
    assert len(new) == applied.sync.added
    assert all(after[i]["at"] > settled for i in new)  # nothing before it is taken twice
    assert not {i for i, row in before.items() if row["status"] == "pending"} & after.keys()
    with data_app.app_context():
        account = get_state(data_app).db.session.get(Account, account_id)
        assert account is not None and old_stripe_id in account.previous_stripe_ids


def test_the_refreshed_transactions_webhook_brings_the_rows(data_app: Flask) -> None:
    account_id = link_checking(data_app)
    sandbox = sandbox_of(data_app)
    sandbox.finish_refreshes(stripe_id_of(data_app, account_id))
    with captured_signals(signals.transactions_synced, data_app) as synced:
        assert sandbox.deliver_events(retry_now=True) > 0
        sandbox.deliver_events(retry_now=True)  # and nothing twice on a second round
    rows = stored(data_app, account_id)
    assert rows.keys() == at_stripe(data_app, account_id).keys()
    assert [(s["added"], s["updated"]) for s in synced] == [(len(rows), 0)]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_racing_nudges_store_and_count_each_row_once(
    data_app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transactions, "COMMIT_INTERVAL", 0.0)  # commit (and interleave) often
    sandbox = sandbox_of(data_app)
    account_id = link_checking(data_app)
    stripe_id = stripe_id_of(data_app, account_id)
    sandbox.set_history_size(stripe_id, 1500)
    sandbox.finish_refreshes(stripe_id)
    barrier = threading.Barrier(4)
    failures: list[BaseException] = []

    def nudge() -> None:
        barrier.wait()
        try:
            with data_app.app_context():
                sync.sync_account_from_stripe(get_state(data_app), stripe_id)
        except BaseException as exc:  # shown by the assertion below, not lost in the thread
            failures.append(exc)

    with captured_signals(signals.transactions_synced, data_app) as synced:
        threads = [threading.Thread(target=nudge) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == []
    rows = stored(data_app, account_id)
    assert rows.keys() == at_stripe(data_app, account_id).keys()
    assert sum(s["added"] for s in synced) == len(rows)
