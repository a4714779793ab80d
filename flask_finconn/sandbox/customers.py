"""Customers: create, update, read and delete ``cus_`` objects."""

from __future__ import annotations

import json
from typing import Any

from . import _data
from ._data import dumps as _dumps
from ._kernel import Kernel
from ._params import not_found


class Customers:
    """The customers of one sandbox."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.store = kernel.store

    def create(self, params: dict[str, Any]) -> dict[str, Any]:
        """Create a customer from validated API parameters; return it as the API does."""
        now = self.kernel.now()
        cus_id = _data.new_id("cus_")
        data: dict[str, Any] = {
            "id": cus_id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": now,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": None,
            "discount": None,
            "email": None,
            "invoice_prefix": cus_id[4:12].upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": self.kernel.ctx().livemode,
            "metadata": {},
            "name": None,
            "next_invoice_sequence": 1,
            "phone": None,
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        _apply(data, params)
        self.store.execute(
            "INSERT INTO customers (id, seq, created, email, data) VALUES (?, ?, ?, ?, ?)",
            (cus_id, self.store.next_seq("customers"), now, data["email"], _dumps(data)),
        )
        return data

    def update(self, cus_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Apply validated API parameters to a customer (blank strings unset, metadata
        merges and a blank value removes its key); return it."""
        data = self.get(cus_id)
        _apply(data, params)
        self.store.execute(
            "UPDATE customers SET email = ?, data = ? WHERE id = ?",
            (data["email"], _dumps(data), cus_id),
        )
        return data

    def delete(self, cus_id: str) -> dict[str, Any]:
        """Delete a customer for good; return Stripe's ``{"id", "object", "deleted": true}``.

        Later requests naming it are 404s ("No such customer"), as creating anything for a
        deleted customer is at Stripe (Stripe answers a retrieve with the deleted stub).
        Objects that name it (accounts, payment methods) are left as they are.
        """
        self.get(cus_id)
        self.store.execute("DELETE FROM customers WHERE id = ?", (cus_id,))
        return {"id": cus_id, "object": "customer", "deleted": True}

    def get(self, cus_id: str, *, param: str = "id", status: int = 404) -> dict[str, Any]:
        """The customer as the API returns it (raises ``ApiError`` if there is none)."""
        with self.store.tx(write=False):
            row = self.store.one("SELECT data FROM customers WHERE id = ?", (cus_id,))
        if row is None:
            raise not_found("customer", cus_id, param=param, status=status)
        return dict(json.loads(row[0]))

    def check(self, cus_id: str, *, param: str = "id", status: int = 404) -> None:
        """Raise the :meth:`get` error if there is no such customer (reads no body)."""
        with self.store.tx(write=False):
            row = self.store.one("SELECT 1 FROM customers WHERE id = ?", (cus_id,))
        if row is None:
            raise not_found("customer", cus_id, param=param, status=status)


_ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")


def _address(given: dict[str, Any]) -> dict[str, Any]:
    return {k: given.get(k) or None for k in _ADDRESS_KEYS}


def _apply(data: dict[str, Any], params: dict[str, Any]) -> None:
    """Apply validated create or update parameters to a customer body.

    A blank string unsets (``null``, or the default where the field has one); metadata
    merges and a blank value removes its key. Parameters of unmodelled features (cash
    balance, tax, tax ids) change nothing the customer object shows.
    """
    for key in ("email", "name", "phone", "description"):
        if key in params:
            data[key] = params[key] or None
    for key in ("business_name", "individual_name"):
        if params.get(key):
            data[key] = params[key]
        elif key in params:
            data.pop(key, None)
    for key in ("balance", "next_invoice_sequence"):
        if key in params:
            data[key] = params[key]
    if "invoice_prefix" in params:
        data["invoice_prefix"] = params["invoice_prefix"] or data["id"][4:12].upper()
    if "tax_exempt" in params:
        data["tax_exempt"] = params["tax_exempt"] or "none"
    if "preferred_locales" in params:
        data["preferred_locales"] = list(params["preferred_locales"])
    if "address" in params:
        address = params["address"]
        data["address"] = None if address is None else _address(address)
    if "shipping" in params:
        shipping = params["shipping"]
        data["shipping"] = (
            None
            if shipping is None
            else {
                "address": _address(shipping.get("address") or {}),
                "carrier": None,
                "name": shipping["name"],
                "phone": shipping.get("phone") or None,
                "tracking_number": None,
            }
        )
    settings = params.get("invoice_settings")
    if settings:
        current = data["invoice_settings"]
        if "custom_fields" in settings:
            current["custom_fields"] = [dict(f) for f in settings["custom_fields"]] or None
        if "footer" in settings:
            current["footer"] = settings["footer"] or None
        if "rendering_options" in settings:
            options = settings["rendering_options"]
            current["rendering_options"] = (
                None
                if options is None
                else {
                    "amount_tax_display": options.get("amount_tax_display") or None,
                    "template": options.get("template") or None,
                }
            )
    if "metadata" in params:
        merged = {**data["metadata"], **(params["metadata"] or {})}
        data["metadata"] = {k: v for k, v in merged.items() if v != ""}
    if params.get("metadata") == {}:
        data["metadata"] = {}
