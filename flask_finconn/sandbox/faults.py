"""Fault injection for the sandbox: API errors and latency, webhook chaos.

``sb.faults`` is one :class:`Faults`; set its attributes in a test and call
:meth:`Faults.reset` (or build a new sandbox) afterwards::

    sb.faults.fail_next(500, 429)        # the next two API requests fail, in that order
    sb.faults.api_error_rate = 0.2       # then a fifth of requests fail at random
    sb.faults.latency = 0.05             # every API request takes 50 ms longer
    sb.faults.webhook_duplicate_rate = 1 # every webhook is delivered twice
    sb.faults.webhook_delay = 30         # new events wait 30 sandbox seconds
    sb.faults.webhook_reorder = True     # each batch is delivered newest first
    sb.faults.fail_after_commit()        # the next POST commits, then its answer is a 500
    sb.faults.rate_limit = 25            # a 429 for requests past 25 in any second

Faults apply to ``/v1`` API requests, not to ``/v1/test_helpers``. A failed request is
not executed and stores no idempotent result, so a retry with the same key runs it.
``fail_after_commit`` is the other case: the request ran and committed (its idempotent
result is stored), but the client sees a 500, so a retry with the same key is a replay.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any


class Faults:
    """Knobs that make the sandbox misbehave on purpose (seeded, so runs repeat)."""

    def __init__(self, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self.reset(seed)

    def reset(self, seed: int = 0) -> None:
        """Turn every fault off."""
        with self._lock:
            self._random = random.Random(seed)
            self._schedule: deque[int] = deque()
            self._after_commit = 0
            self._served: deque[float] = deque()  # when each request of the last second ran
        self.rate_limit = 0.0
        self.peak_rate = 0  # the most requests served in any one second so far
        self.rate_limited = 0  # requests answered 429 by ``rate_limit``
        self.api_error_rate = 0.0
        self.api_error_status = 500
        self.latency = 0.0
        self.webhook_duplicate_rate = 0.0
        self.webhook_delay = 0.0
        self.webhook_reorder = False

    def fail_next(self, *statuses: int) -> None:
        """Make the next API requests fail with these statuses (500, 429, 503, ...), in order."""
        for status in statuses:
            if status not in (429, 500, 502, 503, 504):
                raise ValueError(f"Cannot inject status {status}; use 429 or a 5xx status.")
        with self._lock:
            self._schedule.extend(statuses)

    def fail_after_commit(self, count: int = 1) -> None:
        """Let the next ``count`` successful API POSTs commit, then answer each with a 500."""
        with self._lock:
            self._after_commit += count

    def take_after_commit(self) -> bool:
        """Whether to turn this committed answer into a 500 (uses up one)."""
        with self._lock:
            if self._after_commit:
                self._after_commit -= 1
                return True
        return False

    def admit(self, now: float | None = None) -> bool:
        """Count an API request against ``rate_limit``; False means answer it 429.

        The window slides: at most ``rate_limit`` requests are served in any one second,
        as Stripe's limiter does. Refused requests are not counted as served.
        """
        now = time.monotonic() if now is None else now
        with self._lock:
            served = self._served
            while served and served[0] <= now - 1.0:
                served.popleft()
            if self.rate_limit and len(served) >= self.rate_limit:
                self.rate_limited += 1
                return False
            served.append(now)
            self.peak_rate = max(self.peak_rate, len(served))
            return True

    def next_api_error(self) -> int | None:
        """The status to fail the current request with, or None to serve it."""
        with self._lock:
            if self._schedule:
                return self._schedule.popleft()
            if self.api_error_rate and self._random.random() < self.api_error_rate:
                return self.api_error_status
        return None

    def roll_duplicate(self) -> bool:
        with self._lock:
            return bool(
                self.webhook_duplicate_rate and self._random.random() < self.webhook_duplicate_rate
            )


WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_LOST = {
    "error": {
        "type": "api_error",
        "message": "The connection to the sandbox broke after the request was processed "
        "(injected by the sandbox's faults). Retry with the same Idempotency-Key to get "
        "its result.",
    }
}


def fail_after_commit(app: WSGIApp, faults: Faults) -> WSGIApp:
    """Wrap the API so :meth:`Faults.fail_after_commit` can lose a committed answer."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or ""
        if (
            not faults._after_commit
            or environ.get("REQUEST_METHOD") != "POST"
            or path.startswith("/v1/test_helpers/")
        ):
            return app(environ, start_response)
        seen: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            seen.update(status=status, headers=headers)
            return lambda chunk: None

        body = b"".join(app(environ, capture))
        if seen["status"].startswith("2") and faults.take_after_commit():
            data = json.dumps(_LOST).encode()
            start_response(
                "500 Internal Server Error",
                [("Content-Type", "application/json"), ("Content-Length", str(len(data)))],
            )
            return [data]
        start_response(seen["status"], seen["headers"])
        return [body]

    return wrapped
