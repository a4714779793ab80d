"""Inline processing as one transaction: all of an event's work lands together, or none.

A handler of a test-only type writes an effect row in the handler's transaction; its rows
tell how often the event was processed. The first run can be made to raise after writing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import stripe_event
from flask import Flask

from flask_finconn import event_failed, event_received, get_state
from flask_finconn.models import WebhookEvent, utcnow
from flask_finconn.services import events, handlers
from flask_finconn.testing import captured_signals, count_statements

EFFECT_TYPE = "test.effect"
EFFECTS = sa.Table(
    "test_effect",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.String(255), nullable=False),
)


class Boom(RuntimeError):
    pass


@pytest.fixture
def effect_app(
    make_finconn_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Flask, list[int]]]:
    """An inline-queue app whose ``test.effect`` handler writes an effect row, then raises
    while the returned list holds a positive count (one run less each time)."""
    app = make_finconn_app()
    with app.app_context():
        EFFECTS.create(get_state(app).db.engine)
    failures = [0]
    lock = threading.Lock()

    def record_effect(state: Any, event: WebhookEvent) -> None:
        state.db.session.execute(sa.insert(EFFECTS).values(event_id=event.id))
        with lock:
            fail, failures[0] = failures[0] > 0, max(failures[0] - 1, 0)
        if fail:
            raise Boom("the handler broke after writing")

    monkeypatch.setitem(handlers.HANDLERS, EFFECT_TYPE, record_effect)
    # It only writes through the session: it runs in the event's own transaction.
    monkeypatch.setattr(
        handlers, "IN_EVENT_TRANSACTION", handlers.IN_EVENT_TRANSACTION | {record_effect}
    )
    yield app, failures


def effect_event(n: int = 1) -> dict[str, Any]:
    return stripe_event(EFFECT_TYPE, {"id": f"obj_{n}", "object": "test"})


def committed(app: Flask, event_id: str) -> tuple[str | None, int]:
    """(the event's status, its effect rows) as another connection sees them."""
    with app.app_context(), get_state(app).db.engine.connect() as conn:
        status = conn.scalar(sa.select(WebhookEvent.status).where(WebhookEvent.id == event_id))
        effects = conn.scalar(
            sa.select(sa.func.count()).select_from(EFFECTS).where(EFFECTS.c.event_id == event_id)
        )
    return status, int(effects or 0)


def test_the_event_and_its_effect_are_committed_together_before_signals(
    effect_app: tuple[Flask, list[int]], post_webhook: Callable[..., Any]
) -> None:
    app, _ = effect_app
    event = effect_event()
    seen: list[tuple[str | None, int]] = []

    def look(sender: Any, **kwargs: Any) -> None:
        seen.append(committed(app, kwargs["event"].id))

    event_received.connect(look, app)
    try:
        assert post_webhook(app, event).status_code == 200
        assert post_webhook(app, event).status_code == 200  # a duplicate: no second effect
    finally:
        event_received.disconnect(look, app)
    assert seen == [("processed", 1)]
    assert committed(app, event["id"]) == ("processed", 1)


def test_a_handler_that_raises_leaves_nothing_half_done_and_the_sweep_retries_it(
    effect_app: tuple[Flask, list[int]], post_webhook: Callable[..., Any]
) -> None:
    app, failures = effect_app
    failures[0] = 1
    event = effect_event()
    seen: list[tuple[str | None, int]] = []

    def look(sender: Any, **kwargs: Any) -> None:
        seen.append(committed(app, kwargs["event"].id))

    with captured_signals(event_failed, app) as failed:
        event_failed.connect(look, app)
        try:
            response = post_webhook(app, event)
        finally:
            event_failed.disconnect(look, app)
    assert response.status_code == 500  # so Stripe delivers it again
    # Recorded failed, with none of the handler's writes, before anyone is told.
    assert seen == [("failed", 0)]
    assert [type(f["error"]) for f in failed] == [Boom]
    with app.app_context():
        state = get_state(app)
        row = state.db.session.get(WebhookEvent, event["id"])
        assert row is not None and (row.status, row.attempts) == ("failed", 1)
        assert row.last_error == "Boom: the handler broke after writing"
        assert row.last_traceback is not None and "in record_effect" in row.last_traceback
        assert row.last_traceback.splitlines()[-1] == "test_webhook_ledger.Boom: " + (
            "the handler broke after writing"
        )
        state.db.session.commit()
        # The sweep retries it once its backoff has passed.
        due = events.sweep(state, now=utcnow() + events.RETRY_BASE + timedelta(seconds=1))
        assert due == [event["id"]]
        state.queue.enqueue(app, due)
    assert committed(app, event["id"]) == ("processed", 1)


def test_copies_racing_a_delivery_that_fails_are_processed_exactly_once(
    effect_app: tuple[Flask, list[int]], post_webhook: Callable[..., Any]
) -> None:
    app, failures = effect_app
    failures[0] = 1  # whichever copy runs the handler first fails
    event = effect_event()
    copies = 8
    barrier = threading.Barrier(copies)
    statuses: list[int] = []

    def deliver() -> None:
        barrier.wait()
        statuses.append(post_webhook(app, event).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(copies)]
    with captured_signals(event_failed, app) as failed:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    # The failing copy answers 500 when it recorded the failure; when another copy had
    # stored and processed the event before that, the event is done and it answers 200.
    assert sorted(statuses) in ([200] * copies, [200] * (copies - 1) + [500])
    assert len(failed) == statuses.count(500)
    assert committed(app, event["id"]) == ("processed", 1)


def test_a_failure_after_another_delivery_processed_the_event_is_not_recorded(
    effect_app: tuple[Flask, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, _ = effect_app
    event = effect_event()

    def taken_over(state: Any, stored: WebhookEvent) -> None:
        # Meanwhile another delivery processes the event and commits (it took the claim
        # over, say, as stuck); then this one's handler breaks.
        with state.db.engine.begin() as conn:
            conn.execute(
                sa.update(WebhookEvent)
                .where(WebhookEvent.id == stored.id)
                .values(status="processed", processed_at=utcnow())
            )
        raise Boom("this delivery's handler broke")

    monkeypatch.setitem(handlers.HANDLERS, EFFECT_TYPE, taken_over)
    with app.app_context(), captured_signals(event_failed, app) as failed:
        state = get_state(app)
        assert events.store_event(state, event) is not None
        # Not a failure to report, nor one for Stripe to deliver again: the event is done.
        assert events.process_event(state, event["id"]) == "processed"
    assert failed == []
    assert committed(app, event["id"]) == ("processed", 0)


def test_many_new_events_racing_with_their_copies_are_each_processed_once(
    effect_app: tuple[Flask, list[int]], post_webhook: Callable[..., Any]
) -> None:
    app, _ = effect_app
    sent = [effect_event(n) for n in range(10)]
    copies = 4
    barrier = threading.Barrier(copies)
    statuses: list[int] = []

    def deliver() -> None:
        for event in sent:
            barrier.wait()
            statuses.append(post_webhook(app, event).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert statuses == [200] * (copies * len(sent))
    assert {committed(app, e["id"]) for e in sent} == {("processed", 1)}


def test_a_copy_of_a_done_event_is_answered_without_a_claim_and_a_failed_one_is_retried(
    effect_app: tuple[Flask, list[int]], post_webhook: Callable[..., Any]
) -> None:
    app, failures = effect_app
    done, failing = effect_event(1), effect_event(2)
    failures[0] = 1  # the first run (of ``failing``) raises
    assert post_webhook(app, failing).status_code == 500
    assert post_webhook(app, done).status_code == 200
    with app.app_context():
        engine = get_state(app).db.engine
    rollbacks: list[object] = []

    def rolled_back(connection: object) -> None:
        rollbacks.append(connection)

    sa.event.listen(engine, "rollback", rolled_back)
    try:
        with count_statements(app) as statements:
            assert post_webhook(app, done).status_code == 200
    finally:
        sa.event.remove(engine, "rollback", rolled_back)
    writes = [s for s in statements if "finconn_webhook_event" in s]
    # The insert found the row processed; on PostgreSQL the same statement said so, so no
    # claim was tried (elsewhere the claim finds nothing to take), and the transaction
    # ended with a COMMIT: after a ROLLBACK psycopg forgets its prepared statements.
    is_postgresql = engine.dialect.name == "postgresql"
    assert len(writes) == (1 if is_postgresql else 2)
    assert not is_postgresql or rollbacks == []
    # Stripe's retry of the failed one: stored already, but not done, so it is processed.
    assert post_webhook(app, failing).status_code == 200
    assert committed(app, done["id"]) == ("processed", 1)
    assert committed(app, failing["id"]) == ("processed", 1)
