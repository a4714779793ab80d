"""The acknowledge path's shared insert: the event rows a process is storing at the same
moment go to the ledger as one statement (:class:`Combiner`).

It knows nothing of the statement itself: :mod:`.event_store` hands it the function that
inserts rows on a connection and answers the ids it stored.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa

Row = tuple[dict[str, Any], str | None]  # the row's values, the raw body as its payload
InsertRows = Callable[[sa.Connection, Sequence[Row]], set[str]]
"""Insert rows in one statement, skipping stored ids; the ids it stored."""

MAX_ROWS = 50  # rows per shared statement; more wait for the next one


class _Pending:
    """One delivery's row waiting in a :class:`Combiner`, and what became of it."""

    __slots__ = ("done", "error", "lead", "raw", "ready", "stored", "values")

    def __init__(self, values: dict[str, Any], raw: str | None) -> None:
        self.values = values
        self.raw = raw
        self.ready = threading.Event()
        self.lead = False  # this thread sends the next statement
        self.done = False
        self.stored: bool | None = None  # None: no answer (yet)
        self.error: BaseException | None = None


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
    """

    def __init__(self, insert_rows: InsertRows) -> None:
        # No reference to the engine: it is the key of the weak map that holds this.
        self._insert_rows = insert_rows
        self._lock = threading.Lock()
        self._waiting: list[_Pending] = []
        self._busy = False

    def insert(self, engine: sa.Engine, values: dict[str, Any], raw: str | None) -> bool:
        """Store one row unless its id is stored (durably, when this returns); whether it was."""
        mine = _Pending(values, raw)
        with self._lock:
            self._waiting.append(mine)
            if not self._busy:
                self._busy = mine.lead = True
        try:
            if not mine.lead:
                mine.ready.wait()  # done by another thread's statement, or this one's turn
            if not mine.done:
                self._send(engine)
        except BaseException:
            # Interrupted (a greenlet's timeout or kill, an async exception) while waiting
            # or before sending: a turn to send left unused would leave every later
            # delivery waiting forever.
            self._withdraw(mine)
            raise
        if mine.error is not None:
            raise mine.error
        return bool(mine.stored)

    def _withdraw(self, mine: _Pending) -> None:
        """Take back a row its thread no longer waits for, passing on its turn to send."""
        with self._lock:
            if mine.done:
                return
            if mine in self._waiting:
                self._waiting.remove(mine)
                if mine.lead:
                    self._pass_turn()
            # Otherwise its row is in a statement in flight, which answers it.

    def _pass_turn(self) -> None:
        """With the lock held: the first row waiting sends next, or nothing is in flight."""
        if self._waiting:
            self._waiting[0].lead = True
            self._waiting[0].ready.set()
        else:
            self._busy = False

    def _send(self, engine: sa.Engine) -> None:
        batch: list[_Pending] = []
        try:
            with self._lock:
                batch, self._waiting = self._waiting[:MAX_ROWS], self._waiting[MAX_ROWS:]
            self._store(engine, batch)
        finally:
            with self._lock:
                for pending in batch:
                    if pending.stored is None and pending.error is None:
                        # The sending thread was interrupted: nobody knows, so no 2xx.
                        pending.error = RuntimeError(
                            "Storing the event was interrupted; Stripe will deliver it again."
                        )
                    pending.done = True
                    pending.ready.set()
                self._pass_turn()  # to the first of those that arrived meanwhile

    def _store(self, engine: sa.Engine, batch: Sequence[_Pending]) -> None:
        first: dict[str, _Pending] = {}  # the same id twice: the later copy is a duplicate
        for pending in batch:
            first.setdefault(pending.values["id"], pending)
        rows = [first[key] for key in sorted(first)]
        try:
            stored = self._run(engine, rows)
        except Exception as exc:
            if len(rows) == 1 or _unavailable(exc):
                for pending in rows:
                    pending.error = exc
            else:
                for pending in rows:  # each row alone: a bad one fails only its own delivery
                    try:
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

    def _run(self, engine: sa.Engine, rows: Sequence[_Pending]) -> set[str]:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return self._insert_rows(
                connection, [(pending.values, pending.raw) for pending in rows]
            )


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


def combiner(engine: sa.Engine, insert_rows: InsertRows) -> Combiner:
    """The engine's combiner in this process (made on first use, with ``insert_rows``)."""
    found = _COMBINERS.get(engine)
    if found is None:
        with _COMBINERS_LOCK[0]:
            found = _COMBINERS.get(engine)
            if found is None:
                found = _COMBINERS[engine] = Combiner(insert_rows)
    return found


def _forget_combiners() -> None:
    # A forked child starts with nothing in flight and locks nobody holds.
    _COMBINERS_LOCK[0] = threading.Lock()
    _COMBINERS.clear()


os.register_at_fork(after_in_child=_forget_combiners)


__all__ = ["MAX_ROWS", "Combiner", "InsertRows", "Row", "combiner"]
