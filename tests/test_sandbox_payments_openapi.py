"""Conformance of the payments endpoints with Stripe's OpenAPI spec (``tests/data/openapi``):
every response validates, every parameter the spec lists is accepted, anything else is
``parameter_unknown``."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

import pytest
import stripe
from openapi_support import DATA, OpenAPI, Recorder, form, sample
from sandbox_payments_support import (
    PI_CONFIRM_ONLINE,
    SI_CONFIRM_ONLINE,
    confirmed_setup,
    debit,
    fc_account,
    fc_data,
    manual_data,
    ref,
)
from sandbox_support import present, sb_fixture  # noqa: F401
from stripe import Mandate
from stripe.params import SetupIntentCreateParams

from flask_finconn.sandbox import EVENT_TYPES as SANDBOX_FC_EVENTS
from flask_finconn.sandbox import Sandbox
from flask_finconn.sandbox.payments import EVENT_TYPES as PAYMENT_EVENT_TYPES

API = OpenAPI()
ENDPOINTS = [
    (template, method)
    for template, ops in API.spec["paths"].items()
    if template.startswith(
        (
            "/v1/setup_intents",
            "/v1/payment_intents",
            "/v1/payment_methods",
            "/v1/mandates",
            "/v1/charges",
        )
    )
    or template == "/v1/customers/{customer}/payment_methods"
    for method in ops
]


def test_the_spec_covers_every_payments_endpoint() -> None:
    assert len(ENDPOINTS) == 20


def test_the_validator_accepts_stripes_fixtures_and_rejects_broken_bodies() -> None:
    fixtures = json.loads((DATA / "stripe_fixtures3_subset.json").read_text())["resources"]
    mandate = fixtures["mandate"]
    assert API.errors("/v1/mandates/{mandate}", "get", mandate) == []
    broken = {k: v for k, v in mandate.items() if k != "status"}
    assert any(
        "'status' is a required property" in e
        for e in API.errors("/v1/mandates/{mandate}", "get", broken)
    )
    assert API.errors("/v1/mandates/{mandate}", "get", {**mandate, "status": "gone"})
    # The card branch of the payment method fixture is a stub here, so it fails loudly.
    assert API.errors("/v1/payment_methods/{payment_method}", "get", fixtures["payment_method"])
    assert API.template("/v1/setup_intents/seti_1/confirm") == "/v1/setup_intents/{intent}/confirm"
    assert API.template("/v1/nothing") is None


# --- every response validates ---------------------------------------------------------------


def _flows(sb: Sandbox, client: stripe.StripeClient) -> None:
    """Drive every payments endpoint through successes and failures."""
    v1 = client.v1
    account = fc_account(sb, client)
    customer = account.account_holder.customer
    pm = v1.payment_methods.create({**fc_data(account.id), "expand": ["customer"]})
    manual = v1.payment_methods.create(manual_data())
    v1.payment_methods.retrieve(pm.id)
    v1.payment_methods.attach(manual.id, {"customer": customer})
    v1.payment_methods.list({"customer": customer, "type": "us_bank_account"})
    v1.customers.payment_methods.list(customer, {"limit": 1, "expand": ["data.customer"]})
    v1.payment_methods.detach(manual.id)

    si = v1.setup_intents.create(
        cast(  # the SDK's types lack payment_method_types
            SetupIntentCreateParams,
            {"customer": customer, "payment_method_types": ["us_bank_account"]},
        )
    )
    v1.setup_intents.retrieve(si.id, {"client_secret": present(si.client_secret)})
    v1.setup_intents.update(si.id, {"payment_method": pm.id, "metadata": {"a": "b"}})
    done = v1.setup_intents.confirm(si.id, {**SI_CONFIRM_ONLINE, "expand": ["mandate"]})
    v1.setup_intents.retrieve(si.id, {"expand": ["payment_method", "customer"]})
    v1.mandates.retrieve(cast(Mandate, done.mandate).id)  # expanded

    pending = v1.setup_intents.create(confirmed_setup(manual_data()))
    with pytest.raises(stripe.InvalidRequestError):
        v1.setup_intents.verify_microdeposits(pending.id, {"amounts": [1, 2]})
    with pytest.raises(stripe.InvalidRequestError):
        v1.setup_intents.verify_microdeposits(pending.id, {"amounts": [10, 11]})
    v1.setup_intents.retrieve(pending.id)
    other = v1.setup_intents.create(confirmed_setup(manual_data()))
    v1.setup_intents.verify_microdeposits(other.id, {"descriptor_code": "SM11AA"})
    v1.setup_intents.cancel(v1.setup_intents.create().id, {"cancellation_reason": "abandoned"})

    pi = v1.payment_intents.create({"amount": 1000, "currency": "usd", "customer": customer})
    v1.payment_intents.update(pi.id, {"payment_method": pm.id, "description": "x"})
    pi = v1.payment_intents.confirm(pi.id, PI_CONFIRM_ONLINE)
    v1.charges.retrieve(ref(pi.latest_charge))
    sb.advance_time(sb.payments.settlement_delay)
    v1.payment_intents.retrieve(pi.id, {"expand": ["latest_charge", "payment_method"]})
    v1.charges.retrieve(ref(pi.latest_charge), {"expand": ["payment_intent"]})
    sb.payments.dispute(pi.id)
    v1.charges.retrieve(ref(pi.latest_charge))

    micro = debit(client, data=manual_data("000111111113"))
    v1.payment_intents.verify_microdeposits(micro.id, {"amounts": [32, 45]})
    sb.advance_time(sb.payments.settlement_delay)
    failed = v1.payment_intents.retrieve(micro.id)
    v1.charges.retrieve(ref(failed.latest_charge))
    with pytest.raises(stripe.CardError):
        debit(client, present(present(failed.last_payment_error).payment_method).id)
    canceled = debit(client, "pm_usBankAccount_processing")
    v1.payment_intents.cancel(canceled.id, {"cancellation_reason": "requested_by_customer"})
    with pytest.raises(stripe.InvalidRequestError):
        v1.payment_intents.cancel(canceled.id)
    debit(client, "pm_usBankAccount_failMicrodeposits")


def test_every_response_matches_the_spec(sb: Sandbox) -> None:
    recorder = Recorder(sb.http_client())
    _flows(sb, sb.stripe_client(http_client=recorder))
    checked: set[tuple[str, str, int]] = set()
    problems = []
    for method, path, status, body in recorder.seen:
        template = API.template(path)
        if template is None or (template, method) not in ENDPOINTS:
            continue
        checked.add((template, method, status))
        for error in API.errors(template, method, body, status):
            problems.append(f"{method.upper()} {path} {status}: {error}")
    assert problems == []
    assert {(t, m) for t, m, _ in checked} == set(ENDPOINTS), "every endpoint was exercised"
    assert any(status == 402 for _, _, status in checked)
    assert any(status == 400 for _, _, status in checked)


def test_every_payments_event_object_matches_its_schema(sb: Sandbox) -> None:
    _flows(sb, sb.stripe_client())
    seen = set()
    problems: list[str] = []
    for event in sb.events():
        obj = event["data"]["object"]
        name = obj["object"]
        if name not in ("setup_intent", "payment_intent", "payment_method", "mandate", "charge"):
            continue
        seen.add(event["type"])
        problems.extend(f"{event['type']}: {e}" for e in _object_errors(name, obj))
    assert problems == []
    emitted = {e["type"] for e in sb.events()} - set(SANDBOX_FC_EVENTS)
    assert emitted <= set(PAYMENT_EVENT_TYPES)
    # Blocks are covered in test_sandbox_payments.py (the PaymentMethod must be saved).
    assert set(PAYMENT_EVENT_TYPES) - emitted == {"payment_method.automatically_updated"}
    assert {
        "payment_intent.succeeded",
        "setup_intent.succeeded",
        "charge.failed",
        "mandate.updated",
        "payment_method.attached",
    } <= seen


def _object_errors(name: str, obj: dict[str, Any]) -> list[str]:
    template = {
        "setup_intent": "/v1/setup_intents/{intent}",
        "payment_intent": "/v1/payment_intents/{intent}",
        "payment_method": "/v1/payment_methods/{payment_method}",
        "charge": "/v1/charges/{charge}",
        "mandate": "/v1/mandates/{mandate}",
    }[name]
    return API.errors(template, "get", obj)


# --- parameters -----------------------------------------------------------------------------


def _raw(sb: Sandbox) -> Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]:
    client = sb.http_client()
    headers = {
        "Authorization": f"Bearer {sb.api_key}",
        "Content-Type": "application/x-www-form-urlencoded",
    }

    def call(method: str, path: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        encoded = form(params)
        url = sb.api_base + path
        if method == "get":
            body, status, _ = client.request("get", f"{url}?{encoded}", headers)
        else:
            body, status, _ = client.request("post", url, headers, encoded)
        return status, json.loads(body)

    return call


def _target(sb: Sandbox, template: str) -> str:
    """A concrete path for a template, on fresh objects."""
    client = sb.stripe_client()
    if "{intent}" in template:
        intent: stripe.SetupIntent | stripe.PaymentIntent
        if template.startswith("/v1/setup_intents"):
            intent = client.v1.setup_intents.create(
                confirmed_setup(manual_data()) if template.endswith("verify_microdeposits") else {}
            )
        else:
            intent = (
                debit(client, data=manual_data())
                if template.endswith("verify_microdeposits")
                else client.v1.payment_intents.create({"amount": 1000, "currency": "usd"})
            )
        return template.replace("{intent}", intent.id)
    if "{payment_method}" in template:
        return template.replace(
            "{payment_method}", client.v1.payment_methods.create(manual_data()).id
        )
    if "{customer}" in template:
        return template.replace("{customer}", client.v1.customers.create().id)
    if "{mandate}" in template or "{charge}" in template:
        pi = debit(client, "pm_usBankAccount_success")
        charge = client.v1.charges.retrieve(ref(pi.latest_charge))
        details = present(present(charge.payment_method_details).us_bank_account)
        return template.replace("{mandate}", ref(details.mandate)).replace("{charge}", charge.id)
    return template


REQUIRED = {
    ("/v1/payment_intents", "post"): {"amount": "1000", "currency": "usd"},
}


@pytest.mark.parametrize(("template", "method"), ENDPOINTS, ids=lambda x: str(x))
def test_every_listed_parameter_is_accepted(sb: Sandbox, template: str, method: str) -> None:
    call = _raw(sb)
    params = API.params(template, method)
    assert params, "the spec lists parameters for every endpoint (expand at least)"
    for name, schema in params.items():
        value = sample(API, schema)
        path = _target(sb, template)
        status, body = call(method, path, {**REQUIRED.get((template, method), {}), name: value})
        error = body.get("error", {})
        assert status < 500, (name, body)
        assert error.get("code") != "parameter_unknown", (name, value, error)


NESTED: dict[str, list[dict[str, Any]]] = {
    "post": [
        {"bogus": "1"},
        {"payment_method_options": {"us_bank_account": {"bogus": "1"}}},
        {"payment_method_data": {"type": "us_bank_account", "us_bank_account": {"bogus": "1"}}},
        {"mandate_data": {"customer_acceptance": {"type": "online", "bogus": "1"}}},
    ],
    "get": [{"bogus": "1"}],
}


@pytest.mark.parametrize(("template", "method"), ENDPOINTS, ids=lambda x: str(x))
def test_anything_else_is_parameter_unknown(sb: Sandbox, template: str, method: str) -> None:
    call = _raw(sb)
    listed = API.params(template, method)
    for extra in NESTED[method]:
        top = next(iter(extra))
        if top != "bogus" and top not in listed:
            continue
        path = _target(sb, template)
        status, body = call(method, path, {**REQUIRED.get((template, method), {}), **extra})
        assert status == 400 and body["error"]["code"] == "parameter_unknown", (extra, body)
        assert body["error"]["param"].endswith("[bogus]") or body["error"]["param"] == "bogus"
