"""``flask finconn sync --all`` on Celery: one task per account, locks, resume, the summary.

A Celery worker runs in a thread of this process (sharing the in-memory sandbox) on its own
Redis queue, with the Redis server ``scripts/test`` started, as in ``test_celery.py``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Transaction
from flask_finconn.services import fleet
from flask_finconn.tasks import init_celery
from flask_finconn.testing import link_accounts, sandbox_of

REDIS_URL = os.environ.get("FINCONN_TEST_REDIS_URL")
SIZES = (250, 120, 0)


@contextmanager
def celery_worker(app: Flask) -> Iterator[Any]:
    if not REDIS_URL:
        pytest.skip("Redis is not running; run the suite with scripts/test.")
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    celery = Celery("finconn_fleet_test", broker=REDIS_URL)
    celery.conf.update(
        task_default_queue=f"finconn-test-{uuid.uuid4().hex[:8]}",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    init_celery(celery, app)
    with start_worker(celery, pool="solo", perform_ping_check=False, shutdown_timeout=30):
        yield celery


@pytest.fixture
def fleet_app(make_finconn_app: Callable[..., Flask]) -> tuple[Flask, list[Any]]:
    """Three accounts of two holders whose histories (250, 120, 0 rows) are ready."""
    if not REDIS_URL:
        pytest.skip("Redis is not running; run the suite with scripts/test.")
    app = make_finconn_app(
        FINCONN_TASK_QUEUE="celery",
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
        FINCONN_REDIS_URL=REDIS_URL,
    )
    accounts = link_accounts(app, Holder("ada"), accounts=["checking", "savings"])
    accounts += link_accounts(app, Holder("bob"), accounts=["checking"])
    sandbox = sandbox_of(app)
    for account, size in zip(accounts, SIZES, strict=True):
        sandbox.set_history_size(account.stripe_id, size)
        sandbox.finish_refreshes(account.stripe_id)
    return app, accounts


def stored_rows(app: Flask) -> dict[str, int]:
    with app.app_context():
        session = get_state(app).db.session
        rows = session.execute(
            sa.select(Transaction.account_id, sa.func.count()).group_by(Transaction.account_id)
        )
        counts = {row[0]: row[1] for row in rows}
        session.commit()
        return counts


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["finconn", "sync", "--all", *args])


def test_a_run_syncs_every_account_once_and_a_second_adds_nothing(
    fleet_app: tuple[Flask, list[Any]],
) -> None:
    app, accounts = fleet_app
    with celery_worker(app):
        first = run(app, "--timeout", "120")
        assert first.exit_code == 0, first.output
        assert "3/3 accounts: 3 synced (370 rows added, 0 updated), 0 failed" in first.output
        expected = {a.id: n for a, n in zip(accounts, SIZES, strict=True) if n}
        assert stored_rows(app) == expected

        second = run(app, "--timeout", "120")
        assert second.exit_code == 0, second.output
        assert "3/3 accounts: 3 synced (0 rows added, 0 updated), 0 failed" in second.output
        assert stored_rows(app) == expected


def test_an_account_locked_by_another_worker_waits_for_it(
    fleet_app: tuple[Flask, list[Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock left by a worker that died: the task retries and syncs once it expires."""
    import redis

    app, accounts = fleet_app
    dead = fleet.AccountLock(redis.Redis.from_url(REDIS_URL or ""), accounts[0].id, ttl=1.5)
    assert dead.acquire()
    with celery_worker(app):
        result = run(app, "--timeout", "120")
    assert result.exit_code == 0, result.output
    assert "3/3 accounts: 3 synced (370 rows added, 0 updated), 0 failed" in result.output
    assert stored_rows(app)[accounts[0].id] == SIZES[0]
    assert dead.remaining() == 0  # expired, and the worker released its own lock


def test_failures_are_listed_with_their_reason_and_exit_1(
    fleet_app: tuple[Flask, list[Any]],
) -> None:
    app, _ = fleet_app
    sandbox_of(app).faults.api_error_rate = 1.0  # Stripe fails every request
    with celery_worker(app):
        result = run(app, "--timeout", "120")
    assert result.exit_code == 1, result.output
    assert "3/3 accounts: 0 synced (0 rows added, 0 updated), 3 failed" in result.output
    assert result.output.count("  failed: fcacct_") == 3
    assert "Try again in a moment" in result.output


def test_a_run_still_going_at_the_timeout_exits_2(fleet_app: tuple[Flask, list[Any]]) -> None:
    app, _ = fleet_app
    from celery import Celery

    celery = Celery("finconn_no_worker", broker=REDIS_URL)
    celery.conf.task_default_queue = f"finconn-test-{uuid.uuid4().hex[:8]}"  # nobody listens
    init_celery(celery, app)
    result = run(app, "--timeout", "0")
    assert result.exit_code == 2, result.output
    assert "3 account(s) queued" in result.output
    assert "still going" in result.output


def test_without_redis_it_says_what_to_set(make_finconn_app: Callable[..., Flask]) -> None:
    from celery import Celery

    app = make_finconn_app(FINCONN_TASK_QUEUE="celery")
    init_celery(Celery("finconn_no_redis", broker="memory://"), app)
    result = run(app)
    assert result.exit_code == 1
    assert "FINCONN_REDIS_URL" in result.output
