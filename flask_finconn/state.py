"""What ``init_app`` keeps per app: the holder, the validated settings and the app's state.

The lowest layer of the extension beside ``models`` and ``errors``: services, views, the
CLI and the task queues import from here, never from ``extension``. It also holds the
constant vocabularies (permissions, refresh features, subcategories, task queues), each
defined once and imported wherever it is needed.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, current_app, url_for
from werkzeug.routing import BuildError

from . import config as defaults
from .errors import ConfigurationError, NotAuthenticated

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .extension import FinConn
    from .models import WebhookEvent
    from .sandbox import Sandbox
    from .stripe_api import StripeAPI

__version__: str = version("flask-finconn")

PERMISSIONS = ("balances", "ownership", "payment_method", "transactions")
REFRESH_FEATURES = ("balance", "ownership", "transactions")
"""What ``POST /accounts/<id>/refresh`` and ``flask finconn refresh`` can refresh."""
FEATURE_PERMISSION = {
    "balance": "balances",
    "ownership": "ownership",
    "transactions": "transactions",
}
"""The permission each refresh feature needs."""
PREFETCH_FEATURES = tuple(FEATURE_PERMISSION[f] for f in REFRESH_FEATURES)
"""``FINCONN_PREFETCH`` values: Stripe names prefetches after the permissions."""
SUBCATEGORIES = ("checking", "savings", "mortgage", "line_of_credit", "credit_card")
TASK_QUEUES = ("inline", "celery")
LIVE_KEY_PREFIXES = ("sk_live_", "rk_live_")
SECRET_KEY_PREFIXES = (*LIVE_KEY_PREFIXES, "sk_test_", "rk_test_")
SANDBOX_MERCHANT_NAME = "Sandbox merchant"
REAL_STRIPE_JS_URL = "https://js.stripe.com/v3/"
SANDBOX_STRIPE_JS_ENDPOINT = "finconn_sandbox.stripe_js"


# The width of the holder_id columns (finconn_customer and the tables that refer to it).
HOLDER_ID_MAX = 255


@dataclass(frozen=True)
class Holder:
    """The person or business whose bank accounts are linked (one Stripe Customer each)."""

    id: str
    email: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise TypeError("Holder.id must be a non-empty string, such as str(user.id).")
        if len(self.id) > HOLDER_ID_MAX:
            raise ValueError(
                f"Holder.id is {len(self.id)} characters long; it is stored in a column of "
                f"{HOLDER_ID_MAX}, so use a shorter stable id such as the user's primary key."
            )


@dataclass(frozen=True)
class Settings:
    """The validated ``FINCONN_*`` configuration of one app."""

    secret_key: str | None
    publishable_key: str | None
    webhook_secrets: tuple[str, ...]
    sandbox: bool
    sandbox_database: str | None
    sandbox_refresh_delay: float
    permissions: tuple[str, ...]
    prefetch: tuple[str, ...]
    country: str
    account_subcategories: tuple[str, ...] | None
    subscribe_transactions: bool
    url_prefix: str
    task_queue: str
    stripe_rate_limit: float
    redis_url: str | None
    max_content_length: int
    webhook_max_content_length: int
    webhook_tolerance: int
    allowed_origins: tuple[str, ...]
    merchant_name: str
    installation_id: str | None = None
    delete_data_on_disconnect: bool = False
    sync_lock_ttl: float = 60.0
    celery_visibility_timeout: float | None = None
    webhook_store_timeout: float = 10.0

    @property
    def livemode(self) -> bool:
        """True for a live secret key: real money, real banks."""
        return bool(self.secret_key and self.secret_key.startswith(LIVE_KEY_PREFIXES))


class TaskQueue(Protocol):
    """Carries stored events to whatever processes them (``flask_finconn.tasks``)."""

    #: True when the queue processes a new event in the delivery's own request: the ledger
    #: then inserts it already claimed in the session's open transaction, which the
    #: queue's processing commits (one commit per event).
    claims_on_receipt: bool

    def received(
        self, state: FinConnState, event_id: str, *, new: bool, stored: WebhookEvent | None
    ) -> str | None:
        """A verified delivery of a stored event (``new`` when this delivery stored it).

        ``stored`` is the new row, claimed and not yet committed, when the queue claims on
        receipt. Returns the
        processing outcome when the queue processed the event before returning, else None.
        """

    def enqueue(self, app: Flask, event_ids: Sequence[str]) -> None:
        """Arrange for each event to be processed (duplicates are harmless)."""


@dataclass
class FinConnState:
    """What ``init_app`` keeps for one app at ``app.extensions["finconn"]``."""

    extension: FinConn
    db: SQLAlchemy
    settings: Settings
    stripe: StripeAPI
    sandbox: Sandbox | None
    queue: TaskQueue
    #: This installation's id once read (``services.installation``); None before first use.
    installation: str | None = None

    def load_holder(self) -> Holder | None:
        """Call the host's holder loader for the current request (None when nobody)."""
        loader = self.extension.holder_callback
        if loader is None:
            raise ConfigurationError(
                "Register a holder loader with @finconn.holder_loader so that Flask-FinConn "
                "knows whose accounts a request is about."
            )
        holder = loader()
        if holder is not None and not isinstance(holder, Holder):
            raise TypeError("The holder loader must return a flask_finconn.Holder or None.")
        return holder

    def require_holder(self) -> Holder:
        """The current holder, or :class:`NotAuthenticated` (401) when there is none."""
        holder = self.load_holder()
        if holder is None:
            raise NotAuthenticated()
        return holder

    @property
    def publishable_key(self) -> str | None:
        """The key handed to Stripe.js (the sandbox's own in sandbox mode)."""
        if self.sandbox is not None:
            return self.sandbox.publishable_key
        return self.settings.publishable_key

    @property
    def stripe_js_url(self) -> str:
        """Where the browser loads Stripe.js from: js.stripe.com, or the sandbox stand-in."""
        if self.sandbox is None:
            return REAL_STRIPE_JS_URL
        try:
            return url_for(SANDBOX_STRIPE_JS_ENDPOINT)
        except BuildError:  # the browser half is not registered yet: its fixed place
            return f"{self.settings.url_prefix}/sandbox/stripe.js"


