"""ACH payments in the sandbox, driven through the real stripe SDK: PaymentMethods,
SetupIntents, PaymentIntents, mandates, charges, Stripe's test accounts and tokens."""

from __future__ import annotations

from typing import Any, cast

import pytest
import stripe
from sandbox_payments_support import (
    ONLINE,
    PI_CONFIRM_ONLINE,
    ROUTING,
    SI_CONFIRM_ONLINE,
    SUCCESS,
    confirmed_setup,
    customer_of,
    debit,
    error_of,
    event_types,
    events_for,
    fc_account,
    fc_data,
    manual_data,
    ref,
    setup_data,
)
from sandbox_support import client_fixture, present, sb_fixture  # noqa: F401
from stripe.params import (
    PaymentIntentCreateParams,
    PaymentIntentUpdateParams,
    PaymentMethodCreateParams,
    SetupIntentCreateParams,
    SetupIntentUpdateParams,
)

from flask_finconn.sandbox import Sandbox

Client = stripe.StripeClient


@pytest.fixture(name="sdk")
def sdk_fixture(sb: Sandbox) -> Client:
    return sb.stripe_client()


# --- PaymentMethods ---------------------------------------------------------------------


def test_payment_method_from_a_linked_account(sb: Sandbox, client: Client) -> None:
    account = fc_account(sb, client)
    pm = client.v1.payment_methods.create(
        {
            "type": "us_bank_account",
            "us_bank_account": {"financial_connections_account": account.id},
            "billing_details": {"name": "Jenny Rosen", "email": "jenny@example.com"},
            "metadata": {"order": "7"},
        }
    )
    assert isinstance(pm, stripe.PaymentMethod)
    assert pm.id.startswith("pm_") and pm.type == "us_bank_account"
    bank = present(pm.us_bank_account)
    assert bank.financial_connections_account == account.id
    assert (bank.last4, bank.account_type, bank.routing_number) == ("6789", "checking", ROUTING)
    assert present(bank.networks).supported == ["ach"] and bank.fingerprint
    assert pm.billing_details.name == "Jenny Rosen" and present(pm.metadata)["order"] == "7"
    assert present(client.v1.payment_methods.retrieve(pm.id).us_bank_account).last4 == "6789"

    again = client.v1.payment_methods.create(
        {
            "type": "us_bank_account",
            "us_bank_account": {"financial_connections_account": account.id},
            "billing_details": {"name": "Jenny Rosen"},
        }
    )
    assert again.id != pm.id and present(again.us_bank_account).fingerprint == bank.fingerprint


@pytest.mark.parametrize(
    ("institution", "key", "permissions", "code", "words"),
    [
        ("bank_nonoauth", "checking", ("balances",), None, "'payment_method' permission"),
        ("bank_nonoauth", "credit_card", ("balances",), None, "checking and savings"),
        ("invalid_payment", "mortgage", ("balances",), None, "checking and savings"),
    ],
)
def test_payment_method_refuses_accounts_that_cannot_be_debited(
    sb: Sandbox,
    sdk: Client,
    institution: str,
    key: str,
    permissions: tuple[str, ...],
    code: str | None,
    words: str,
) -> None:
    account = fc_account(sb, sdk, key, institution, permissions)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_methods.create(fc_data(account.id))
    assert info.value.http_status == 400 and info.value.code == code
    assert info.value.param == "us_bank_account[financial_connections_account]"
    assert words in str(info.value)


def test_payment_method_refuses_an_inactive_or_unknown_account(sb: Sandbox, sdk: Client) -> None:
    account = fc_account(sb, sdk)
    sb.deactivate(account.id)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_methods.create(fc_data(account.id))
    assert info.value.code == "financial_connections_account_inactive"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_methods.create(fc_data("fca_nope"))
    assert info.value.code == "resource_missing"


