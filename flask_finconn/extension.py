"""The ``FinConn`` extension object: configuration, the holder loader and registration.

``FinConn(app=None, *, db)`` follows the Flask-SQLAlchemy pattern: nothing about an app is
stored on the extension object. ``init_app`` validates every ``FINCONN_*`` key once into a
:class:`Settings`, builds the app's Stripe client (real, or the in-process sandbox) and
keeps both in a :class:`FinConnState` at ``app.extensions["finconn"]``.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from types import ModuleType
from typing import TYPE_CHECKING, Any

from flask import Flask, current_app, url_for
from werkzeug.routing import BuildError

from . import config as defaults
from . import models
from .errors import ConfigurationError, NotAuthenticated

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

    from .sandbox import Sandbox
    from .stripe_api import StripeAPI

logger = logging.getLogger("flask_finconn")

PERMISSIONS = ("balances", "ownership", "payment_method", "transactions")
PREFETCH_FEATURES = ("balances", "ownership", "transactions")
SUBCATEGORIES = ("checking", "savings", "mortgage", "line_of_credit", "credit_card")
TASK_QUEUES = ("inline", "celery")
REAL_STRIPE_JS_URL = "https://js.stripe.com/v3/"
SANDBOX_STRIPE_JS_ENDPOINT = "finconn_sandbox.stripe_js"


@dataclass(frozen=True)
class Holder:
    """The person or business whose bank accounts are linked (one Stripe Customer each)."""

    id: str
    email: str | None = None
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise TypeError("Holder.id must be a non-empty string, such as str(user.id).")


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
    max_content_length: int
    webhook_max_content_length: int
    webhook_tolerance: int
    allowed_origins: tuple[str, ...]
    merchant_name: str

    @property
    def livemode(self) -> bool:
        """True for a live secret key: real money, real banks."""
        return bool(self.secret_key and self.secret_key.startswith(("sk_live_", "rk_live_")))


@dataclass
class FinConnState:
    """What ``init_app`` keeps for one app at ``app.extensions["finconn"]``."""

    extension: FinConn
    db: SQLAlchemy
    settings: Settings
    stripe: StripeAPI
    sandbox: Sandbox | None

    def load_holder(self) -> Holder | None:
        """Call the host's holder loader for the current request (None when nobody)."""
        loader = self.extension._holder_loader
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


class FinConn:
    """Bank-account linking through Stripe Financial Connections for Flask apps.

    Create it with the host's Flask-SQLAlchemy ``db`` and call :meth:`init_app` for each app
    (or pass the app directly). The models' tables are added to ``db.metadata`` at once, so
    ``db.create_all()`` and Flask-Migrate see them.
    """

    def __init__(self, app: Flask | None = None, *, db: SQLAlchemy) -> None:
        self.db = db
        self._holder_loader: Callable[[], Holder | None] | None = None
        models.attach_to(db.metadata)
        if app is not None:
            self.init_app(app)

    def holder_loader(self, callback: Callable[[], Holder | None]) -> Callable[[], Holder | None]:
        """Register the function that says who is linking (a :class:`Holder`, or None: 401)."""
        self._holder_loader = callback
        return callback

    def init_app(self, app: Flask) -> None:
        """Read and check the configuration, build the Stripe client, register the blueprint."""
        if "finconn" in app.extensions:
            raise RuntimeError(
                "Flask-FinConn is already registered on this app; call init_app once per app."
            )
        if "sqlalchemy" not in app.extensions:
            raise ConfigurationError(
                "Call db.init_app(app) for Flask-SQLAlchemy before finconn.init_app(app)."
            )
        if app.extensions["sqlalchemy"] is not self.db:
            raise ConfigurationError(
                "FinConn(db=...) must be given the same SQLAlchemy instance that is registered "
                "on this app; pass the app's db."
            )
        settings = read_settings(app)
        models.attach_to(self.db.metadata)

        from .stripe_api import StripeAPI

        sandbox = None
        if settings.sandbox:
            sandbox = _make_sandbox(app, settings)
            client = StripeAPI.for_sandbox(sandbox, livemode=False)
        else:
            assert settings.secret_key is not None
            client = StripeAPI.for_key(settings.secret_key)
        state = FinConnState(self, self.db, settings, client, sandbox)
        app.extensions["finconn"] = state

        from .cli import finconn_cli
        from .views import bp

        app.register_blueprint(bp, url_prefix=settings.url_prefix or None)
        app.cli.add_command(finconn_cli)
        _honour_csrf_exemptions(app)
        if sandbox is not None:
            _connect_sandbox(app, state, sandbox)
        _init_optional(app, state)


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


