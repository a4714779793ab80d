"""PaymentIntents: the ACH debit.

``requires_payment_method`` → ``requires_confirmation`` → confirm: ``processing`` for a
verified account (a pending charge; it settles after ``settlement_delay`` sandbox seconds),
``requires_action`` with microdeposits for a manually entered one. Settling ends in
``succeeded`` or, for the failing test accounts, an ACH return: back to
``requires_payment_method`` with ``last_payment_error``. ``/cancel`` works until it settles.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._data import new_id
from .._params import invalid
from . import _intents, charges, mandates, payment_methods
from ._host import check_state
from .testbank import ROUTING, outcome

if TYPE_CHECKING:
    from .engine import Payments

CONFIRMABLE = ("requires_payment_method", "requires_confirmation")
CANCELABLE = ("requires_payment_method", "requires_confirmation", "requires_action", "processing")
MINIMUM = 50


def create(pay: Payments, p: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/payment_intents`` (confirms too when ``confirm=true``)."""
    now = pay.objects.now()
    if p.get("customer"):
        pay.host.customer(p["customer"], param="customer", status=400)
    types = p.get("payment_method_types") or ["us_bank_account"]
    _check_amount(p["amount"], p["currency"], types)
    pi_id = new_id("pi_")
    automatic = p.get("automatic_payment_methods")
    data: dict[str, Any] = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": p["amount"],
        "amount_capturable": 0,
        "amount_received": 0,
        "application": None,
        "application_fee_amount": p.get("application_fee_amount"),
        "automatic_payment_methods": (
            {"allow_redirects": automatic.get("allow_redirects") or "always", "enabled": True}
            if automatic and automatic.get("enabled")
            else None
        ),
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": p.get("capture_method") or "automatic",
        "client_secret": _intents.client_secret(pi_id),
        "confirmation_method": p.get("confirmation_method") or "automatic",
        "created": now,
        "currency": p["currency"].lower(),
        "customer": p.get("customer"),
        "customer_account": None,
        "description": p.get("description"),
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": p.get("metadata") or {},
        "next_action": None,
        "on_behalf_of": p.get("on_behalf_of"),
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {},
        "payment_method_types": types,
        "processing": None,
        "receipt_email": p.get("receipt_email"),
        "review": None,
        "setup_future_usage": p.get("setup_future_usage"),
        "shipping": None,
        "statement_descriptor": p.get("statement_descriptor"),
        "statement_descriptor_suffix": p.get("statement_descriptor_suffix"),
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": p.get("transfer_group"),
    }
    if "us_bank_account" in types:
        given = (p.get("payment_method_options") or {}).get("us_bank_account")
        data["payment_method_options"]["us_bank_account"] = _intents.options(given, None)
    if _intents.collect(pay, "pi", data, p) is not None:
        data["status"] = "requires_confirmation"
    if not p.get("confirm"):  # confirming stores it, once, in its final state
        pay.objects.insert("pi", data, {}, owner=data["customer"])
    pay.host.emit("payment_intent.created", data, now)
    if p.get("confirm"):
        keep = {k: v for k, v in p.items() if k in ("mandate_data", "mandate")}
        return confirm(pay, pi_id, keep, True, loaded=(data, {}))
    if p.get("mandate_data") or p.get("mandate"):
        raise invalid(
            "mandate_data and mandate can only be passed together with confirm=true.",
            param="mandate_data" if p.get("mandate_data") else "mandate",
        )
    return data


def _check_amount(amount: int, currency: str, types: list[str]) -> None:
    if amount < MINIMUM:
        raise invalid("Amount must be at least $0.50 usd.", param="amount", code="amount_too_small")
    if amount > 99_999_999:
        raise invalid(
            "Amount must be no more than $999,999.99 usd.", param="amount", code="amount_too_large"
        )
    if "us_bank_account" in types and currency.lower() != "usd":
        raise invalid(
            f"The currency {currency} is not supported by us_bank_account, which debits in usd "
            "only. Use currency usd.",
            param="currency",
            code="parameter_invalid_string",
        )


