"""``flask finconn sync --all`` on Celery: one task per account, locks, resume, the summary.

A Celery worker runs in a thread of this process (sharing the in-memory sandbox) on its own
Redis queue, with the Redis server ``scripts/test`` started, as in ``test_celery.py``.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
import sqlalchemy as sa
from conftest import REDIS_URL, require_redis
from flask import Flask
from fleet_support import make_celery, served_sandbox, worker_command
from process_support import process

from flask_finconn import Holder, get_state
from flask_finconn.errors import ConfigurationError
from flask_finconn.models import Transaction
from flask_finconn.services import fleet
from flask_finconn.tasks import init_celery
from flask_finconn.testing import link_accounts, sandbox_of

SIZES = (250, 120, 0)


@contextmanager
def celery_worker(app: Flask) -> Iterator[Any]:
    redis_url = require_redis()
    from celery import Celery
    from celery.contrib.testing.worker import start_worker

    celery = Celery("finconn_fleet_test", broker=redis_url)
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
    redis_url = require_redis()
    app = make_finconn_app(
        FINCONN_TASK_QUEUE="celery",
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
        FINCONN_REDIS_URL=redis_url,
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


def test_any_exception_of_a_sync_is_a_failure_with_its_reason(
    fleet_app: tuple[Flask, list[Any]],
) -> None:
    """Not only Stripe's errors: a host's signal receiver that raises fails its account,
    named in the summary, and the run still finishes (exit 1, not a run that never ends)."""
    from flask_finconn.signals import transactions_synced

    app, accounts = fleet_app
    broken = accounts[1].id

    def receiver(sender: Any, account: Any, **counts: int) -> None:
        if account.id == broken:
            raise RuntimeError("the host's ledger is read-only")

    transactions_synced.connect(receiver)
    try:
        with celery_worker(app):
            result = run(app, "--timeout", "120")
    finally:
        transactions_synced.disconnect(receiver)
    assert result.exit_code == 1, result.output
    assert "3/3 accounts: 2 synced" in result.output
    assert (
        f"  failed: {broken}: unexpected RuntimeError: the host's ledger is read-only"
        in result.output
    )


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


def test_a_worker_killed_mid_run_loses_nothing_once_the_run_is_resumed(
    make_finconn_app: Callable[..., Flask], database_url: str, tmp_path: Path
) -> None:
    """A real worker process killed with SIGKILL halfway; a second ``sync --all`` resumes
    the run on a new worker: every account synced, each row stored once."""
    redis_url = require_redis()
    sandbox_db = str(tmp_path / "sandbox.sqlite3")
    app = make_finconn_app(
        FINCONN_TASK_QUEUE="celery",
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
        FINCONN_SANDBOX_DATABASE=sandbox_db,
        FINCONN_REDIS_URL=redis_url,
        FINCONN_SYNC_LOCK_TTL=2,  # as the workers'
    )
    accounts = []
    for name in ("ada", "bob", "cy", "dee"):
        accounts += link_accounts(app, Holder(name), accounts=["checking", "savings"])
    sandbox = sandbox_of(app)
    sizes = {a.id: 400 + 20 * i for i, a in enumerate(accounts)}
    for account in accounts:
        sandbox.set_history_size(account.stripe_id, sizes[account.id])
        sandbox.finish_refreshes(account.stripe_id)
    queue = f"finconn-test-{uuid.uuid4().hex[:8]}"
    make_celery(app, redis_url, queue)  # the command's side: it queues, workers run
    redis = redis_lib.Redis.from_url(redis_url)
    log = tmp_path / "processes.log"
    with served_sandbox(sandbox_db, log) as url:
        env = {
            **os.environ,
            "FLEET_DATABASE_URL": database_url,
            "FLEET_REDIS_URL": redis_url,
            "FLEET_SANDBOX_URL": url,
            "FLEET_QUEUE": queue,
            # Slow enough to stop halfway: about 6 requests an account, 15 a second.
            "FLEET_RATE_LIMIT": "15",
            "FLEET_LOCK_TTL": "2",
        }
        queued = run(app, "--timeout", "0")
        assert queued.exit_code == 2, queued.output
        run_id = queued.output.split()[1].rstrip(":")
        with process(worker_command(), env, log) as first:
            deadline = time.monotonic() + 40
            while fleet.summary(redis, run_id).synced < 2:
                assert first.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
            os.kill(first.pid, signal.SIGKILL)
            first.wait()
        cut = fleet.summary(redis, run_id)
        assert not cut.finished, cut.line()
        assert sum(stored_rows(app).values()) < sum(sizes.values())

        with process(worker_command(), env, log):
            # Until the run has been idle for the lock's TTL it may still be running: a
            # command then queues nothing; after that it resumes the run.
            deadline = time.monotonic() + 20
            while True:
                resumed = run(app, "--timeout", "0")
                if "resuming it" in resumed.output:
                    break
                assert f"Run {run_id} is still running" in resumed.output, resumed.output
                assert time.monotonic() < deadline, resumed.output
                time.sleep(0.2)
            assert f"Run {run_id} was unfinished; resuming it" in resumed.output
            deadline = time.monotonic() + 40
            while not fleet.summary(redis, run_id).finished:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert fleet.summary(redis, run_id).line().startswith("8/8 accounts: 8 synced")
            assert stored_rows(app) == sizes

            again = run(app, "--timeout", "40")
            assert again.exit_code == 0, again.output
            assert "8/8 accounts: 8 synced (0 rows added, 0 updated), 0 failed" in again.output
    with app.app_context():
        session = get_state(app).db.session
        total, distinct = session.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(Transaction.id)))
        ).one()
        session.commit()
    assert total == distinct == sum(sizes.values())


def test_init_celery_sets_the_visibility_timeout_only_when_configured(
    make_finconn_app: Callable[..., Flask],
) -> None:
    """Unset, the host's Celery keeps its own (its tasks with a far ETA are not delivered
    twice); set, it is applied unless the host set one."""
    from celery import Celery

    untouched = Celery("finconn_visibility_default", broker="memory://")
    before = dict(untouched.conf.broker_transport_options or {})
    init_celery(untouched, make_finconn_app())
    assert dict(untouched.conf.broker_transport_options or {}) == before
    assert "visibility_timeout" not in before

    app = make_finconn_app(FINCONN_CELERY_VISIBILITY_TIMEOUT=90)
    ours = Celery("finconn_visibility", broker="memory://")
    init_celery(ours, app)
    assert ours.conf.broker_transport_options["visibility_timeout"] == 90

    theirs = Celery("finconn_visibility_host", broker="memory://")
    theirs.conf.broker_transport_options = {"visibility_timeout": 7200, "max_retries": 3}
    init_celery(theirs, make_finconn_app(FINCONN_CELERY_VISIBILITY_TIMEOUT=90))
    assert theirs.conf.broker_transport_options == {"visibility_timeout": 7200, "max_retries": 3}


@pytest.mark.parametrize(("lock_ttl", "visibility"), [(300, 300), (600, 300)])
def test_the_lock_ttl_must_be_below_the_visibility_timeout(
    make_finconn_app: Callable[..., Flask], lock_ttl: int, visibility: int
) -> None:
    with pytest.raises(
        ConfigurationError,
        match=f"FINCONN_SYNC_LOCK_TTL \\({lock_ttl} s\\) must be below "
        f"FINCONN_CELERY_VISIBILITY_TIMEOUT \\({visibility} s\\)",
    ):
        make_finconn_app(
            FINCONN_SYNC_LOCK_TTL=lock_ttl, FINCONN_CELERY_VISIBILITY_TIMEOUT=visibility
        )
    make_finconn_app(FINCONN_SYNC_LOCK_TTL=lock_ttl)  # fine while Celery's own is kept


@pytest.mark.parametrize("key", ["FINCONN_SYNC_LOCK_TTL", "FINCONN_CELERY_VISIBILITY_TIMEOUT"])
@pytest.mark.parametrize("value", [0, -5, "soon"])
def test_the_recovery_times_must_be_seconds_above_zero(
    make_finconn_app: Callable[..., Flask], key: str, value: object
) -> None:
    with pytest.raises(ConfigurationError, match=f"{key} must be a number of seconds above 0"):
        make_finconn_app(**{key: value})


def test_two_commands_starting_at_once_make_one_run_that_queues_each_account_once() -> None:
    """Two ``sync --all`` racing: one starts the run, the other resumes it and queues
    nothing (its accounts have just been queued), many times over."""
    redis_url = require_redis()
    accounts = [(f"fcacct_{i}", f"fca_{i}") for i in range(5)]

    def race(scope: str) -> list[fleet.Start]:
        barrier = threading.Barrier(2)
        starts: list[fleet.Start] = []

        def start() -> None:
            redis = redis_lib.Redis.from_url(redis_url)
            barrier.wait()
            starts.append(fleet.start_or_resume(redis, scope, accounts))

        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return starts

    for _ in range(100):
        starts = race(f"race-{uuid.uuid4().hex[:8]}")
        assert len(starts) == 2
        assert len({s.run_id for s in starts}) == 1, starts
        queued = [pair for s in starts for pair in s.to_queue]
        assert sorted(queued) == accounts, starts


def test_a_worker_whose_lock_expired_midway_stops_and_records_why(
    make_finconn_app: Callable[..., Flask],
) -> None:
    """Pages slower than the lock's TTL: the lock is gone at the first page written, so the
    worker stops writing and the account fails with the reason instead of syncing on."""
    redis_url = require_redis()
    app = make_finconn_app(
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
        FINCONN_REDIS_URL=redis_url,
        FINCONN_SYNC_LOCK_TTL=0.05,
    )
    (account,) = link_accounts(app, Holder("ada"), accounts=["checking"])
    sandbox = sandbox_of(app)
    sandbox.set_history_size(account.stripe_id, 250)
    sandbox.finish_refreshes(account.stripe_id)
    sandbox.faults.latency = 0.2
    redis = redis_lib.Redis.from_url(redis_url)
    run_id = fleet.start_or_resume(
        redis, f"lost-{uuid.uuid4().hex[:8]}", [(account.id, account.stripe_id)]
    ).run_id
    with app.app_context():
        state = get_state(app)
        assert fleet.sync_one(state, redis, run_id, account.id, account.stripe_id) == 0
    status = fleet.summary(redis, run_id)
    assert status.failed == 1, status
    assert status.failures == [
        f"{account.id}: The account's sync lock expired while this worker was syncing it "
        "and another worker may have taken it over; it stopped writing. Raise "
        "FINCONN_SYNC_LOCK_TTL above the time one page takes, then run the sync again."
    ]
    assert stored_rows(app).get(account.id, 0) < 250