def read_settings(app: Flask) -> Settings:
    """Fill every ``FINCONN_*`` key with its default once and check the result."""
    for name in dir(defaults):
        if name.startswith("FINCONN_"):
            value = getattr(defaults, name)
            app.config.setdefault(name, list(value) if isinstance(value, list) else value)
    cfg = app.config
    env = os.environ
    secret_key = cfg["FINCONN_STRIPE_SECRET_KEY"] or env.get("STRIPE_SECRET_KEY") or None
    publishable_key = (
        cfg["FINCONN_STRIPE_PUBLISHABLE_KEY"] or env.get("STRIPE_PUBLISHABLE_KEY") or None
    )
    webhook_secrets = _as_tuple(
        cfg["FINCONN_WEBHOOK_SECRET"] or env.get("STRIPE_WEBHOOK_SECRET"),
        "FINCONN_WEBHOOK_SECRET",
    )
    sandbox = cfg["FINCONN_SANDBOX"]
    if sandbox is None:
        sandbox = secret_key is None
    sandbox = bool(sandbox)

    if not sandbox:
        if not secret_key:
            raise ConfigurationError(
                "FINCONN_SANDBOX is off but no Stripe key is set: set FINCONN_STRIPE_SECRET_KEY "
                "(or the STRIPE_SECRET_KEY environment variable), or turn the sandbox on."
            )
        if not secret_key.startswith(("sk_live_", "sk_test_", "rk_live_", "rk_test_")):
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
    bad_secrets = [s for s in webhook_secrets if not s.startswith("whsec_")]
    if bad_secrets:
        raise ConfigurationError("FINCONN_WEBHOOK_SECRET must be whsec_... endpoint secret(s).")

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
    subcategories_raw = cfg["FINCONN_ACCOUNT_SUBCATEGORIES"]
    subcategories = None
    if subcategories_raw is not None:
        subcategories = _as_tuple(subcategories_raw, "FINCONN_ACCOUNT_SUBCATEGORIES")
        _check_choices(subcategories, SUBCATEGORIES, "FINCONN_ACCOUNT_SUBCATEGORIES")
    country = cfg["FINCONN_COUNTRY"]
    if not isinstance(country, str) or len(country) != 2:
        raise ConfigurationError("Set FINCONN_COUNTRY to a two-letter country code such as 'US'.")
    prefix = cfg["FINCONN_URL_PREFIX"] or ""
    if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
        raise ConfigurationError(
            "FINCONN_URL_PREFIX must start with '/' and not end with one, such as '/finconn'."
        )
    task_queue = cfg["FINCONN_TASK_QUEUE"]
    if task_queue not in TASK_QUEUES:
        raise ConfigurationError(
            f"FINCONN_TASK_QUEUE must be one of {', '.join(TASK_QUEUES)}, not {task_queue!r}."
        )
    ints = {}
    for key in (
        "FINCONN_MAX_CONTENT_LENGTH",
        "FINCONN_WEBHOOK_MAX_CONTENT_LENGTH",
        "FINCONN_WEBHOOK_TOLERANCE",
    ):
        value = cfg[key]
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigurationError(f"Set {key} to a positive whole number.")
        ints[key] = value
    origins = tuple(
        o.rstrip("/") for o in _as_tuple(cfg["FINCONN_ALLOWED_ORIGINS"], "FINCONN_ALLOWED_ORIGINS")
    )
    return Settings(
        secret_key=secret_key,
        publishable_key=publishable_key,
        webhook_secrets=webhook_secrets,
        sandbox=sandbox,
        sandbox_database=cfg["FINCONN_SANDBOX_DATABASE"],
        sandbox_refresh_delay=float(cfg["FINCONN_SANDBOX_REFRESH_DELAY"]),
        permissions=permissions,
        prefetch=prefetch,
        country=country.upper(),
        account_subcategories=subcategories,
        subscribe_transactions=bool(cfg["FINCONN_SUBSCRIBE_TRANSACTIONS"]),
        url_prefix=prefix,
        task_queue=task_queue,
        max_content_length=ints["FINCONN_MAX_CONTENT_LENGTH"],
        webhook_max_content_length=ints["FINCONN_WEBHOOK_MAX_CONTENT_LENGTH"],
        webhook_tolerance=ints["FINCONN_WEBHOOK_TOLERANCE"],
        allowed_origins=origins,
        merchant_name=cfg["FINCONN_MERCHANT_NAME"] or app.import_name,
    )


