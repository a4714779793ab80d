"""The parameters each payments endpoint accepts, as Stripe's API lists them.

Everything Stripe accepts is accepted; anything else is ``parameter_unknown``. What the
sandbox models (the ``us_bank_account`` branches, mandates, billing details, amounts) is
validated in full. Parameters it accepts but does not model (other payment method types'
options, shipping, hooks, transfer data, ...) are marked :data:`ANY`: any value is taken
and dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .._params import EXPAND, PAGINATION, E, H, I, L, M, S, Spec, validate


def _hash(fields: dict[str, Spec]) -> Spec:
    return Spec("hash", fields=fields)


ANY = Spec("any")
BOOL = Spec("bool")

_TYPES_COMMON = (
    "acss_debit",
    "affirm",
    "afterpay_clearpay",
    "alipay",
    "alma",
    "amazon_pay",
    "au_becs_debit",
    "bacs_debit",
    "bancontact",
    "billie",
    "bizum",
    "blik",
    "boleto",
    "cashapp",
    "crypto",
    "customer_balance",
    "eps",
    "fpx",
    "giropay",
    "grabpay",
    "ideal",
    "kakao_pay",
    "klarna",
    "konbini",
    "kr_card",
    "link",
    "mb_way",
    "mobilepay",
    "multibanco",
    "naver_pay",
    "nz_bank_account",
    "oxxo",
    "p24",
    "pay_by_bank",
    "payco",
    "paynow",
    "paypal",
    "payto",
    "pix",
    "promptpay",
    "revolut_pay",
    "samsung_pay",
    "satispay",
    "scalapay",
    "sepa_debit",
    "sofort",
    "sunbit",
    "swish",
    "twint",
    "upi",
    "wechat_pay",
    "zip",
)
PM_DATA_TYPES = (*_TYPES_COMMON, "us_bank_account")
PM_CREATE_OTHER = tuple(sorted([*_TYPES_COMMON, "card", "custom", "interac_present"]))
LIST_TYPES = tuple(sorted([*PM_DATA_TYPES, "card", "custom"]))
SI_OPTION_OTHER = tuple(
    [
        "acss_debit",
        "amazon_pay",
        "bacs_debit",
        "bizum",
        "card",
        "card_present",
        "klarna",
        "link",
        "paypal",
        "payto",
        "pix",
        "sepa_debit",
        "upi",
    ]
)
PI_OPTION_OTHER = tuple(sorted([*_TYPES_COMMON, "card", "card_present", "interac_present"]))
PERMISSIONS = ("balances", "ownership", "payment_method", "transactions")

ADDRESS = H(city=S(), country=S(), line1=S(), line2=S(), postal_code=S(), state=S())
BILLING = H(address=ADDRESS, email=S(), name=S(), phone=S(), tax_id=S())
US_BANK_ACCOUNT = H(
    account_holder_type=E("company", "individual"),
    account_number=S(),
    account_type=E("checking", "savings"),
    financial_connections_account=S(),
    routing_number=S(),
)
REDISPLAY = E("always", "limited", "unspecified")
PM_DATA = _hash(
    {
        **dict.fromkeys(_TYPES_COMMON, ANY),
        "type": E(*PM_DATA_TYPES, required=True),
        "allow_redisplay": REDISPLAY,
        "billing_details": BILLING,
        "metadata": M(),
        "radar_options": H(session=S()),
        "us_bank_account": US_BANK_ACCOUNT,
        "interac_present": ANY,
    }
)
MANDATE_DATA = H(
    customer_acceptance=H(
        required=True,
        accepted_at=I(),
        offline=H(),
        online=H(ip_address=S(), user_agent=S()),
        type=E("offline", "online", required=True),
    )
)
_FC_OPTIONS = H(
    filters=H(account_subcategories=L(E("checking", "savings"))),
    permissions=L(E(*PERMISSIONS)),
    prefetch=L(E("balances", "ownership", "transactions")),
    return_url=S(),
)
_SI_ACH_OPTIONS = {
    "financial_connections": _FC_OPTIONS,
    "mandate_options": H(collection_method=E("", "paper")),
    "networks": H(requested=L(E("ach", "us_domestic_wire"))),
    "verification_method": E("automatic", "instant", "microdeposits"),
}
SI_OPTIONS = _hash(
    {**dict.fromkeys(SI_OPTION_OTHER, ANY), "us_bank_account": _hash(_SI_ACH_OPTIONS)}
)
PI_OPTIONS = _hash(
    {
        **dict.fromkeys(PI_OPTION_OTHER, ANY),
        "us_bank_account": _hash(
            {
                **_SI_ACH_OPTIONS,
                "setup_future_usage": E("", "none", "off_session", "on_session"),
                "target_date": S(),
                "transaction_purpose": E("", "goods", "other", "services", "unspecified"),
            }
        ),
    }
)

SI_CREATE: dict[str, Spec] = {
    "allowed_payment_method_types": ANY,
    "attach_to_self": BOOL,
    "automatic_payment_methods": H(allow_redirects=E("always", "never"), enabled=BOOL),
    "confirm": BOOL,
    "confirmation_token": S(),
    "customer": S(),
    "customer_account": S(),
    "description": S(),
    "excluded_payment_method_types": ANY,
    "expand": EXPAND,
    "flow_directions": L(E("inbound", "outbound")),
    "mandate_data": MANDATE_DATA,
    "metadata": M(),
    "on_behalf_of": S(),
    "payment_method": S(),
    "payment_method_configuration": S(),
    "payment_method_data": PM_DATA,
    "payment_method_options": SI_OPTIONS,
    "payment_method_types": L(S()),
    "return_url": S(),
    "single_use": H(amount=I(required=True), currency=S(required=True)),
    "usage": E("off_session", "on_session"),
    "use_stripe_sdk": BOOL,
}
SI_UPDATE = {
    k: SI_CREATE[k]
    for k in [
        "allowed_payment_method_types",
        "attach_to_self",
        "customer",
        "customer_account",
        "description",
        "excluded_payment_method_types",
        "expand",
        "flow_directions",
        "metadata",
        "payment_method",
        "payment_method_configuration",
        "payment_method_data",
        "payment_method_options",
        "payment_method_types",
    ]
}
SI_CONFIRM = {
    **{
        k: SI_CREATE[k]
        for k in [
            "allowed_payment_method_types",
            "confirmation_token",
            "expand",
            "mandate_data",
            "payment_method",
            "payment_method_data",
            "payment_method_options",
            "return_url",
            "use_stripe_sdk",
        ]
    },
    "client_secret": S(),
}
PI_CREATE: dict[str, Spec] = {
    "allowed_payment_method_types": ANY,
    "amount": I(required=True),
    "amount_details": ANY,
    "application_fee_amount": I(),
    "automatic_payment_methods": H(allow_redirects=E("always", "never"), enabled=BOOL),
    "capture_method": E("automatic", "automatic_async", "manual"),
    "confirm": BOOL,
    "confirmation_method": E("automatic", "manual"),
    "confirmation_token": S(),
    "currency": S(required=True),
    "customer": S(),
    "customer_account": S(),
    "description": S(),
    "error_on_requires_action": BOOL,
    "excluded_payment_method_types": ANY,
    "expand": EXPAND,
    "hooks": ANY,
    "mandate": S(),
    "mandate_data": MANDATE_DATA,
    "metadata": M(),
    "off_session": ANY,
    "on_behalf_of": S(),
    "payment_details": ANY,
    "payment_method": S(),
    "payment_method_configuration": S(),
    "payment_method_data": PM_DATA,
    "payment_method_options": PI_OPTIONS,
    "payment_method_types": L(S()),
    "radar_options": ANY,
    "receipt_email": S(),
    "return_url": S(),
    "setup_future_usage": E("off_session", "on_session"),
    "shipping": ANY,
    "statement_descriptor": S(),
    "statement_descriptor_suffix": S(),
    "transfer_data": ANY,
    "transfer_group": S(),
    "use_stripe_sdk": BOOL,
}
PI_UPDATE = {
    **{
        k: PI_CREATE[k]
        for k in [
            "allowed_payment_method_types",
            "amount",
            "amount_details",
            "application_fee_amount",
            "capture_method",
            "customer",
            "customer_account",
            "description",
            "excluded_payment_method_types",
            "expand",
            "hooks",
            "metadata",
            "payment_details",
            "payment_method",
            "payment_method_configuration",
            "payment_method_data",
            "payment_method_options",
            "payment_method_types",
            "receipt_email",
            "shipping",
            "statement_descriptor",
            "statement_descriptor_suffix",
            "transfer_data",
            "transfer_group",
        ]
    },
    "amount": I(),
    "currency": S(),
    "setup_future_usage": E("", "off_session", "on_session"),
}
PI_CONFIRM = {
    **{
        k: PI_CREATE[k]
        for k in [
            "allowed_payment_method_types",
            "amount_details",
            "capture_method",
            "confirmation_token",
            "error_on_requires_action",
            "excluded_payment_method_types",
            "expand",
            "hooks",
            "mandate",
            "mandate_data",
            "off_session",
            "payment_details",
            "payment_method",
            "payment_method_data",
            "payment_method_options",
            "payment_method_types",
            "radar_options",
            "receipt_email",
            "return_url",
            "shipping",
            "use_stripe_sdk",
        ]
    },
    "amount_to_confirm": I(),
    "client_secret": S(),
    "setup_future_usage": E("", "off_session", "on_session"),
}
VERIFY = {"amounts": L(I()), "client_secret": S(), "descriptor_code": S(), "expand": EXPAND}
SI_CANCEL = {
    "cancellation_reason": E("abandoned", "duplicate", "requested_by_customer"),
    "expand": EXPAND,
}
PI_CANCEL = {
    "cancellation_reason": E("abandoned", "duplicate", "fraudulent", "requested_by_customer"),
    "expand": EXPAND,
}
RETRIEVE_INTENT = {"client_secret": S(), "expand": EXPAND}
RETRIEVE = {"expand": EXPAND}
PM_CREATE: dict[str, Spec] = {
    "allow_redisplay": REDISPLAY,
    "billing_details": BILLING,
    "customer": S(),
    "expand": EXPAND,
    "metadata": M(),
    "payment_method": S(),
    "radar_options": H(session=S()),
    "type": E(*PM_DATA_TYPES, "card", "custom"),
    "us_bank_account": US_BANK_ACCOUNT,
    **dict.fromkeys(PM_CREATE_OTHER, ANY),
}
PM_LIST = {
    **PAGINATION,
    "allow_redisplay": REDISPLAY,
    "customer": S(),
    "customer_account": S(),
    "type": E(*LIST_TYPES),
}
PI_LIST = {**PAGINATION, "customer": S()}
CUSTOMER_PM_LIST = {**PAGINATION, "allow_redisplay": REDISPLAY, "type": E(*LIST_TYPES)}
ATTACH = {"customer": S(), "customer_account": S(), "expand": EXPAND}


_PREPARED: dict[int, dict[str, Spec]] = {}


def check(params: Mapping[str, Any], specs: Mapping[str, Spec]) -> dict[str, Any]:
    """Validate ``params`` like :func:`validate`, taking and dropping :data:`ANY` values."""
    prepared = _PREPARED.get(id(specs))
    if prepared is None:
        prepared = _PREPARED[id(specs)] = _without_any(specs)
    return validate(_strip(params, specs), prepared)


def _strip(params: Mapping[str, Any], specs: Mapping[str, Spec]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in params.items():
        spec = specs.get(key)
        if spec is not None and spec.kind == "any":
            continue
        if spec is not None and spec.kind == "hash" and isinstance(value, dict):
            value = _strip(value, spec.fields)
        out[key] = value
    return out


def _without_any(specs: Mapping[str, Spec]) -> dict[str, Spec]:
    out: dict[str, Spec] = {}
    for key, spec in specs.items():
        if spec.kind == "any":
            continue
        if spec.kind == "hash":
            spec = Spec("hash", required=spec.required, fields=_without_any(spec.fields))
        out[key] = spec
    return out
