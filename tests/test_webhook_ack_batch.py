"""The acknowledge path's shared insert: deliveries storing at the same moment in one
process go to the ledger as one statement, and each still learns what became of its row.

The first delivery's statement is held in the host's own ``before_cursor_execute``
listener until the others are waiting behind it, so what shares a statement is certain,
not a matter of timing.
"""

from __future__ import annotations

import ctypes
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import stripe_event
from flask import Flask

from flask_finconn import get_state
from flask_finconn.errors import FinConnError
from flask_finconn.models import WebhookEvent, utcnow
from flask_finconn.services import event_combiner, event_store, events, handlers

Stored = dict[str, Any] | None


@dataclass
class Held:
    """Each ledger insert sent, as (statement, rows), and whether the first was reached."""

    statements: list[tuple[str, int]]
    reached: threading.Event


def event(n: int) -> dict[str, Any]:
    return stripe_event("customer.created", {"id": f"cus_{n}", "object": "customer"})


def store(app: Flask, sent: dict[str, Any]) -> Stored:
    """``insert_alone`` as the acknowledge path calls it (the body as the raw payload)."""
    with app.app_context():
        return event_store.insert_alone(get_state(app), sent, raw=json.dumps(sent))


def stored_ids(app: Flask) -> list[str]:
    with app.app_context(), get_state(app).db.engine.connect() as conn:
        return sorted(conn.scalars(sa.select(WebhookEvent.id)))


def combiner_of(engine: sa.Engine) -> event_combiner.Combiner:
    """The engine's combiner in this process, the one ``insert_alone`` uses."""
    return event_combiner.combiner(engine, event_store._LEDGER)


def until(condition: Callable[[], bool], what: str, seconds: float = 30) -> None:
    """Wait until ``condition`` holds; fail with ``what`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def ids_in(params: Any) -> list[str]:
    """The event ids an insert's parameters carry: one array of them on PostgreSQL, one
    value per row elsewhere."""
    if isinstance(params, dict) and isinstance(params.get("id"), list):
        return list(params["id"])
    values = list(params.values() if isinstance(params, dict) else params)
    return values[:: len(event_store.COLUMNS)]


@contextmanager
def first_statement_held(app: Flask, waiting: int) -> Iterator[Held]:
    """Hold the first ledger insert until ``waiting`` rows queue behind it."""
    with app.app_context():
        engine = get_state(app).db.engine
    combiner = combiner_of(engine)
    held = Held([], threading.Event())
    sent = held.statements

    def hold(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if not statement.startswith("INSERT INTO finconn_webhook_event"):
            return
        sent.append((statement, len(ids_in(params))))
        if len(sent) == 1:
            held.reached.set()
            until(lambda: len(combiner._waiting) >= waiting, "The other deliveries never queued.")

    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        yield held
    finally:
        sa.event.remove(engine, "before_cursor_execute", hold)


def run_together(held: Held, calls: list[Callable[[], Stored]]) -> list[Stored | BaseException]:
    """Run each call in its own thread, the rest once the first is held; their results."""
    results: list[Stored | BaseException] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except BaseException as exc:  # handed back to the test
            results[i] = exc

    # Daemons: a delivery that never gets its answer fails the test, not the run's exit.
    first = threading.Thread(target=run, args=(0,), daemon=True)
    first.start()
    assert held.reached.wait(timeout=30)
    rest = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, len(calls))]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in [first, *rest]), "A delivery got no answer."
    return results


def test_deliveries_arriving_together_share_one_statement_and_a_copy_is_a_duplicate(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app()
    events = [event(n) for n in range(7)]
    already = events[3]
    assert store(app, already) is not None  # stored before: every copy is a duplicate now
    sent = [events[0], *events[1:], events[5], already]  # one copy inside the shared batch
    with first_statement_held(app, waiting=len(sent) - 1) as held:
        results = run_together(held, [lambda e=e: store(app, e) for e in sent])  # type: ignore[misc]
    # The first went alone; everything that arrived meanwhile went as one statement.
    assert [rows for _, rows in held.statements] == [1, 6]  # 7 waiting rows, one id twice
    new = [r["id"] for r in results if isinstance(r, dict)]
    assert sorted(new) == sorted(e["id"] for e in events if e is not already)
    assert results[-1] is None  # stored before
    assert [results[i] for i, e in enumerate(sent) if e is events[5]].count(None) == 1
    assert stored_ids(app) == sorted(e["id"] for e in events)


# 2 rows go as a VALUES list; 4, on PostgreSQL, as one array per column.
@pytest.mark.parametrize("count", [3, 5])
def test_a_row_refused_in_a_shared_statement_fails_only_its_own_delivery(
    make_finconn_app: Callable[..., Flask], count: int
) -> None:
    app = make_finconn_app()
    events = [event(n) for n in range(count)]
    bad = events[2]["id"]
    with app.app_context():
        engine = get_state(app).db.engine

    def refuse(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if statement.startswith("INSERT INTO finconn_webhook_event") and bad in ids_in(params):
            raise RuntimeError("the database refused this row")

    with first_statement_held(app, waiting=len(events) - 1) as held:
        sa.event.listen(engine, "before_cursor_execute", refuse)  # after the holder
        try:
            results = run_together(held, [lambda e=e: store(app, e) for e in events])  # type: ignore[misc]
        finally:
            sa.event.remove(engine, "before_cursor_execute", refuse)
    # The shared statement failed, so each of its rows was sent again alone.
    assert [rows for _, rows in held.statements] == [1, count - 1] + [1] * (count - 1)
    assert isinstance(results[2], RuntimeError)
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 2)
    assert stored_ids(app) == sorted(e["id"] for e in events if e["id"] != bad)


def test_many_deliveries_and_their_copies_at_once_are_each_stored_once(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app()
    threads = 16
    events = [event(n) for n in range(40)]
    barrier = threading.Barrier(threads)
    results: list[tuple[str, bool]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def deliver(offset: int) -> None:
        try:
            for i in range(len(events)):
                sent = events[(i + offset) % len(events)] if offset % 2 else events[i]
                barrier.wait(timeout=60)
                new = store(app, sent) is not None
                with lock:
                    results.append((sent["id"], new))
        except BaseException as exc:  # handed back to the test; the others stop waiting
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=deliver, args=(n,), daemon=True) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert errors == []
    assert len(results) == threads * len(events)
    # Each event was told "new" to exactly one of its deliveries, the rest "duplicate".
    assert sorted(i for i, new in results if new) == sorted(e["id"] for e in events)
    assert stored_ids(app) == sorted(e["id"] for e in events)


class Interrupted(BaseException):
    """What a greenlet's timeout or kill raises in a thread waiting for its row."""


