"""Payments under stress: idempotent replays after a lost answer, concurrent confirms,
restarts (in-process and the standalone server), test helpers and signed webhooks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from flask import Flask, request
from sandbox_payments_support import (
    PI_CONFIRM_ONLINE,
    PI_ONLINE,
    confirmed_setup,
    debit,
    events_for,
    manual_data,
    ref,
)
from sandbox_support import (  # noqa: F401
    Served,
    free_port,
    present,
    sb_fixture,
    server_factory_fixture,
)
from stripe.params import PaymentIntentConfirmParams, PaymentIntentCreateParams

from flask_finconn.sandbox import Sandbox

Client = stripe.StripeClient
PI: PaymentIntentCreateParams = {
    "amount": 4200,
    "currency": "usd",
    "payment_method": "pm_usBankAccount_success",
    "confirm": True,
    "mandate_data": PI_ONLINE,
}


def _created(sb: Sandbox) -> list[str]:
    return [e["data"]["object"]["id"] for e in sb.events(type="payment_intent.created")]


# --- idempotency ------------------------------------------------------------------------


@pytest.fixture(name="retrying", params=["in_process", "loopback"])
def retrying_fixture(request: pytest.FixtureRequest, sb: Sandbox) -> Iterator[Client]:
    """A StripeClient that retries twice, in-process or over HTTP on loopback."""
    if request.param == "in_process":
        yield sb.stripe_client(max_network_retries=2)
        return
    served = Served(sb.wsgi_app)
    try:
        yield stripe.StripeClient(
            sb.api_key, base_addresses={"api": served.url}, max_network_retries=2
        )
    finally:
        served.close()


def test_a_lost_answer_is_replayed_by_the_sdks_retry(sb: Sandbox, retrying: Client) -> None:
    sb.faults.fail_after_commit()
    pi = retrying.v1.payment_intents.create(PI, {"idempotency_key": "order-17"})
    assert pi.status == "processing"
    assert present(pi.last_response).headers["Idempotent-Replayed"] == "true"
    assert _created(sb) == [pi.id], "the retry replayed; no second PaymentIntent"
    assert len(sb.events(type="charge.pending")) == 1


def test_a_lost_answer_then_a_manual_retry(sb: Sandbox) -> None:
    client = sb.stripe_client(max_network_retries=0)
    sb.faults.fail_after_commit()
    with pytest.raises(stripe.APIError) as info:
        client.v1.payment_intents.create(PI, {"idempotency_key": "order-18"})
    assert info.value.http_status == 500
    assert len(_created(sb)) == 1, "the request committed before its answer was lost"
    again = client.v1.payment_intents.create(PI, {"idempotency_key": "order-18"})
    assert _created(sb) == [again.id]
    with pytest.raises(stripe.IdempotencyError):
        client.v1.payment_intents.create({**PI, "amount": 4300}, {"idempotency_key": "order-18"})
    fresh = client.v1.payment_intents.create({"amount": 900, "currency": "usd"})
    confirm: PaymentIntentConfirmParams = {
        **PI_CONFIRM_ONLINE,
        "payment_method": "pm_usBankAccount_success",
    }
    sb.faults.fail_after_commit()
    with pytest.raises(stripe.APIError):
        client.v1.payment_intents.confirm(fresh.id, confirm, {"idempotency_key": "confirm-1"})
    replayed = client.v1.payment_intents.confirm(
        fresh.id, confirm, {"idempotency_key": "confirm-1"}
    )
    assert replayed.status == "processing"
    assert len(sb.events(type="charge.pending")) == 2, "one charge per PaymentIntent"


def test_the_sdks_own_idempotency_key_covers_retries(sb: Sandbox) -> None:
    client = sb.stripe_client(max_network_retries=1)
    sb.faults.fail_after_commit()
    pi = client.v1.payment_intents.create(PI)
    assert _created(sb) == [pi.id]


def test_fail_after_commit_spares_reads_and_failed_requests(sb: Sandbox) -> None:
    client = sb.stripe_client(max_network_retries=0)
    sb.faults.fail_after_commit()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create({"amount": 1, "currency": "usd"})
    client.v1.customers.list()
    with pytest.raises(stripe.APIError):
        client.v1.customers.create()
    assert len(client.v1.customers.list().data) == 1


# --- concurrency ----------------------------------------------------------------------


def test_concurrent_confirms_of_one_intent_let_exactly_one_through(sb: Sandbox) -> None:
    served = Served(sb.wsgi_app)
    try:
        client = stripe.StripeClient(sb.api_key, base_addresses={"api": served.url})
        pi = client.v1.payment_intents.create(
            {"amount": 5000, "currency": "usd", "payment_method": "pm_usBankAccount_success"}
        )
        results: list[str] = []
        barrier = threading.Barrier(8)

        def confirm() -> None:
            barrier.wait()
            try:
                results.append(client.v1.payment_intents.confirm(pi.id, PI_CONFIRM_ONLINE).status)
            except stripe.InvalidRequestError as exc:
                results.append(str(exc.code))

        threads = [threading.Thread(target=confirm) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert sorted(results) == ["payment_intent_unexpected_state"] * 7 + ["processing"]
        assert len(sb.events(type="charge.pending")) == 1
    finally:
        served.close()


def test_concurrent_creates_with_one_key_make_one_intent(sb: Sandbox) -> None:
    served = Served(sb.wsgi_app)
    try:
        client = stripe.StripeClient(sb.api_key, base_addresses={"api": served.url})
        ids: list[str] = []

        def create() -> None:
            ids.append(client.v1.payment_intents.create(PI, {"idempotency_key": "same"}).id)

        threads = [threading.Thread(target=create) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=30)
        assert len(ids) == 6 and len(set(ids)) == 1
        assert _created(sb) == ids[:1]
    finally:
        served.close()


# --- restarts ---------------------------------------------------------------------------


def test_payments_survive_a_restart(tmp_path: Any) -> None:
    path = str(tmp_path / "sandbox.sqlite3")
    first = Sandbox(path)
    client = first.stripe_client()
    pi = debit(client, "pm_usBankAccount_success")
    si = client.v1.setup_intents.create(confirmed_setup(manual_data()))
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.setup_intents.verify_microdeposits(si.id, {"descriptor_code": "SM00AA"})
    first.close()

    second = Sandbox(path)
    try:
        client = second.stripe_client()
        assert client.v1.payment_intents.retrieve(pi.id).status == "processing"
        second.advance_time(second.payments.settlement_delay)
        assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
        with pytest.raises(stripe.InvalidRequestError) as info:
            client.v1.setup_intents.verify_microdeposits(si.id, {"descriptor_code": "SM00AA"})
        assert "8 verification attempts remaining" in str(info.value)
        verify = present(present(si.next_action).verify_with_microdeposits)
        token = verify.hosted_verification_url.rsplit("/", 1)[1]
        assert second.payments.intent_for_verification(token)["id"] == si.id
    finally:
        second.close()


def test_standalone_server_keeps_payments_across_a_restart(
    server_factory: Any, tmp_path: Any
) -> None:
    database, port = str(tmp_path / "server.sqlite3"), free_port()

    def start() -> Client:
        url = server_factory(database, port, "--settlement-delay", "3600")
        return stripe.StripeClient("sk_test_x", base_addresses={"api": url})

    client = start()
    pi = debit(client, "pm_usBankAccount_success")
    si = client.v1.setup_intents.create(confirmed_setup(manual_data()))
    server_factory.stop()
    client = start()
    assert client.v1.payment_intents.retrieve(pi.id).status == "processing"
    client.raw_request("post", "/v1/test_helpers/financial_connections/advance_time", seconds=3600)
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    done = client.v1.setup_intents.verify_microdeposits(si.id, {"amounts": [32, 45]})
    assert done.status == "succeeded"
    assert client.v1.mandates.retrieve(ref(done.mandate)).status == "active"


# --- test helpers -------------------------------------------------------------------------


def test_helper_routes_settle_fail_process_and_dispute(sb: Sandbox) -> None:
    client = sb.stripe_client()
    helpers = "/v1/test_helpers/payment_intents"

    stuck = debit(client, "pm_usBankAccount_processing")
    client.raw_request("post", f"{helpers}/{stuck.id}/settle")
    assert client.v1.payment_intents.retrieve(stuck.id).status == "succeeded"

    failing = debit(client, "pm_usBankAccount_success")
    client.raw_request("post", f"{helpers}/{failing.id}/fail", failure_code="account_closed")
    failed = client.v1.payment_intents.retrieve(failing.id)
    assert failed.status == "requires_payment_method"
    assert present(failed.last_payment_error).code == "account_closed"
    assert client.v1.charges.retrieve(failing.latest_charge).failure_code == "account_closed"

    natural = debit(client, "pm_usBankAccount_insufficientFunds")
    client.raw_request("post", f"{helpers}/{natural.id}/process")
    again = client.v1.payment_intents.retrieve(natural.id)
    assert present(again.last_payment_error).code == "insufficient_funds"

    client.raw_request("post", f"{helpers}/{stuck.id}/dispute", reason="insufficient_funds")
    charge = client.v1.charges.retrieve(stuck.latest_charge)
    assert charge.disputed
    with pytest.raises(stripe.InvalidRequestError):
        client.raw_request("post", f"{helpers}/{stuck.id}/settle")
    with pytest.raises(stripe.InvalidRequestError):
        client.raw_request("post", f"{helpers}/{stuck.id}/dispute")


def test_python_helpers(sb: Sandbox) -> None:
    client = sb.stripe_client()
    pi = debit(client, "pm_usBankAccount_processing")
    assert sb.payments.fail(pi.id, "debit_not_authorized")["status"] == "requires_payment_method"
    other = debit(client, "pm_usBankAccount_success")
    assert sb.payments.settle(other.id)["status"] == "succeeded"
    dispute = sb.payments.dispute(other.id, "insufficient_funds")
    assert dispute["object"] == "dispute" and dispute["reason"] == "insufficient_funds"
    assert events_for(sb, dispute["id"]) == ["charge.dispute.created", "charge.dispute.closed"]


# --- events ----------------------------------------------------------------------------


def test_payment_events_are_signed_and_delivered(sb: Sandbox) -> None:
    received: list[stripe.Event] = []
    app = Flask("receiver")

    @app.post("/hook")
    def hook() -> tuple[str, int]:
        received.append(
            stripe.Webhook.construct_event(
                request.get_data(as_text=True),
                request.headers["Stripe-Signature"],
                "whsec_payments",
            )
        )
        return "", 200

    sb.add_webhook_endpoint(wsgi_app=app, path="/hook", secret="whsec_payments")
    client = sb.stripe_client()
    customer = client.v1.customers.create()
    pi = debit(
        client, "pm_usBankAccount_success", customer=customer.id, setup_future_usage="off_session"
    )
    sb.advance_time(sb.payments.settlement_delay)
    sb.deliver_events()
    types = [e.type for e in received]
    for expected in (
        "payment_intent.created",
        "payment_intent.processing",
        "charge.pending",
        "payment_method.attached",
        "charge.succeeded",
        "payment_intent.succeeded",
    ):
        assert expected in types
    created = next(e for e in received if e.type == "payment_intent.created")
    assert created.data.object.id == pi.id
    assert present(created.request).idempotency_key, "the SDK's own key is stamped on the event"


def test_a_dispute_fired_early_by_a_helper_is_not_repeated(sb: Sandbox) -> None:
    client = sb.stripe_client()
    pi = debit(client, "pm_usBankAccount_dispute")
    sb.advance_time(sb.payments.settlement_delay)
    sb.payments.dispute(pi.id)
    sb.advance_time(sb.payments.settlement_delay)
    assert len(sb.events(type="charge.dispute.created")) == 1
    assert client.v1.payment_intents.retrieve(pi.id).status == "succeeded"
