"""Microdeposit verification in the sandbox: Stripe's test values, attempt limits, the
10-day timeout, and the Python entry points the browser half uses."""

from __future__ import annotations

from typing import Any, cast

import pytest
import stripe
from sandbox_payments_support import (
    ONLINE,
    confirmed_setup,
    debit,
    events_for,
    fc_account,
    manual_data,
)
from sandbox_support import client_fixture, present, sb_fixture  # noqa: F401
from stripe.params import (
    PaymentIntentVerifyMicrodepositsParams,
    SetupIntentCreateParams,
    SetupIntentVerifyMicrodepositsParams,
)

from flask_finconn.sandbox import ApiError, Sandbox

Client = stripe.StripeClient
DAY = 86400


@pytest.fixture(name="sdk")
def sdk_fixture(sb: Sandbox) -> Client:
    return sb.stripe_client()


def _pending(sdk: Client, kind: str) -> Any:
    """A SetupIntent or PaymentIntent waiting for microdeposits."""
    if kind == "setup":
        return sdk.v1.setup_intents.create(confirmed_setup(manual_data()))
    return debit(sdk, data=manual_data())


def _service(sdk: Client, kind: str) -> Any:
    return sdk.v1.setup_intents if kind == "setup" else sdk.v1.payment_intents


KINDS = ("setup", "payment")


