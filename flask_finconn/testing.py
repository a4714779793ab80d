"""Helpers for tests of host apps: link accounts on the sandbox without a browser.

::

    from flask_finconn import Holder
    from flask_finconn.testing import finish_refreshes, link_accounts

    def test_dashboard_shows_balance(app, client):
        accounts = link_accounts(app, Holder("42", email="ada@example.com"))
        finish_refreshes(app)          # with FINCONN_PREFETCH = ["balances"]: balances arrive
                                       # through the app's webhook
        ...

:func:`create_app` builds a small host app on the sandbox whose holder comes from the
``X-Finconn-Holder`` request header, handy for testing code that sits around the routes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

from blinker import Signal
from flask import Flask, has_app_context, request
from flask import current_app as _current_app

from .extension import FinConn
from .models import Account
from .services import linking
from .state import Holder, get_state

if TYPE_CHECKING:
    from .sandbox import Sandbox

HOLDER_HEADER = "X-Finconn-Holder"

__all__ = [
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
]


def create_app(database_uri: str = "sqlite://", **config: Any) -> Flask:
    """A minimal host app on an in-memory sandbox, with its tables created.

    The holder of a request is read from the ``X-Finconn-Holder`` header (its email is
    ``<id>@example.com``); no header means no holder (401). ``config`` adds or overrides
    ``FINCONN_*`` and other keys.
    """
    from flask_sqlalchemy import SQLAlchemy

    app = Flask("finconn_test_app")
    app.config.update(
        TESTING=True,
        SQLALCHEMY_DATABASE_URI=database_uri,
        FINCONN_SANDBOX=True,
        FINCONN_SANDBOX_DATABASE=":memory:",
    )
    app.config.update(config)
    db = SQLAlchemy()
    db.init_app(app)
    finconn = FinConn(db=db)

    @finconn.holder_loader
    def holder_from_header() -> Holder | None:
        holder_id = request.headers.get(HOLDER_HEADER)
        return Holder(holder_id, email=f"{holder_id}@example.com") if holder_id else None

    finconn.init_app(app)
    with app.app_context():
        db.create_all()
    return app


def sandbox_of(app: Flask) -> Sandbox:
    """The app's sandbox (an error when the app talks to real Stripe)."""
    sandbox = get_state(app).sandbox
    if sandbox is None:
        raise RuntimeError("This app uses real Stripe keys; the testing helpers need the sandbox.")
    return sandbox


def _context(app: Flask) -> AbstractContextManager[Any]:
    if has_app_context() and _current_app._get_current_object() is app:  # type: ignore[attr-defined]
        return nullcontext()
    return app.app_context()


def link_accounts(
    app: Flask,
    holder: Holder,
    *,
    institution: str = "bank_nonoauth",
    accounts: list[str] | None = None,
    permissions: list[str] | None = None,
) -> list[Account]:
    """Link accounts for a holder as if they went through the modal; returns the stored rows.

    ``institution`` is a sandbox test institution; ``accounts`` picks some of its accounts
    (by the ids or names the sandbox documents; None links every selectable one). Runs the
    same services as ``POST /sessions`` and ``POST /sessions/<id>/complete``, so signals
    fire as in production. Outside an app context of ``app`` the returned rows are detached
    with their columns and latest balance loaded.
    """
    sandbox = sandbox_of(app)
    with _context(app) as ctx:
        state = get_state(app)
        new = linking.create_session(state, holder, permissions=permissions)
        sandbox.complete_session(new.id, institution=institution, accounts=accounts)
        linked = linking.complete_session(state, holder, new.id).accounts
        if ctx is not None:
            _detach(state, linked)
        return linked


def cancel_link(app: Flask, holder: Holder) -> linking.CompletedSession:
    """Open a session and close the modal without linking, as a holder who changed their mind."""
    sandbox = sandbox_of(app)
    with _context(app):
        state = get_state(app)
        new = linking.create_session(state, holder)
        sandbox.cancel_session(new.id)
        return linking.complete_session(state, holder, new.id)


def deliver_webhooks(app: Flask) -> int:
    """Deliver every event the sandbox has for the app now (retries included); returns how many.

    Delivery calls the app's own webhook route in-process, so the events are processed
    exactly as in production.
    """
    return int(sandbox_of(app).deliver_events(retry_now=True))


def finish_refreshes(
    app: Flask, account: Account | None = None, *, status: str = "succeeded"
) -> int:
    """Finish pending refreshes (of one account, or all) and deliver the resulting events.

    ``status`` is ``succeeded`` or ``failed``. Returns how many events were delivered.
    """
    sandbox_of(app).finish_refreshes(
        account=account.stripe_id if account is not None else None, status=status
    )
    return deliver_webhooks(app)


def deactivate(app: Flask, account: Account) -> int:
    """Make an account inactive at the bank (the holder must relink) and deliver the event."""
    sandbox_of(app).deactivate(account.stripe_id)
    return deliver_webhooks(app)


def reactivate(app: Flask, account: Account) -> int:
    """Make an inactive account active again and deliver the event."""
    sandbox_of(app).reactivate(account.stripe_id)
    return deliver_webhooks(app)


def _detach(state: Any, accounts: list[Account]) -> None:
    session = state.db.session
    for account in accounts:
        session.refresh(account)
        _ = account.latest_balance
        session.expunge(account)


@contextmanager
def captured_signals(signal: Signal, app: Flask) -> Iterator[list[dict[str, Any]]]:
    """Collect the keyword arguments of each ``signal`` sent by ``app`` inside the block."""
    received: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        received.append(kwargs)

    signal.connect(receiver, sender=app, weak=False)
    try:
        yield received
    finally:
        signal.disconnect(receiver, sender=app)