def test_a_delivery_interrupted_while_waiting_leaves_the_next_ones_a_turn_to_send(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app()
    first, interrupted, later = event(1), event(2), event(3)
    with app.app_context():
        engine = get_state(app).db.engine
    combiner = combiner_of(engine)
    waiter: list[threading.Thread] = []

    def interrupt_the_waiter(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # The first statement is in flight: the second delivery waits behind it. It is
        # interrupted as it wakes, just when the first hands it the turn to send.
        if not statement.startswith("INSERT INTO finconn_webhook_event") or waiter:
            return
        thread = threading.Thread(target=run, args=(1, interrupted))
        waiter.append(thread)
        thread.start()
        until(lambda: bool(combiner._waiting), "The second delivery never queued.")
        assert ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident or 0), ctypes.py_object(Interrupted)
        )

    results: list[Stored | BaseException] = [None, None, None]

    def run(i: int, sent: dict[str, Any]) -> None:
        try:
            results[i] = store(app, sent)
        except BaseException as exc:  # handed back to the test
            results[i] = exc

    sa.event.listen(engine, "before_cursor_execute", interrupt_the_waiter)
    try:
        run(0, first)
        waiter[0].join(timeout=30)
        # Without a sender, the next delivery would wait forever.
        after = threading.Thread(target=run, args=(2, later), daemon=True)
        after.start()
        after.join(timeout=30)
    finally:
        sa.event.remove(engine, "before_cursor_execute", interrupt_the_waiter)
    assert not after.is_alive(), "The delivery after the interrupted one never got an answer."
    assert isinstance(results[1], Interrupted)
    assert isinstance(results[0], dict) and isinstance(results[2], dict)
    assert stored_ids(app) == sorted([first["id"], later["id"]])


