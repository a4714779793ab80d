"""The offline sandbox: a stateful emulator of Stripe's Customers and Financial Connections API.

``Sandbox`` is the whole product; see ``docs/internals.md`` ("Sandbox Python API") and
``docs/sandbox.md``. It imports nothing from the rest of ``flask_finconn``.
"""

from __future__ import annotations

from ._params import ApiError
from .core import API_VERSION, EVENT_TYPES, Sandbox, SessionError
from .faults import Faults
from .transport import SandboxHTTPClient
from .webhooks import sign

__all__ = [
    "API_VERSION",
    "EVENT_TYPES",
    "ApiError",
    "Faults",
    "Sandbox",
    "SandboxHTTPClient",
    "SessionError",
    "sign",
]