def get_state(app: Flask | None = None) -> FinConnState:
    """The :class:`FinConnState` of ``app`` (default: the current app)."""
    target = app if app is not None else current_app
    try:
        state: FinConnState = target.extensions["finconn"]
    except KeyError:
        raise RuntimeError(
            "Flask-FinConn is not registered on this app; call finconn.init_app(app) first."
        ) from None
    return state


# reading the configuration


def read_settings(app: Flask) -> Settings:
    """Fill every ``FINCONN_*`` key with its default once and check the result."""
    for name in dir(defaults):
        if name.startswith("FINCONN_"):
            value = getattr(defaults, name)
            app.config.setdefault(name, list(value) if isinstance(value, list) else value)
    cfg = app.config
    keys = _read_keys(app, cfg)
    permissions, prefetch, subcategories = _read_features(cfg)
    max_content_length, webhook_max_content_length, webhook_tolerance = _read_limits(cfg)
    return Settings(
        **keys,
        sandbox_database=cfg["FINCONN_SANDBOX_DATABASE"],
        sandbox_refresh_delay=float(cfg["FINCONN_SANDBOX_REFRESH_DELAY"]),
        permissions=permissions,
        prefetch=prefetch,
        country=_read_country(cfg),
        account_subcategories=subcategories,
        subscribe_transactions=bool(cfg["FINCONN_SUBSCRIBE_TRANSACTIONS"]),
        url_prefix=_read_url_prefix(cfg),
        task_queue=_read_queue(cfg),
        stripe_rate_limit=_read_rate_limit(cfg, keys["sandbox"]),
        redis_url=cfg["FINCONN_REDIS_URL"] or None,
        max_content_length=max_content_length,
        webhook_max_content_length=webhook_max_content_length,
        webhook_tolerance=webhook_tolerance,
        allowed_origins=tuple(
            o.rstrip("/")
            for o in _as_tuple(cfg["FINCONN_ALLOWED_ORIGINS"], "FINCONN_ALLOWED_ORIGINS")
        ),
        merchant_name=_read_merchant_name(cfg, keys["sandbox"]),
        installation_id=_read_installation_id(cfg),
        delete_data_on_disconnect=bool(cfg["FINCONN_DELETE_DATA_ON_DISCONNECT"]),
        **_read_recovery_times(cfg),
        webhook_store_timeout=_read_seconds(cfg, "FINCONN_WEBHOOK_STORE_TIMEOUT"),
    )


def _read_recovery_times(cfg: Mapping[str, Any]) -> dict[str, Any]:
    lock_ttl = _read_seconds(cfg, "FINCONN_SYNC_LOCK_TTL")
    visibility = None
    if cfg["FINCONN_CELERY_VISIBILITY_TIMEOUT"] is not None:
        visibility = _read_seconds(cfg, "FINCONN_CELERY_VISIBILITY_TIMEOUT")
        if lock_ttl >= visibility:
            # Else the broker hands a live worker's task to another before its lock could
            # have expired: the second one only waits on the lock, over and over.
            raise ConfigurationError(
                f"FINCONN_SYNC_LOCK_TTL ({lock_ttl:g} s) must be below "
                f"FINCONN_CELERY_VISIBILITY_TIMEOUT ({visibility:g} s); lower the lock's TTL "
                "or raise the visibility timeout."
            )
    return {"sync_lock_ttl": lock_ttl, "celery_visibility_timeout": visibility}


