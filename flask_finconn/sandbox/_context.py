"""The API request being served, as the events it causes record it.

Both the wire side (which knows the request id and idempotency key) and the resource
modules (which emit events) use this module; neither imports the other for it.
"""

from __future__ import annotations

import threading
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
    #: Whether serving it read the sandbox clock (then its answer is never kept).
    read_clock: bool = False


class Requests:
    """The request each thread is serving (none: an automatic context)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def serving(self, ctx: RequestContext) -> _Serving:
        """Make ``ctx`` the current request of this thread for the ``with`` block."""
        return _Serving(self._local, ctx)

    def current(self) -> RequestContext:
        """The request this thread is serving, or an automatic one."""
        ctx = getattr(self._local, "request", None)
        return ctx if ctx is not None else RequestContext()


class _Serving:
    # A class rather than a generator: entered several times on every request.
    __slots__ = ("_ctx", "_local", "_previous")

    def __init__(self, local: threading.local, ctx: RequestContext) -> None:
        self._local, self._ctx = local, ctx
        self._previous: RequestContext | None = None

    def __enter__(self) -> None:
        self._previous = getattr(self._local, "request", None)
        self._local.request = self._ctx

    def __exit__(self, *exc: object) -> None:
        self._local.request = self._previous