def update(pay: Payments, pi_id: str, p: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/payment_intents/{id}``."""
    data, internal = pay.objects.load("pi", pi_id)
    check_state("pi", data, (*CONFIRMABLE, "requires_action"), "update")
    if "customer" in p:
        if p["customer"]:
            pay.host.customer(p["customer"], param="customer", status=400)
        data["customer"] = p["customer"] or None
    for key in [
        "amount",
        "description",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_group",
        "application_fee_amount",
        "setup_future_usage",
        "capture_method",
    ]:
        if key in p:
            data[key] = p[key] if p[key] != "" else None
    if p.get("currency"):
        data["currency"] = p["currency"].lower()
    if "metadata" in p:
        merged = {**data["metadata"], **(p["metadata"] or {})}
        data["metadata"] = {k: v for k, v in merged.items() if v != ""}
    if p.get("payment_method_types"):
        data["payment_method_types"] = p["payment_method_types"]
    _check_amount(data["amount"], data["currency"], data["payment_method_types"])
    _intents.apply_options(data, p)
    if _intents.collect(pay, "pi", data, p) is not None:
        data.update(status="requires_confirmation", next_action=None)
    pay.objects.save(data, internal, owner=data["customer"] or "")
    return data


def confirm(
    pay: Payments,
    pi_id: str,
    p: dict[str, Any],
    strict: bool = False,
    loaded: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """``POST /v1/payment_intents/{id}/confirm`` (``strict``: the create-and-confirm rules;
    ``loaded``: the intent and its internal state, when the caller has them)."""
    data, internal = loaded or pay.objects.load("pi", pi_id)
    check_state("pi", data, CONFIRMABLE, "confirm")
    if p.get("setup_future_usage") is not None:
        data["setup_future_usage"] = p["setup_future_usage"] or None
    _intents.apply_options(data, p)
    found = _intents.collect(pay, "pi", data, p)
    if found is None:
        if not data["payment_method"]:
            raise invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment method. "
                "Update it with a payment method, or pass payment_method or "
                "payment_method_data, and confirm again.",
                param="payment_method",
                code="payment_intent_unexpected_state",
            )
        found = pay.objects.load("pm", data["payment_method"])
    pm, pm_internal = found
    _intents.check_instant("pi", data, pm_internal)
    data["last_payment_error"] = None
    _intents.check_block(pay, "pi", data, internal, pm)
    if _intents.microdeposits_fail(pay, "pi", data, internal, pm_internal):
        return data
    verified = bool(pm_internal["verified"])
    internal["mandate"] = _intents.mandate_for(
        pay, "pi", data, pm, p, strict=strict, verified=verified
    )
    if verified:
        start_processing(pay, data, internal, found)
    else:
        internal["pending_mandate"] = internal["mandate"]
        _intents.require_action(pay, "pi", data, internal)
    return data


def start_processing(
    pay: Payments,
    data: dict[str, Any],
    internal: dict[str, Any],
    found: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> None:
    """``processing``: a pending charge, and the settlement scheduled."""
    now = pay.objects.now()
    pm, pm_internal = found or pay.objects.load("pm", data["payment_method"])
    if internal.pop("pending_mandate", None):
        mandates.set_status(pay, internal["mandate"], "active")
    charge = charges.create_pending(pay, data, pm, internal["mandate"])
    data.update(status="processing", next_action=None, latest_charge=charge["id"])
    pay.objects.save(data, internal)
    if data["customer"] and data["setup_future_usage"]:
        payment_methods.attach_silently(pay, pm, pm_internal, data["customer"])
    pay.host.emit("payment_intent.processing", data, now)
    if _outcome(pm_internal).result != "processing":
        pay.host.schedule(now + pay.settlement_delay, "payments.settle", data["id"], {})


def _outcome(pm_internal: dict[str, Any]) -> Any:
    return outcome(ROUTING, pm_internal.get("test_account"))


def settle(pay: Payments, pi_id: str, at: int, *, force: str | None = None) -> dict[str, Any]:
    """Finish a processing debit: as its test account says, or ``force`` (``succeeded`` or
    a failure code)."""
    data, internal = pay.objects.load("pi", pi_id)
    if data["status"] != "processing":
        return data
    pm, pm_internal = pay.objects.load("pm", data["payment_method"])
    test = _outcome(pm_internal)
    result = test.result if force is None else ("succeeded" if force == "succeeded" else "failed")
    if result == "processing":
        return data
    if result in ("succeeded", "dispute"):
        charges.succeed(pay, data["latest_charge"], at)
        data.update(status="succeeded", amount_received=data["amount"])
        pay.objects.save(data, internal)
        pay.host.emit("payment_intent.succeeded", data, at)
        if result == "dispute":
            pay.host.schedule(at + pay.settlement_delay, "payments.dispute", pi_id, {})
        return data
    code = force if force is not None else test.code
    message = test.message if force is None else _FORCED.get(code or "", "The debit was returned.")
    assert code is not None and message is not None
    charges.fail(pay, data["latest_charge"], code, message, at)
    _intents.fail(pay, "pi", data, internal, code, message, at)
    if force is None and test.block is not None:
        pay.add_block(pm["us_bank_account"]["fingerprint"], *test.block)
    return data


_FORCED = {
    "insufficient_funds": "The customer's account has insufficient funds to cover this payment.",
    "account_closed": "The customer's bank account has been closed.",
    "no_account": "The bank account could not be located.",
    "debit_not_authorized": "The customer has notified their bank that this payment was "
    "unauthorized.",
}


def dispute(pay: Payments, pi_id: str, at: int, reason: str = "debit_not_authorized") -> Any:
    """Dispute a succeeded debit: the charge is disputed and the mandate goes inactive."""
    data, internal = pay.objects.load("pi", pi_id)
    if data["status"] != "succeeded":
        raise invalid(
            f"The PaymentIntent {pi_id} is {data['status']}; only a succeeded one can be disputed.",
            param="payment_intent",
        )
    result = charges.dispute(pay, data["latest_charge"], reason, at)
    mandates.set_status(pay, internal.get("mandate"), "inactive")
    return result


def cancel(pay: Payments, pi_id: str, p: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/payment_intents/{id}/cancel``."""
    data, internal = pay.objects.load("pi", pi_id)
    check_state("pi", data, CANCELABLE, "cancel")
    now = pay.objects.now()
    if data["status"] == "processing":
        charges.fail(pay, data["latest_charge"], None, "The payment was canceled.", now)
    if internal.get("pending_mandate"):
        mandates.set_status(pay, internal.pop("pending_mandate"), "inactive")
    data.update(
        status="canceled",
        next_action=None,
        canceled_at=now,
        cancellation_reason=p.get("cancellation_reason"),
    )
    pay.objects.save(data, internal)
    pay.host.emit("payment_intent.canceled", data, now)
    return data
