"""The ``finconn`` blueprint: thin JSON adapters over the services.

Each view parses its input with a schema, calls one service and dumps the result with a
schema. Every request first passes :func:`guard`: a body-size limit, and for
state-changing requests a JSON content type and a same-origin ``Origin``. Views marked with
:func:`webhook_view` (Stripe-signed, not from a browser) skip the browser checks and get
the webhook size limit instead; the extension exempts them from Flask-WTF's CSRFProtect.
To add a route, write a small view here and its schemas in ``schemas.py``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from . import schemas
from .errors import (
    CrossSiteRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    ValidationError,
    register_handlers,
)
from .services import accounts as accounts_service
from .services import events as events_service
from .services import linking, listing
from .services import owners as owners_service
from .services import refresh as refresh_service
from .services import transactions as transactions_service
from .state import FinConnState, get_state
from .webhooks import verify as verify_webhook

bp = Blueprint("finconn", __name__)
logger = logging.getLogger("flask_finconn")
register_handlers(bp)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
F = TypeVar("F", bound=Callable[..., Any])


def webhook_view(view: F) -> F:
    """Mark a view as Stripe's webhook: no holder, no browser checks, the webhook size limit."""
    view.finconn_webhook = True  # type: ignore[attr-defined]
    return view


@bp.before_request
def guard() -> None:
    """Refuse oversized bodies, and cross-site or non-JSON state-changing requests."""
    settings = get_state().settings
    view = current_app.view_functions.get(request.endpoint or "")
    webhook = getattr(view, "finconn_webhook", False)
    limit = settings.webhook_max_content_length if webhook else settings.max_content_length
    # Also bounds chunked bodies that announce no length: reading past it raises a 413.
    request.max_content_length = limit
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge()
    if webhook or request.method not in STATE_CHANGING:
        return
    _check_origin(settings.allowed_origins)
    if request.mimetype != "application/json":
        raise UnsupportedMediaType()


def _check_origin(allowed: tuple[str, ...]) -> None:
    origin = request.headers.get("Origin")
    if origin is None:
        if request.headers.get("Sec-Fetch-Site") == "cross-site":
            raise CrossSiteRequest()
        return
    own = request.host_url.rstrip("/")
    if origin.rstrip("/") not in (own, *allowed):
        # Behind a TLS-terminating proxy without ProxyFix the app believes it is http://...
        logger.info(
            "Refused a %s from Origin %s: this app is %s; add the origin to "
            "FINCONN_ALLOWED_ORIGINS or apply ProxyFix if a proxy changes the scheme or host.",
            request.method,
            origin,
            own,
        )
        raise CrossSiteRequest()


def json_body() -> Any:
    """The request's JSON body; an empty body is ``{}``, anything unparsable a 400."""
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A body without Content-Length is cut at the limit rather than refused.
        raise PayloadTooLarge()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ValidationError("The request body is not valid JSON.", code="invalid_json") from None


def _state() -> FinConnState:
    return get_state()


@bp.post("/sessions")
def create_session() -> ResponseReturnValue:
    """Open a linking session for the current holder."""
    state = _state()
    holder = state.require_holder()
    params = schemas.load(schemas.SessionCreateSchema(), json_body())
    new = linking.create_session(state, holder, permissions=params.get("permissions"))
    body = {
        "id": new.id,
        "client_secret": new.client_secret,
        "publishable_key": state.publishable_key,
        "stripe_js_url": state.stripe_js_url,
        "sandbox": state.sandbox is not None,
    }
    return jsonify(schemas.SessionSchema().dump(body)), 201


@bp.post("/sessions/<session_id>/complete")
def complete_session(session_id: str) -> ResponseReturnValue:
    """Store what the holder linked in a session, re-read from Stripe."""
    state = _state()
    holder = state.require_holder()
    schemas.load(schemas.SessionCompleteSchema(), json_body())
    completed = linking.complete_session(state, holder, session_id)
    return jsonify(schemas.CompletedSessionSchema().dump(completed))


@bp.get("/accounts")
def list_accounts() -> ResponseReturnValue:
    """The holder's linked accounts, with their latest balances."""
    state = _state()
    holder = state.require_holder()
    rendered = listing.list_account_json(state, holder.id)
    if rendered is None:
        found = accounts_service.list_accounts(state, holder.id)
        return jsonify({"data": schemas.AccountSchema(many=True).dump(found)})
    return current_app.response_class(
        '{"data":[' + ",".join(rendered) + "]}", mimetype="application/json"
    )


@bp.get("/accounts/<account_id>")
def get_account(account_id: str) -> ResponseReturnValue:
    """One of the holder's accounts."""
    state = _state()
    holder = state.require_holder()
    account = accounts_service.get_account(state, holder.id, account_id)
    return jsonify(schemas.AccountSchema().dump(account))


@bp.post("/webhook")
@webhook_view
def webhook() -> ResponseReturnValue:
    """Stripe's signed events: verify the raw bytes, store, then process or queue."""
    state = _state()
    event = verify_webhook(
        request.get_data(cache=False),
        request.headers.get("Stripe-Signature"),
        state.settings.webhook_secrets,
        tolerance=state.settings.webhook_tolerance,
    )
    events_service.receive(state, event)
    return jsonify({"received": True})


@bp.post("/accounts/<account_id>/refresh")
def refresh_account(account_id: str) -> ResponseReturnValue:
    """Start refreshes of an account's data; results arrive by webhook or poll."""
    state = _state()
    holder = state.require_holder()
    params = schemas.load(schemas.RefreshSchema(), json_body())
    account = refresh_service.request_refresh(state, holder, account_id, params["features"])
    return jsonify(schemas.AccountSchema().dump(account)), 202


@bp.post("/accounts/<account_id>/disconnect")
def disconnect_account(account_id: str) -> ResponseReturnValue:
    """Disconnect an account; its stored data stays readable."""
    state = _state()
    holder = state.require_holder()
    schemas.load(schemas.DisconnectSchema(), json_body())
    account = refresh_service.disconnect_account(state, holder, account_id)
    return jsonify(schemas.AccountSchema().dump(account))


@bp.get("/accounts/<account_id>/transactions")
def list_transactions(account_id: str) -> ResponseReturnValue:
    """A page of an account's transactions, newest first."""
    state = _state()
    holder = state.require_holder()
    params = schemas.load(schemas.TransactionQuerySchema(), request.args)
    page = transactions_service.list_transactions(state, holder.id, account_id, **params)
    return jsonify(schemas.TransactionPageSchema().dump(page))


@bp.get("/accounts/<account_id>/owners")
def list_owners(account_id: str) -> ResponseReturnValue:
    """The owners from the account's latest ownership refresh."""
    state = _state()
    holder = state.require_holder()
    found = owners_service.list_owners(state, holder.id, account_id)
    return jsonify(schemas.OwnerListSchema().dump({"data": found}))
