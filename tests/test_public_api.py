"""The public names of flask_finconn are a contract: changing them must be deliberate."""

from __future__ import annotations

import flask_finconn
from flask_finconn import testing

EXPECTED = {
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
}


def test_all_is_locked() -> None:
    assert set(flask_finconn.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    missing = [name for name in flask_finconn.__all__ if not hasattr(flask_finconn, name)]
    assert missing == []


def test_errors_share_one_base() -> None:
    for name in flask_finconn.__all__:
        value = getattr(flask_finconn, name)
        if isinstance(value, type) and name.endswith(("Error", "Found", "Unavailable")):
            assert issubclass(value, flask_finconn.FinConnError)


def test_testing_helpers_are_locked() -> None:
    assert set(testing.__all__) == {
        "HOLDER_HEADER",
        "cancel_link",
        "captured_signals",
        "create_app",
        "deactivate",
        "deliver_webhooks",
        "finish_refreshes",
        "link_accounts",
        "reactivate",
        "sandbox_of",
    }
