"""SetupIntents: save a bank account (with a mandate) for later debits.

``requires_payment_method`` → (a PaymentMethod) ``requires_confirmation`` → confirm:
``succeeded`` for a verified account (Financial Connections, a test token, or one that
passed microdeposits before), ``requires_action`` with microdeposits for a manually entered
one, or back to ``requires_payment_method`` when the deposits cannot be sent. Any of the
first three can be ``canceled``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._data import new_id
from .._params import invalid
from . import _intents, mandates, payment_methods
from ._host import check_state

if TYPE_CHECKING:
    from .engine import Payments

OPEN = ("requires_payment_method", "requires_confirmation", "requires_action")


def create(pay: Payments, p: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/setup_intents`` (confirms too when ``confirm=true``)."""
    now = pay.objects.now()
    if p.get("customer"):
        pay.host.customer(p["customer"], param="customer", status=400)
    si_id = new_id("seti_")
    types = p.get("payment_method_types") or ["us_bank_account"]
    automatic = p.get("automatic_payment_methods")
    data: dict[str, Any] = {
        "id": si_id,
        "object": "setup_intent",
        "application": None,
        "automatic_payment_methods": (
            {"allow_redirects": automatic.get("allow_redirects") or "always", "enabled": True}
            if automatic and automatic.get("enabled")
            else None
        ),
        "cancellation_reason": None,
        "client_secret": _intents.client_secret(si_id),
        "created": now,
        "customer": p.get("customer"),
        "customer_account": None,
        "description": p.get("description"),
        "excluded_payment_method_types": None,
        "flow_directions": p.get("flow_directions") or None,
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": False,
        "mandate": None,
        "metadata": p.get("metadata") or {},
        "next_action": None,
        "on_behalf_of": p.get("on_behalf_of"),
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": types,
        "single_use_mandate": None,
        "status": "requires_payment_method",
        "usage": p.get("usage") or "off_session",
    }
    if "us_bank_account" in types:
        given = (p.get("payment_method_options") or {}).get("us_bank_account")
        data["payment_method_options"]["us_bank_account"] = _intents.options(given, None)
    if _intents.collect(pay, "seti", data, p) is not None:
        data["status"] = "requires_confirmation"
    if not p.get("confirm"):  # confirming stores it, once, in its final state
        pay.objects.insert("seti", data, {}, owner=data["customer"])
    pay.host.emit("setup_intent.created", data, now)
    if p.get("confirm"):
        keep = {k: v for k, v in p.items() if k == "mandate_data"}
        return confirm(pay, si_id, keep, True, loaded=(data, {}))
    if p.get("mandate_data"):
        raise invalid(
            "mandate_data can only be passed together with confirm=true.", param="mandate_data"
        )
    return data


def update(pay: Payments, si_id: str, p: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/setup_intents/{id}``."""
    data, internal = pay.objects.load("seti", si_id)
    check_state("seti", data, ("requires_payment_method", "requires_confirmation"), "update")
    if "customer" in p:
        if p["customer"]:
            pay.host.customer(p["customer"], param="customer", status=400)
        data["customer"] = p["customer"] or None
    for key in ("description", "flow_directions"):
        if key in p:
            data[key] = p[key] or None
    if "metadata" in p:
        merged = {**data["metadata"], **(p["metadata"] or {})}
        data["metadata"] = {k: v for k, v in merged.items() if v != ""}
    if p.get("payment_method_types"):
        data["payment_method_types"] = p["payment_method_types"]
    _intents.apply_options(data, p)
    if _intents.collect(pay, "seti", data, p) is not None:
        data["status"] = "requires_confirmation"
    pay.objects.save(data, internal, owner=data["customer"] or "")
    return data


def confirm(
    pay: Payments,
    si_id: str,
    p: dict[str, Any],
    strict: bool = False,
    loaded: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``POST /v1/setup_intents/{id}/confirm`` (``strict``: the create-and-confirm rules;
    ``loaded``: the intent and its internal state, when the caller has them)."""
    data, internal = loaded or pay.objects.load("seti", si_id)
    check_state("seti", data, ("requires_payment_method", "requires_confirmation"), "confirm")
    _intents.apply_options(data, p)
    found = _intents.collect(pay, "seti", data, p)
    if found is None:
        if not data["payment_method"]:
            raise invalid(
                "You cannot confirm this SetupIntent because it's missing a payment method. "
                "Update it with a payment method, or pass payment_method or "
                "payment_method_data, and confirm again.",
                param="payment_method",
                code="parameter_missing",
            )
        found = pay.objects.load("pm", data["payment_method"])
    pm, pm_internal = found
    _intents.check_instant("seti", data, pm_internal)
    data["last_setup_error"] = None
    _intents.check_block(pay, "seti", data, internal, pm)
    if _intents.microdeposits_fail(pay, "seti", data, internal, pm_internal):
        return data
    verified = bool(pm_internal["verified"])
    data["mandate"] = _intents.mandate_for(
        pay, "seti", data, pm, p, strict=strict, verified=verified
    )
    if verified:
        succeed(pay, data, internal)
    else:
        internal["pending_mandate"] = data["mandate"]
        _intents.require_action(pay, "seti", data, internal)
    return data


def succeed(pay: Payments, data: dict[str, Any], internal: dict[str, Any]) -> None:
    """The account is verified: ``succeeded``, the PaymentMethod saved to the customer."""
    now = pay.objects.now()
    pm, pm_internal = pay.objects.load("pm", data["payment_method"])
    if internal.pop("pending_mandate", None):
        mandates.set_status(pay, data["mandate"], "active")
    data.update(status="succeeded", next_action=None, last_setup_error=None)
    pay.objects.save(data, internal)
    if data["customer"]:
        payment_methods.attach_silently(pay, pm, pm_internal, data["customer"])
    pay.host.emit("setup_intent.succeeded", data, now)


def cancel(pay: Payments, si_id: str, p: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/setup_intents/{id}/cancel``."""
    data, internal = pay.objects.load("seti", si_id)
    check_state("seti", data, OPEN, "cancel")
    if internal.get("pending_mandate"):
        mandates.set_status(pay, internal.pop("pending_mandate"), "inactive")
    data.update(
        status="canceled", next_action=None, cancellation_reason=p.get("cancellation_reason")
    )
    pay.objects.save(data, internal)
    pay.host.emit("setup_intent.canceled", data, pay.objects.now())
    return data