def test_manual_entry_payment_method_and_its_checks(sdk: Client) -> None:
    pm = sdk.v1.payment_methods.create(manual_data())
    bank = present(pm.us_bank_account)
    assert bank.financial_connections_account is None
    assert bank.last4 == "6789" and bank.bank_name
    same = sdk.v1.payment_methods.create(manual_data())
    other = sdk.v1.payment_methods.create(manual_data("000222222227"))
    assert present(same.us_bank_account).fingerprint == bank.fingerprint
    assert present(other.us_bank_account).fingerprint != bank.fingerprint
    nameless: PaymentMethodCreateParams = {**manual_data(), "billing_details": {}}
    for data, param in (
        (nameless, "billing_details[name]"),
        (manual_data(routing="12"), "us_bank_account[routing_number]"),
        (manual_data(number="12ab"), "us_bank_account[account_number]"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as info:
            sdk.v1.payment_methods.create(data)
        assert info.value.param == param


def test_attach_list_and_detach(sb: Sandbox, client: Client) -> None:
    customer = client.v1.customers.create({"email": "a@example.com"})
    first = client.v1.payment_methods.create(manual_data())
    second = client.v1.payment_methods.create(manual_data("000222222227"))
    for pm in (first, second):
        attached = client.v1.payment_methods.attach(pm.id, {"customer": customer.id})
        assert attached.customer == customer.id
    listed = client.v1.customers.payment_methods.list(customer.id, {"type": "us_bank_account"})
    assert [p.id for p in listed.data] == [second.id, first.id]
    page = client.v1.payment_methods.list({"customer": customer.id, "limit": 1})
    assert [p.id for p in page.data] == [second.id] and page.has_more
    rest = client.v1.payment_methods.list({"customer": customer.id, "starting_after": second.id})
    assert [p.id for p in rest.data] == [first.id]
    detached = client.v1.payment_methods.detach(first.id)
    assert detached.customer is None
    listed = client.v1.customers.payment_methods.list(customer.id)
    assert [p.id for p in listed.data] == [second.id]
    assert event_types(sb, "payment_method.") == [
        "payment_method.attached",
        "payment_method.attached",
        "payment_method.detached",
    ]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_methods.detach(first.id)


# --- SetupIntents -----------------------------------------------------------------------


def test_setup_intent_with_a_linked_account_succeeds(sb: Sandbox, client: Client) -> None:
    account = fc_account(sb, client)
    customer = customer_of(account)
    si = client.v1.setup_intents.create(
        cast(  # the SDK's types lack payment_method_types
            SetupIntentCreateParams,
            {
                "customer": customer,
                "payment_method_types": ["us_bank_account"],
                "payment_method_options": {
                    "us_bank_account": {
                        "financial_connections": {"permissions": ["payment_method", "balances"]}
                    }
                },
            },
        )
    )
    assert si.status == "requires_payment_method" and present(si.client_secret).startswith(
        si.id + "_secret_"
    )
    options = present(present(si.payment_method_options).us_bank_account)
    assert present(options.financial_connections).permissions == ["payment_method", "balances"]
    assert options.verification_method == "automatic"
    # The API takes the body of /v1/payment_methods as payment_method_data; the SDK types the
    # two separately.
    si = client.v1.setup_intents.update(
        si.id, cast(SetupIntentUpdateParams, {"payment_method_data": fc_data(account.id)})
    )
    assert si.status == "requires_confirmation"
    si = client.v1.setup_intents.confirm(si.id, SI_CONFIRM_ONLINE)
    assert si.status == "succeeded" and ref(si.mandate).startswith("mandate_")
    mandate = client.v1.mandates.retrieve(ref(si.mandate))
    assert (mandate.status, mandate.type, mandate.payment_method) == (
        "active",
        "multi_use",
        si.payment_method,
    )
    assert present(mandate.customer_acceptance.online).ip_address == "203.0.113.7"
    pm = client.v1.payment_methods.retrieve(ref(si.payment_method))
    assert pm.customer == customer
    assert events_for(sb, si.id) == ["setup_intent.created", "setup_intent.succeeded"]
    assert "payment_method.attached" in event_types(sb)


def test_setup_intent_mandate_rules(sb: Sandbox, sdk: Client) -> None:
    account = fc_account(sb, sdk)
    base: SetupIntentCreateParams = {
        "payment_method_data": setup_data(fc_data(account.id)),
        "confirm": True,
    }
    with pytest.raises(stripe.InvalidRequestError) as info:
        # Deliberately without the ip_address the SDK's types require.
        sdk.v1.setup_intents.create(
            cast(
                SetupIntentCreateParams,
                {
                    **base,
                    "mandate_data": {
                        "customer_acceptance": {"type": "online", "online": {"user_agent": "x"}}
                    },
                },
            )
        )
    assert info.value.code == "parameter_missing"
    assert info.value.param == "mandate_data[customer_acceptance][online][ip_address]"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.create(
            {**base, "mandate_data": {"customer_acceptance": {"type": "online"}}}
        )
    assert info.value.param == "mandate_data[customer_acceptance][online]"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.create(base)
    assert info.value.code == "setup_intent_mandate_invalid" and "requires a mandate" in str(
        info.value
    )
    # On /confirm the client may leave the IP address and user agent to be inferred.
    si = sdk.v1.setup_intents.create({"payment_method_data": setup_data(fc_data(account.id))})
    si = sdk.v1.setup_intents.confirm(
        si.id, {"mandate_data": {"customer_acceptance": {"type": "online", "online": {}}}}
    )
    assert si.status == "succeeded"
    offline = sdk.v1.setup_intents.create(
        {
            **base,
            "mandate_data": {"customer_acceptance": {"type": "offline"}},
        }
    )
    assert sdk.v1.mandates.retrieve(ref(offline.mandate)).customer_acceptance.type == "offline"


def test_setup_intent_option_rules(sb: Sandbox, sdk: Client) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.create(
            {
                "payment_method_options": {
                    "us_bank_account": {"financial_connections": {"permissions": ["balances"]}}
                }
            }
        )
    assert "must include payment_method" in str(info.value)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.create(
            {
                "payment_method_options": {"us_bank_account": {"verification_method": "instant"}},
                "payment_method_data": setup_data(manual_data()),
            }
        )
    assert info.value.code == "payment_method_invalid_parameter"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.confirm(sdk.v1.setup_intents.create().id, SI_CONFIRM_ONLINE)
    assert "missing a payment method" in str(info.value)


def test_setup_intent_cancel_from_each_open_status(sb: Sandbox, sdk: Client) -> None:
    first = sdk.v1.setup_intents.create()
    second = sdk.v1.setup_intents.create({"payment_method_data": setup_data(manual_data())})
    third = sdk.v1.setup_intents.create(confirmed_setup(manual_data()))
    assert [s.status for s in (first, second, third)] == [
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ]
    for si in (first, second, third):
        canceled = sdk.v1.setup_intents.cancel(si.id, {"cancellation_reason": "abandoned"})
        assert canceled.status == "canceled" and canceled.cancellation_reason == "abandoned"
    assert sdk.v1.mandates.retrieve(ref(third.mandate)).status == "inactive"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.setup_intents.cancel(first.id)
    assert info.value.code == "setup_intent_unexpected_state"
    assert error_of(info.value)["setup_intent"]["id"] == first.id
    assert event_types(sb, "setup_intent.canceled") == ["setup_intent.canceled"] * 3


# --- PaymentIntents ---------------------------------------------------------------------


def test_payment_intent_from_a_linked_account_settles(sb: Sandbox, client: Client) -> None:
    account = fc_account(sb, client)
    pi = client.v1.payment_intents.create(
        cast(  # the SDK's types lack payment_method_types
            PaymentIntentCreateParams,
            {
                "amount": 2500,
                "currency": "usd",
                "customer": customer_of(account),
                "payment_method_types": ["us_bank_account"],
                "description": "Invoice 12",
            },
        )
    )
    assert pi.status == "requires_payment_method" and pi.processing is None
    # The API takes the body of /v1/payment_methods as payment_method_data; the SDK types the
    # two separately.
    pi = client.v1.payment_intents.update(
        pi.id, cast(PaymentIntentUpdateParams, {"payment_method_data": fc_data(account.id)})
    )
    assert pi.status == "requires_confirmation"
    pi = client.v1.payment_intents.confirm(pi.id, PI_CONFIRM_ONLINE)
    assert pi.status == "processing" and ref(pi.latest_charge).startswith("py_")
    charge = client.v1.charges.retrieve(ref(pi.latest_charge))
    assert charge.status == "pending" and charge.amount == 2500
    details = present(present(charge.payment_method_details).us_bank_account)
    assert details.payment_reference is None and ref(details.mandate).startswith("mandate_")
    mandate = client.v1.mandates.retrieve(ref(details.mandate))
    assert mandate.type == "single_use" and present(mandate.single_use).amount == 2500

    sb.advance_time(sb.payments.settlement_delay)
    pi = client.v1.payment_intents.retrieve(pi.id, {"expand": ["latest_charge"]})
    assert pi.status == "succeeded" and pi.amount_received == 2500
    latest = cast(stripe.Charge, pi.latest_charge)  # expanded
    assert latest.status == "succeeded" and latest.paid
    assert present(present(latest.payment_method_details).us_bank_account).payment_reference
    assert events_for(sb, pi.id) == [
        "payment_intent.created",
        "payment_intent.processing",
        "payment_intent.succeeded",
    ]
    assert events_for(sb, charge.id) == ["charge.pending", "charge.succeeded"]


def test_processing_waits_for_the_settlement_delay(sb: Sandbox, sdk: Client) -> None:
    pi = debit(sdk, "pm_usBankAccount_success")
    sb.advance_time(sb.payments.settlement_delay / 2)
    assert sdk.v1.payment_intents.retrieve(pi.id).status == "processing"
    sb.advance_time(sb.payments.settlement_delay)
    assert sdk.v1.payment_intents.retrieve(pi.id).status == "succeeded"


def test_the_settlement_delay_is_a_constructor_knob() -> None:
    sb = Sandbox(":memory:", settlement_delay=3600)
    try:
        sdk = sb.stripe_client()
        pi = debit(sdk, "pm_usBankAccount_success")
        sb.advance_time(3599)
        assert sdk.v1.payment_intents.retrieve(pi.id).status == "processing"
        sb.advance_time(1)
        assert sdk.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    finally:
        sb.close()


def test_a_saved_mandate_is_reused_and_a_missing_one_is_refused(sb: Sandbox, sdk: Client) -> None:
    account = fc_account(sb, sdk)
    customer = customer_of(account)
    si = sdk.v1.setup_intents.create(
        {
            "customer": customer,
            "payment_method_data": setup_data(fc_data(account.id)),
            "confirm": True,
            "mandate_data": ONLINE,
        }
    )
    pi = sdk.v1.payment_intents.create(
        {
            "amount": 1000,
            "currency": "usd",
            "customer": customer,
            "payment_method": ref(si.payment_method),
            "confirm": True,
            "off_session": True,
        }
    )
    assert pi.status == "processing"
    charge = sdk.v1.charges.retrieve(ref(pi.latest_charge))
    assert present(present(charge.payment_method_details).us_bank_account).mandate == si.mandate

    fresh = sdk.v1.payment_methods.create(fc_data(account.id))
    pi = sdk.v1.payment_intents.create(
        {"amount": 1000, "currency": "usd", "payment_method": fresh.id}
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.confirm(pi.id)
    assert "requires a mandate, but no existing mandate was found" in str(info.value)
    assert info.value.code == "payment_intent_mandate_invalid"
    assert sdk.v1.payment_intents.retrieve(pi.id).status == "requires_confirmation"
    explicit = sdk.v1.payment_intents.confirm(
        sdk.v1.payment_intents.create(
            {"amount": 1000, "currency": "usd", "payment_method": ref(si.payment_method)}
        ).id,
        {"mandate": ref(si.mandate)},
    )
    assert explicit.status == "processing"


def test_setup_future_usage_saves_the_payment_method(sb: Sandbox, sdk: Client) -> None:
    account = fc_account(sb, sdk)
    pi = debit(
        sdk,
        data=fc_data(account.id),
        customer=customer_of(account),
        setup_future_usage="off_session",
    )
    pm = sdk.v1.payment_methods.retrieve(pi.payment_method)
    assert pm.customer == customer_of(account)
    charge = sdk.v1.charges.retrieve(ref(pi.latest_charge))
    mandate = present(present(charge.payment_method_details).us_bank_account)
    assert sdk.v1.mandates.retrieve(ref(mandate.mandate)).type == "multi_use"


def test_payment_intent_validation(sdk: Client) -> None:
    cases: tuple[tuple[PaymentIntentCreateParams, str], ...] = (
        ({"amount": 10, "currency": "usd"}, "amount_too_small"),
        ({"amount": 1000, "currency": "eur"}, "parameter_invalid_string"),
        # Deliberately without the currency the SDK's types require.
        (cast(PaymentIntentCreateParams, {"amount": 1000}), "parameter_missing"),
    )
    for params, code in cases:
        with pytest.raises(stripe.InvalidRequestError) as info:
            sdk.v1.payment_intents.create(params)
        assert info.value.code == code
    card_only = sdk.v1.payment_intents.create(
        cast(  # the SDK's types lack payment_method_types
            PaymentIntentCreateParams,
            {"amount": 1000, "currency": "usd", "payment_method_types": ["card"]},
        )
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.update(card_only.id, {"payment_method": "pm_usBankAccount_success"})
    assert "not allowed" in str(info.value)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.create(
            {
                "amount": 1000,
                "currency": "usd",
                "payment_method_options": {
                    "us_bank_account": {
                        "verification_method": "microdeposits",
                        "target_date": "2030-01-10",
                    }
                },
            }
        )
    assert info.value.param == "payment_method_options[us_bank_account][target_date]"


def test_payment_intent_cancel_rules(sb: Sandbox, sdk: Client) -> None:
    processing = debit(sdk, "pm_usBankAccount_processing")
    canceled = sdk.v1.payment_intents.cancel(processing.id)
    assert canceled.status == "canceled" and canceled.canceled_at
    assert sdk.v1.charges.retrieve(processing.latest_charge).status == "failed"
    settled = debit(sdk, "pm_usBankAccount_success")
    sb.advance_time(sb.payments.settlement_delay)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.cancel(settled.id)
    assert info.value.code == "payment_intent_unexpected_state"
    assert "status of succeeded" in str(info.value)
    assert error_of(info.value)["payment_intent"]["status"] == "succeeded"
    assert "payment_intent.canceled" in events_for(sb, processing.id)


# --- Stripe's test accounts and tokens ----------------------------------------------------

FAILING = [
    ("000111111113", "accountClosed", "account_closed"),
    ("000000004954", "riskLevelHighest", "payment_intent_payment_attempt_failed"),
    ("000111111116", "noAccount", "no_account"),
    ("000222222227", "insufficientFunds", "insufficient_funds"),
    ("000333333335", "debitNotAuthorized", "debit_not_authorized"),
    ("000444444440", "invalidCurrency", "invalid_currency"),
    ("000777777771", "weeklyLimitExceeded", "payment_intent_payment_attempt_failed"),
    ("000888888885", None, "bank_account_unusable"),
]


def _verified_manual(sdk: Client, number: str) -> Any:
    """A PaymentIntent on a manually entered account, microdeposits verified."""
    pi = debit(sdk, data=manual_data(number))
    assert pi.status == "requires_action"
    return sdk.v1.payment_intents.verify_microdeposits(pi.id, {"descriptor_code": "SM11AA"})


@pytest.mark.parametrize(("number", "token", "code"), FAILING)
def test_failing_test_accounts_return_while_processing(
    sb: Sandbox, sdk: Client, number: str, token: str | None, code: str
) -> None:
    entries = [_verified_manual(sdk, number)]
    if token:
        entries.append(debit(sdk, f"pm_usBankAccount_{token}"))
    for pi in entries:
        assert pi.status == "processing"
        sb.advance_time(sb.payments.settlement_delay)
        pi = sdk.v1.payment_intents.retrieve(pi.id)
        assert pi.status == "requires_payment_method" and pi.payment_method is None
        error = present(pi.last_payment_error)
        assert error.code == code
        assert present(present(error.payment_method).us_bank_account).last4 == number[-4:]
        charge = sdk.v1.charges.retrieve(ref(pi.latest_charge))
        assert charge.status == "failed" and charge.failure_code == code
        assert charge.failure_message == error.message
        assert events_for(sb, pi.id)[-1] == "payment_intent.payment_failed"
        assert events_for(sb, charge.id) == ["charge.pending", "charge.failed"]


@pytest.mark.parametrize(
    ("number", "network_code", "reason"),
    [
        ("000111111113", "R02", "bank_account_closed"),
        ("000111111116", "R03", "bank_account_invalid_details"),
        ("000888888885", None, "tokenized_account_number_deactivated"),
    ],
)
def test_a_return_that_blocks_the_account(
    sb: Sandbox, sdk: Client, number: str, network_code: str | None, reason: str
) -> None:
    customer = sdk.v1.customers.create()
    si = sdk.v1.setup_intents.create(
        {
            "customer": customer.id,
            "payment_method_data": setup_data(manual_data(number)),
            "confirm": True,
            "mandate_data": ONLINE,
        }
    )
    sdk.v1.setup_intents.verify_microdeposits(si.id, {"amounts": [32, 45]})
    pi = debit(sdk, ref(si.payment_method), customer=customer.id)
    sb.advance_time(sb.payments.settlement_delay)
    pm = sdk.v1.payment_methods.retrieve(ref(si.payment_method))
    blocked = present(present(present(pm.us_bank_account).status_details).blocked)
    assert (blocked.network_code, blocked.reason) == (network_code, reason)
    assert "payment_method.automatically_updated" in events_for(sb, pm.id)
    with pytest.raises(stripe.CardError) as info:
        debit(sdk, ref(si.payment_method), customer=customer.id)
    assert info.value.http_status == 402 and info.value.code == "bank_account_unusable"
    failed = error_of(info.value)["payment_intent"]
    assert failed["status"] == "requires_payment_method"
    assert present(sdk.v1.payment_intents.retrieve(failed["id"]).last_payment_error).code == (
        "bank_account_unusable"
    )
    assert sdk.v1.payment_intents.retrieve(pi.id).status == "requires_payment_method"


def test_insufficient_funds_never_blocks(sb: Sandbox, sdk: Client) -> None:
    pi = debit(sdk, "pm_usBankAccount_insufficientFunds")
    sb.advance_time(sb.payments.settlement_delay)
    pm = present(present(sdk.v1.payment_intents.retrieve(pi.id).last_payment_error).payment_method)
    assert present(pm.us_bank_account).status_details is None
    again = debit(sdk, pm.id)
    assert again.status == "processing"


def test_success_token_and_account(sb: Sandbox, sdk: Client) -> None:
    for pi in (_verified_manual(sdk, SUCCESS), debit(sdk, "pm_usBankAccount_success")):
        sb.advance_time(sb.payments.settlement_delay)
        assert sdk.v1.payment_intents.retrieve(pi.id).status == "succeeded"
    first = debit(sdk, "pm_usBankAccount_success")
    second = debit(sdk, "pm_usBankAccount_success")
    assert first.payment_method != second.payment_method, "each use of a token is a new PM"


def test_list_payment_intents_by_customer_newest_first(sdk: Client) -> None:
    ada = sdk.v1.customers.create({"email": "ada@example.com"}).id
    bob = sdk.v1.customers.create({"email": "bob@example.com"}).id
    first, theirs, second, third = (
        debit(sdk, "pm_usBankAccount_success", customer=customer, amount=amount)
        for customer, amount in ((ada, 100), (bob, 200), (ada, 300), (ada, 400))
    )
    page = sdk.v1.payment_intents.list({"customer": ada, "limit": 2})
    assert [pi.id for pi in page.data] == [third.id, second.id] and page.has_more
    assert [pi.amount for pi in page.data] == [400, 300]
    rest = sdk.v1.payment_intents.list({"customer": ada, "starting_after": second.id})
    assert [pi.id for pi in rest.data] == [first.id] and not rest.has_more
    back = sdk.v1.payment_intents.list({"customer": ada, "ending_before": first.id})
    assert [pi.id for pi in back.data] == [third.id, second.id]
    everyone = sdk.v1.payment_intents.list({"expand": ["data.customer"]})
    assert [cast(Any, pi.customer).id for pi in everyone.data] == [ada, ada, bob, ada]
    assert theirs.id in [pi.id for pi in everyone.data]
    with pytest.raises(stripe.InvalidRequestError) as foreign:
        sdk.v1.payment_intents.list({"customer": ada, "starting_after": theirs.id})
    assert error_of(foreign.value)["code"] == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        sdk.v1.payment_intents.list(cast(Any, {"status": "succeeded"}))  # not a filter
    assert error_of(unknown.value)["code"] == "parameter_unknown"


def test_dispute_account_succeeds_then_is_disputed(sb: Sandbox, sdk: Client) -> None:
    for pi in (_verified_manual(sdk, "000555555559"), debit(sdk, "pm_usBankAccount_dispute")):
        sb.advance_time(sb.payments.settlement_delay)
        assert sdk.v1.payment_intents.retrieve(pi.id).status == "succeeded"
        sb.advance_time(sb.payments.settlement_delay)
        pi = sdk.v1.payment_intents.retrieve(pi.id)
        assert pi.status == "succeeded"
        charge = sdk.v1.charges.retrieve(ref(pi.latest_charge))
        assert charge.disputed
        bank = present(present(charge.payment_method_details).us_bank_account)
        mandate = sdk.v1.mandates.retrieve(ref(bank.mandate))
        assert mandate.status == "inactive"
        assert events_for(sb, mandate.id)[-1] == "mandate.updated"
        disputes = [
            e
            for e in sb.events()
            if e["type"].startswith("charge.dispute.")
            and e["data"]["object"]["charge"] == charge.id
        ]
        assert [e["type"] for e in disputes] == ["charge.dispute.created", "charge.dispute.closed"]
        assert disputes[0]["data"]["object"]["status"] == "lost"


def test_processing_account_stays_processing(sb: Sandbox, sdk: Client) -> None:
    for pi in (_verified_manual(sdk, "000000000009"), debit(sdk, "pm_usBankAccount_processing")):
        sb.advance_time(30 * 86400)
        assert sdk.v1.payment_intents.retrieve(pi.id).status == "processing"


def test_fail_microdeposits_account(sb: Sandbox, sdk: Client) -> None:
    si = sdk.v1.setup_intents.create(
        {
            "payment_method_data": setup_data(manual_data("000666666661")),
            "confirm": True,
            "mandate_data": ONLINE,
        }
    )
    assert si.status == "requires_payment_method"
    assert present(si.last_setup_error).code == "payment_method_microdeposit_failed"
    assert events_for(sb, si.id) == ["setup_intent.created", "setup_intent.setup_failed"]
    for pi in (
        debit(sdk, data=manual_data("000666666661")),
        debit(sdk, "pm_usBankAccount_failMicrodeposits"),
    ):
        assert pi.status == "requires_payment_method"
        assert pi.last_payment_error.code == "payment_method_microdeposit_failed"
        assert pi.latest_charge is None


def test_other_routing_numbers_succeed(sb: Sandbox, sdk: Client) -> None:
    pi = debit(sdk, data=manual_data("000111111113", routing="021000021"))
    pi = sdk.v1.payment_intents.verify_microdeposits(pi.id, {"amounts": [32, 45]})
    sb.advance_time(sb.payments.settlement_delay)
    assert sdk.v1.payment_intents.retrieve(pi.id).status == "succeeded"


def test_payment_intent_cancel_from_each_requires_status(sb: Sandbox, sdk: Client) -> None:
    intents = [
        sdk.v1.payment_intents.create({"amount": 1000, "currency": "usd"}),
        sdk.v1.payment_intents.create(
            {"amount": 1000, "currency": "usd", "payment_method": "pm_usBankAccount_success"}
        ),
        debit(sdk, data=manual_data()),
    ]
    assert [pi.status for pi in intents] == [
        "requires_payment_method",
        "requires_confirmation",
        "requires_action",
    ]
    for pi in intents:
        canceled = sdk.v1.payment_intents.cancel(pi.id, {"cancellation_reason": "duplicate"})
        assert canceled.status == "canceled" and canceled.cancellation_reason == "duplicate"
        assert canceled.next_action is None
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.verify_microdeposits(intents[2].id, {"amounts": [32, 45]})
    assert info.value.code == "payment_intent_unexpected_state"
    with pytest.raises(stripe.InvalidRequestError) as info:
        sdk.v1.payment_intents.confirm(intents[1].id, PI_CONFIRM_ONLINE)
    assert info.value.code == "payment_intent_unexpected_state"
