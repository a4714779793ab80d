"""The sandbox's browser half: the Stripe.js stand-in and the JSON routes its modal calls.

:func:`make_blueprint` returns a blueprint (``finconn_sandbox``) that the extension mounts at
``<prefix>/sandbox`` in sandbox mode only:

- ``GET stripe.js``: the stand-in script (``Stripe(pk).collectFinancialConnectionsAccounts``
  and the ``us_bank_account`` methods: ``collectBankAccountFor*``, ``confirmUsBankAccount*``,
  ``verifyMicrodepositsFor*``)
- ``GET static/...``: the modal's stylesheet
- ``GET api/session``, ``GET api/institutions``, ``POST api/login``, ``POST api/authorize``,
  ``POST api/complete``, ``POST api/cancel``: the modal's steps
- ``api/intent...`` and ``microdeposits/<token>``: the payments routes and the hosted
  microdeposit verification page (:mod:`.browser_payments`)

Like Stripe's own modal, the JSON routes are authorised by the session's client secret and
nothing else: no cookie, no holder. Errors use Stripe's body,
``{"error": {"type", "code", "message"}}``, which the stand-in hands back to the page
unchanged for launch failures (an expired or already used session). A body over
:data:`MAX_BODY` (or the extension's ``FINCONN_MAX_CONTENT_LENGTH`` when smaller) is a 413
and a body that is not a JSON object (nested too deep included) a 400, in that shape too.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Response, current_app, jsonify, request, send_from_directory
from flask.sansio.app import App
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from ._params import ApiError
from .browser_payments import add_payment_routes
from .linking import SessionError

if TYPE_CHECKING:
    from .core import Sandbox

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
# The modal's largest body is a login or a list of account ids: a few hundred bytes.
MAX_BODY = 64 * 1024


def _merchant_name() -> str:
    """The name the consent step shows: the extension's setting, else the app's name."""
    state = current_app.extensions.get("finconn")
    settings = getattr(state, "settings", None)
    name = getattr(settings, "merchant_name", None)
    return str(name or current_app.import_name)


def _limit() -> int:
    """The body limit: :data:`MAX_BODY`, or the extension's own limit when smaller."""
    state = current_app.extensions.get("finconn")
    configured = getattr(getattr(state, "settings", None), "max_content_length", None)
    return min(MAX_BODY, configured) if isinstance(configured, int) else MAX_BODY


def _too_large() -> ApiError:
    return ApiError(
        413,
        f"The request body is too large (limit: {request.max_content_length} bytes); the "
        "modal's steps send a few hundred.",
        code="payload_too_large",
    )


def _body() -> dict[str, Any]:
    raw = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A body without Content-Length (chunked) is cut at the limit rather than refused.
        raise _too_large()
    try:
        data = json.loads(raw) if request.is_json and raw.strip() else None
    except (ValueError, RecursionError):
        # RecursionError: JSON nested deeper than the parser goes (about 1,000 levels).
        data = None
    if not isinstance(data, dict):
        raise ApiError(400, "Send a JSON object with the session's client_secret.")
    return data


def _secret(data: dict[str, Any] | None = None) -> str:
    value = (data or {}).get("client_secret") if data is not None else None
    if value is None:
        value = request.args.get("client_secret")
    if not isinstance(value, str) or not value:
        raise ApiError(
            400,
            "Missing required param: client_secret.",
            code="parameter_missing",
            param="client_secret",
        )
    return value


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid {key}: expected a string.", param=key)
    return value


def _login_result(result: dict[str, Any]) -> dict[str, Any]:
    """The sandbox's login answer in the modal's terms: which step comes next."""
    status = result.get("status")
    if status == "ok":
        return {"next": "accounts", "accounts": result.get("accounts", [])}
    if status == "error":
        step = "incorrect" if result.get("retry") else "failed"
        return {"next": step, "code": result.get("code"), "message": result.get("message")}
    return {**result, "next": status}


