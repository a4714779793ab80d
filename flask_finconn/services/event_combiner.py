"""The acknowledge path's shared insert: the event rows a process is storing at the same
moment go to the ledger as one statement (:class:`Combiner`).

It knows nothing of the statements themselves: :mod:`.event_store` hands it a
:class:`Ledger`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import sqlalchemy as sa

from ..errors import FinConnError

Row = tuple[dict[str, Any], str | None]  # the row's values, the raw body as its payload


class Ledger(NamedTuple):
    """The two statements the combiner runs, each on the connection it is given."""

    insert: Callable[[sa.Connection, Sequence[Row]], set[str]]
    """Insert rows in one statement, skipping stored ids; the ids it stored."""
    claim_stored: Callable[[sa.Connection, Sequence[dict[str, Any]]], set[str]]
    """Of these rows' ids, those stored with these very values (this delivery's row), each
    taken in a committed statement of its own: no other delivery is ever given it."""
    release: Callable[[sa.Connection, Sequence[dict[str, Any]]], None]
    """Put rows stored claimed back where a claim takes them: their deliveries gave up."""


logger = logging.getLogger("flask_finconn.events")

MAX_ROWS = 50  # rows per shared statement; more wait for the next one


class StoreTimedOut(FinConnError):
    """A delivery waited longer than ``FINCONN_WEBHOOK_STORE_TIMEOUT`` for its row's statement."""

    status = 503
    code = "event_store_timeout"
    message = (
        "The event was not stored within FINCONN_WEBHOOK_STORE_TIMEOUT: the statements ahead "
        "of it are slow or waiting for a database connection. Stripe delivers it again; if "
        "this repeats, look at the database's load and the connection pool's size."
    )


class _Pending:
    """One delivery's row waiting in a :class:`Combiner`, and what became of it."""

    __slots__ = ("done", "error", "lead", "raw", "ready", "recheck", "stored", "values")

    def __init__(self, values: dict[str, Any], raw: str | None) -> None:
        self.values = values
        self.raw = raw
        self.ready = threading.Event()
        self.lead = False  # this thread sends the next statement
        self.done = False  # answered, or its thread no longer waits
        self.stored: bool | None = None  # None: no answer (yet)
        self.error: BaseException | None = None
        # A statement that held this row stopped before it answered: it may have stored it.
        self.recheck = False


