"""What every resource module of the sandbox shares: storage, settings, the clock, the
request being served, and the tasks that come due on the clock.

A resource module registers the kinds of task it schedules with :meth:`Kernel.on_task`;
:meth:`Kernel.run_due` runs each due task, oldest first, at its own due time.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._context import RequestContext, Requests
from ._data import dumps as _dumps
from ._store import Store

# 9999-12-31T23:59:59Z: the last second Python's ``datetime`` (and so the extension and
# most hosts) can represent; the clock never moves past it.
MAX_CLOCK = 253_402_300_799

# (subject id, the task's extra data, its due time in whole sandbox seconds)
TaskHandler = Callable[[str, dict[str, Any], int], None]


@dataclass
class Settings:
    """The sandbox's tunables, read by the resource modules when they act (so a test may
    change them on a running sandbox)."""

    refresh_delay: float = 1.0
    refresh_cooldown: int = 10
    session_ttl: int = 3600
    history_size: int | None = None


@dataclass(frozen=True)
class Clock:
    """The clock's offset from wall time, and no later than the earliest task's due time."""

    offset: float
    next_due: float

    def work_due(self) -> bool:
        """Whether a task may be due now."""
        return time.time() + self.offset >= self.next_due


class Kernel:
    """The store, settings, clock, current request and task queue of one sandbox."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.requests = Requests()
        self._tasks: dict[str, TaskHandler] = {}

    # --- clock --------------------------------------------------------------------------

    def clock(self) -> Clock:
        """The clock's offset and the earliest due time (no statement while the database
        is unchanged: read on every request, so kept in memory)."""
        return self.store.cached("kernel.clock", self._load_clock)

    def _load_clock(self) -> Clock:
        # One statement rather than two: it runs again after every other connection's write.
        row = self.store.one(
            "SELECT (SELECT value FROM meta WHERE key = 'clock_offset'), "
            "(SELECT MIN(due_at) FROM tasks)"
        )
        return Clock(float(row[0] or 0), math.inf if row[1] is None else float(row[1]))

    def _offset(self) -> float:
        return self.clock().offset

    def now(self) -> int:
        """The sandbox clock in whole Unix seconds."""
        return int(self.now_float())

    def now_float(self) -> float:
        """The sandbox clock: wall time plus what :meth:`advance` added (noted on the
        request being served: its answer depends on the time)."""
        self.requests.current().read_clock = True
        return time.time() + self._offset()

    def advance(self, seconds: float) -> int:
        """Move the clock forward, run what became due, and return the new time.

        Refuses (``ValueError``) a negative or non-finite amount, and one that would move
        the clock past 9999-12-31. The work done is bounded by the tasks waiting, never by
        the time skipped: recurring tasks collapse the runs they missed (see
        :meth:`catch_up`).
        """
        refusal = self.refuse_advance(seconds)
        if refusal is not None:
            raise ValueError(refusal)
        with self.store.tx():
            offset = self._offset() + seconds
            self.store.set_meta("clock_offset", repr(offset))
            self.store.remember("kernel.clock", Clock(offset, self.clock().next_due))
            self.run_due()
            return self.now()

    def refuse_advance(self, seconds: object) -> str | None:
        """Why the clock cannot move forward by ``seconds``, as a sentence; None if it can."""
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            return f"seconds must be a number of seconds, not {type(seconds).__name__}."
        if not math.isfinite(seconds) or seconds < 0:
            return (
                f"seconds must be a finite number, zero or more (got {seconds!r}): the "
                "sandbox clock only moves forward."
            )
        headroom = MAX_CLOCK - self.now_float()
        if seconds > headroom:
            return (
                f"seconds must be at most {max(int(headroom), 0)}: the sandbox clock cannot "
                "move past 9999-12-31T23:59:59Z."
            )
        return None

    # --- request context ----------------------------------------------------------------

    def ctx(self) -> RequestContext:
        """The request being served on this thread (an automatic one if none)."""
        return self.requests.current()

    # --- tasks --------------------------------------------------------------------------

    def on_task(self, kind: str, handler: TaskHandler) -> None:
        """Run ``handler`` for every due task of ``kind`` (one handler per kind)."""
        if kind in self._tasks:
            raise ValueError(f"The task kind '{kind}' already has a handler; pick another name.")
        self._tasks[kind] = handler

    def schedule(
        self, due_at: float, kind: str, subject: str, extra: dict[str, Any] | None = None
    ) -> None:
        """Run the ``kind`` task for ``subject`` (an object id) once the clock reaches
        ``due_at``."""
        if kind not in self._tasks:
            raise ValueError(f"No handler runs tasks of kind '{kind}'; register it first.")
        clock = self.clock()
        self.store.execute(
            "INSERT INTO tasks (due_at, kind, account, data) VALUES (?, ?, ?, ?)",
            (due_at, kind, subject, _dumps(extra) if extra else "{}"),
        )
        self.store.remember("kernel.clock", Clock(clock.offset, min(clock.next_due, due_at)))

    def catch_up(self, due_at: int, every: int) -> int:
        """When a task repeating ``every`` seconds, due at ``due_at``, should next run.

        Normally ``due_at + every``; after a jump of the clock, the last occurrence not
        after now instead, so the runs the jump skipped collapse into one (advancing by a
        century costs two runs, not 36,500).
        """
        following = due_at + every
        now = self.now()
        if following < now:
            following += (now - following) // every * every
        return following

    def cancel(self, subject: str, *kinds: str) -> None:
        """Drop the waiting tasks of ``subject`` (of these kinds; all when none given)."""
        if kinds:
            marks = ", ".join("?" for _ in kinds)
            self.store.execute(
                f"DELETE FROM tasks WHERE account = ? AND kind IN ({marks})", (subject, *kinds)
            )
        else:
            self.store.execute("DELETE FROM tasks WHERE account = ?", (subject,))

    def work_due(self) -> bool:
        """Whether a task may be due now (no statement while the database is unchanged)."""
        return self.clock().work_due()

    def run_due(self) -> int:
        """Run every task whose time has come, oldest first, each at its own due time.

        Returns how many ran. API requests call this first, so results do not depend on a
        background thread.
        """
        clock = self.clock()
        now = time.time() + clock.offset
        # next_due is a lower bound (a cancelled task may have left it early): no task is
        # due before it, so most requests need no statement here.
        if now < clock.next_due:
            return 0
        ran = 0
        with self.store.tx():
            while True:
                row = self.store.one(
                    "SELECT id, due_at, kind, account, data FROM tasks WHERE due_at <= ? "
                    "ORDER BY due_at, id LIMIT 1",
                    (now,),
                )
                if row is None:
                    self.store.forget("kernel.clock")
                    return ran
                self.store.execute("DELETE FROM tasks WHERE id = ?", (row[0],))
                handler = self._tasks.get(row[2])
                if handler is not None:
                    with self.requests.serving(RequestContext()):
                        handler(row[3], json.loads(row[4]), int(row[1]))
                ran += 1
