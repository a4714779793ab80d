"""The demo login: sign in with an email address, no password, in a server-side session.

The session cookie carries a random token; the database keeps only its SHA-256, the user
and a CSRF token that every form of the app must echo back (:func:`check_csrf`). Signing in
issues a new token, so a token planted before sign-in is worth nothing afterwards.

This is the host's own login, which Flask-FinConn knows nothing about: the app tells the
extension who is linking through ``@finconn.holder_loader`` (see ``__init__.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from .models import LoginSession, User, db

COOKIE = "example_session"
LIFETIME = timedelta(days=14)
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s.]{2,}$")

bp = Blueprint("auth", __name__)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes; everything this app stores is UTC.
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def login_session() -> LoginSession | None:
    """The request's server-side session, from its cookie (None when absent or expired)."""
    if "login_session" not in g:
        found = None
        token = request.cookies.get(COOKIE)
        if token:
            found = db.session.get(LoginSession, _digest(token))
            if found is not None and _aware(found.created_at) + LIFETIME < datetime.now(UTC):
                db.session.delete(found)
                db.session.commit()
                found = None
        g.login_session = found
    return g.login_session  # type: ignore[no-any-return]


def current_user() -> User | None:
    """The signed-in user of this request, or None."""
    if "user" not in g:
        session = login_session()
        g.user = db.session.get(User, session.user_id) if session and session.user_id else None
    return g.user  # type: ignore[no-any-return]


def _start_session(user: User | None) -> LoginSession:
    """Replace the request's session with a new one; the cookie is set after the request."""
    old = login_session()
    if old is not None:
        db.session.delete(old)
    if user is not None:
        # Forms opened and never sent leave anonymous sessions behind: sweep the stale ones.
        db.session.execute(
            sa.delete(LoginSession).where(LoginSession.created_at < datetime.now(UTC) - LIFETIME)
        )
    token = secrets.token_urlsafe(32)
    new = LoginSession(
        id=_digest(token), user_id=user.id if user else None, csrf_token=secrets.token_hex(32)
    )
    db.session.add(new)
    db.session.commit()
    g.login_session, g.user, g.new_token = new, user, token
    return new


def csrf_token() -> str:
    """The token the app's forms carry (starting an anonymous session when there is none)."""
    session = login_session() or _start_session(None)
    return session.csrf_token


def check_csrf() -> None:
    """Refuse a form post whose ``csrf_token`` field does not match the session's (400)."""
    session = login_session()
    sent = request.form.get("csrf_token", "")
    if session is None or not hmac.compare_digest(sent, session.csrf_token):
        abort(400, "The form expired or came from another site. Reload the page and try again.")


def set_cookie(response: Response) -> Response:
    """After a request that started a session, hand its token to the browser."""
    token = g.get("new_token")
    if token is not None:
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(LIFETIME.total_seconds()),
            httponly=True,
            samesite="Lax",
            secure=request.is_secure,
        )
    elif g.get("signed_out"):
        response.delete_cookie(COOKIE, httponly=True, samesite="Lax")
    return response


def _safe_next(target: str | None) -> str:
    """Only same-site paths are followed after sign-in (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and "\\" not in target:
            return target
    return url_for("pages.dashboard")


@bp.route("/signin", methods=["GET", "POST"])
def sign_in() -> ResponseReturnValue:
    """Show the sign-in form; sign in (creating the user on first visit) with an email."""
    if request.method == "GET":
        if current_user() is not None:
            return redirect(_safe_next(request.args.get("next")))
        signed_out = request.args.get("signed_out") == "1"
        form = {"email": "", "next": request.args.get("next", ""), "signed_out": signed_out}
        return render_template("signin.html", **form)
    check_csrf()
    email = request.form.get("email", "").strip().lower()
    if len(email) > 254 or not EMAIL.match(email):
        error = "Enter an email address, such as ada@example.com."
        form = {"email": email, "next": request.form.get("next", ""), "error": error}
        return render_template("signin.html", **form), 422
    user = db.session.scalars(sa.select(User).where(User.email == email)).first()
    if user is None:
        user = User(email=email)
        db.session.add(user)
        db.session.flush()
        current_app.logger.info("New demo user %s", email)
    _start_session(user)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/signout")
def sign_out() -> ResponseReturnValue:
    """End the session and forget its cookie."""
    check_csrf()
    session = login_session()
    if session is not None:
        db.session.delete(session)
        db.session.commit()
    g.login_session, g.user, g.signed_out = None, None, True
    return redirect(url_for("auth.sign_in", signed_out=1))
