"""``POST /finconn/webhook`` accepts only Stripe-signed events and stores nothing else."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
import stripe
from conftest import stripe_event
from flask import Flask

from flask_finconn import get_state
from flask_finconn.errors import WebhookSignatureError
from flask_finconn.models import WebhookEvent
from flask_finconn.webhooks import sign, verify

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

OLD, NEW = "whsec_old_secret", "whsec_new_secret"


def stored_ids(app: Flask) -> list[str]:
    with app.app_context():
        return list(get_state(app).db.session.scalars(sa.select(WebhookEvent.id)))


def unknown_event() -> dict[str, Any]:
    """An event type with no handler: the tests here are about the door, not the rooms."""
    return stripe_event("customer.created", {"id": "cus_123", "object": "customer"})


def compact(event: dict[str, Any]) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def test_signing_matches_stripes_reference_vector(database_url: str) -> None:
    body = b'{"id":"evt_test","object":"event"}'
    assert sign(body, "whsec_test_secret", 1700000000) == (
        "t=1700000000,v1=8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724"
    )


def test_verification_agrees_with_the_stripe_sdk(database_url: str) -> None:
    body = compact(unknown_event())
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), NEW)
    assert verify(body, header, [NEW], tolerance=300)["id"] == json.loads(body)["id"]
    stripe.WebhookSignature.verify_header(body.decode(), sign(body, NEW), NEW, 300)


def test_a_valid_event_is_stored_and_acknowledged(
    finconn_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    event = unknown_event()
    response = post_webhook(finconn_app, event)
    assert response.status_code == 200
    assert response.json == {"received": True}
    assert stored_ids(finconn_app) == [event["id"]]


def _cases() -> list[Any]:
    now = int(time.time())
    good = {"secret": None}
    return [
        pytest.param({"header": None}, "missing_signature", id="no header"),
        pytest.param({"secret": "whsec_someone_else"}, "invalid_signature", id="wrong secret"),
        pytest.param({"timestamp": now - 301}, "stale_signature", id="stale timestamp"),
        pytest.param({"header": "v1=" + "0" * 64}, "malformed_signature", id="no timestamp"),
        pytest.param({"header": "t=,v1=abc"}, "malformed_signature", id="empty timestamp"),
        pytest.param({"header": "t=abc,v1=abc"}, "malformed_signature", id="bad timestamp"),
        pytest.param({"header": f"t={now}"}, "malformed_signature", id="no v1"),
        pytest.param({"header": "garbage"}, "malformed_signature", id="garbage header"),
        pytest.param({"header": f"t={now},v0=abc"}, "malformed_signature", id="only v0"),
        pytest.param({"header": f"t={now},v1=é"}, "invalid_signature", id="non-ascii v1"),
        pytest.param(good, None, id="valid"),
    ]


@pytest.mark.parametrize(("options", "code"), _cases())
def test_signature_checks(
    finconn_app: Flask,
    post_webhook: Callable[..., Any],
    options: dict[str, Any],
    code: str | None,
) -> None:
    event = unknown_event()
    response = post_webhook(finconn_app, event, **options)
    if code is None:
        assert response.status_code == 200
        assert stored_ids(finconn_app) == [event["id"]]
        return
    assert response.status_code == 400
    assert response.json["error"]["code"] == code
    assert stored_ids(finconn_app) == []


def test_a_tampered_body_is_refused(finconn_app: Flask, post_webhook: Callable[..., Any]) -> None:
    event = unknown_event()
    body = compact(event)
    header = sign(body, get_state(finconn_app).settings.webhook_secrets[0])
    tampered = body.replace(b'"livemode":false', b'"livemode":true')
    assert tampered != body
    response = post_webhook(finconn_app, tampered, header=header)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_signature"
    # The same JSON re-serialised differently is another body too: bytes are what is signed.
    spaced = json.dumps(event).encode()
    assert post_webhook(finconn_app, spaced, header=header).status_code == 400
    assert stored_ids(finconn_app) == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"", "empty body"),
        (b"not json at all", "not JSON"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"[1, 2, 3]", "a JSON array"),
        (b'{"id": "evt_1", "object": "customer"}', "not an event object"),
        (b'{"id": "evt_1", "object": "event", "type": "x", "created": 1}', "no data.object"),
        (b'{"object": "event", "type": "x", "created": 1, "data": {"object": {}}}', "no id"),
    ],
)
def test_signed_bodies_that_are_not_events_are_refused(
    finconn_app: Flask, post_webhook: Callable[..., Any], body: bytes, why: str
) -> None:
    response = post_webhook(finconn_app, body)
    assert response.status_code == 400, why
    assert response.json["error"]["code"] == "invalid_event"
    assert stored_ids(finconn_app) == []


def test_a_10_mb_body_is_refused_unread(
    finconn_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    event = unknown_event()
    event["data"]["object"]["padding"] = "x" * (10 * 1024 * 1024)
    response = post_webhook(finconn_app, event)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"
    assert stored_ids(finconn_app) == []


def test_the_size_limit_is_configurable(
    make_finconn_app: Callable[..., Flask], post_webhook: Callable[..., Any]
) -> None:
    app = make_finconn_app(FINCONN_WEBHOOK_MAX_CONTENT_LENGTH=100_000)
    event = unknown_event()
    event["data"]["object"]["padding"] = "x" * 200_000
    assert post_webhook(app, event).status_code == 413
    event["data"]["object"]["padding"] = "x" * 90_000
    assert post_webhook(app, event).status_code == 200


def test_the_tolerance_is_configurable_and_future_timestamps_pass(
    make_finconn_app: Callable[..., Flask], post_webhook: Callable[..., Any]
) -> None:
    app = make_finconn_app(FINCONN_WEBHOOK_TOLERANCE=10)
    now = int(time.time())
    stale = post_webhook(app, unknown_event(), timestamp=now - 11)
    assert stale.json["error"]["code"] == "stale_signature"
    assert post_webhook(app, unknown_event(), timestamp=now - 5).status_code == 200
    # As in Stripe's libraries: only age is checked (a clock ahead of ours is no attack).
    assert post_webhook(app, unknown_event(), timestamp=now + 3600).status_code == 200


def test_rotated_secrets_all_verify(
    make_finconn_app: Callable[..., Flask], post_webhook: Callable[..., Any]
) -> None:
    app = make_finconn_app(FINCONN_WEBHOOK_SECRET=f"{OLD},{NEW}")
    assert post_webhook(app, unknown_event(), secret=OLD).status_code == 200
    assert post_webhook(app, unknown_event(), secret=NEW).status_code == 200
    # During a rotation Stripe sends one v1 per active secret; any match is enough.
    event = unknown_event()
    body = compact(event)
    now = int(time.time())
    other = sign(body, "whsec_unknown", now).split(",")[1]
    mine = sign(body, NEW, now).split(",")[1]
    header = f"t={now},{other},{mine},v0=ignored"
    assert post_webhook(app, body, header=header).status_code == 200
    refused = post_webhook(app, unknown_event(), secret="whsec_unknown")
    assert refused.json["error"]["code"] == "invalid_signature"
    assert len(stored_ids(app)) == 3


def test_the_route_needs_no_holder_and_skips_browser_checks(
    finconn_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    from flask_wtf.csrf import CSRFProtect

    CSRFProtect(finconn_app)
    body = compact(unknown_event())
    header = sign(body, get_state(finconn_app).settings.webhook_secrets[0])
    response = finconn_app.test_client().post(
        "/finconn/webhook",
        data=body,
        headers={
            "Stripe-Signature": header,
            "Content-Type": "text/plain",
            "Origin": "https://elsewhere.example",
        },
    )
    assert response.status_code == 200


def test_verify_raises_one_error_type(database_url: str) -> None:
    with pytest.raises(WebhookSignatureError) as caught:
        verify(b"{}", "t=1,v1=00", [NEW], tolerance=300)
    assert caught.value.status == 400
    with pytest.raises(WebhookSignatureError) as unconfigured:
        verify(b"{}", sign(b"{}", NEW), [], tolerance=300)
    assert unconfigured.value.code == "no_webhook_secret"
