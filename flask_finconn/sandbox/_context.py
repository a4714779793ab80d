"""The API request being served, as the events it causes record it.

Both the wire side (which knows the request id and idempotency key) and the resource
modules (which emit events) use this module; neither imports the other for it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass
class RequestContext:
    """The API request being served, stamped on the events it causes.

    A request with no ``id`` is automatic: the bank, the end user or the sandbox's own
    clock caused it, and its events say ``"request": {"id": null, ...}``.
    """

    id: str | None = None
    idempotency_key: str | None = None
    livemode: bool = False


class Requests:
    """The request each thread is serving (none: an automatic context)."""

    def __init__(self) -> None:
        self._local = threading.local()

    @contextlib.contextmanager
    def serving(self, ctx: RequestContext) -> Iterator[None]:
        """Make ``ctx`` the current request of this thread for the block."""
        previous = getattr(self._local, "request", None)
        self._local.request = ctx
        try:
            yield
        finally:
            self._local.request = previous

    def current(self) -> RequestContext:
        """The request this thread is serving, or an automatic one."""
        ctx = getattr(self._local, "request", None)
        return ctx if ctx is not None else RequestContext()
