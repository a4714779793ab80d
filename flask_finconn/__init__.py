"""Flask-FinConn: bank-account linking for Flask with Stripe Financial Connections.

Register :class:`FinConn` with the app and the host's Flask-SQLAlchemy ``db``, tell it who
is linking with ``@finconn.holder_loader``, and drop the ``<finconn-connect>`` element into
a template. Without Stripe keys it runs on the built-in offline sandbox.
"""

from __future__ import annotations

from .errors import (
    ConfigurationError,
    Conflict,
    CrossSiteRequest,
    FinConnError,
    NotAuthenticated,
    NotFound,
    PayloadTooLarge,
    StripeUnavailable,
    UnsupportedMediaType,
    ValidationError,
    WebhookSignatureError,
)
from .extension import FinConn
from .signals import (
    account_deactivated,
    account_disconnected,
    account_linked,
    account_reactivated,
    account_updated,
    balance_refreshed,
    event_failed,
    event_received,
    ownership_refreshed,
    transactions_synced,
)
from .state import FinConnState, Holder, Settings, __version__, get_state

__all__ = [
    "ConfigurationError",
    "Conflict",
    "CrossSiteRequest",
    "FinConn",
    "FinConnError",
    "FinConnState",
    "Holder",
    "NotAuthenticated",
    "NotFound",
    "PayloadTooLarge",
    "Settings",
    "StripeUnavailable",
    "UnsupportedMediaType",
    "ValidationError",
    "WebhookSignatureError",
    "__version__",
    "account_deactivated",
    "account_disconnected",
    "account_linked",
    "account_reactivated",
    "account_updated",
    "balance_refreshed",
    "event_failed",
    "event_received",
    "get_state",
    "ownership_refreshed",
    "transactions_synced",
]
