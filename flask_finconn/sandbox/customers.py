"""Customers: create, update and read ``cus_`` objects."""

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
            "description": params.get("description"),
            "discount": None,
            "email": params.get("email"),
            "invoice_prefix": cus_id[4:12].upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": self.kernel.ctx().livemode,
            "metadata": params.get("metadata") or {},
            "name": params.get("name"),
            "next_invoice_sequence": 1,
            "phone": params.get("phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.store.execute(
            "INSERT INTO customers (id, seq, created, email, data) VALUES (?, ?, ?, ?, ?)",
            (cus_id, self.store.next_seq("customers"), now, data["email"], _dumps(data)),
        )
        return data

    def update(self, cus_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Apply validated API parameters to a customer (blank strings unset, metadata
        merges and a blank value removes its key); return it."""
        data = self.get(cus_id)
        for key in ("email", "name", "phone", "description"):
            if key in params:
                data[key] = params[key] or None
        if "metadata" in params:
            merged = {**data["metadata"], **(params["metadata"] or {})}
            data["metadata"] = {k: v for k, v in merged.items() if v != ""}
        if params.get("metadata") == {}:
            data["metadata"] = {}
        self.store.execute(
            "UPDATE customers SET email = ?, data = ? WHERE id = ?",
            (data["email"], _dumps(data), cus_id),
        )
        return data

    def get(self, cus_id: str, *, param: str = "id", status: int = 404) -> dict[str, Any]:
        """The customer as the API returns it (raises ``ApiError`` if there is none)."""
        with self.store.tx(write=False):
            row = self.store.one("SELECT data FROM customers WHERE id = ?", (cus_id,))
        if row is None:
            raise not_found("customer", cus_id, param=param, status=status)
        return dict(json.loads(row[0]))
