"""Helpers shared by the sandbox's payments tests: linked accounts, PaymentMethods, intents."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import stripe
from sandbox_support import link
from stripe.params import (
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    PaymentIntentCreateParamsMandateData,
    PaymentMethodCreateParams,
    SetupIntentConfirmParams,
    SetupIntentCreateParams,
    SetupIntentCreateParamsMandateData,
    SetupIntentCreateParamsPaymentMethodData,
)

from flask_finconn.sandbox import Sandbox

IP = "203.0.113.7"
AGENT = "Mozilla/5.0 (test)"
ONLINE: SetupIntentCreateParamsMandateData = {
    "customer_acceptance": {"type": "online", "online": {"ip_address": IP, "user_agent": AGENT}}
}
PI_ONLINE: PaymentIntentCreateParamsMandateData = {
    "customer_acceptance": {"type": "online", "online": {"ip_address": IP, "user_agent": AGENT}}
}
# The same online acceptance for PaymentIntents and as the body of /confirm: the SDK types
# each endpoint's mandate_data separately, so each gets its own literal.
SI_CONFIRM_ONLINE: SetupIntentConfirmParams = {
    "mandate_data": {
        "customer_acceptance": {"type": "online", "online": {"ip_address": IP, "user_agent": AGENT}}
    }
}
PI_CONFIRM_ONLINE: PaymentIntentConfirmParams = {
    "mandate_data": {
        "customer_acceptance": {"type": "online", "online": {"ip_address": IP, "user_agent": AGENT}}
    }
}
ROUTING = "110000000"
SUCCESS = "000123456789"


def fc_account(
    sb: Sandbox,
    client: stripe.StripeClient,
    key: str = "checking",
    institution: str = "bank_nonoauth",
    permissions: tuple[str, ...] = ("payment_method", "balances"),
) -> Any:
    """A linked account (with the ``payment_method`` permission unless told otherwise)."""
    return link(sb, client, institution, accounts=[key], permissions=permissions)[0]


def customer_of(account: Any) -> str:
    return str(account.account_holder.customer)


def manual_data(number: str = SUCCESS, routing: str = ROUTING) -> PaymentMethodCreateParams:
    """A PaymentMethod (or ``payment_method_data``) for a manually entered account."""
    return {
        "type": "us_bank_account",
        "us_bank_account": {
            "account_number": number,
            "routing_number": routing,
            "account_holder_type": "individual",
        },
        "billing_details": {"name": "Jenny Rosen", "email": "jenny@example.com"},
    }


def fc_data(account_id: str) -> PaymentMethodCreateParams:
    """A PaymentMethod (or ``payment_method_data``) for a linked account."""
    return {
        "type": "us_bank_account",
        "us_bank_account": {"financial_connections_account": account_id},
        "billing_details": {"name": "Jenny Rosen"},
    }


def setup_data(data: PaymentMethodCreateParams) -> SetupIntentCreateParamsPaymentMethodData:
    """``data`` as a SetupIntent's ``payment_method_data``."""
    # The API takes the body of /v1/payment_methods as payment_method_data; the SDK types the
    # two separately.
    return cast(SetupIntentCreateParamsPaymentMethodData, data)


def confirmed_setup(data: PaymentMethodCreateParams) -> SetupIntentCreateParams:
    """SetupIntent create parameters that confirm ``data`` with an online mandate."""
    return {"payment_method_data": setup_data(data), "confirm": True, "mandate_data": ONLINE}


def debit(
    client: stripe.StripeClient,
    payment_method: str | None = None,
    *,
    data: Mapping[str, object] | None = None,
    amount: int = 1099,
    customer: str | None = None,
    **extra: Any,
) -> Any:
    """Create and confirm a PaymentIntent with an online mandate."""
    params: dict[str, Any] = {
        "amount": amount,
        "currency": "usd",
        "payment_method_types": ["us_bank_account"],
        "confirm": True,
        "mandate_data": ONLINE,
        **extra,
    }
    if payment_method:
        params["payment_method"] = payment_method
    if data:
        params["payment_method_data"] = data
    if customer:
        params["customer"] = customer
    # payment_method_types is an API parameter (the sandbox and Stripe take it) that this
    # SDK's TypedDict leaves out, ``data`` is typed for /v1/payment_methods, and ``extra``
    # is whatever a test adds.
    return client.v1.payment_intents.create(cast(PaymentIntentCreateParams, params))


def ref(value: object) -> str:
    """The id an unexpanded reference holds, failing the test when it is null or expanded
    (the SDK types a reference as an id, the object, or null)."""
    assert isinstance(value, str), f"Expected an unexpanded id, got {value!r}."
    return value


def error_of(raised: stripe.StripeError) -> dict[str, Any]:
    """The ``error`` object of an API error's JSON body (the SDK types the body as object)."""
    error: dict[str, Any] = cast(dict[str, Any], raised.json_body)["error"]
    return error


def event_types(sb: Sandbox, prefix: str = "") -> list[str]:
    return [e["type"] for e in sb.events() if e["type"].startswith(prefix)]


def events_for(sb: Sandbox, obj_id: str) -> list[str]:
    return [e["type"] for e in sb.events() if e["data"]["object"].get("id") == obj_id]
