"""``FINCONN_TASK_QUEUE = "celery"``: the route acknowledges, a real worker on Redis processes.

Each test runs a Celery worker in a thread of this process (so it shares the in-memory
sandbox) on its own Redis queue, with the Redis server ``scripts/test`` started.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import REDIS_URL, require_redis, stripe_event
from flask import Flask

from flask_finconn import Holder, account_deactivated, get_state
from flask_finconn.models import Account, WebhookEvent, utcnow
from flask_finconn.services import events
from flask_finconn.tasks import INTERVAL, PROCESS_TASK, SWEEP_TASK, init_celery
from flask_finconn.testing import captured_signals, link_accounts, sandbox_of

DEACTIVATED = "financial_connections.account.deactivated"


@contextmanager
def celery_worker(app: Flask) -> Iterator[Any]:
    """A Celery app on Redis wired to ``app`` with ``init_celery``, and a worker thread."""
    redis_url = require_redis()
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    celery = Celery("finconn_test", broker=redis_url)
    celery.conf.update(
        task_default_queue=f"finconn-test-{uuid.uuid4().hex[:8]}",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    init_celery(celery, app)
    with start_worker(celery, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield celery


def celery_without_worker(app: Flask) -> tuple[Any, str]:
    """A Celery app on Redis wired to ``app``, nobody consuming its queue; (celery, queue)."""
    redis_url = require_redis()
    from celery import Celery

    queue = f"finconn-test-{uuid.uuid4().hex[:8]}"
    celery = Celery("finconn_test", broker=redis_url)
    celery.conf.update(task_default_queue=queue, broker_connection_retry_on_startup=True)
    init_celery(celery, app)
    return celery, queue


def queued_messages(queue: str) -> list[list[str]]:
    """The event ids of each ``process_events`` message waiting in ``queue``, oldest first."""
    import redis

    client = redis.Redis.from_url(REDIS_URL or "")
    try:
        raw = client.lrange(queue, 0, -1)
    finally:
        client.close()
    bodies = [json.loads(base64.b64decode(json.loads(message)["body"])) for message in raw]
    return [args[0] for args, _kwargs, _embed in reversed(bodies)]


def wait_for(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("The worker did not get there in time.")
        time.sleep(0.05)


def statuses(app: Flask) -> dict[str, tuple[str, int]]:
    with app.app_context():
        session = get_state(app).db.session
        rows = session.execute(
            sa.select(WebhookEvent.id, WebhookEvent.status, WebhookEvent.attempts)
        )
        result = {row.id: (row.status, row.attempts) for row in rows}
        session.commit()
        return result


def account_status(app: Flask, account_id: str) -> str:
    with app.app_context():
        account = get_state(app).db.session.get(Account, account_id)
        assert account is not None
        return account.status


def test_the_route_queues_and_a_worker_processes_once(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(FINCONN_TASK_QUEUE="celery", FINCONN_SANDBOX_REFRESH_DELAY=3600.0)
    account = link_accounts(app, Holder("ada"), accounts=["checking"])[0]
    sb = sandbox_of(app)
    with celery_worker(app), captured_signals(account_deactivated, app) as deactivated:
        sb.faults.webhook_duplicate_rate = 1.0
        sb.deactivate(account.stripe_id)
        sb.deliver_events()
        assert {a["status"] for a in sb.webhook_attempts()} == {200}
        assert len(sb.webhook_attempts()) == 4  # created and deactivated, each twice
        wait_for(lambda: {s for s, _ in statuses(app).values()} == {"processed"})
        assert account_status(app, account.id) == "inactive"
    assert len(deactivated) == 1
    assert sorted(statuses(app).values()) == [("processed", 1), ("processed", 1)]


def test_the_acknowledge_path_makes_no_session(
    make_finconn_app: Callable[..., Flask], post_webhook: Callable[..., Any]
) -> None:
    app = make_finconn_app(FINCONN_TASK_QUEUE="celery")
    _celery, queue = celery_without_worker(app)
    had_session: list[bool] = []

    @app.after_request
    def look(response: Any) -> Any:
        had_session.append(get_state(app).db.session.registry.has())
        return response

    event = stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
    assert post_webhook(app, event).status_code == 200
    # Stored on the engine's own connection: no session was built only to find the engine.
    assert had_session == [False]
    assert statuses(app) == {event["id"]: ("pending", 0)}
    wait_for(lambda: queued_messages(queue) == [[event["id"]]])


def test_under_load_the_publisher_sends_one_message_per_interval(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(FINCONN_TASK_QUEUE="celery")
    _celery, queue = celery_without_worker(app)
    state = get_state(app)
    ids = [f"evt_{n}" for n in range(25)]
    started = time.monotonic()
    for event_id in ids:  # a busy site: a delivery every 20 ms for half a second
        state.queue.enqueue(app, [event_id])
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    wait_for(lambda: [i for batch in queued_messages(queue) for i in batch] == ids)
    # The first id went on its own after LINGER; after that one message per INTERVAL at
    # most (a slow box only makes them fewer). A message every LINGER would be about 10.
    assert len(queued_messages(queue)) <= 2 + int(elapsed / INTERVAL)


def test_an_id_queued_many_times_is_processed_once(
    make_finconn_app: Callable[..., Flask], post_webhook: Callable[..., Any]
) -> None:
    app = make_finconn_app(FINCONN_TASK_QUEUE="celery", FINCONN_SANDBOX_REFRESH_DELAY=3600.0)
    account = link_accounts(app, Holder("ada"), accounts=["checking"])[0]
    sb = sandbox_of(app)
    sb.deactivate(account.stripe_id)
    event = sb.events(type=DEACTIVATED)[-1]
    marker = stripe_event("charge.succeeded", {"id": "ch_marker", "object": "charge"})
    with app.app_context():
        for each in (event, marker):
            events.store_event(get_state(app), each)  # stored, but no message queued
    with celery_worker(app) as celery, captured_signals(account_deactivated, app) as deactivated:
        for _ in range(5):
            celery.send_task(PROCESS_TASK, args=[[event["id"]]])
        # One solo worker runs its queue in order: once the marker is done, so are all five.
        celery.send_task(PROCESS_TASK, args=[[marker["id"]]])
        wait_for(lambda: statuses(app)[marker["id"]][0] == "processed")
    assert statuses(app)[event["id"]] == ("processed", 1)
    assert len(deactivated) == 1


def test_the_periodic_sweep_requeues_what_was_lost(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(FINCONN_TASK_QUEUE="celery")
    lost = stripe_event("charge.succeeded", {"id": "ch_lost", "object": "charge"})
    stuck = stripe_event("charge.succeeded", {"id": "ch_stuck", "object": "charge"})
    with app.app_context():
        state = get_state(app)
        events.store_event(state, lost)
        events.store_event(state, stuck)
        long_ago = utcnow() - timedelta(hours=1)
        session = state.db.session
        session.execute(
            sa.update(WebhookEvent)
            .where(WebhookEvent.id == lost["id"])
            .values(received_at=long_ago)
        )
        session.execute(
            sa.update(WebhookEvent)
            .where(WebhookEvent.id == stuck["id"])
            .values(status="processing", claimed_at=long_ago, attempts=1)
        )
        session.commit()
    with celery_worker(app) as celery:
        assert celery.conf.beat_schedule[SWEEP_TASK]["task"] == SWEEP_TASK
        celery.send_task(SWEEP_TASK)
        wait_for(lambda: {s for s, _ in statuses(app).values()} == {"processed"})
    assert statuses(app) == {lost["id"]: ("processed", 1), stuck["id"]: ("processed", 2)}


def test_celery_without_init_celery_is_a_clear_error(
    make_finconn_app: Callable[..., Flask], post_webhook: Callable[..., Any]
) -> None:
    app = make_finconn_app(FINCONN_TASK_QUEUE="celery")
    event = stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
    response = post_webhook(app, event)
    assert response.status_code == 500
    assert "init_celery" in response.json["error"]["message"]
    assert statuses(app) == {event["id"]: ("pending", 0)}  # stored: the sweep will queue it


def test_a_broker_outage_still_acknowledges_and_the_sweep_recovers(
    make_finconn_app: Callable[..., Flask],
    post_webhook: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from celery import Celery

    app = make_finconn_app(FINCONN_TASK_QUEUE="celery")
    nowhere = Celery("finconn_down", broker="redis://127.0.0.1:9/0")
    nowhere.conf.update(
        broker_connection_retry_on_startup=False,
        broker_connection_max_retries=0,
        task_publish_retry=False,
    )
    init_celery(nowhere, app)
    event = stripe_event("charge.succeeded", {"id": "ch_1", "object": "charge"})
    started = time.monotonic()
    response = post_webhook(app, event)
    assert response.status_code == 200  # stored: acknowledged without waiting for a broker
    assert time.monotonic() - started < 2
    assert statuses(app) == {event["id"]: ("pending", 0)}
    with app.app_context():
        later = utcnow() + events.PENDING_AFTER + timedelta(seconds=1)
        assert events.sweep(get_state(app), now=later) == [event["id"]]
    wait_for(lambda: "the sweep will" in caplog.text, timeout=10)
    assert "Could not queue 1 event(s); the sweep will." in caplog.text
