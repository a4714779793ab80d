"""Route handlers for ``/v1/customers``."""

from __future__ import annotations

from typing import Any

from ._data import dumps as _dumps
from ._params import EXPAND, PAGINATION, M, S, Spec, validate
from ._wire import Api, expand_paths

_CUSTOMER_EXPANDABLE = ("default_source", "invoice_settings.default_payment_method", "test_clock")
CUSTOMER_FIELDS: dict[str, Spec] = {
    "email": S(),
    "name": S(),
    "phone": S(),
    "description": S(),
    "metadata": M(),
    "expand": EXPAND,
}


def create_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, CUSTOMER_FIELDS)
    expand_paths(p, _CUSTOMER_EXPANDABLE)
    return 200, _dumps(api.sb.create_customer(p))


def update_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, CUSTOMER_FIELDS)
    expand_paths(p, _CUSTOMER_EXPANDABLE)
    return 200, _dumps(api.sb.update_customer(args[0], p))


def retrieve_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    expand_paths(p, _CUSTOMER_EXPANDABLE)
    return 200, _dumps(api.sb.customer(args[0]))


def list_customers(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {**PAGINATION, "email": S()})
    expand_paths(p, _CUSTOMER_EXPANDABLE, "data.")
    where, qargs = ("email = ?", (p["email"],)) if p.get("email") else ("1 = 1", ())
    return api.page(
        p, table="customers", where=where, args=qargs, url="/v1/customers", kind="customer"
    )
