"""Charges (``py_``) behind ACH PaymentIntents, and the disputes that follow some of them.

A charge is created ``pending`` when its PaymentIntent starts ``processing``
(``charge.pending``), then ends ``succeeded`` (``charge.succeeded``, with a
``payment_reference``) or ``failed`` (``charge.failed``, with ``failure_code``). A dispute
on a succeeded charge sets ``disputed`` and fires ``charge.dispute.created`` and
``charge.dispute.closed`` (ACH disputes cannot be contested: they close as ``lost``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .._data import new_id, seed_of
from .._params import invalid

if TYPE_CHECKING:
    from .engine import Payments

DISPUTE_REASONS = (
    "bank_cannot_process",
    "debit_not_authorized",
    "incorrect_account_details",
    "insufficient_funds",
)


def create_pending(
    pay: Payments, pi: dict[str, Any], pm: dict[str, Any], mandate: str | None
) -> dict[str, Any]:
    """A pending charge for a PaymentIntent that starts processing; emits ``charge.pending``."""
    now = pay.objects.now()
    bank = pm["us_bank_account"]
    charge_id = new_id("py_")
    data: dict[str, Any] = {
        "id": charge_id,
        "object": "charge",
        "amount": pi["amount"],
        "amount_captured": 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": pm["billing_details"],
        "calculated_statement_descriptor": (pi["statement_descriptor"] or "SANDBOX")[:22],
        "captured": True,
        "created": now,
        "currency": pi["currency"],
        "customer": pi["customer"],
        "description": pi["description"],
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "fraud_details": {},
        "livemode": False,
        "metadata": {},
        "on_behalf_of": None,
        "outcome": _outcome("authorized", "approved_by_network", "Payment complete."),
        "paid": False,
        "payment_intent": pi["id"],
        "payment_method": pm["id"],
        "payment_method_details": {
            "type": "us_bank_account",
            "us_bank_account": {
                "account_holder_type": bank["account_holder_type"],
                "account_type": bank["account_type"],
                "bank_name": bank["bank_name"],
                "expected_debit_date": time.strftime("%Y-%m-%d", time.gmtime(now)),
                "fingerprint": bank["fingerprint"],
                "last4": bank["last4"],
                "mandate": mandate,
                "payment_reference": None,
                "routing_number": bank["routing_number"],
            },
        },
        "receipt_email": pi["receipt_email"],
        "receipt_number": None,
        "receipt_url": None,
        "refunded": False,
        "refunds": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/charges/{charge_id}/refunds",
        },
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": pi["statement_descriptor"],
        "statement_descriptor_suffix": pi["statement_descriptor_suffix"],
        "status": "pending",
        "transfer_data": None,
        "transfer_group": pi["transfer_group"],
    }
    pay.objects.insert("charge", data, {}, owner=pi["id"])
    pay.host.emit("charge.pending", data, now, pay.objects.text(data))
    return data


def _outcome(kind: str, network: str, message: str) -> dict[str, Any]:
    return {
        "advice_code": None,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": network,
        "reason": None,
        "risk_level": "not_assessed",
        "seller_message": message,
        "type": kind,
    }


def succeed(pay: Payments, charge_id: str, at: int) -> dict[str, Any]:
    """Settle a pending charge; emits ``charge.succeeded``."""
    data, internal = pay.objects.load("charge", charge_id)
    data.update(status="succeeded", paid=True, amount_captured=data["amount"])
    reference = f"{seed_of(charge_id) % 10**15:015d}"
    data["payment_method_details"]["us_bank_account"]["payment_reference"] = reference
    pay.objects.save(data, internal)
    pay.host.emit("charge.succeeded", data, at, pay.objects.text(data))
    return data


def fail(pay: Payments, charge_id: str, code: str | None, message: str, at: int) -> dict[str, Any]:
    """Fail a charge (an ACH return or a cancel); emits ``charge.failed``."""
    data, internal = pay.objects.load("charge", charge_id)
    data.update(status="failed", paid=False, failure_code=code, failure_message=message)
    data["outcome"] = _outcome("issuer_declined", "declined_by_network", message)
    pay.objects.save(data, internal)
    pay.host.emit("charge.failed", data, at, pay.objects.text(data))
    return data


def dispute(pay: Payments, charge_id: str, reason: str, at: int) -> dict[str, Any]:
    """Dispute a succeeded charge; emits ``charge.dispute.created`` and ``.closed``."""
    if reason not in DISPUTE_REASONS:
        raise invalid(
            f"Invalid reason: must be one of {', '.join(DISPUTE_REASONS)}.",
            param="reason",
            code="parameter_invalid_string",
        )
    data, internal = pay.objects.load("charge", charge_id)
    if data["status"] != "succeeded" or data["disputed"]:
        raise invalid(
            f"The charge {charge_id} cannot be disputed: only a succeeded charge that was not "
            "disputed yet can be.",
            param="charge",
        )
    data["disputed"] = True
    pay.objects.save(data, internal)
    body: dict[str, Any] = {
        "id": new_id("dp_"),
        "object": "dispute",
        "amount": data["amount"],
        "balance_transactions": [],
        "charge": charge_id,
        "created": at,
        "currency": data["currency"],
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": data["payment_intent"],
        "payment_method_details": {"type": "us_bank_account"},
        "reason": reason,
        "status": "lost",
    }
    pay.objects.insert("dispute", body, {}, owner=charge_id)
    pay.host.emit("charge.dispute.created", body, at, pay.objects.text(body))
    pay.host.emit("charge.dispute.closed", body, at, pay.objects.text(body))
    return body
