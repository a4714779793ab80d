"""The ``FinConn`` extension object: the holder loader and registration on an app.

``FinConn(app=None, *, db)`` follows the Flask-SQLAlchemy pattern: nothing about an app is
stored on the extension object. ``init_app`` validates every ``FINCONN_*`` key once into a
:class:`~.state.Settings`, builds the app's Stripe client (real, or the in-process
sandbox) and its task queue, and keeps them in a :class:`~.state.FinConnState` at
``app.extensions["finconn"]``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from flask import Flask

from . import assets, cli, models, tasks, views
from .errors import ConfigurationError
from .models import Payment
from .ratelimit import Bucket, LocalBucket, RedisBucket
from .sandbox import Sandbox, browser
from .services import debits, owners, payment_methods, payment_review, payments, privacy
from .services.privacy import Erased
from .state import FinConnState, Holder, Settings, get_state, read_settings
from .stripe_api import StripeAPI

if TYPE_CHECKING:
    from flask_sqlalchemy import SQLAlchemy

logger = logging.getLogger("flask_finconn")


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

    @property
    def holder_callback(self) -> Callable[[], Holder | None] | None:
        """The function registered with :meth:`holder_loader` (None until one is)."""
        return self._holder_loader

    def erase_holder(
        self, holder_id: str, *, scrub_customer: bool = False, delete_customer: bool = True
    ) -> Erased:
        """Erase everything stored about a holder, in an app context of an app using this.

        Disconnects their accounts at Stripe, detaches their saved bank payment methods,
        deletes their Stripe Customer if this extension created it (``delete_customer=False``
        keeps it, for a host that bills it otherwise), deletes their accounts, balances,
        owners, transactions, link sessions, payment methods, debits and customer mapping,
        and blanks the payloads of events about them (ids and statuses stay, so redeliveries
        are still recognised). ``scrub_customer`` blanks the email and name of a Customer
        that is kept. Raises a ``FinConnError`` before deleting anything when Stripe cannot
        be reached, and ``Conflict`` (``payments_in_flight``) before doing anything when a
        debit of the holder may still move money (wait for it to settle, or cancel it).
        """
        return privacy.erase_holder(
            get_state(),
            holder_id,
            scrub_customer=scrub_customer,
            delete_customer=delete_customer,
        )

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
        debits.watch_sessions(self.db.session)

        sandbox = None
        if settings.sandbox:
            sandbox = _make_sandbox(app, settings)
            bucket = _make_bucket(settings, sandbox.api_key)
            client = StripeAPI.for_sandbox(sandbox, livemode=False, bucket=bucket)
        else:
            assert settings.secret_key is not None
            bucket = _make_bucket(settings, settings.secret_key)
            client = StripeAPI.for_key(settings.secret_key, bucket=bucket)
        queue = tasks.make_queue(settings.task_queue)
        state = FinConnState(self, self.db, settings, client, sandbox, queue)
        app.extensions["finconn"] = state

        app.register_blueprint(views.bp, url_prefix=settings.url_prefix or None)
        app.cli.add_command(cli.finconn_cli)
        _honour_csrf_exemptions(app)
        if sandbox is not None:
            _connect_sandbox(app, state, sandbox)
        assets.init_assets(app, state)

    def debit(
        self,
        holder_id: str,
        payment_method_id: str,
        amount: int,
        *,
        currency: str = "usd",
        description: str,
        idempotency_key: str,
        check_balance: bool = False,
        metadata: dict[str, str] | None = None,
    ) -> Payment:
        """Debit a holder's saved bank account once per ``idempotency_key`` (current app).

        ``amount`` is in cents. The same key (per holder) always returns the same
        :class:`~.models.Payment`, whether the first call finished, failed on the wire or is
        still running in another worker: Stripe gets a key derived from it, so nothing is
        charged twice. Reusing a key for a different debit is a ``Conflict``.
        ``check_balance`` refreshes a balance older than an hour and raises
        :class:`~.errors.InsufficientBalance` when the amount is above what is available.
        The result is usually ``processing``; ``payment_succeeded`` (or ``payment_failed``)
        follows by webhook days later on real banks. A debit refused at once is returned
        ``failed``.
        """
        request = debits.DebitRequest(
            holder_id=holder_id,
            payment_method_id=payment_method_id,
            amount=amount,
            currency=currency,
            description=description,
            idempotency_key=idempotency_key,
            metadata=dict(metadata or {}),
        )
        return debits.debit(get_state(), request, check_balance=check_balance)

    def cancel_payment(self, holder_id: str, payment_id: str) -> Payment:
        """Cancel a debit that is still ``processing`` (a ``Conflict`` once it settled).

        A debit whose request to Stripe has not been answered yet is refused with
        ``Conflict`` (``payment_not_submitted``): cancelling never sends a debit.
        """
        return payments.cancel(get_state(), holder_id, payment_id)

    def attach_payment_intent(self, payment_id: str, payment_intent_id: str) -> Payment:
        """Settle a debit that needs review with the PaymentIntent an operator found for it.

        The intent is read from Stripe and must be the one the debit created (metadata
        ``finconn_payment_id``, Customer, bank account, amount, currency), else ``Conflict``
        (``payment_intent_mismatch``); its status is then applied as a webhook's would be.
        A debit that does not need review is a ``Conflict`` (``payment_not_in_review``).
        Nothing is ever charged; ``flask finconn payments attach`` calls this.
        """
        return payment_review.attach_payment_intent(get_state(), payment_id, payment_intent_id)

    def mark_payment_failed(self, payment_id: str) -> Payment:
        """Settle a debit that needs review as ``failed``: Stripe has no PaymentIntent for it.

        The holder's PaymentIntents are listed from Stripe first; one created by this debit
        is a ``Conflict`` (``payment_intent_exists``) naming it, to attach instead. A debit
        that does not need review is a ``Conflict`` (``payment_not_in_review``).
        ``flask finconn payments mark-failed`` calls this.
        """
        return payment_review.mark_payment_failed(get_state(), payment_id)

    @property
    def mandate_text(self) -> str:
        """The debit authorization to show before a bank account is saved (current app's
        ``FINCONN_MERCHANT_NAME``); ``POST /setup-intents`` returns the same text."""
        return payment_methods.mandate_text(get_state().settings.merchant_name)

    def match_owners(self, holder: Holder, account_id: str) -> str:
        """Compare an account's owners with the holder: ``match``, ``partial``,
        ``no_match`` or ``unavailable`` (see :func:`.services.owners.match_owners`)."""
        return owners.match_owners(get_state(), holder, account_id)


def _make_bucket(settings: Settings, api_key: str) -> Bucket | None:
    """The app's Stripe request budget: in Redis when configured, else in this process.

    The Redis key is derived from the API key, so every app and worker that uses one
    Stripe account shares one budget. One token of burst: requests are spaced evenly, and
    no second ever sees more than the configured rate plus one.
    """
    rate = settings.stripe_rate_limit
    if not rate:
        return None
    if settings.redis_url is None:
        return LocalBucket(rate, burst=1)
    try:
        import redis
    except ImportError:
        raise ConfigurationError(
            "FINCONN_REDIS_URL needs the redis package; pip install 'flask-finconn[celery]'."
        ) from None
    digest = hashlib.sha256(api_key.encode()).hexdigest()[:16]
    return RedisBucket(
        redis.Redis.from_url(settings.redis_url),
        f"finconn:stripe-rate:{digest}",
        rate,
        burst=1,
    )


def _make_sandbox(app: Flask, settings: Settings) -> Sandbox:
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
    app.register_blueprint(
        browser.make_blueprint(sandbox), url_prefix=f"{state.settings.url_prefix}/sandbox"
    )


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
