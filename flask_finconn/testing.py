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

:func:`throwaway_database` gives each test (or benchmark) a fresh, empty database and drops
it afterwards; :func:`count_statements` collects the SQL an app sends inside a block::

    with throwaway_database("postgresql://localhost/postgres") as url:
        app = create_app(url)
        with count_statements(app) as statements:
            app.test_client().get("/finconn/accounts", headers={HOLDER_HEADER: "42"})
        assert len(statements) == 1  # the whole list is one query
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from blinker import Signal
from flask import Flask, has_app_context, request
from flask import current_app as _current_app

from .extension import FinConn
from .models import Account, Payment, PaymentMethod
from .services import linking, payment_methods
from .state import HOLDER_ID_MAX, Holder, get_state

if TYPE_CHECKING:
    from .sandbox import Sandbox

HOLDER_HEADER = "X-Finconn-Holder"

__all__ = [
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
]

TEST_ROUTING_NUMBER = "110000000"
TEST_USER_AGENT = "flask_finconn.testing"


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
        if not holder_id or len(holder_id) > HOLDER_ID_MAX:
            return None  # no holder, or an id no real user could have: 401
        return Holder(holder_id, email=f"{holder_id}@example.com")

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


def save_account_for_payments(app: Flask, holder: Holder, account: Account) -> PaymentMethod:
    """Save a linked account for debits as ``POST /accounts/<id>/payment-method`` does,
    with a mandate accepted from 127.0.0.1. The account needs the ``payment_method``
    permission (``link_accounts(..., permissions=[..., "payment_method"])``)."""
    with _context(app) as ctx:
        state = get_state(app)
        method = payment_methods.save_account(
            state, holder, account.id, ip_address="127.0.0.1", user_agent=TEST_USER_AGENT
        )
        if ctx is not None:
            state.db.session.refresh(method)
            state.db.session.expunge(method)
        return method


def save_bank_account(
    app: Flask,
    holder: Holder,
    account_number: str = "000123456789",
    *,
    routing_number: str = TEST_ROUTING_NUMBER,
    verify: bool = True,
) -> PaymentMethod:
    """Save a bank account typed by hand, as the widget's payments flow does, and (unless
    ``verify`` is False) verify its microdeposits. The sandbox's test account numbers
    decide how its debits settle: ``000222222227`` insufficient funds, ``000111111113``
    account closed, ``000555555559`` succeeds then is disputed, and so on."""
    sandbox = sandbox_of(app)
    with _context(app) as ctx:
        state = get_state(app)
        new = payment_methods.create_setup_intent(state, holder)
        billing = {"name": holder.name or holder.id}
        if holder.email:  # Stripe takes an email or none, never a null one
            billing["email"] = holder.email
        sandbox.payments.collect(
            new.client_secret,
            {
                "type": "us_bank_account",
                "us_bank_account": {
                    "account_number": account_number,
                    "routing_number": routing_number,
                    "account_holder_type": "individual",
                },
                "billing_details": billing,
            },
        )
        sandbox.payments.confirm_setup_intent(
            new.id,
            {
                "client_secret": new.client_secret,
                "mandate_data": {
                    "customer_acceptance": {
                        "type": "online",
                        "online": {"ip_address": "127.0.0.1", "user_agent": TEST_USER_AGENT},
                    }
                },
            },
        )
        completed = payment_methods.complete_setup_intent(state, holder, new.id)
        method = completed.payment_method
        if method is None:
            raise RuntimeError(f"The sandbox did not save account {account_number}.")
        if verify and method.status == "requires_verification":
            method = payment_methods.verify(
                state, holder.id, method.id, {"descriptor_code": "SM11AA"}
            )
        if ctx is not None:
            state.db.session.refresh(method)
            state.db.session.expunge(method)
        return method


def settle_payments(app: Flask, *, outcome: str | None = None) -> int:
    """Settle every ``processing`` debit of the app now and deliver the events.

    ``outcome`` None settles each as its test account says; ``"succeeded"`` settles all
    successfully; any other value is an ACH return code (``"insufficient_funds"``...).
    Returns how many debits were settled.
    """
    sandbox = sandbox_of(app)
    with _context(app):
        state = get_state(app)
        intent_ids = [
            p.stripe_id
            for p in state.db.session.query(Payment).filter(Payment.status == "processing")
            if p.stripe_id
        ]
        state.db.session.rollback()
    for intent_id in intent_ids:
        if outcome is None:
            sandbox.payments.process(intent_id)
        elif outcome == "succeeded":
            sandbox.payments.settle(intent_id)
        else:
            sandbox.payments.fail(intent_id, outcome)
    deliver_webhooks(app)
    return len(intent_ids)


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


@contextmanager
def throwaway_database(url: str, *, template: str | None = None) -> Iterator[str]:
    """Create a fresh, empty database beside the one ``url`` names; yield its URL; drop it.

    PostgreSQL: ``url`` is any database on the server (``postgres`` will do) whose user may
    create databases; a new database with a random ``finconn_tmp_`` name is created there and
    dropped on exit, even with connections still open; with ``template``, it starts as a copy
    of that database on the same server (PostgreSQL's ``CREATE DATABASE ... TEMPLATE``).
    SQLite: ``url`` names a file; the new database is a file with a random name in the same
    directory, deleted on exit.
    """
    base = sa.make_url(url)
    name = "finconn_tmp_" + uuid.uuid4().hex[:12]
    if template is not None and (base.get_backend_name() != "postgresql" or '"' in template):
        raise ValueError(
            "throwaway_database's template is the name of a PostgreSQL database on the same "
            f"server; {template!r} cannot be used with {base.get_backend_name()}."
        )
    if base.get_backend_name() == "sqlite":
        if not base.database or base.database == ":memory:":
            raise ValueError(
                "throwaway_database needs a SQLite file URL (sqlite:///path/app.sqlite3) to "
                "know where to put the new file; an in-memory database is fresh already."
            )
        path = Path(base.database).with_name(f"{name}.sqlite3")
        try:
            yield base.set(database=str(path)).render_as_string(hide_password=False)
        finally:
            for leftover in (path, *(path.with_name(path.name + s) for s in ("-wal", "-shm"))):
                leftover.unlink(missing_ok=True)
        return
    if base.get_backend_name() != "postgresql":
        raise ValueError(
            f"throwaway_database supports PostgreSQL and SQLite, not {base.get_backend_name()}; "
            "create and drop that database in your own fixture."
        )
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            copy = f' TEMPLATE "{template}"' if template else ""
            conn.execute(sa.text(f'CREATE DATABASE "{name}"{copy}'))
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def count_statements(target: Flask | sa.Engine) -> Iterator[list[str]]:
    """Collect each SQL statement sent inside the block, in order (an executemany is one).

    ``target`` is an app (its FinConn database engine is watched) or an engine. The yielded
    list fills as statements run, so a block can look at it, or clear it, part way.
    """
    if isinstance(target, Flask):
        with _context(target):
            engine = get_state(target).db.engine
    else:
        engine = target
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)