class Combiner:
    """The acknowledge-path inserts of one engine in this process, one statement at a time.

    A delivery that finds no statement in flight sends its row at once, alone. Rows that
    arrive while one is in flight wait for it, and then one of their threads sends them all
    as one ``INSERT ... VALUES (...), (...) ON CONFLICT DO NOTHING RETURNING id``: one
    round trip and one commit for all, where each used to cost its own. Every caller
    returns only once the statement holding its row has committed, so a 2xx still means
    "stored". Rows go in id order, so two processes' statements never wait on each other's
    ids in opposite orders (a deadlock). If one of its rows fails the shared statement, each
    row is sent again alone (not after a connection or lock failure, which all share).

    A statement may commit and still fail, or its thread be interrupted, before it hands
    out the answers. Its rows are then sent again, and a row found stored with the very
    values this delivery sent (its ``received_at``, to the microsecond) is answered
    "stored", not "duplicate", once this delivery has taken it: of two deliveries that
    read the same microsecond (in two processes) and are both rechecked, only one takes
    the row.

    A delivery waits at most ``timeout`` seconds for a statement to hold its row and
    answer it, then raises :class:`StoreTimedOut` (a 503: Stripe delivers it again, and
    finds it stored if the statement stored it after all). A delivery that arrives once
    the turn in flight has lasted longer than that sends its own statement beside it, so
    a stuck statement holds up no more than its own batch. When a statement stores the
    row of a delivery that gave up meanwhile (answered an error), a row stored claimed
    (the inline queue's ``processing``) is put back to ``pending``: Stripe's retry finds
    a duplicate it can claim and process, rather than a claim nobody runs until it counts
    as stuck.
    """

    def __init__(self, ledger: Ledger) -> None:
        # No reference to the engine: it is the key of the weak map that holds this.
        self._ledger = ledger
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._busy = False
        self._turn_at = 0.0  # when the latest turn to send began (time.monotonic())

    def insert(
        self, engine: sa.Engine, values: dict[str, Any], raw: str | None, timeout: float
    ) -> bool:
        """Store one row unless its id is stored (durably, when this returns); whether it was."""
        mine = _Pending(values, raw)
        with self._lock:
            self._waiting.append(mine)
            now = time.monotonic()
            if not self._busy or now - self._turn_at > timeout:
                # Nothing in flight; or the turn in flight has outlasted any follower's
                # wait, stuck (a lock wait) or lost (its thread died without passing it
                # on): this delivery sends beside it, as another process would.
                self._busy = mine.lead = True
                self._turn_at = now
        try:
            # Done by another thread's statement, or this one's turn to send.
            if not mine.lead and not mine.ready.wait(timeout) and self._withdraw(mine):
                raise StoreTimedOut()
            if not mine.done:
                self._send(engine, mine)
        except BaseException:
            # Interrupted (a greenlet's timeout or kill, an async exception) while waiting
            # or before sending: a turn to send left unused would leave every later
            # delivery waiting.
            self._withdraw(mine)
            raise
        if mine.error is not None:
            raise mine.error
        return bool(mine.stored)

    def _withdraw(self, mine: _Pending) -> bool:
        """Take back a row its thread no longer waits for, passing on its turn to send;
        False when it was answered already."""
        with self._lock:
            if mine.done:
                return False
            mine.done = True
            if mine in self._waiting:
                self._waiting.remove(mine)
                if mine.lead:
                    self._pass_turn()
            # Otherwise its row is in a statement in flight, which may store it unseen.
            return True

    def _pass_turn(self) -> None:
        """With the lock held: the first row waiting sends next, or nothing is in flight."""
        if self._waiting:
            self._waiting[0].lead = True
            self._waiting[0].ready.set()
            self._turn_at = time.monotonic()
        else:
            self._busy = False

    def _send(self, engine: sa.Engine, mine: _Pending) -> None:
        batch: list[_Pending] = []
        gave_up: list[_Pending] = []  # stored, for a thread that no longer waits
        try:
            with self._lock:
                # In the order they came (rows to recheck first: a later copy of one is the
                # duplicate), and its own row even when it took a stuck turn behind more.
                # Not a row whose thread has a turn too (taken beside a stuck one, or
                # passed on meanwhile): that thread sends its row itself.
                self._waiting.remove(mine)
                rows: list[_Pending] = []
                rest: list[_Pending] = []
                for pending in self._waiting:
                    fits = not pending.lead and len(rows) < MAX_ROWS - 1
                    (rows if fits else rest).append(pending)
                batch, self._waiting = [*rows, mine], rest
            self._store(engine, batch)
        finally:
            with self._lock:
                # This thread was interrupted before the answers were out (its own row is
                # answered by the interruption): the rows without one go first in the next
                # statement, which learns whether this one stored them.
                unanswered = [
                    pending
                    for pending in batch
                    if pending is not mine
                    and not pending.done
                    and pending.stored is None
                    and pending.error is None
                ]
                for pending in batch:
                    if pending in unanswered:
                        pending.recheck = True
                    else:
                        if pending.done and pending.stored:
                            gave_up.append(pending)
                        pending.done = True
                        pending.ready.set()
                self._waiting[:0] = unanswered
                self._pass_turn()  # to the first of those that arrived meanwhile
        if gave_up:  # not when this thread was interrupted: it does no more work
            self._release(engine, gave_up)

    def _release(self, engine: sa.Engine, rows: Sequence[_Pending]) -> None:
        """Put back the stored rows of deliveries that gave up (see :class:`Combiner`)."""
        try:
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                self._ledger.release(connection, [pending.values for pending in rows])
        except Exception:
            # This delivery's own answer stands; the sweep takes those rows once their
            # claims count as stuck.
            logger.exception(
                "Could not put back events %s, stored for deliveries that gave up.",
                ", ".join(pending.values["id"] for pending in rows),
            )

    def _store(self, engine: sa.Engine, batch: Sequence[_Pending]) -> None:
        first: dict[str, _Pending] = {}  # the same id twice: the later copy is a duplicate
        for pending in batch:
            first.setdefault(pending.values["id"], pending)
        rows = [first[key] for key in sorted(first)]
        try:
            stored = self._run(engine, rows)
        except Exception as exc:
            if _unavailable(exc):
                for pending in rows:
                    pending.error = exc
            else:
                # The statement may have committed before it failed (a host's listener
                # raised after it): each row found stored is looked at again.
                for pending in rows:
                    pending.recheck = True
                if len(rows) == 1:  # sending it again would only repeat its failure
                    self._recheck_alone(engine, rows[0], exc)
                for pending in rows if len(rows) > 1 else ():
                    try:  # each row alone: a bad one fails only its own delivery
                        pending.stored = bool(self._run(engine, [pending]))
                    except Exception as own:
                        pending.error = own
        else:
            for pending in rows:
                pending.stored = pending.values["id"] in stored
        for pending in batch:
            head = first[pending.values["id"]]
            if head is not pending:  # a copy within the batch: a duplicate, or the same error
                pending.stored, pending.error = False, head.error

    def _recheck_alone(self, engine: sa.Engine, pending: _Pending, exc: Exception) -> None:
        """Answer the row of a statement that failed alone: stored if it committed all the
        same, else ``exc``."""
        try:
            pending.stored = bool(self._run(engine, [pending], insert=False))
        except Exception:  # the database cannot tell: the statement's own error answers
            pending.stored = False
        if not pending.stored:
            pending.stored, pending.error = None, exc

    def _run(self, engine: sa.Engine, rows: Sequence[_Pending], *, insert: bool = True) -> set[str]:
        """Send ``rows`` as one statement (unless not ``insert``); the ids it stored, and
        those of rows to recheck that an earlier statement stored with their values (taken
        for their deliveries)."""
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            stored: set[str] = set()
            if insert:
                stored = self._ledger.insert(
                    connection, [(pending.values, pending.raw) for pending in rows]
                )
            recheck = [p.values for p in rows if p.recheck and p.values["id"] not in stored]
            if recheck:
                stored |= self._ledger.claim_stored(connection, recheck)
            return stored