@pytest.mark.parametrize("kind", KINDS)
def test_manual_entry_requires_microdeposits(sb: Sandbox, client: Client, kind: str) -> None:
    intent = _pending(client, kind)
    assert intent.status == "requires_action"
    action = intent.next_action
    assert action.type == "verify_with_microdeposits"
    verify = action.verify_with_microdeposits
    assert verify.microdeposit_type == "descriptor_code"
    assert verify.arrival_date > sb.now()
    token = verify.hosted_verification_url.rsplit("/", 1)[1]
    assert verify.hosted_verification_url == (f"{sb.api_base}/sandbox/microdeposits/{token}")
    assert token.startswith("sacs_test_")
    assert sb.payments.intent_for_verification(token)["id"] == intent.id
    prefix = "setup_intent" if kind == "setup" else "payment_intent"
    assert events_for(sb, intent.id) == [f"{prefix}.created", f"{prefix}.requires_action"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("values", [{"amounts": [32, 45]}, {"descriptor_code": "SM11AA"}])
def test_correct_values_verify(
    sb: Sandbox, client: Client, kind: str, values: dict[str, Any]
) -> None:
    intent = _pending(client, kind)
    done = _service(client, kind).verify_microdeposits(intent.id, values)
    assert done.next_action is None
    if kind == "setup":
        assert done.status == "succeeded"
        assert client.v1.mandates.retrieve(done.mandate).status == "active"
        # The account is verified now: a later intent with it needs no microdeposits.
        assert debit(client, done.payment_method).status == "processing"
    else:
        assert done.status == "processing" and done.latest_charge
        assert "payment_intent.processing" in events_for(sb, intent.id)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("values", [{"amounts": [10, 11]}, {"descriptor_code": "SM33CC"}])
def test_exhausting_values_fail_the_intent(
    sb: Sandbox, sdk: Client, kind: str, values: dict[str, Any]
) -> None:
    intent = _pending(sdk, kind)
    with pytest.raises(stripe.InvalidRequestError) as info:
        _service(sdk, kind).verify_microdeposits(intent.id, values)
    assert info.value.code == "payment_method_microdeposit_verification_attempts_exceeded"
    again = _service(sdk, kind).retrieve(intent.id)
    assert again.status == "requires_payment_method" and again.next_action is None
    error = again.last_setup_error if kind == "setup" else again.last_payment_error
    assert error.code == "payment_method_microdeposit_verification_attempts_exceeded"
    failed = "setup_intent.setup_failed" if kind == "setup" else "payment_intent.payment_failed"
    assert events_for(sb, intent.id)[-1] == failed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("values", [{"amounts": [40, 41]}, {"descriptor_code": "SM44DD"}])
def test_timeout_values_return_the_intent_then_time_out(
    sb: Sandbox, sdk: Client, kind: str, values: dict[str, Any]
) -> None:
    intent = _pending(sdk, kind)
    answered = _service(sdk, kind).verify_microdeposits(intent.id, values)
    assert answered.status == "requires_action"
    again = _service(sdk, kind).retrieve(intent.id)
    assert again.status == "requires_payment_method"
    error = again.last_setup_error if kind == "setup" else again.last_payment_error
    assert error.code == "payment_method_microdeposit_verification_timeout"


@pytest.mark.parametrize("kind", KINDS)
def test_ten_days_without_verification_time_out(sb: Sandbox, sdk: Client, kind: str) -> None:
    intent = _pending(sdk, kind)
    # The sandbox's clock also runs in real time: a minute short of the deadline leaves a
    # loaded machine room between the two calls.
    sb.advance_time(10 * DAY - 60)
    assert _service(sdk, kind).retrieve(intent.id).status == "requires_action"
    sb.advance_time(60)
    again = _service(sdk, kind).retrieve(intent.id)
    assert again.status == "requires_payment_method"
    error = again.last_setup_error if kind == "setup" else again.last_payment_error
    assert error.code == "payment_method_microdeposit_verification_timeout"


@pytest.mark.parametrize(
    ("values", "limit", "code"),
    [
        ({"descriptor_code": "SM99ZZ"}, 10, "descriptor_code_mismatch"),
        ({"amounts": [1, 2]}, 3, "amounts_mismatch"),
    ],
)
def test_attempt_limits(
    sb: Sandbox,
    sdk: Client,
    values: SetupIntentVerifyMicrodepositsParams,
    limit: int,
    code: str,
) -> None:
    intent = _pending(sdk, "setup")
    for attempt in range(1, limit):
        with pytest.raises(stripe.InvalidRequestError) as info:
            sdk.v1.setup_intents.verify_microdeposits(intent.id, values)
        assert info.value.code == f"payment_method_microdeposit_verification_{code}"
        assert f"You have {limit - attempt} verification attempts remaining" in str(info.value)
        assert sdk.v1.setup_intents.retrieve(intent.id).status == "requires_action"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.verify_microdeposits(intent.id, values)
    assert info.value.code == "payment_method_microdeposit_verification_attempts_exceeded"
    assert sdk.v1.setup_intents.retrieve(intent.id).status == "requires_payment_method"


def test_malformed_values_cost_no_attempt(sdk: Client) -> None:
    intent = _pending(sdk, "payment")
    for values, code in (
        ({"amounts": [32]}, "payment_method_microdeposit_verification_amounts_invalid"),
        ({"amounts": [32, 45, 1]}, "payment_method_microdeposit_verification_amounts_invalid"),
        ({"amounts": [32, 45], "descriptor_code": "SM11AA"}, None),
        ({}, "parameter_missing"),
        ({"descriptor_code": "XX11AA"}, None),
    ):
        with pytest.raises(stripe.InvalidRequestError) as info:
            sdk.v1.payment_intents.verify_microdeposits(
                intent.id, cast(PaymentIntentVerifyMicrodepositsParams, values)
            )  # deliberately malformed
        if code:
            assert info.value.code == code
    assert (
        sdk.v1.payment_intents.verify_microdeposits(intent.id, {"amounts": [32, 45]}).status
        == "processing"
    )


def test_verifying_outside_requires_action_is_an_unexpected_state(sdk: Client) -> None:
    pi = debit(sdk, "pm_usBankAccount_success")
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.verify_microdeposits(pi.id, {"amounts": [32, 45]})
    assert info.value.code == "payment_intent_unexpected_state"
    si = sdk.v1.setup_intents.create()
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.verify_microdeposits(si.id, {"descriptor_code": "SM11AA"})
    assert info.value.code == "setup_intent_unexpected_state"


def test_microdeposit_type_amounts_is_a_knob(sb: Sandbox, sdk: Client) -> None:
    sb.payments.microdeposit_type = "amounts"
    intent = _pending(sdk, "setup")
    assert intent.next_action.verify_with_microdeposits.microdeposit_type == "amounts"


def test_hosted_verification_base_is_configurable(sb: Sandbox, sdk: Client) -> None:
    sb.payments.hosted_verification_base = "http://localhost:5000/finconn/sandbox/microdeposits"
    url = _pending(sdk, "payment").next_action.verify_with_microdeposits.hosted_verification_url
    assert url.startswith("http://localhost:5000/finconn/sandbox/microdeposits/sacs_test_")


# --- the Python entry points of the browser half ------------------------------------------


def test_collect_then_confirm_then_verify_by_intent_id(sb: Sandbox, sdk: Client) -> None:
    # payment_method_types is an API parameter (the sandbox and Stripe take it) that this
    # SDK's TypedDict leaves out.
    si = sdk.v1.setup_intents.create(
        cast(SetupIntentCreateParams, {"payment_method_types": ["us_bank_account"]})
    )
    found = sb.payments.intent_for_client_secret(present(si.client_secret))
    assert found["id"] == si.id and found["status"] == "requires_payment_method"
    collected = sb.payments.collect(present(si.client_secret), dict(manual_data()))
    assert collected["status"] == "requires_confirmation" and collected["payment_method"]
    confirmed = sb.payments.confirm_setup_intent(
        si.id, {"client_secret": si.client_secret, "mandate_data": ONLINE}
    )
    assert confirmed["status"] == "requires_action"
    with pytest.raises(ApiError) as info:
        sb.payments.verify_microdeposits(si.id, {"amounts": [1, 2]})
    assert "2 verification attempts remaining" in info.value.message
    done = sb.payments.verify_microdeposits(si.id, {"amounts": [32, 45]})
    assert done["status"] == "succeeded"
    assert sdk.v1.setup_intents.retrieve(si.id).status == "succeeded"


def test_collect_with_a_linked_account_for_a_payment(sb: Sandbox, sdk: Client) -> None:
    account = fc_account(sb, sdk)
    pi = sdk.v1.payment_intents.create({"amount": 1500, "currency": "usd"})
    data = {
        "type": "us_bank_account",
        "us_bank_account": {"financial_connections_account": account.id},
        "billing_details": {"name": "Jenny Rosen"},
    }
    assert sb.payments.collect(present(pi.client_secret), data)["status"] == "requires_confirmation"
    confirmed = sb.payments.confirm_payment_intent(
        pi.id,
        {
            "client_secret": pi.client_secret,
            "mandate_data": {"customer_acceptance": {"type": "online", "online": {}}},
        },
    )
    assert confirmed["status"] == "processing"
    with pytest.raises(ApiError) as info:
        sb.payments.intent_for_client_secret(pi.id + "_secret_wrong")
    assert info.value.param == "client_secret"
