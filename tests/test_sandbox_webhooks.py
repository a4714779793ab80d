"""Webhook delivery: signed as Stripe signs, retried with backoff, and with chaos on demand."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe
from flask import Flask, request
from sandbox_support import Served, link, sb_fixture  # noqa: F401

from flask_finconn.sandbox import Sandbox, sign


class Receiver:
    """A Flask app that verifies each delivery with ``stripe.Webhook.construct_event``."""

    def __init__(self, secret: str = "whsec_receiver") -> None:
        self.secret = secret
        self.events: list[stripe.Event] = []
        self.failures_left = 0
        self.app = Flask("receiver")

        @self.app.post("/hook")
        def hook() -> tuple[str, int]:
            if self.failures_left:
                self.failures_left -= 1
                return "try later", 500
            try:
                event = stripe.Webhook.construct_event(
                    request.get_data(as_text=True),
                    request.headers.get("Stripe-Signature", ""),
                    self.secret,
                )
            except (ValueError, stripe.SignatureVerificationError):
                return "bad signature", 400
            self.events.append(event)
            return "", 200

    @property
    def types(self) -> list[str]:
        return [e.type for e in self.events]


def _client(sb: Sandbox) -> stripe.StripeClient:
    return sb.stripe_client()


def test_signature_matches_the_reference_vector() -> None:
    body = '{"id":"evt_test","object":"event"}'
    assert sign(body, "whsec_test_secret", 1700000000) == (
        "t=1700000000,v1=8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724"
    )


def test_in_process_endpoint_receives_verified_events(sb: Sandbox) -> None:
    receiver = Receiver()
    endpoint = sb.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook", secret=receiver.secret)
    assert endpoint["id"].startswith("we_") and endpoint["secret"] == receiver.secret
    accounts = link(sb, _client(sb), "test_oauth")
    assert sb.pending_deliveries() == 2
    assert sb.deliver_events() == 2
    assert receiver.types == ["financial_connections.account.created"] * 2
    event = receiver.events[0]
    assert isinstance(event.data.object, stripe.financial_connections.Account)
    assert {e.data.object.id for e in receiver.events} == {a.id for a in accounts}
    assert event.pending_webhooks == 1
    assert sb.deliver_events() == 0, "delivered events are not sent again"
    assert sb.pending_deliveries() == 0


def test_generated_secret_is_kept_across_restarts(tmp_path: Any) -> None:
    path = str(tmp_path / "sandbox.sqlite3")
    receiver = Receiver()
    first = Sandbox(path)
    created = first.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook")
    assert created["secret"].startswith("whsec_")
    first.close()
    second = Sandbox(path)
    again = second.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook")
    assert again == created
    receiver.secret = created["secret"]
    link(second, second.stripe_client(), "test_oauth", accounts=["checking"])
    assert second.deliver_events() == 1
    assert receiver.types == ["financial_connections.account.created"]
    second.close()


def test_url_endpoint_over_http(sb: Sandbox) -> None:
    receiver = Receiver()
    served = Served(receiver.app)
    try:
        sb.add_webhook_endpoint(url=served.url + "/hook", secret=receiver.secret)
        link(sb, _client(sb), "test_oauth", accounts=["savings"])
        assert sb.deliver_events() == 1
    finally:
        served.close()
    assert receiver.types == ["financial_connections.account.created"]
    assert sb.webhook_attempts()[0]["status"] == 200


def test_failed_deliveries_are_retried_with_backoff(sb: Sandbox) -> None:
    receiver = Receiver()
    sb.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook", secret=receiver.secret)
    receiver.failures_left = 2
    link(sb, _client(sb), "test_oauth", accounts=["checking"])
    assert sb.deliver_events() == 1
    assert sb.deliver_events() == 0, "the retry waits for its backoff"
    sb.advance_time(5)
    assert sb.deliver_events() == 1
    assert sb.deliver_events() == 0
    sb.advance_time(10)
    assert sb.deliver_events() == 1
    assert receiver.types == ["financial_connections.account.created"]
    attempts = sb.webhook_attempts()
    assert [a["status"] for a in attempts] == [500, 500, 200]
    assert len({a["event"] for a in attempts}) == 1
    assert attempts[1]["at"] - attempts[0]["at"] >= 5


def test_wrong_secret_and_dead_endpoints_are_recorded_and_given_up(sb: Sandbox) -> None:
    receiver = Receiver(secret="whsec_expected")
    sb.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook", secret="whsec_other")
    sb.add_webhook_endpoint(url="http://127.0.0.1:9/nothing-listens-here")
    link(sb, _client(sb), "test_oauth", accounts=["checking"])
    for _ in range(10):
        sb.deliver_events(retry_now=True)
    attempts = sb.webhook_attempts()
    rejected = [a for a in attempts if a["status"] == 400]
    unreachable = [a for a in attempts if a["status"] is None]
    assert len(rejected) == len(unreachable) == 8, "eight attempts, then the delivery fails"
    assert all("URLError" in (a["error"] or "") for a in unreachable)
    assert sb.pending_deliveries() == 0
    assert receiver.events == []


def test_duplicates_delays_and_reordering(sb: Sandbox) -> None:
    receiver = Receiver()
    sb.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook", secret=receiver.secret)
    client = _client(sb)

    sb.faults.webhook_duplicate_rate = 1.0
    link(sb, client, "test_oauth", accounts=["checking"])
    assert sb.deliver_events() == 2
    assert len(receiver.events) == 2 and receiver.events[0].id == receiver.events[1].id

    receiver.events.clear()
    sb.faults.reset()
    sb.faults.webhook_delay = 30
    link(sb, client, "test_oauth", accounts=["checking"])
    assert sb.deliver_events() == 0
    sb.advance_time(30)
    assert sb.deliver_events() == 1

    receiver.events.clear()
    sb.faults.reset()
    sb.faults.webhook_reorder = True
    accounts = link(sb, client, "bank_oauth")
    sb.deliver_events()
    created_order = [e["id"] for e in sb.events(type="financial_connections.account.created")]
    assert [e.id for e in receiver.events] == list(reversed(created_order[-len(accounts) :]))


def test_background_thread_finishes_refreshes_and_delivers(sb: Sandbox) -> None:
    receiver = Receiver()
    sb.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook", secret=receiver.secret)
    sb.refresh_delay = 0.1
    client = _client(sb)
    account = link(sb, client, "test_oauth", accounts=["checking"])[0]
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    sb.start_background(interval=0.05)
    try:
        deadline = time.monotonic() + 5
        while len(receiver.events) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sb.stop_background()
    assert receiver.types == [
        "financial_connections.account.created",
        "financial_connections.account.refreshed_balance",
    ]
    assert receiver.events[1].data.object.balance_refresh.status == "succeeded"


@pytest.mark.parametrize(
    "event_type",
    [
        "financial_connections.account.upcoming_deactivation",
        "financial_connections.account.account_numbers_updated",
        "financial_connections.authorization.upcoming_deactivation",
    ],
)
def test_fired_events_are_delivered(sb: Sandbox, event_type: str) -> None:
    receiver = Receiver()
    sb.add_webhook_endpoint(wsgi_app=receiver.app, path="/hook", secret=receiver.secret)
    account = link(sb, _client(sb), "test_oauth", accounts=["checking"])[0]
    fired = sb.fire_event(account.id, event_type)
    sb.deliver_events()
    assert receiver.types[-1] == event_type
    delivered = receiver.events[-1]
    assert delivered.id == fired["id"]
    if event_type.startswith("financial_connections.authorization"):
        assert isinstance(delivered.data.object, stripe.financial_connections.Authorization)
        assert delivered.data.object.id.startswith("fcauth_")
    else:
        assert delivered.data.object.id == account.id
