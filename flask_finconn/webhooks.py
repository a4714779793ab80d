"""Stripe webhook signatures: verify a delivery's raw bytes, then read the event out of it.

The scheme is Stripe's: ``Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]``,
an HMAC-SHA256 of ``b"<t>." + body`` keyed with the whole ``whsec_...`` secret. A delivery
verifies when any ``v1`` value matches the MAC under any configured secret (several during a
rotation, on both sides), and its timestamp is no older than the tolerance. Future
timestamps pass, as they do in Stripe's own libraries.

Everything runs on the bytes as received: the JSON is parsed only after the signature
matched, so a re-serialised body can never verify. Every refusal is a
:class:`~.errors.WebhookSignatureError` (400) whose ``code`` says what was wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

from .errors import WebhookSignatureError

__all__ = ["check_signature", "parse_header", "sign", "verify"]

SCHEME = "v1"


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header for ``payload``, as Stripe would send it (for tests)."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},{SCHEME}={_mac(secret, t, payload)}"


def _mac(secret: str, timestamp: int, payload: bytes) -> str:
    signed = str(timestamp).encode() + b"." + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def parse_header(header: str) -> tuple[int, list[str]]:
    """The timestamp and the ``v1`` signatures of a ``Stripe-Signature`` header.

    Items are ``key=value`` pairs split on commas; the first ``t`` wins and every ``v1``
    counts. Anything else (``v0``, unknown keys) is ignored. A header without a usable
    timestamp or without any ``v1`` is malformed.
    """
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            continue
        if key == "t" and timestamp is None:
            try:
                timestamp = int(value)
            except ValueError:
                raise _malformed() from None
        elif key == SCHEME and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise _malformed()
    return timestamp, signatures


def _malformed() -> WebhookSignatureError:
    return WebhookSignatureError(
        "The Stripe-Signature header is malformed: it needs t=<timestamp> and at least one "
        "v1=<signature>.",
        code="malformed_signature",
    )


def verify(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and return its event as a dict.

    Raises :class:`~.errors.WebhookSignatureError` for a missing, malformed, wrong or
    stale signature, and for a body that is not a Stripe event (``invalid_event``).
    """
    check_signature(payload, header, secrets, tolerance=tolerance, now=now)
    return _event(payload)


def check_signature(
    payload: bytes,
    header: str | None,
    secrets: Sequence[str],
    *,
    tolerance: int,
    now: float | None = None,
) -> None:
    """The signature half of :func:`verify`: the body is not looked at."""
    if not header:
        raise WebhookSignatureError(
            "The request has no Stripe-Signature header; only Stripe's signed events are "
            "accepted here.",
            code="missing_signature",
        )
    if not secrets:
        raise WebhookSignatureError(
            "No webhook secret is configured; set FINCONN_WEBHOOK_SECRET to the endpoint's "
            "whsec_... secret.",
            code="no_webhook_secret",
        )
    timestamp, signatures = parse_header(header)
    # Compare every pair in full, so the time taken says nothing about which one matched.
    # Bytes, because compare_digest refuses non-ASCII text and headers can carry any.
    candidates = [value.encode("utf-8", "surrogateescape") for value in signatures]
    matched = False
    for secret in secrets:
        expected = _mac(secret, timestamp, payload).encode()
        for candidate in candidates:
            matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookSignatureError(
            "No signature in the Stripe-Signature header matches the body under the "
            "configured webhook secret(s).",
            code="invalid_signature",
        )
    current = time.time() if now is None else now
    if tolerance and timestamp < current - tolerance:
        raise WebhookSignatureError(
            f"The signature's timestamp is more than {tolerance} seconds old; the delivery "
            "may be a replay.",
            code="stale_signature",
        )


def _event(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except (ValueError, RecursionError):  # also UnicodeDecodeError; nesting past the limit
        raise _not_an_event("The webhook body is not valid JSON.") from None
    if not isinstance(event, dict) or event.get("object") != "event":
        raise _not_an_event("The webhook body is not a Stripe event object.")
    data = event.get("data")
    if (
        not isinstance(event.get("id"), str)
        or not 0 < len(event["id"]) <= 255
        or not isinstance(event.get("type"), str)
        or not 0 < len(event["type"]) <= 255
        or not isinstance(event.get("created"), int)
        or not isinstance(data, dict)
        or not isinstance(data.get("object"), dict)
    ):
        raise _not_an_event("The webhook event lacks its id, type, created or data.object.")
    return event


def _not_an_event(message: str) -> WebhookSignatureError:
    return WebhookSignatureError(message, code="invalid_event")
