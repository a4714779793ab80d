"""Route handlers for ``/v1/customers``."""

from __future__ import annotations

from typing import Any

from ._data import dumps as _dumps
from ._params import EXPAND, PAGINATION, E, H, I, L, M, S, Spec, not_found, validate
from ._wire import Api, created_filter, expand_paths

_CUSTOMER_EXPANDABLE = ("default_source", "invoice_settings.default_payment_method", "test_clock")


def _address(required: bool = False) -> Spec:
    keys = ("city", "country", "line1", "line2", "postal_code", "state")
    return H(required=required, **{k: S() for k in keys})


# Every parameter Stripe's POST /v1/customers takes. Those of features the sandbox does not
# model (cash balances, tax, tax ids) are validated and have no effect: they only show in
# fields the customer object never includes unless expanded. Ids of objects the sandbox
# does not have (payment_method, source, test_clock) are refused as unknown ids, as Stripe
# refuses an id it does not know.
CUSTOMER_FIELDS: dict[str, Spec] = {
    "address": _address(),
    "balance": I(),
    "business_name": S(),
    "cash_balance": H(settings=H(reconciliation_mode=E("automatic", "manual", "merchant_default"))),
    "description": S(),
    "email": S(),
    "expand": EXPAND,
    "individual_name": S(),
    "invoice_prefix": S(),
    "invoice_settings": H(
        custom_fields=L(H(name=S(required=True), value=S(required=True))),
        default_payment_method=S(),
        footer=S(),
        rendering_options=H(
            amount_tax_display=E("", "exclude_tax", "include_inclusive_tax"), template=S()
        ),
    ),
    "metadata": M(),
    "name": S(),
    "next_invoice_sequence": I(),
    "payment_method": S(),
    "phone": S(),
    "preferred_locales": L(S()),
    "shipping": H(address=_address(required=True), name=S(required=True), phone=S()),
    "source": S(),
    "tax": H(ip_address=S(), validate_location=E("deferred", "immediately")),
    "tax_exempt": E("", "exempt", "none", "reverse"),
    "tax_id_data": L(H(type=S(required=True), value=S(required=True))),
    "test_clock": S(),
}

# Ids the sandbox never has: (parameter path, the name Stripe's "No such ..." error uses).
_UNKNOWN_IDS = (
    (("payment_method",), "PaymentMethod"),
    (("source",), "source"),
    (("test_clock",), "test_clock"),
    (("invoice_settings", "default_payment_method"), "PaymentMethod"),
)


def _refuse_unknown_ids(p: dict[str, Any]) -> None:
    for path, kind in _UNKNOWN_IDS:
        value: Any = p
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value:
            name = path[0] + "".join(f"[{k}]" for k in path[1:])
            raise not_found(kind, str(value), param=name, status=400)


def create_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, CUSTOMER_FIELDS)
    expand_paths(p, _CUSTOMER_EXPANDABLE)
    _refuse_unknown_ids(p)
    return 200, _dumps(api.sb.create_customer(p))


def update_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, CUSTOMER_FIELDS)
    expand_paths(p, _CUSTOMER_EXPANDABLE)
    _refuse_unknown_ids(p)
    return 200, _dumps(api.sb.update_customer(args[0], p))


def retrieve_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    expand_paths(p, _CUSTOMER_EXPANDABLE)
    return 200, _dumps(api.sb.customer(args[0]))


def delete_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    validate(params, {})
    return 200, _dumps(api.sb.delete_customer(args[0]))


def list_customers(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(
        params,
        {**PAGINATION, "email": S(), "created": Spec("int_or_range"), "test_clock": S()},
    )
    expand_paths(p, _CUSTOMER_EXPANDABLE, "data.")
    _refuse_unknown_ids({"test_clock": p.get("test_clock")})
    where, qargs = "1 = 1", []
    if p.get("email"):
        where += " AND email = ?"
        qargs.append(p["email"])
    where, qargs = created_filter(p.get("created"), where, qargs)
    return api.page(
        p, table="customers", where=where, args=tuple(qargs), url="/v1/customers", kind="customer"
    )
