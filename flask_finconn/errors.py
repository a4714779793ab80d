"""Exceptions raised by Flask-FinConn, and the blueprint's JSON error handlers.

::

    FinConnError                      any error this extension raises (500 unless set)
     ├── ConfigurationError           bad FINCONN_* settings, raised by init_app
     ├── ValidationError       400    a request body or query failed its schema
     ├── NotAuthenticated      401    no holder for this request
     ├── NotFound              404    no such object for this holder
     ├── CrossSiteRequest      403    a state-changing request from another site
     ├── Conflict              409    the request clashes with the object's state
     ├── PayloadTooLarge       413    the body is over the configured limit
     ├── UnsupportedMediaType  415    a JSON route got something else
     ├── WebhookSignatureError 400    a webhook's signature or body did not verify
     └── StripeUnavailable     502    Stripe (or the sandbox) failed or could not be reached

Every error carries a stable ``code`` and a sentence for ``message``; the blueprint renders
them as ``{"error": {"code", "message", "fields"?}}``.
"""

from __future__ import annotations

from typing import Any


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
