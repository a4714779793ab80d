"""Exceptions raised by Flask-FinConn, and the blueprint's JSON error handlers.

::

    FinConnError                      any error this extension raises (500 unless set)
     ├── ConfigurationError           bad FINCONN_* settings, raised by init_app
     ├── ValidationError       400    a request body or query failed its schema
     ├── NotAuthenticated      401    no holder for this request
     ├── NotFound              404    no such object for this holder
     ├── CrossSiteRequest      403    a state-changing request from another site
     ├── Conflict              409    the request clashes with the object's state
 │    └── InsufficientBalance 409  a checked debit is above the available balance
     ├── PayloadTooLarge       413    the body is over the configured limit
     ├── UnsupportedMediaType  415    a JSON route got something else
     ├── WebhookSignatureError 400    a webhook's signature or body did not verify
     └── StripeUnavailable     502    Stripe (or the sandbox) failed or could not be reached

Every error carries a stable ``code`` and a sentence for ``message``; the blueprint renders
them as ``{"error": {"code", "message", "fields"?}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, MethodNotAllowed, RequestEntityTooLarge

_logger = logging.getLogger("flask_finconn")


class FinConnError(Exception):
    """Base class; ``status``, ``code`` and ``message`` make the JSON error body."""

    status: int = 500
    code: str = "internal_error"
    message: str = "Something went wrong on our side."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        status: int | None = None,
        fields: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.fields = fields
        self.extra = extra or {}
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The ``error`` object of the JSON body."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fields is not None:
            body["fields"] = self.fields
        body.update(self.extra)
        return body


class ConfigurationError(FinConnError):
    code = "configuration_error"


class ValidationError(FinConnError):
    status = 400
    code = "invalid_request"
    message = "The request is not valid."


class NotAuthenticated(FinConnError):
    status = 401
    code = "not_authenticated"
    message = "Sign in to link or view bank accounts."


class NotFound(FinConnError):
    status = 404
    code = "not_found"
    message = "There is no such object."


class CrossSiteRequest(FinConnError):
    status = 403
    code = "cross_site_request"
    message = "This request came from another site and was refused."


class Conflict(FinConnError):
    status = 409
    code = "conflict"


class InsufficientBalance(Conflict):
    """``finconn.debit(..., check_balance=True)`` found less money than the amount."""

    code = "insufficient_balance"
    message = "The account's available balance is below the amount; the debit was not made."


class PayloadTooLarge(FinConnError):
    status = 413
    code = "payload_too_large"
    message = "The request body is too large."


class UnsupportedMediaType(FinConnError):
    status = 415
    code = "unsupported_media_type"
    message = "Send the request body as JSON with Content-Type: application/json."


class WebhookSignatureError(FinConnError):
    status = 400
    code = "invalid_signature"
    message = "The webhook signature did not verify."


class StripeUnavailable(FinConnError):
    status = 502
    code = "stripe_unavailable"
    message = "Stripe could not be reached. Try again in a moment."


def register_handlers(bp: Blueprint) -> None:
    """Render every error raised by the blueprint's views as the one JSON error shape.

    Handlers go on the blueprint only, so the host's own pages keep their HTML errors.
    Routing errors (an unknown URL under the prefix) happen before a blueprint is chosen
    and stay the host's.
    """
    bp.register_error_handler(FinConnError, _render_finconn_error)
    bp.register_error_handler(HTTPException, _render_http_error)
    bp.register_error_handler(Exception, _render_unexpected)


def _json_error(error: FinConnError) -> ResponseReturnValue:
    return jsonify({"error": error.to_dict()}), error.status


def _render_finconn_error(error: FinConnError) -> ResponseReturnValue:
    if error.status >= 500:
        _logger.warning("Flask-FinConn request failed: %s (%s)", error.code, error.status)
    return _json_error(error)


def _render_http_error(error: HTTPException) -> ResponseReturnValue:
    if isinstance(error, RequestEntityTooLarge):
        return _json_error(PayloadTooLarge())
    status = error.code or 500
    name = type(error).__name__
    if name == "CSRFError":  # Flask-WTF's CSRFProtect refused the request
        return _json_error(
            CrossSiteRequest(
                "The CSRF token is missing or invalid; send it in the X-CSRFToken header.",
                code="csrf_failed",
                status=status,
            )
        )
    code = (error.name or "error").lower().replace(" ", "_").replace("'", "")
    message = error.description or "The request could not be handled."
    body = jsonify({"error": FinConnError(message, code=code, status=status).to_dict()})
    if isinstance(error, MethodNotAllowed) and error.valid_methods:
        # RFC 9110: a 405 names the methods the resource does support.
        body.headers["Allow"] = ", ".join(error.valid_methods)
    return body, status


def _render_unexpected(error: Exception) -> ResponseReturnValue:
    _logger.exception("Unexpected error in a Flask-FinConn route")
    return _json_error(FinConnError())