def test_a_shared_statement_without_a_connection_is_not_sent_again_row_by_row(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app()
    events = [event(n) for n in range(5)]
    with app.app_context():
        engine = get_state(app).db.engine
    connects: list[object] = []
    old_pools: list[sa.Pool] = []

    def unreachable(*args: Any) -> None:
        connects.append(args)
        raise engine.dialect.loaded_dbapi.OperationalError("the database is unreachable")

    def lose_the_database(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO finconn_webhook_event") and not connects:
            old_pools.append(engine.pool)
            engine.dispose(close=False)  # a new pool: the next statement connects anew
            sa.event.listen(engine, "do_connect", unreachable)

    with first_statement_held(app, waiting=len(events) - 1) as held:
        sa.event.listen(engine, "before_cursor_execute", lose_the_database)  # after the holder
        try:
            results = run_together(held, [lambda e=e: store(app, e) for e in events])  # type: ignore[misc]
        finally:
            sa.event.remove(engine, "before_cursor_execute", lose_the_database)
            sa.event.remove(engine, "do_connect", unreachable)
            for pool in old_pools:
                pool.dispose()
    assert isinstance(results[0], dict)
    # One try for the shared statement, each of its deliveries answered with its error.
    assert len(connects) == 1
    assert all(isinstance(r, sa.exc.OperationalError) for r in results[1:])
    assert stored_ids(app) == [events[0]["id"]]


def test_a_shared_statement_that_found_the_database_locked_is_not_sent_again_row_by_row(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app()
    events = [event(n) for n in range(5)]
    with app.app_context():
        engine = get_state(app).db.engine

    def locked(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        # What SQLite answers once its busy timeout ran out behind another writer.
        if statement.startswith("INSERT INTO finconn_webhook_event") and len(ids_in(params)) > 1:
            raise engine.dialect.loaded_dbapi.OperationalError("database is locked")

    with first_statement_held(app, waiting=len(events) - 1) as held:
        sa.event.listen(engine, "before_cursor_execute", locked)  # after the holder
        try:
            results = run_together(held, [lambda e=e: store(app, e) for e in events])  # type: ignore[misc]
        finally:
            sa.event.remove(engine, "before_cursor_execute", locked)
    # Each row alone would have waited out the lock again, one after another.
    assert [rows for _, rows in held.statements] == [1, len(events) - 1]
    assert isinstance(results[0], dict)
    assert all(isinstance(r, sa.exc.OperationalError) for r in results[1:])
    assert stored_ids(app) == [events[0]["id"]]


@pytest.mark.parametrize("fault", [Interrupted, RuntimeError])
def test_followers_of_a_statement_that_failed_after_committing_get_their_true_answers(
    make_finconn_app: Callable[..., Flask], fault: type[BaseException]
) -> None:
    """The shared statement commits, then its thread is interrupted (a greenlet's timeout,
    here as its connection goes back to the pool) or a host's listener raises, before the
    answers are handed out: each follower still learns that its row is stored, or was
    stored before."""
    app = make_finconn_app()
    events = [event(n) for n in range(5)]
    already = events[3]
    assert store(app, already) is not None
    with app.app_context():
        engine = get_state(app).db.engine
    shared: list[str] = []
    failed: list[str] = []

    def after_the_shared_statement(
        conn: Any, cursor: Any, statement: str, params: Any, *args: Any
    ) -> None:
        if statement.startswith("INSERT INTO finconn_webhook_event") and len(ids_in(params)) > 1:
            shared.append(statement)
            if fault is RuntimeError and not failed:
                failed.append(statement)
                raise RuntimeError("a host's listener failed after the statement")

    def on_return_to_the_pool(*args: Any) -> None:
        if shared and fault is Interrupted and not failed:
            failed.append(shared[0])
            raise Interrupted()

    with first_statement_held(app, waiting=len(events) - 1) as held:
        sa.event.listen(engine, "after_cursor_execute", after_the_shared_statement)
        sa.event.listen(engine.pool, "reset", on_return_to_the_pool)
        try:
            results = run_together(held, [lambda e=e: store(app, e) for e in events])  # type: ignore[misc]
        finally:
            sa.event.remove(engine, "after_cursor_execute", after_the_shared_statement)
            sa.event.remove(engine.pool, "reset", on_return_to_the_pool)
    assert failed
    interrupted = [i for i, r in enumerate(results) if isinstance(r, Interrupted)]
    # An interrupted thread raises its interruption; every other delivery gets its answer.
    assert len(interrupted) == (1 if fault is Interrupted else 0)
    for i, result in enumerate(results):
        if i in interrupted:
            continue
        if events[i] is already:
            assert result is None
        else:
            assert isinstance(result, dict) and result["id"] == events[i]["id"]
    assert stored_ids(app) == sorted(e["id"] for e in events)


@pytest.mark.parametrize("where", ["waiting", "in flight"])
def test_a_follower_waits_no_longer_than_the_store_timeout_and_is_stored_once_on_retry(
    make_finconn_app: Callable[..., Flask], where: str
) -> None:
    """A statement ahead that never ends (a lock wait with no timeout) holds its followers
    only ``FINCONN_WEBHOOK_STORE_TIMEOUT`` seconds: they answer 503 and Stripe's retry
    stores the row, or finds it stored, once."""
    app = make_finconn_app(FINCONN_WEBHOOK_STORE_TIMEOUT=0.2)
    events = [event(n) for n in range(3 if where == "in flight" else 2)]
    with app.app_context():
        engine = get_state(app).db.engine
    combiner = combiner_of(engine)
    answered: list[int] = []
    results: list[Stored | BaseException] = [None] * len(events)
    statements: list[int] = []
    # The first statement, or the second (which holds the followers' rows), never ends
    # until a follower has answered.
    held_statement = 1 if where == "waiting" else 2

    def run(i: int) -> None:
        try:
            results[i] = store(app, events[i])
        except BaseException as exc:  # handed back to the test
            results[i] = exc
        answered.append(i)

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("INSERT INTO finconn_webhook_event"):
            return
        statements.append(1)
        if len(statements) == 1 and held_statement == 2:
            until(
                lambda: len(combiner._waiting) >= len(events) - 1,
                "The other deliveries never queued.",
            )
        elif len(statements) == held_statement:
            # Not the first: it sent alone.
            until(lambda: [i for i in answered if i != 0] != [], "No follower gave up waiting.", 10)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(events))]
    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        threads[0].start()
        until(lambda: bool(statements), "The first delivery never sent its row.")
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sa.event.remove(engine, "before_cursor_execute", hold)
    assert not any(thread.is_alive() for thread in threads), "A delivery got no answer."
    gave_up = next(i for i in answered if i != 0)
    error = results[gave_up]
    assert isinstance(error, FinConnError) and error.status == 503
    assert error.code == "event_store_timeout"
    others = [r for i, r in enumerate(results) if i != gave_up]
    assert all(isinstance(r, dict) for r in others)
    # Stripe delivers the event again: stored now if the row was still waiting; if its
    # statement was in flight, that statement stored it and the retry is a duplicate.
    again = store(app, events[gave_up])
    assert (again is None) == (where == "in flight")
    assert stored_ids(app) == sorted(e["id"] for e in events)


def test_a_delivery_arriving_after_the_statement_ahead_outlasted_the_timeout_sends_its_own(
    make_finconn_app: Callable[..., Flask],
) -> None:
    """A statement that never ends (a lock wait, or a thread that died without passing on
    its turn) does not refuse every later delivery of the process: one that arrives once it
    has outlasted ``FINCONN_WEBHOOK_STORE_TIMEOUT`` sends its row beside it."""
    timeout = 0.2
    app = make_finconn_app(FINCONN_WEBHOOK_STORE_TIMEOUT=timeout)
    stuck, later = event(1), event(2)
    with app.app_context():
        engine = get_state(app).db.engine
    results: dict[str, Stored | BaseException] = {}
    started: list[float] = []

    def run(sent: dict[str, Any]) -> None:
        try:
            results[sent["id"]] = store(app, sent)
        except BaseException as exc:  # handed back to the test
            results[sent["id"]] = exc

    def hold(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if statement.startswith("INSERT INTO finconn_webhook_event") and stuck["id"] in ids_in(
            params
        ):
            started.append(time.monotonic())
            deadline = started[0] + 30
            while later["id"] not in results:
                assert time.monotonic() < deadline, "The later delivery never got an answer."
                time.sleep(0.01)

    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        first = threading.Thread(target=run, args=(stuck,), daemon=True)
        first.start()
        until(
            lambda: bool(started) and time.monotonic() >= started[0] + 2 * timeout,
            "The first delivery never sent its row.",
        )
        run(later)
        first.join(timeout=60)
    finally:
        sa.event.remove(engine, "before_cursor_execute", hold)
    assert not first.is_alive()
    assert isinstance(results[later["id"]], dict)
    assert isinstance(results[stuck["id"]], dict)
    assert stored_ids(app) == sorted([stuck["id"], later["id"]])


class GatedLock:
    """A combiner's lock that holds one thread's ``nth`` acquisition until ``opened``: it
    puts that thread's next step after what the test lets happen first."""

    def __init__(self, lock: Any, thread: threading.Thread, nth: int) -> None:
        self.lock, self.thread, self.nth = lock, thread, nth
        self.taken = 0
        self.reached = threading.Event()
        self.opened = threading.Event()

    def __enter__(self) -> None:
        if threading.current_thread() is self.thread:
            self.taken += 1
            if self.taken == self.nth:
                self.reached.set()
                assert self.opened.wait(timeout=30)
        self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_a_turn_passed_on_while_a_late_delivery_sends_beside_leaves_each_its_own_row(
    make_finconn_app: Callable[..., Flask],
) -> None:
    """A late delivery takes a turn beside a stuck statement; that statement then ends and
    passes its turn to the follower waiting ahead of the late one. Each of the two sends
    its own row: neither takes the other's into its statement (which left the other's
    thread sending a row no longer waiting, and answering an error for a stored row)."""
    timeout = 2.0
    app = make_finconn_app(FINCONN_WEBHOOK_STORE_TIMEOUT=timeout)
    stuck, follower, late = event(1), event(2), event(3)
    with app.app_context():
        engine = get_state(app).db.engine
    combiner = combiner_of(engine)
    results: dict[str, Stored | BaseException] = {}
    release = threading.Event()
    reached = threading.Event()

    def run(sent: dict[str, Any]) -> None:
        try:
            results[sent["id"]] = store(app, sent)
        except BaseException as exc:  # handed back to the test
            results[sent["id"]] = exc

    def hold(conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if statement.startswith("INSERT INTO finconn_webhook_event") and stuck["id"] in ids_in(
            params
        ):
            reached.set()
            assert release.wait(timeout=30)

    threads = {
        e["id"]: threading.Thread(target=run, args=(e,), daemon=True)
        for e in (stuck, follower, late)
    }
    # The late delivery's second turn at the lock (taking its batch) waits for the test.
    gate = GatedLock(combiner._lock, threads[late["id"]], nth=2)
    combiner._lock = gate  # type: ignore[assignment]
    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        threads[stuck["id"]].start()
        assert reached.wait(timeout=30)
        began = combiner._turn_at
        # The follower queues well after the turn began, so it still waits when the late
        # delivery comes, once the turn has outlasted the timeout.
        until(lambda: time.monotonic() > began + timeout / 2, "The clock stopped.")
        threads[follower["id"]].start()
        until(lambda: len(combiner._waiting) == 1, "The follower never queued.")
        until(lambda: time.monotonic() > began + timeout + 0.05, "The clock stopped.")
        threads[late["id"]].start()
        assert gate.reached.wait(timeout=30)
        assert [p.lead for p in combiner._waiting] == [False, True]
        # The stuck statement ends and passes its turn on to the follower, which sends.
        release.set()
        threads[stuck["id"]].join(timeout=30)
        threads[follower["id"]].join(timeout=30)
        gate.opened.set()
        threads[late["id"]].join(timeout=30)
    finally:
        release.set()
        gate.opened.set()
        sa.event.remove(engine, "before_cursor_execute", hold)
    assert not any(thread.is_alive() for thread in threads.values()), "A delivery got no answer."
    for sent in (stuck, follower, late):
        result = results[sent["id"]]
        assert isinstance(result, dict) and result["id"] == sent["id"], result
    assert stored_ids(app) == sorted(e["id"] for e in (stuck, follower, late))


RUN_TYPE = "test.counted"


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ids of the events a test-only handler ran for, once per run. It manages its own
    transactions (it is no in-event-transaction handler), so the inline queue stores its
    events claimed on the acknowledge path (``processing``) before it runs."""
    ran: list[str] = []
    monkeypatch.setitem(handlers.HANDLERS, RUN_TYPE, lambda state, event: ran.append(event.id))
    return ran


def counted(n: int) -> dict[str, Any]:
    return stripe_event(RUN_TYPE, {"id": f"obj_{n}", "object": "test"})


def deliver(app: Flask, sent: dict[str, Any]) -> events.Received:
    """A verified delivery as the webhook view hands it on (inline queue: processed now)."""
    with app.app_context():
        return events.receive(get_state(app), sent, json.dumps(sent).encode())


def status_of(app: Flask, event_id: str) -> str | None:
    with app.app_context(), get_state(app).db.engine.connect() as conn:
        return conn.scalar(sa.select(WebhookEvent.status).where(WebhookEvent.id == event_id))


def test_two_deliveries_of_one_event_at_the_same_microsecond_rechecked_are_stored_once(
    make_finconn_app: Callable[..., Flask], runs: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deliveries of one event, as two processes would send them, read the same
    microsecond as their ``received_at``; each one's statement fails after it ran (a
    host's listener raises), so each looks at the stored row again. Only one is answered
    "stored": the event's handler runs once (the inline queue runs it for a stored row
    without a claim)."""
    app = make_finconn_app()
    sent = counted(1)
    with app.app_context():
        engine = get_state(app).db.engine
    now = utcnow()
    monkeypatch.setattr(event_store, "utcnow", lambda: now)  # every delivery's clock reads it
    failed: list[str] = []

    def after_the_insert(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("INSERT INTO finconn_webhook_event"):
            failed.append(statement)
            raise RuntimeError("a host's listener failed after the statement")

    sa.event.listen(engine, "after_cursor_execute", after_the_insert)
    try:
        first = deliver(app, sent)
        # Not its row: the statement's own error answers it (Stripe delivers it again).
        with pytest.raises(RuntimeError, match="a host's listener failed"):
            deliver(app, sent)
    finally:
        sa.event.remove(engine, "after_cursor_execute", after_the_insert)
    assert len(failed) == 2  # both statements ran and failed: both rows were rechecked
    assert (first.duplicate, first.outcome) == (False, "processed")
    assert runs == [sent["id"]]
    assert status_of(app, sent["id"]) == "processed"


def test_a_row_stored_for_a_delivery_that_gave_up_is_processed_on_stripes_retry(
    make_finconn_app: Callable[..., Flask], runs: list[str]
) -> None:
    """A delivery answered 503 while the statement holding its row was in flight: the
    statement stores the row claimed all the same. It is put back to ``pending``, so
    Stripe's retry, a duplicate, claims and processes it (once) instead of skipping a
    claim nobody runs."""
    app = make_finconn_app(FINCONN_WEBHOOK_STORE_TIMEOUT=0.2)
    sent = [counted(n) for n in range(3)]
    with app.app_context():
        engine = get_state(app).db.engine
    combiner = combiner_of(engine)
    answered: list[int] = []
    results: list[events.Received | BaseException | None] = [None] * len(sent)
    statements: list[int] = []

    def run(i: int) -> None:
        try:
            results[i] = deliver(app, sent[i])
        except BaseException as exc:  # handed back to the test
            results[i] = exc
        answered.append(i)

    def hold(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if not statement.startswith("INSERT INTO finconn_webhook_event"):
            return
        statements.append(1)
        if len(statements) == 1:  # the first delivery's, alone: until the others queue
            until(lambda: len(combiner._waiting) == 2, "The other deliveries never queued.")
        elif len(statements) == 2:  # theirs: until one of them gave up waiting
            until(lambda: [i for i in answered if i != 0] != [], "No delivery gave up.", 10)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(len(sent))]
    sa.event.listen(engine, "before_cursor_execute", hold)
    try:
        threads[0].start()
        until(lambda: statements != [], "The first delivery never sent its row.")
        for thread in threads[1:]:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        sa.event.remove(engine, "before_cursor_execute", hold)
    assert not any(thread.is_alive() for thread in threads), "A delivery got no answer."
    gave_up = next(i for i in answered if i != 0)
    error = results[gave_up]
    assert isinstance(error, FinConnError) and error.code == "event_store_timeout"
    assert sorted(runs) == sorted(e["id"] for i, e in enumerate(sent) if i != gave_up)
    assert status_of(app, sent[gave_up]["id"]) == "pending"
    # Stripe delivers it again: the row is stored (a duplicate), and this delivery runs it.
    again = deliver(app, sent[gave_up])
    assert (again.duplicate, again.outcome) == (True, "processed")
    assert runs.count(sent[gave_up]["id"]) == 1
    assert status_of(app, sent[gave_up]["id"]) == "processed"
