"""PaymentIntents: the ACH debit.

``requires_payment_method`` → ``requires_confirmation`` → confirm: ``processing`` for a
verified account (a pending charge; it settles after ``settlement_delay`` sandbox seconds),
``requires_action`` with microdeposits for a manually entered one. Settling ends in
``succeeded`` or, for the failing test accounts, an ACH return: back to
``requires_payment_method`` with ``last_payment_error``. ``/cancel`` works until it settles.
The shared state machine is in :mod:`._intents`; this module holds what is a PaymentIntent's own
(:data:`FLOW`): the amount, the charge, settling and disputes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._params import invalid
from . import _intents, charges, mandates, payment_methods
from .testbank import ROUTING, outcome

if TYPE_CHECKING:
    from .engine import Payments

MINIMUM = 50


def _fields(p: dict[str, Any], types: list[str]) -> dict[str, Any]:
    _check_amount(p["amount"], p["currency"], types)
    return {
        "amount": p["amount"],
        "amount_capturable": 0,
        "amount_received": 0,
        "application_fee_amount": p.get("application_fee_amount"),
        "canceled_at": None,
        "capture_method": p.get("capture_method") or "automatic",
        "confirmation_method": p.get("confirmation_method") or "automatic",
        "currency": p["currency"].lower(),
        "last_payment_error": None,
        "latest_charge": None,
        "processing": None,
        "receipt_email": p.get("receipt_email"),
        "review": None,
        "setup_future_usage": p.get("setup_future_usage"),
        "shipping": None,
        "statement_descriptor": p.get("statement_descriptor"),
        "statement_descriptor_suffix": p.get("statement_descriptor_suffix"),
        "transfer_data": None,
        "transfer_group": p.get("transfer_group"),
    }


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


def _set_fields(data: dict[str, Any], p: dict[str, Any]) -> None:
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
    _check_amount(data["amount"], data["currency"], data["payment_method_types"])


def _start_processing(
    pay: Payments,
    data: dict[str, Any],
    internal: dict[str, Any],
    pm: dict[str, Any],
    pm_internal: dict[str, Any],
) -> None:
    """``processing``: a pending charge, and the settlement scheduled."""
    now = pay.objects.now()
    charge = charges.create_pending(pay, data, pm, internal["mandate"])
    data.update(status="processing", next_action=None, latest_charge=charge["id"])
    pay.objects.save(data, internal)
    if data["customer"] and data["setup_future_usage"]:
        payment_methods.attach_silently(pay, pm, pm_internal, data["customer"])
    pay.host.emit("payment_intent.processing", data, now, pay.objects.text(data))
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
        pay.host.emit("payment_intent.succeeded", data, at, pay.objects.text(data))
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


def _canceling(pay: Payments, data: dict[str, Any], now: int) -> None:
    """A processing debit's pending charge fails with the cancel."""
    if data["status"] == "processing":
        charges.fail(pay, data["latest_charge"], None, "The payment was canceled.", now)
    data["canceled_at"] = now


FLOW = _intents.Flow(
    kind="pi",
    fields=_fields,
    set_fields=_set_fields,
    updatable=(*_intents.CONFIRMABLE, "requires_action"),
    cancelable=(*_intents.CONFIRMABLE, "requires_action", "processing"),
    mandate_params=("mandate_data", "mandate"),
    missing_code="payment_intent_unexpected_state",
    mandate_on_intent=False,
    verified=_start_processing,
    canceling=_canceling,
)

# The API operations (create confirms too when confirm=true).
create, update, confirm, cancel = FLOW.create, FLOW.update, FLOW.confirm, FLOW.cancel