def _exempt_from_csrf(app: App, bp: Blueprint) -> None:
    """Keep the host's Flask-WTF ``CSRFProtect`` off the modal's routes.

    They are authorised by the client secret in the body, never by cookies, so there is
    nothing for a CSRF token to protect, and the modal has no token to send. CSRFProtect may
    be set up before or after the extension: exempt now, and again before each request
    until it is (our hook then runs before CSRFProtect's).
    """

    done = False

    def exempt() -> None:
        nonlocal done
        csrf = app.extensions.get("csrf")
        if csrf is not None and not done:
            csrf.exempt(bp)
            done = True

    exempt()
    if not done:
        app.before_request(exempt)


def make_blueprint(sandbox: Sandbox) -> Blueprint:
    """A blueprint serving the Stripe.js stand-in and the modal's routes for ``sandbox``."""
    bp = Blueprint(
        "finconn_sandbox",
        __name__,
        static_folder=STATIC_DIR,
        static_url_path="/static",
    )

    bp.record_once(lambda setup: _exempt_from_csrf(setup.app, bp))

    def open_session(client_secret: str) -> dict[str, Any]:
        try:
            return sandbox.session_for_client_secret(client_secret)
        except SessionError as error:
            status = 404 if error.code == "session_unknown" else 400
            raise ApiError(status, error.message, code=error.code) from None

    @bp.errorhandler(ApiError)
    def api_error(error: ApiError) -> tuple[Response, int]:
        return jsonify(error.body()), error.status

    @bp.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        if isinstance(error, RequestEntityTooLarge):
            return api_error(_too_large())
        status = error.code or 400
        return api_error(ApiError(status, error.description or str(error)))

    @bp.before_request
    def limit_body() -> None:
        # Also bounds chunked bodies that announce no length: reading past it is a 413.
        request.max_content_length = _limit()
        if request.content_length is not None and request.content_length > _limit():
            raise _too_large()

    @bp.after_request
    def no_store(response: Response) -> Response:
        # Session state changes on every step; the script must follow package upgrades.
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    @bp.get("/stripe.js")
    def stripe_js() -> Response:
        return send_from_directory(
            STATIC_DIR, "finconn-sandbox.js", mimetype="text/javascript", max_age=0
        )

    @bp.get("/api/session")
    def session() -> Response:
        found = open_session(_secret())
        return jsonify(
            {
                "id": found["id"],
                "permissions": found.get("permissions", []),
                "livemode": found.get("livemode", False),
                "merchant_name": _merchant_name(),
            }
        )

    @bp.get("/api/institutions")
    def institutions() -> Response:
        open_session(_secret())
        query = request.args.get("q", "").strip() or None
        return jsonify({"data": sandbox.institutions(query)})

    @bp.post("/api/login")
    def login() -> Response:
        data = _body()
        secret = _secret(data)
        open_session(secret)
        answer = data.get("answer")
        if answer is not None and not isinstance(answer, str):
            raise ApiError(400, "Invalid answer: expected a string.", param="answer")
        result = sandbox.login(
            secret,
            _text(data, "institution"),
            username=_text(data, "username"),
            password=_text(data, "password"),
            answer=answer,
        )
        return jsonify(_login_result(result))

    @bp.post("/api/authorize")
    def authorize() -> Response:
        data = _body()
        secret = _secret(data)
        open_session(secret)
        return jsonify(_login_result(sandbox.login(secret, _text(data, "institution"))))

    @bp.post("/api/complete")
    def complete() -> Response:
        data = _body()
        secret = _secret(data)
        open_session(secret)
        accounts = data.get("accounts")
        if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
            raise ApiError(
                400, "Invalid accounts: expected a list of account ids.", param="accounts"
            )
        done = sandbox.complete_session_with(secret, _text(data, "institution"), accounts)
        # Stripe.js hands the page a plain array, not the API's list object.
        return jsonify({"id": done["id"], "accounts": done["accounts"]["data"]})

    @bp.post("/api/cancel")
    def cancel() -> Response:
        found = open_session(_secret(_body()))
        sandbox.cancel_session(found["id"])
        return jsonify({"id": found["id"], "accounts": []})

    add_payment_routes(bp, sandbox)
    return bp
