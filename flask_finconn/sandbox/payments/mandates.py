"""Mandates: the customer's authorization to debit, created at the first confirm.

A SetupIntent, or a PaymentIntent with ``setup_future_usage``, creates a ``multi_use``
mandate that later PaymentIntents reuse; a plain PaymentIntent creates a ``single_use`` one
for its amount. A mandate waiting for microdeposit verification is ``pending``; a dispute
or detaching the PaymentMethod makes it ``inactive`` (``mandate.updated``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._data import new_id
from .._params import invalid

if TYPE_CHECKING:
    from .engine import Payments

NO_MANDATE = (
    "This {name} requires a mandate, but no existing mandate was found. Collect mandate "
    "acceptance from the customer and try again, providing acceptance data in the "
    "mandate_data parameter."
)


def acceptance(
    mandate_data: dict[str, Any] | None, at: int, *, strict: bool
) -> dict[str, Any] | None:
    """``customer_acceptance`` from validated ``mandate_data`` (None when not given).

    ``strict`` (create with ``confirm=true``) requires ``online[ip_address]`` and
    ``online[user_agent]`` for online acceptance; ``/confirm`` lets the client infer them.
    """
    if not mandate_data:
        return None
    given = mandate_data["customer_acceptance"]
    out: dict[str, Any] = {"accepted_at": given.get("accepted_at") or at, "type": given["type"]}
    base = "mandate_data[customer_acceptance]"
    if given["type"] == "online":
        online = given.get("online")
        if online is None and not strict:
            online = {}  # inferred from the client, as Stripe.js confirms do
        if online is None:
            raise invalid(
                f"Missing required param: {base}[online]. Online acceptance needs the "
                "customer's IP address and user agent.",
                param=f"{base}[online]",
                code="parameter_missing",
            )
        for key in ("ip_address", "user_agent"):
            if strict and not online.get(key):
                raise invalid(
                    f"Missing required param: {base}[online][{key}].",
                    param=f"{base}[online][{key}]",
                    code="parameter_missing",
                )
        out["online"] = {
            "ip_address": online.get("ip_address") or None,
            "user_agent": online.get("user_agent") or None,
        }
    else:
        if given.get("online"):
            raise invalid(
                f"{base}[online] cannot be set when {base}[type] is offline.",
                param=f"{base}[online]",
            )
        out["offline"] = {}
    return out


def create(
    pay: Payments,
    pm: dict[str, Any],
    customer_acceptance: dict[str, Any],
    *,
    single_use: tuple[int, str] | None,
    collection_method: str | None,
    status: str,
) -> dict[str, Any]:
    """A new mandate for ``pm`` (``single_use``: ``(amount, currency)`` or None)."""
    details: dict[str, Any] = {}
    if collection_method:
        details["collection_method"] = collection_method
    data: dict[str, Any] = {
        "id": new_id("mandate_"),
        "object": "mandate",
        "customer_acceptance": customer_acceptance,
        "livemode": False,
        "payment_method": pm["id"],
        "payment_method_details": {"type": "us_bank_account", "us_bank_account": details},
        "status": status,
        "type": "single_use" if single_use else "multi_use",
    }
    if single_use:
        data["single_use"] = {"amount": single_use[0], "currency": single_use[1]}
    else:
        data["multi_use"] = {}
    pay.objects.insert("mandate", data, {}, owner=pm["id"])
    return data


def reusable(pay: Payments, pm_id: str) -> str | None:
    """The id of the newest active multi-use mandate of a PaymentMethod, or None."""
    # Asked on every off-session confirm: SQLite reads the two fields, nothing is decoded.
    row = pay.host.store.one(
        "SELECT id FROM pay_objects WHERE kind = 'mandate' AND owner = ? "
        "AND json_extract(data, '$.status') = 'active' "
        "AND json_extract(data, '$.type') = 'multi_use' ORDER BY seq DESC LIMIT 1",
        (pm_id,),
    )
    return str(row[0]) if row else None


def set_status(pay: Payments, mandate_id: str | None, status: str) -> None:
    """Change a mandate's status; ``mandate.updated`` fires when it changes."""
    if not mandate_id:
        return
    data, internal = pay.objects.load("mandate", mandate_id)
    if data["status"] == status:
        return
    data["status"] = status
    pay.objects.save(data, internal)
    pay.host.emit("mandate.updated", data, pay.objects.now(), pay.objects.text(data))


def revoke_all(pay: Payments, pm_id: str) -> None:
    """Make every mandate of a PaymentMethod inactive."""
    for raw, _ in pay.objects.rows("mandate", "owner = ?", (pm_id,)):
        data = pay.objects.decode(raw)
        if data["status"] != "inactive":
            set_status(pay, data["id"], "inactive")
