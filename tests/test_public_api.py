"""The public names of flask_finconn are a contract: changing them must be deliberate."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import flask_finconn
from flask_finconn import errors, testing
from flask_finconn.services.event_combiner import StoreTimedOut
from flask_finconn.services.events import EventProcessingFailed
from flask_finconn.services.fleet import LockLost
from flask_finconn.services.handlers import EventIgnored

EXPECTED = {
    "ConfigurationError",
    "Conflict",
    "CrossSiteRequest",
    "FinConn",
    "FinConnError",
    "FinConnState",
    "Holder",
    "InsufficientBalance",
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
    "mandate_inactive",
    "payment_disputed",
    "payment_failed",
    "payment_method_saved",
    "payment_method_verified",
    "payment_processing",
    "payment_succeeded",
    "ownership_refreshed",
    "transactions_synced",
}


def test_all_is_locked() -> None:
    assert set(flask_finconn.__all__) == EXPECTED


def test_every_public_name_exists() -> None:
    missing = [name for name in flask_finconn.__all__ if not hasattr(flask_finconn, name)]
    assert missing == []


def _exception_classes(module: ModuleType) -> list[type[BaseException]]:
    return [
        value
        for _, value in inspect.getmembers(module, inspect.isclass)
        if issubclass(value, BaseException) and value.__module__ == module.__name__
    ]


def test_errors_share_one_base() -> None:
    """Every exception the extension defines is a FinConnError with its own status and code."""
    names = [
        info.name
        for info in pkgutil.walk_packages(flask_finconn.__path__, "flask_finconn.")
        if not info.name.startswith("flask_finconn.sandbox")  # the emulator speaks Stripe's
    ]
    defined = [cls for name in names for cls in _exception_classes(importlib.import_module(name))]
    in_errors = _exception_classes(errors)
    assert len(in_errors) == 12  # FinConnError and its eleven kinds, all in errors.py
    assert {cls.__name__ for cls in in_errors} <= set(flask_finconn.__all__)
    assert set(defined) == {
        *in_errors,
        EventProcessingFailed,
        EventIgnored,
        LockLost,
        StoreTimedOut,
    }
    for cls in defined:
        assert issubclass(cls, flask_finconn.FinConnError), cls
        assert isinstance(cls.status, int) and cls.code and cls.message.endswith("."), cls
    kinds = [
        (cls.status, cls.code)
        for cls in defined
        if issubclass(cls, flask_finconn.FinConnError) and cls is not flask_finconn.FinConnError
    ]
    assert len(set(kinds)) == len(kinds)


def test_testing_helpers_are_locked() -> None:
    assert set(testing.__all__) == {
        "HOLDER_HEADER",
        "cancel_link",
        "captured_signals",
        "count_statements",
        "create_app",
        "deactivate",
        "deliver_webhooks",
        "finish_refreshes",
        "link_accounts",
        "reactivate",
        "sandbox_of",
        "save_account_for_payments",
        "save_bank_account",
        "settle_payments",
        "throwaway_database",
    }
