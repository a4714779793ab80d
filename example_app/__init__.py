"""Pocketbook, the example app: see every bank account in one place, built on Flask-FinConn.

Run it with ``./scripts/example`` (or ``flask --app example_app run``). It uses the
extension exactly as the README tells a host to: ``FinConn(db=db)``, a holder loader over
the app's own (demo) login, the ``finconn`` Jinja helper for the widget, and the models
for its pages.

Configuration comes from the environment:

- ``DATABASE_URL``: a PostgreSQL URL (``postgres://`` and ``postgresql://`` are read with
  the psycopg driver). Default: SQLite in the instance folder.
- ``STRIPE_SECRET_KEY``, ``STRIPE_PUBLISHABLE_KEY``, ``STRIPE_WEBHOOK_SECRET``: real Stripe
  (test or live). Without them the app sets ``FINCONN_SANDBOX = True`` and runs on the
  built-in offline sandbox.
- ``SECRET_KEY`` (or any ``FLASK_*`` key, such as ``FLASK_SECRET_KEY``). Default: a random
  key kept in the instance folder.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from typing import Any

from flask import Flask, g, render_template, request
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response

from flask_finconn import FinConn, Holder, get_state

from . import auth, formatting, pages
from .models import db

finconn = FinConn(db=db)


@finconn.holder_loader
def current_holder() -> Holder | None:
    """The signed-in demo user is the holder whose accounts are linked."""
    user = auth.current_user()
    return Holder(id=str(user.id), email=user.email, name=user.name) if user else None


def database_url(url: str | None, instance_path: str) -> str:
    """``DATABASE_URL`` as SQLAlchemy needs it; SQLite in the instance folder when unset."""
    if not url:
        return "sqlite:///" + os.path.join(instance_path, "pocketbook.sqlite3")
    for scheme in ("postgres://", "postgresql://"):
        if url.startswith(scheme):
            return "postgresql+psycopg://" + url[len(scheme) :]
    return url


def _secret_key(instance_path: str) -> str:
    """A key kept in the instance folder, so sign-ins survive restarts without any setup."""
    path = os.path.join(instance_path, "secret_key")
    if not os.path.exists(path):
        # Written aside, then linked into place: of several workers starting at once, the
        # first link wins and every worker reads that same, complete key.
        draft = f"{path}.{os.getpid()}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_hex(32))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(draft)
    with open(path) as file:
        return file.read().strip()


def create_app(config: Mapping[str, Any] | None = None, instance_path: str | None = None) -> Flask:
    """Build the app; ``config`` overrides any key (tests pass their databases here).

    ``instance_path`` moves the instance folder (default: ``instance/`` beside the package),
    where the SQLite database, the sandbox's state, the secret key and the built widget go.
    """
    app = Flask(__name__, instance_path=instance_path)
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url(os.environ.get("DATABASE_URL"), app.instance_path),
        SECRET_KEY=os.environ.get("SECRET_KEY"),
        FINCONN_MERCHANT_NAME="Pocketbook",
        FINCONN_PERMISSIONS=["balances", "ownership", "transactions"],
        # Balances, owners and transactions arrive a moment after linking, with no click.
        FINCONN_PREFETCH=["balances", "ownership", "transactions"],
        POCKETBOOK_PAGE_SIZE=25,
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    # A demo: without a Stripe key it runs on the sandbox, which the extension starts
    # outside debug and testing mode only when asked explicitly.
    has_key = app.config.get("FINCONN_STRIPE_SECRET_KEY") or os.environ.get("STRIPE_SECRET_KEY")
    if not has_key and app.config.get("FINCONN_SANDBOX") is None:
        app.config["FINCONN_SANDBOX"] = True
    if not app.config["SECRET_KEY"]:
        app.config["SECRET_KEY"] = _secret_key(app.instance_path)

    db.init_app(app)
    finconn.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    formatting.init_app(app)
    app.after_request(auth.set_cookie)
    app.after_request(_security_headers)
    app.register_error_handler(HTTPException, _error_page)
    with app.app_context():
        db.create_all()
    return app


def csp_nonce() -> str:
    """A fresh nonce per response for the page's scripts and styles."""
    if "csp_nonce" not in g:
        g.csp_nonce = secrets.token_urlsafe(16)
    return g.csp_nonce  # type: ignore[no-any-return]


def _security_headers(response: Response) -> Response:
    """A strict CSP (scripts only with this response's nonce) and friends on every page."""
    if response.mimetype == "text/html" and "Content-Security-Policy" not in response.headers:
        nonce = csp_nonce()
        # With real Stripe, Stripe.js and its linking window come from Stripe's own hosts
        # (the list in Stripe's CSP guide); the sandbox serves everything from this app.
        live = get_state().sandbox is None
        stripe_js = " https://js.stripe.com https://*.js.stripe.com" if live else ""
        frames = f"{stripe_js.strip()} https://hooks.stripe.com" if live else "'none'"
        connect = " https://api.stripe.com" if live else ""
        images = " https://*.stripe.com" if live else ""
        response.headers["Content-Security-Policy"] = (
            f"default-src 'self'; script-src 'nonce-{nonce}'{stripe_js}; "
            f"style-src 'self' 'nonce-{nonce}'; img-src 'self' data:{images}; "
            f"connect-src 'self'{connect}; frame-src {frames}; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


def _error_page(error: HTTPException) -> Any:
    """HTML error pages for the app's own routes; the extension's stay JSON."""
    if request.blueprint in ("finconn", "finconn_sandbox", "finconn_assets"):
        return error
    return render_template("error.html", error=error), error.code or 500