def _make_sandbox(app: Flask, settings: Settings) -> Sandbox:
    from .sandbox import Sandbox

    database = settings.sandbox_database
    if database is None:
        os.makedirs(app.instance_path, exist_ok=True)
        database = os.path.join(app.instance_path, "finconn-sandbox.sqlite3")
    sandbox = Sandbox(database=database, refresh_delay=settings.sandbox_refresh_delay)
    logger.warning(
        "Flask-FinConn is in SANDBOX mode for %s: bank data is simulated and no real "
        "Stripe account is used (state in %s).",
        app.import_name,
        database,
    )
    return sandbox


def _connect_sandbox(app: Flask, state: FinConnState, sandbox: Sandbox) -> None:
    """Deliver the sandbox's signed webhooks straight to this app's webhook route."""
    if "finconn.webhook" in app.view_functions:
        endpoint = sandbox.add_webhook_endpoint(
            wsgi_app=app, path=f"{state.settings.url_prefix}/webhook"
        )
        secrets = state.settings.webhook_secrets
        if endpoint["secret"] not in secrets:
            # The sandbox signs with its endpoint's own secret; configured ones still verify.
            state.settings = replace(state.settings, webhook_secrets=(*secrets, endpoint["secret"]))
        if not app.testing:
            # Outside tests, refreshes finish and events arrive on their own, as with Stripe;
            # tests drive the sandbox explicitly (finish_refreshes, deliver_events).
            sandbox.start_background()
    browser = optional_module("flask_finconn.sandbox.browser")
    if browser is None:
        return
    app.register_blueprint(
        browser.make_blueprint(sandbox), url_prefix=f"{state.settings.url_prefix}/sandbox"
    )


def optional_module(name: str) -> ModuleType | None:
    """Import a part of the package that may not be installed yet (None when absent).

    Only the module's own absence is tolerated; an import error inside it still raises.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            return None
        raise


def _init_optional(app: Flask, state: FinConnState) -> None:
    """Call the widget's asset hook when that part of the package is present."""
    assets = optional_module("flask_finconn.assets")
    if assets is not None:
        assets.init_assets(app, state)


def _honour_csrf_exemptions(app: Flask) -> None:
    """Exempt only the Stripe-signed webhook from Flask-WTF's CSRFProtect, if the host uses it.

    Every other route keeps the host's CSRF protection. CSRFProtect may be set up before or
    after us, so the exemption is applied now and again on the first request.
    """
    done = False

    def exempt() -> None:
        nonlocal done
        csrf = app.extensions.get("csrf")
        if csrf is None or done:
            return
        for endpoint, view in app.view_functions.items():
            if endpoint.startswith("finconn.") and getattr(view, "finconn_webhook", False):
                csrf.exempt(view)
        done = True

    exempt()
    if not done and importlib.util.find_spec("flask_wtf") is not None:
        app.before_request(exempt)