def _read_installation_id(cfg: Mapping[str, Any]) -> str | None:
    value = cfg["FINCONN_INSTALLATION_ID"]
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 64 or not value.isprintable():
        raise ConfigurationError(
            "FINCONN_INSTALLATION_ID must be a short printable string (1 to 64 characters); "
            "leave it unset to use the id stored in the database."
        )
    return value


def _as_tuple(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    if isinstance(value, list | tuple | set | frozenset):
        return tuple(str(v) for v in value)
    raise ConfigurationError(f"Set {key} to a list of strings, not {type(value).__name__}.")


def _check_choices(values: tuple[str, ...], allowed: tuple[str, ...], key: str) -> None:
    unknown = [v for v in values if v not in allowed]
    if unknown:
        raise ConfigurationError(
            f"{key} has unknown value(s) {', '.join(map(repr, unknown))}; "
            f"use any of {', '.join(allowed)}."
        )


def _read_keys(app: Flask, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The Stripe keys, the webhook secrets and whether the sandbox is on."""
    env = os.environ
    secret_key = cfg["FINCONN_STRIPE_SECRET_KEY"] or env.get("STRIPE_SECRET_KEY") or None
    publishable_key = (
        cfg["FINCONN_STRIPE_PUBLISHABLE_KEY"] or env.get("STRIPE_PUBLISHABLE_KEY") or None
    )
    webhook_secrets = _as_tuple(
        cfg["FINCONN_WEBHOOK_SECRET"] or env.get("STRIPE_WEBHOOK_SECRET"),
        "FINCONN_WEBHOOK_SECRET",
    )
    chosen = cfg["FINCONN_SANDBOX"]
    sandbox = secret_key is None if chosen is None else bool(chosen)
    if sandbox:
        _check_sandbox(app, secret_key, explicit=chosen is not None)
    else:
        _check_stripe_keys(secret_key, publishable_key, webhook_secrets)
    if any(not s.startswith("whsec_") for s in webhook_secrets):
        raise ConfigurationError("FINCONN_WEBHOOK_SECRET must be whsec_... endpoint secret(s).")
    return {
        "secret_key": secret_key,
        "publishable_key": publishable_key,
        "webhook_secrets": webhook_secrets,
        "sandbox": sandbox,
    }


def _check_sandbox(app: Flask, secret_key: str | None, *, explicit: bool) -> None:
    """Refuse a sandbox beside a live key, and one that switched on silently in production."""
    if secret_key is not None and secret_key.startswith(LIVE_KEY_PREFIXES):
        raise ConfigurationError(
            "FINCONN_SANDBOX is on but the Stripe key is a live key: remove the live key to "
            "use the sandbox, or turn FINCONN_SANDBOX off to use real Stripe."
        )
    if secret_key is None and not explicit and not (app.debug or app.testing):
        raise ConfigurationError(
            "No Stripe key is set and the app is in neither debug nor testing mode: set "
            "FINCONN_STRIPE_SECRET_KEY (or STRIPE_SECRET_KEY) to use Stripe, or set "
            "FINCONN_SANDBOX = True to run on the offline sandbox."
        )


def _check_stripe_keys(
    secret_key: str | None, publishable_key: str | None, webhook_secrets: tuple[str, ...]
) -> None:
    if not secret_key:
        raise ConfigurationError(
            "FINCONN_SANDBOX is off but no Stripe key is set: set FINCONN_STRIPE_SECRET_KEY "
            "(or the STRIPE_SECRET_KEY environment variable), or turn the sandbox on."
        )
    if not secret_key.startswith(SECRET_KEY_PREFIXES):
        raise ConfigurationError(
            "FINCONN_STRIPE_SECRET_KEY must be a Stripe secret or restricted key "
            "(sk_live_..., sk_test_..., rk_live_... or rk_test_...)."
        )
    if not publishable_key:
        raise ConfigurationError(
            "Set FINCONN_STRIPE_PUBLISHABLE_KEY (or STRIPE_PUBLISHABLE_KEY): the browser "
            "needs it to open Stripe's linking modal."
        )
    if not webhook_secrets:
        raise ConfigurationError(
            "Set FINCONN_WEBHOOK_SECRET (or STRIPE_WEBHOOK_SECRET) to the whsec_... secret of "
            "your Stripe webhook endpoint; without it balances and refreshes never update."
        )


def _read_features(
    cfg: Mapping[str, Any],
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...] | None]:
    """Permissions, prefetches and account subcategories."""
    permissions = _as_tuple(cfg["FINCONN_PERMISSIONS"], "FINCONN_PERMISSIONS")
    if not permissions:
        raise ConfigurationError("FINCONN_PERMISSIONS must name at least one permission.")
    _check_choices(permissions, PERMISSIONS, "FINCONN_PERMISSIONS")
    prefetch = _as_tuple(cfg["FINCONN_PREFETCH"], "FINCONN_PREFETCH")
    _check_choices(prefetch, PREFETCH_FEATURES, "FINCONN_PREFETCH")
    missing = [p for p in prefetch if p not in permissions]
    if missing:
        raise ConfigurationError(
            f"FINCONN_PREFETCH asks for {', '.join(missing)} but FINCONN_PERMISSIONS does not "
            "include it; add it to FINCONN_PERMISSIONS or remove it from FINCONN_PREFETCH."
        )
    subcategories = None
    if cfg["FINCONN_ACCOUNT_SUBCATEGORIES"] is not None:
        subcategories = _as_tuple(
            cfg["FINCONN_ACCOUNT_SUBCATEGORIES"], "FINCONN_ACCOUNT_SUBCATEGORIES"
        )
        _check_choices(subcategories, SUBCATEGORIES, "FINCONN_ACCOUNT_SUBCATEGORIES")
    return permissions, prefetch, subcategories


def _read_country(cfg: Mapping[str, Any]) -> str:
    country = cfg["FINCONN_COUNTRY"]
    if not isinstance(country, str) or len(country) != 2:
        raise ConfigurationError("Set FINCONN_COUNTRY to a two-letter country code such as 'US'.")
    return country.upper()


def _read_url_prefix(cfg: Mapping[str, Any]) -> str:
    prefix: str = cfg["FINCONN_URL_PREFIX"] or ""
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ConfigurationError(
            "FINCONN_URL_PREFIX must start with '/' and not end with one, such as '/finconn'."
        )
    return prefix


def _read_limits(cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """The body size limits and the webhook signature tolerance."""
    limits = []
    for key in (
        "FINCONN_MAX_CONTENT_LENGTH",
        "FINCONN_WEBHOOK_MAX_CONTENT_LENGTH",
        "FINCONN_WEBHOOK_TOLERANCE",
    ):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigurationError(f"Set {key} to a positive whole number.")
        limits.append(value)
    return limits[0], limits[1], limits[2]


def _read_seconds(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg[key]
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = 0.0
    # A thread's wait (the webhook store timeout's) refuses a longer timeout than this.
    if not 0 < seconds <= threading.TIMEOUT_MAX:
        raise ConfigurationError(
            f"{key} must be a number of seconds above 0 and at most "
            f"{threading.TIMEOUT_MAX:.0f}, not {value!r}."
        )
    return seconds


DEFAULT_STRIPE_RATE_LIMIT = 20.0  # requests a second; under Stripe's test-mode read limit


def _read_rate_limit(cfg: Mapping[str, Any], sandbox: bool) -> float:
    value = cfg["FINCONN_STRIPE_RATE_LIMIT"]
    if value is None:
        return 0.0 if sandbox else DEFAULT_STRIPE_RATE_LIMIT
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = -1.0
    if rate < 0:
        raise ConfigurationError(
            f"FINCONN_STRIPE_RATE_LIMIT must be a number of requests a second (0 for no "
            f"limit), not {value!r}."
        )
    return rate


def _read_queue(cfg: Mapping[str, Any]) -> str:
    task_queue: str = cfg["FINCONN_TASK_QUEUE"]
    if task_queue not in TASK_QUEUES:
        raise ConfigurationError(
            f"FINCONN_TASK_QUEUE must be one of {', '.join(TASK_QUEUES)}, not {task_queue!r}."
        )
    return task_queue


def _read_merchant_name(cfg: Mapping[str, Any], sandbox: bool) -> str:
    """The business named on the consent step: required with real Stripe."""
    name = cfg["FINCONN_MERCHANT_NAME"]
    if name:
        return str(name)
    if sandbox:
        return SANDBOX_MERCHANT_NAME
    raise ConfigurationError(
        "Set FINCONN_MERCHANT_NAME to your business's name as your users know it; it is "
        "shown where they consent to share their bank data."
    )
