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
from flask.blueprints import BlueprintSetupState
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import MethodNotAllowed

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
from .services import payment_methods as payment_methods_service
from .services import payments as payments_service
from .services import refresh as refresh_service
from .services import transactions as transactions_service
from .state import FinConnState, get_state
from .webhooks import verify as verify_webhook

bp = Blueprint("finconn", __name__)
logger = logging.getLogger("flask_finconn")
register_handlers(bp)

STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Methods answered with the blueprint's JSON 405 where a route does not take them; any
# other method is the host's (routing errors never reach a blueprint's handlers).
ANSWERED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "TRACE")
WRONG_METHOD_ENDPOINT = "finconn.wrong_method"
F = TypeVar("F", bound=Callable[..., Any])


def webhook_view(view: F) -> F:
    """Mark a view as Stripe's webhook: no holder, no browser checks, the webhook size limit."""
    view.finconn_webhook = True  # type: ignore[attr-defined]
    return view


@bp.before_request
def guard() -> None:
    """Refuse oversized bodies, and cross-site or non-JSON state-changing requests."""
    if request.endpoint == WRONG_METHOD_ENDPOINT:
        wrong_method()
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
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
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
    body = request.get_data(cache=False)
    event = verify_webhook(
        body,
        request.headers.get("Stripe-Signature"),
        state.settings.webhook_secrets,
        tolerance=state.settings.webhook_tolerance,
    )
    events_service.receive(state, event, body)
    # The same answer every time: built here without serializing a dict per delivery.
    return current_app.response_class(RECEIVED, mimetype="application/json")


RECEIVED = b'{"received":true}\n'


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


# payments


@bp.post("/setup-intents")
def create_setup_intent() -> ResponseReturnValue:
    """A SetupIntent for the holder, with the mandate text to show before confirming."""
    state = _state()
    holder = state.require_holder()
    schemas.load(schemas.SetupIntentCreateSchema(), json_body())
    new = payment_methods_service.create_setup_intent(state, holder)
    body = {
        "id": new.id,
        "client_secret": new.client_secret,
        "publishable_key": state.publishable_key,
        "stripe_js_url": state.stripe_js_url,
        "sandbox": state.sandbox is not None,
        "mandate_text": new.mandate_text,
        "billing_details": new.billing_details,
    }
    return jsonify(schemas.SetupIntentSchema().dump(body)), 201


@bp.get("/mandate")
def get_mandate() -> ResponseReturnValue:
    """The mandate text to show before "Use for payments" saves a linked account."""
    state = _state()
    state.require_holder()
    text = payment_methods_service.mandate_text(state.settings.merchant_name)
    return jsonify(schemas.MandateTextSchema().dump({"mandate_text": text}))


@bp.post("/setup-intents/<intent_id>/complete")
def complete_setup_intent(intent_id: str) -> ResponseReturnValue:
    """Store the bank account a SetupIntent saved, re-read from Stripe."""
    state = _state()
    holder = state.require_holder()
    schemas.load(schemas.SetupIntentCompleteSchema(), json_body())
    completed = payment_methods_service.complete_setup_intent(state, holder, intent_id)
    return jsonify(schemas.CompletedSetupSchema().dump(completed))


@bp.post("/accounts/<account_id>/payment-method")
def save_account_payment_method(account_id: str) -> ResponseReturnValue:
    """Save a linked account for debits with the mandate the holder accepted just now."""
    state = _state()
    holder = state.require_holder()
    schemas.load(schemas.AccountPaymentMethodSchema(), json_body())
    method = payment_methods_service.save_account(
        state,
        holder,
        account_id,
        ip_address=request.remote_addr or "0.0.0.0",
        user_agent=request.user_agent.string or "unknown",
    )
    return jsonify(schemas.PaymentMethodSchema().dump(method)), 201


@bp.get("/payment-methods")
def list_payment_methods() -> ResponseReturnValue:
    """The holder's saved bank accounts for debits."""
    state = _state()
    holder = state.require_holder()
    found = payment_methods_service.list_payment_methods(state, holder.id)
    return jsonify(schemas.PaymentMethodListSchema().dump({"data": found}))


@bp.get("/payment-methods/<method_id>")
def get_payment_method(method_id: str) -> ResponseReturnValue:
    """One of the holder's saved bank accounts."""
    state = _state()
    holder = state.require_holder()
    method = payment_methods_service.get_payment_method(state, holder.id, method_id)
    return jsonify(schemas.PaymentMethodSchema().dump(method))


@bp.post("/payment-methods/<method_id>/verify")
def verify_payment_method(method_id: str) -> ResponseReturnValue:
    """Check the microdeposit amounts or descriptor code the holder read on their statement."""
    state = _state()
    holder = state.require_holder()
    values = schemas.load(schemas.VerifySchema(), json_body())
    method = payment_methods_service.verify(state, holder.id, method_id, values)
    return jsonify(schemas.PaymentMethodSchema().dump(method))


@bp.post("/payment-methods/<method_id>/detach")
def detach_payment_method(method_id: str) -> ResponseReturnValue:
    """Remove a saved bank account; its mandate is revoked."""
    state = _state()
    holder = state.require_holder()
    schemas.load(schemas.DetachSchema(), json_body())
    method = payment_methods_service.detach(state, holder.id, method_id)
    return jsonify(schemas.PaymentMethodSchema().dump(method))


@bp.get("/payments")
def list_payments() -> ResponseReturnValue:
    """The holder's debits, newest first."""
    state = _state()
    holder = state.require_holder()
    found = payments_service.list_payments(state, holder.id)
    return jsonify(schemas.PaymentListSchema().dump({"data": found}))


@bp.get("/payments/<payment_id>")
def get_payment(payment_id: str) -> ResponseReturnValue:
    """One of the holder's debits."""
    state = _state()
    holder = state.require_holder()
    payment = payments_service.get_payment(state, holder.id, payment_id)
    return jsonify(schemas.PaymentSchema().dump(payment))


def wrong_method(**_: Any) -> ResponseReturnValue:
    """Any route of ours asked with a method it does not take: a JSON 405 with ``Allow``.

    Flask answers a wrong method while routing, before a blueprint is chosen, with the
    host's HTML page; :func:`_add_wrong_method_rules` gives every rule a twin for the other
    methods that leads here instead, so the blueprint's own handlers render the answer.
    """
    rule = request.url_rule
    path = rule.rule if rule is not None else ""
    allowed = sorted(
        {
            method
            for each in current_app.url_map.iter_rules()
            if each.rule == path and each.endpoint != WRONG_METHOD_ENDPOINT
            for method in each.methods or ()
        }
    )
    raise MethodNotAllowed(
        valid_methods=allowed,
        description=f"This URL does not take {request.method}; use {', '.join(allowed)}.",
    )


@bp.record
def _add_wrong_method_rules(setup: BlueprintSetupState) -> None:
    # Runs after the routes above were registered on the app (deferred in order).
    own = f"{setup.name_prefix}.{setup.name}".lstrip(".") + "."
    rules = [r for r in setup.app.url_map.iter_rules() if r.endpoint.startswith(own)]
    taken: dict[str, set[str]] = {}
    for rule in rules:
        taken.setdefault(rule.rule, set()).update(rule.methods or ())
    for path, methods in taken.items():
        others = [m for m in ANSWERED_METHODS if m not in methods]
        if others:
            setup.app.add_url_rule(
                path,
                endpoint=own + "wrong_method",
                view_func=wrong_method,
                methods=others,
                provide_automatic_options=False,
            )
