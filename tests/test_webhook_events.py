"""Webhook events end to end: stored once, processed once, in any order, replayable.

The sandbox delivers its signed events to the app's own route in-process, exactly as
Stripe would over HTTP; handlers re-read accounts through the real SDK.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import stripe_event
from flask import Flask

from flask_finconn import (
    Holder,
    account_deactivated,
    account_linked,
    account_reactivated,
    balance_refreshed,
    event_failed,
    event_received,
    get_state,
    ownership_refreshed,
    transactions_synced,
)
from flask_finconn.models import Account, Transaction, WebhookEvent, utcnow
from flask_finconn.sandbox import EVENT_TYPES as SANDBOX_EVENT_TYPES
from flask_finconn.services import events, handlers
from flask_finconn.testing import (
    HOLDER_HEADER,
    captured_signals,
    count_statements,
    link_accounts,
    sandbox_of,
)

DEACTIVATED = "financial_connections.account.deactivated"
REFRESHED_BALANCE = "financial_connections.account.refreshed_balance"
REFRESHED_OWNERSHIP = "financial_connections.account.refreshed_ownership"
REFRESHED_TRANSACTIONS = "financial_connections.account.refreshed_transactions"
ACCOUNT_PREFIX = "financial_connections.account."
AUTHORIZATION_PREFIX = "financial_connections.authorization."


def linked_checking(app: Flask) -> Account:
    return link_accounts(app, Holder("ada", email="ada@example.com"), accounts=["checking"])[0]


def stored(app: Flask) -> list[WebhookEvent]:
    with app.app_context():
        session = get_state(app).db.session
        rows = list(session.scalars(sa.select(WebhookEvent).order_by(WebhookEvent.received_at)))
        session.expunge_all()
        return rows


def account_row(app: Flask, account_id: str) -> Account:
    with app.app_context():
        session = get_state(app).db.session
        account = session.get(Account, account_id)
        assert account is not None
        _ = account.latest_balance
        session.expunge_all()
        return account


def test_sandbox_events_arrive_verified_and_are_applied(webhook_app: Flask) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deactivate(account.stripe_id)
    with captured_signals(account_deactivated, webhook_app) as deactivated:
        sb.deliver_events()
    assert [a["status"] for a in sb.webhook_attempts()] == [200, 200]
    rows = stored(webhook_app)
    assert [r.type for r in rows] == ["financial_connections.account.created", DEACTIVATED]
    assert {r.status for r in rows} == {"processed"}
    assert rows[1].account_stripe_id == account.stripe_id and rows[1].attempts == 1
    assert [s["account"].id for s in deactivated] == [account.id]
    assert account_row(webhook_app, account.id).status == "inactive"
    assert account_row(webhook_app, account.id).action == "relink_required"


def test_duplicate_deliveries_are_acknowledged_and_processed_once(webhook_app: Flask) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    sb.faults.webhook_duplicate_rate = 1.0
    sb.deactivate(account.stripe_id)
    with (
        captured_signals(account_deactivated, webhook_app) as deactivated,
        captured_signals(event_received, webhook_app) as received,
    ):
        sb.deliver_events()
    attempts = sb.webhook_attempts()
    assert [a["status"] for a in attempts[-2:]] == [200, 200]
    assert attempts[-1]["event"] == attempts[-2]["event"]
    assert len(deactivated) == 1
    assert [r["event"].type for r in received] == [DEACTIVATED]
    assert [r.attempts for r in stored(webhook_app) if r.type == DEACTIVATED] == [1]


def test_an_old_event_arriving_late_never_rolls_state_back(webhook_app: Flask) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    get_state(webhook_app).stripe.refresh_account(account.stripe_id, ["balance"])
    sb.finish_refreshes(account.stripe_id)
    sb.deactivate(account.stripe_id)
    balance_event = sb.events(type=REFRESHED_BALANCE)[-1]
    assert balance_event["data"]["object"]["status"] == "active"  # its snapshot predates
    sb.faults.webhook_reorder = True  # newest first: deactivated, then the older refresh
    with (
        captured_signals(account_deactivated, webhook_app) as deactivated,
        captured_signals(account_reactivated, webhook_app) as reactivated,
    ):
        sb.deliver_events()
    order = [r.type for r in stored(webhook_app)]
    assert order.index(DEACTIVATED) < order.index(REFRESHED_BALANCE)
    after = account_row(webhook_app, account.id)
    assert after.status == "inactive"
    assert after.latest_balance is not None  # the refresh's data still landed
    assert len(deactivated) == 1 and reactivated == []


def test_a_stale_snapshot_posted_directly_changes_nothing(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    snapshot = sb.account(account.stripe_id)  # active
    sb.deactivate(account.stripe_id)
    sb.deliver_events()
    with captured_signals(account_reactivated, webhook_app) as reactivated:
        old = stripe_event(
            "financial_connections.account.reactivated", snapshot, created=snapshot["created"]
        )
        assert post_webhook(webhook_app, old).status_code == 200
    assert account_row(webhook_app, account.id).status == "inactive"
    assert reactivated == []


def test_unknown_types_and_foreign_accounts_are_stored_and_acknowledged(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    unknown = stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
    foreign = stripe_event(
        DEACTIVATED,
        {
            "id": "fca_notours",
            "object": "financial_connections.account",
            "account_holder": {"type": "customer", "customer": "cus_elsewhere"},
        },
    )
    for event in (unknown, foreign):
        assert post_webhook(webhook_app, event).status_code == 200
    rows = {r.id: r for r in stored(webhook_app)}
    assert rows[unknown["id"]].status == "processed"
    # Acknowledged, and recorded as ignored with the reason: never retried.
    assert rows[foreign["id"]].status == "ignored"
    assert "did not create" in (rows[foreign["id"]].last_error or "")
    assert rows[foreign["id"]].account_stripe_id == "fca_notours"
    with webhook_app.app_context():
        count = get_state(webhook_app).db.session.scalar(sa.select(sa.func.count(Account.id)))
    assert count == 0


def test_every_fc_event_type_is_handled(webhook_app: Flask) -> None:
    """Each type Stripe (here: the sandbox) sends reaches its handler and is processed."""
    account_types = [t for t in SANDBOX_EVENT_TYPES if t.startswith(ACCOUNT_PREFIX)]
    authorization_types = [t for t in SANDBOX_EVENT_TYPES if t.startswith(AUTHORIZATION_PREFIX)]
    assert len(account_types) == 12 and len(authorization_types) == 2
    assert len(SANDBOX_EVENT_TYPES) == 14
    reached = {t: handlers.handler_for(t) for t in SANDBOX_EVENT_TYPES}
    assert reached == {
        **{t: handlers.account_event for t in account_types},
        # authorization events come with account events that carry the accounts' data
        **{t: handlers.ignore for t in authorization_types},
    }
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    for event_type in SANDBOX_EVENT_TYPES:
        sb.fire_event(account.stripe_id, event_type)
    sb.deliver_events()
    rows = [r for r in stored(webhook_app) if r.type in SANDBOX_EVENT_TYPES]
    assert sorted({r.type for r in rows}) == sorted(SANDBOX_EVENT_TYPES)
    assert {r.status for r in rows} == {"processed"}


def test_an_event_about_a_link_a_relink_replaced_leaves_the_account_alone(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    old = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    new = linked_checking(webhook_app)  # the same bank account again: a relink
    assert new.id == old.id and new.stripe_id != old.stripe_id
    sb.deliver_events()
    raw = get_state(webhook_app).stripe.retrieve_account(old.stripe_id).to_dict()
    event = stripe_event("financial_connections.account.created", raw)
    assert post_webhook(webhook_app, event).status_code == 200
    row = account_row(webhook_app, old.id)
    assert (row.stripe_id, row.previous_stripe_ids) == (new.stripe_id, [old.stripe_id])
    assert {r.status for r in stored(webhook_app)} == {"processed"}


def test_an_account_is_linked_from_an_event_only_for_the_customer_stripe_names(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    ada = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    stripe = get_state(webhook_app).stripe
    # Someone else's customer and account on the same Stripe account, unknown to this app.
    other = stripe.create_customer("mallory", installation="fcinst_test", email=None, name=None)
    session = stripe.create_session(
        other.id, permissions=["balances"], prefetch=[], country="US", account_subcategories=None
    )
    sb.complete_session(session.id, "bank_nonoauth", ["checking"])
    theirs = stripe.session_accounts(session.id)[0].to_dict()
    ada_customer = stripe.retrieve_account(ada.stripe_id).to_dict()["account_holder"]["customer"]
    # The payload claims Ada's customer; Stripe, asked again, says otherwise.
    forged = {**theirs, "account_holder": {"type": "customer", "customer": ada_customer}}
    event = stripe_event("financial_connections.account.created", forged)
    assert post_webhook(webhook_app, event).status_code == 200
    with webhook_app.app_context():
        rows = get_state(webhook_app).db.session.scalars(sa.select(Account)).all()
        assert [(r.id, r.stripe_id) for r in rows] == [(ada.id, ada.stripe_id)]
        assert rows[0].previous_stripe_ids == []


def test_account_created_before_the_browser_completes_links_once(webhook_app: Flask) -> None:
    client = webhook_app.test_client()
    headers = {HOLDER_HEADER: "ada"}
    session = client.post("/finconn/sessions", json={}, headers=headers).json
    assert session is not None
    sb = sandbox_of(webhook_app)
    sb.complete_session(session["id"], institution="bank_nonoauth", accounts=["checking"])
    with captured_signals(account_linked, webhook_app) as linked:
        sb.deliver_events()  # the webhook wins the race against the browser
        completed = client.post(
            f"/finconn/sessions/{session['id']}/complete", json={}, headers=headers
        ).json
    assert completed is not None
    assert [s["account"].id for s in linked] == [completed["accounts"][0]["id"]]
    # The handler rolled back its first look (no such account yet): the event stays stored.
    assert [(r.type, r.status) for r in stored(webhook_app)] == [
        ("financial_connections.account.created", "processed")
    ]


def test_a_failing_handler_is_recorded_then_replayed_once(
    webhook_app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    sb.deactivate(account.stripe_id)
    sb.faults.fail_next(429)  # the handler's re-read of the account fails
    with (
        captured_signals(event_failed, webhook_app) as failed,
        captured_signals(account_deactivated, webhook_app) as deactivated,
        caplog.at_level(logging.ERROR, logger="flask_finconn.events"),
    ):
        sb.deliver_events()
        assert sb.webhook_attempts()[-1]["status"] == 500  # so Stripe retries
        row = next(r for r in stored(webhook_app) if r.type == DEACTIVATED)
        assert row.status == "failed" and row.attempts == 1
        assert row.last_error is not None and "StripeUnavailable" in row.last_error
        # The whole traceback is kept with the event and logged, down to the failing call.
        assert row.last_traceback is not None
        assert row.last_traceback.startswith("Traceback (most recent call last):")
        assert "retrieve_account" in row.last_traceback
        assert "StripeUnavailable" in row.last_traceback.splitlines()[-1]
        logged = [r for r in caplog.records if row.id in r.getMessage()]
        assert logged and logged[0].exc_info is not None
        assert [f["event"].id for f in failed] == [row.id]
        assert type(failed[0]["error"]).__name__ == "StripeUnavailable"
        assert account_row(webhook_app, account.id).status == "active"  # rolled back

        result = webhook_app.test_cli_runner().invoke(
            args=["finconn", "events", "replay", "--failed"]
        )
        assert result.exit_code == 0, result.output
        assert f"{row.id}  processed" in result.output
        # Stripe's own retry arrives later: acknowledged, not processed again.
        sb.deliver_events(retry_now=True)
        again = webhook_app.test_cli_runner().invoke(
            args=["finconn", "events", "replay", "--failed"]
        )
        assert "No failed events to replay." in again.output
    assert sb.webhook_attempts()[-1]["status"] == 200
    assert len(deactivated) == 1
    assert len(failed) == 1
    assert account_row(webhook_app, account.id).status == "inactive"
    final = next(r for r in stored(webhook_app) if r.type == DEACTIVATED)
    assert (final.status, final.attempts, final.last_error) == ("processed", 2, None)


def test_stripes_retry_of_a_failed_event_processes_it(webhook_app: Flask) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    sb.deactivate(account.stripe_id)
    sb.faults.fail_next(429)
    sb.deliver_events()
    with captured_signals(account_deactivated, webhook_app) as deactivated:
        sb.deliver_events(retry_now=True)
    assert sb.webhook_attempts()[-1]["status"] == 200
    assert len(deactivated) == 1
    assert account_row(webhook_app, account.id).status == "inactive"


def test_one_event_racing_in_many_workers_is_processed_once(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    sb.deactivate(account.stripe_id)
    event = sb.events(type=DEACTIVATED)[-1]  # the sandbox's own delivery stays queued
    threads = 8
    barrier = threading.Barrier(threads)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        statuses.append(post_webhook(webhook_app, event).status_code)

    with (
        captured_signals(account_deactivated, webhook_app) as deactivated,
        captured_signals(event_received, webhook_app) as received,
    ):
        workers = [threading.Thread(target=deliver) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    assert statuses == [200] * threads
    assert len(received) == 1
    assert len(deactivated) == 1
    rows = [r for r in stored(webhook_app) if r.id == event["id"]]
    assert [(r.status, r.attempts) for r in rows] == [("processed", 1)]


def test_sweep_finds_lost_stuck_and_retryable_events(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    names = ["lost", "stuck", "busy", "failed_once", "failed_recently", "exhausted", "done"]
    sent = {name: stripe_event("charge.succeeded", {"id": "ch_" + name}) for name in names}
    with webhook_app.app_context():
        state = get_state(webhook_app)
        for event in sent.values():
            events.store_event(state, event)
        now = utcnow()
        setups: dict[str, dict[str, Any]] = {
            "lost": {"status": "pending", "received_at": now - timedelta(minutes=5)},
            "stuck": {"status": "processing", "claimed_at": now - timedelta(minutes=20)},
            "busy": {"status": "processing", "claimed_at": now - timedelta(minutes=1)},
            "failed_once": {
                "status": "failed",
                "attempts": 1,
                "claimed_at": now - timedelta(minutes=2),
            },
            "failed_recently": {
                "status": "failed",
                "attempts": 3,
                "claimed_at": now - timedelta(minutes=2),
            },
            "exhausted": {"status": "failed", "attempts": 5, "claimed_at": now - timedelta(days=1)},
            "done": {"status": "processed", "received_at": now - timedelta(days=1)},
        }
        for name, values in setups.items():
            state.db.session.execute(
                sa.update(WebhookEvent).where(WebhookEvent.id == sent[name]["id"]).values(**values)
            )
        state.db.session.commit()
        due = events.requeue(state)
        assert set(due) == {sent[n]["id"] for n in ("lost", "stuck", "failed_once")}
    statuses = {r.id: r.status for r in stored(webhook_app)}
    assert {statuses[sent[n]["id"]] for n in ("lost", "stuck", "failed_once")} == {"processed"}
    assert statuses[sent["busy"]["id"]] == "processing"
    assert statuses[sent["exhausted"]["id"]] == "failed"


def test_replaying_one_event_by_id_re_reads_the_account(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    created = stored(webhook_app)[0]
    sb.deactivate(account.stripe_id)  # not delivered: replay must still see it
    runner = webhook_app.test_cli_runner()
    with captured_signals(account_deactivated, webhook_app) as deactivated:
        result = runner.invoke(args=["finconn", "events", "replay", created.id])
    assert result.exit_code == 0, result.output
    assert f"{created.id}  processed" in result.output
    assert len(deactivated) == 1
    missing = runner.invoke(args=["finconn", "events", "replay", "evt_missing"])
    assert missing.exit_code != 0 and "No event evt_missing is stored." in missing.output
    both = runner.invoke(args=["finconn", "events", "replay", created.id, "--failed"])
    assert both.exit_code == 2


def test_refresh_events_store_data_once_despite_duplicates_and_disorder(data_app: Flask) -> None:
    account = link_accounts(data_app, Holder("ada"), accounts=["checking"])[0]
    sb = sandbox_of(data_app)
    get_state(data_app).stripe.refresh_account(account.stripe_id, ["balance", "ownership"])
    sb.finish_refreshes(account.stripe_id)
    sb.faults.webhook_duplicate_rate = 1.0
    sb.faults.webhook_reorder = True
    with (
        captured_signals(balance_refreshed, data_app) as balances,
        captured_signals(ownership_refreshed, data_app) as ownerships,
        captured_signals(transactions_synced, data_app) as synced,
    ):
        sb.deliver_events()
    types = {r.type for r in stored(data_app)}
    assert {REFRESHED_BALANCE, REFRESHED_OWNERSHIP, REFRESHED_TRANSACTIONS} <= types
    assert [b["status"] for b in balances] == ["succeeded"]
    assert balances[0]["snapshot"] is not None
    assert [o["status"] for o in ownerships] == ["succeeded"]
    assert len(ownerships[0]["owners"]) >= 1
    with data_app.app_context():
        session = get_state(data_app).db.session
        count = session.scalars(
            sa.select(sa.func.count(Transaction.id)).where(Transaction.account_id == account.id)
        ).one()
    assert [s["added"] for s in synced] == [count]
    assert count > 0
    assert account_row(data_app, account.id).latest_balance is not None


def test_a_failing_event_received_receiver_does_not_strand_the_event(
    webhook_app: Flask,
) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    sb.deactivate(account.stripe_id)

    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug in the host's receiver")

    event_received.connect(broken, webhook_app)
    try:
        sb.deliver_events()
    finally:
        event_received.disconnect(broken, webhook_app)
    assert sb.webhook_attempts()[-1]["status"] == 200
    assert account_row(webhook_app, account.id).status == "inactive"


def test_a_retry_takes_over_an_event_whose_worker_died(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    account = linked_checking(webhook_app)
    sb = sandbox_of(webhook_app)
    sb.deliver_events()
    sb.deactivate(account.stripe_id)
    event = sb.events(type=DEACTIVATED)[-1]
    with webhook_app.app_context():
        state = get_state(webhook_app)
        events.store_event(state, event)
        session = state.db.session
        session.execute(  # claimed a minute ago, then the process was killed
            sa.update(WebhookEvent)
            .where(WebhookEvent.id == event["id"])
            .values(status="processing", attempts=1, claimed_at=utcnow() - timedelta(minutes=1))
        )
        session.commit()
    assert post_webhook(webhook_app, event).status_code == 200  # too soon: still its own
    assert account_row(webhook_app, account.id).status == "active"
    with webhook_app.app_context():
        session = get_state(webhook_app).db.session
        session.execute(
            sa.update(WebhookEvent)
            .where(WebhookEvent.id == event["id"])
            .values(claimed_at=utcnow() - events.STUCK_AFTER - timedelta(minutes=1))
        )
        session.commit()
    with captured_signals(account_deactivated, webhook_app) as deactivated:
        assert post_webhook(webhook_app, event).status_code == 200
    assert len(deactivated) == 1
    rows = [r for r in stored(webhook_app) if r.id == event["id"]]
    assert [(r.status, r.attempts) for r in rows] == [("processed", 2)]


def test_event_writes_go_through_sqlalchemy_where_the_hosts_listeners_see_them(
    webhook_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    with count_statements(webhook_app) as statements:
        event = stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
        assert post_webhook(webhook_app, event).status_code == 200
    seen = [" ".join(statement.split()) for statement in statements]
    assert [s.split(" (")[0] for s in seen if s.startswith("INSERT")] == [
        "INSERT INTO finconn_webhook_event"
    ]
    # The processed mark: the claimed row was committed before the charge handler (which
    # manages its own transactions) ran.
    assert len([s for s in seen if s.startswith("UPDATE finconn_webhook_event")]) == 1
    with count_statements(webhook_app) as statements:
        event = stripe_event("customer.created", {"id": "cus_1", "object": "customer"})
        assert post_webhook(webhook_app, event).status_code == 200
    seen = [" ".join(statement.split()) for statement in statements]
    # A type needing no action: its row is inserted already marked processed, in the
    # transaction its (empty) handler runs in; one commit, no separate mark. (On
    # PostgreSQL the insert is inside a WITH that also reads a stored row's status.)
    writes = [s.removeprefix("WITH stored AS (") for s in seen if "INSERT" in s or "UPDATE" in s]
    assert [s.split(" (")[0] for s in writes] == ["INSERT INTO finconn_webhook_event"]
    assert {r.status for r in stored(webhook_app)} == {"processed"}