def _unavailable(exc: Exception) -> bool:
    """Whether the shared statement failed for want of a connection or of the database (a
    pool or connect timeout, a lost connection, a lock wait: SQLite's "database is
    locked"), not for one of its rows.

    Sending each row again alone would then only repeat the failure, one timeout after
    another, while every delivery of the process waits.
    """
    if isinstance(exc, sa.exc.TimeoutError | sa.exc.DisconnectionError):
        return True
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
        return True
    return isinstance(exc, sa.exc.DBAPIError) and (
        exc.connection_invalidated or exc.statement is None
    )


_COMBINERS: weakref.WeakKeyDictionary[sa.Engine, Combiner] = weakref.WeakKeyDictionary()
_COMBINERS_LOCK = [threading.Lock()]


def combiner(engine: sa.Engine, ledger: Ledger) -> Combiner:
    """The engine's combiner in this process (made on first use, with ``ledger``)."""
    found = _COMBINERS.get(engine)
    if found is None:
        with _COMBINERS_LOCK[0]:
            found = _COMBINERS.get(engine)
            if found is None:
                found = _COMBINERS[engine] = Combiner(ledger)
    return found


def _forget_combiners() -> None:
    # A forked child starts with nothing in flight and locks nobody holds.
    _COMBINERS_LOCK[0] = threading.Lock()
    _COMBINERS.clear()


os.register_at_fork(after_in_child=_forget_combiners)


__all__ = ["MAX_ROWS", "Combiner", "Ledger", "Row", "StoreTimedOut", "combiner"]
