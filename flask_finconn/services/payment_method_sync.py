"""Saved bank payment methods as Stripe says they are: read again, stored forward only.

Every state change of a payment method is read from Stripe (a SetupIntent with its
PaymentMethod expanded, a PaymentMethod, a mandate) and applied by :func:`_advance`:
statuses and mandate statuses only move forward, the attempts left only go down, and a
block follows Stripe both ways (Stripe lifts blocks too). Webhook handlers, the browser's
completion and the verify route can therefore race or repeat without rolling anything
back. Signals are sent after each commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from ..errors import NotFound
from ..models import Customer, PaymentMethod, from_unix
from ..signals import mandate_inactive, payment_method_saved, payment_method_verified
from ..state import FinConnState
from .accounts import find_by_stripe_id, loaded

# Forward only: a status never moves to one of a lower rank.
STATUS_RANK = {
    "requires_verification": 0,
    "verified": 1,
    "verification_failed": 1,
    "detached": 2,
}
MANDATE_RANK = {None: -1, "pending": 0, "active": 1, "inactive": 2}
# Stripe's limit of wrong microdeposit values per verification, by microdeposit_type. Stripe
# does not show the count on the intent, so it starts here and each refusal lowers it.
VERIFICATION_ATTEMPTS = {"descriptor_code": 10, "amounts": 3}
# What a block (us_bank_account.status_details.blocked.reason) means, for the holder.
BLOCK_REASONS = {
    "bank_account_closed": "the bank says the account is closed",
    "bank_account_frozen": "the bank has frozen the account",
    "bank_account_invalid_details": "the bank says the account details are wrong",
    "bank_account_restricted": "the bank does not allow debits from the account",
    "bank_account_unusable": "the bank says the account cannot be used",
    "debit_not_authorized": "the holder told their bank not to allow these debits",
    "tokenized_account_number_deactivated": "the bank replaced the account number",
}


def blocked_message(blocked: Mapping[str, Any]) -> str:
    """Why a blocked bank account cannot be debited, as a sentence saying what to do."""
    reason = BLOCK_REASONS.get(str(blocked.get("reason")), "an earlier debit was returned")
    return (
        f"Stripe blocked this bank account for debits: {reason}. Ask the holder to set up "
        "another bank account for payments."
    )


def sender() -> Any:
    """The real app, for signals (never the proxy)."""
    return current_app._get_current_object()  # type: ignore[attr-defined]


def _mandate(state: FinConnState, mandate_id: str | None) -> dict[str, Any] | None:
    if not mandate_id:
        return None
    return state.stripe.retrieve_mandate(mandate_id).to_dict()


def _fields_from_intent(state: FinConnState, intent: dict[str, Any]) -> dict[str, Any]:
    """The stored fields a SetupIntent (PaymentMethod expanded) determines."""
    fields: dict[str, Any] = {
        "setup_intent_id": intent["id"],
        "livemode": bool(intent.get("livemode")),
    }
    pm = intent.get("payment_method")
    if isinstance(pm, dict):  # a failed verification takes the PaymentMethod off the intent
        us = pm.get("us_bank_account") or {}
        fields["stripe_id"] = pm["id"]
        fields["bank_name"] = us.get("bank_name")
        fields["last4"] = us.get("last4")
        fields["account_type"] = us.get("account_type")
        fields["blocked"] = _block(pm)
    status = intent.get("status")
    action = (intent.get("next_action") or {}).get("verify_with_microdeposits")
    if status == "succeeded":
        fields["status"] = "verified"
    elif status == "requires_action" and action:
        fields["status"] = "requires_verification"
        kind = action.get("microdeposit_type") or "amounts"
        fields["verification_type"] = kind
        fields["verification_arrival_date"] = from_unix(action.get("arrival_date"))
        fields["verification_attempts_remaining"] = VERIFICATION_ATTEMPTS.get(kind)
    elif status == "canceled" or str(
        (intent.get("last_setup_error") or {}).get("code") or ""
    ).startswith("payment_method_microdeposit"):
        fields["status"] = "verification_failed"
        fields["verification_attempts_remaining"] = 0
    mandate = _mandate(state, intent.get("mandate"))
    if mandate is not None:
        fields["mandate_id"] = mandate["id"]
        fields["mandate_status"] = mandate.get("status")
        acceptance = mandate.get("customer_acceptance") or {}
        fields["mandate_accepted_at"] = from_unix(acceptance.get("accepted_at"))
    return fields


def _block(pm: Mapping[str, Any]) -> dict[str, Any] | None:
    """``status_details.blocked`` of a PaymentMethod: present only while it is blocked."""
    details = (pm.get("us_bank_account") or {}).get("status_details") or {}
    blocked = details.get("blocked")
    return dict(blocked) if isinstance(blocked, Mapping) else None


def apply_setup_intent(
    state: FinConnState,
    intent: dict[str, Any],
    *,
    customer: Customer,
    holder_id: str,
) -> PaymentMethod:
    """Store or move forward the payment method a SetupIntent (PM expanded) describes.

    An intent that lost its PaymentMethod (verification failed) only updates the row it
    saved before.
    """
    fields = _fields_from_intent(state, intent)
    session = state.db.session
    for attempt in range(2):
        if "stripe_id" in fields:
            row = _locked(state, PaymentMethod.stripe_id == fields["stripe_id"])
        else:
            row = _locked(state, PaymentMethod.setup_intent_id == intent["id"])
            if row is None:
                raise NotFound(
                    "No payment method was saved from this setup intent.",
                    code="payment_method_not_found",
                )
        created = row is None
        if row is None:
            fca = (intent["payment_method"].get("us_bank_account") or {}).get(
                "financial_connections_account"
            )
            account = find_by_stripe_id(state, fca) if fca else None
            row = PaymentMethod(
                holder_id=holder_id,
                customer_id=customer.id,
                account_id=account.id if account is not None else None,
                status=fields.get("status", "requires_verification"),
            )
            session.add(row)
        changes = _advance(row, fields)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # a racing completion stored it: move that row forward
            if attempt:
                raise
            continue
        loaded(state, row)
        _announce(row, changes, created=created)
        return row
    raise AssertionError("unreachable")


def _locked(state: FinConnState, where: Any) -> PaymentMethod | None:
    return state.db.session.scalars(
        sa.select(PaymentMethod)
        .where(where)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def _advance(row: PaymentMethod, fields: dict[str, Any]) -> set[str]:
    """Apply ``fields`` to the row, moving statuses forward only; returns what changed."""
    changes: set[str] = set()
    for name in ("stripe_id", "bank_name", "last4", "account_type", "setup_intent_id", "livemode"):
        if fields.get(name) is not None and getattr(row, name) != fields[name]:
            setattr(row, name, fields[name])
    status = fields.get("status")
    if status and (row.status is None or STATUS_RANK[status] > STATUS_RANK.get(row.status, -1)):
        row.status = status
        changes.add(status)
        if status == "verified":
            row.verification_attempts_remaining = None
    if row.status != "verified":
        for name in ("verification_type", "verification_arrival_date"):
            if name in fields:
                setattr(row, name, fields[name])
        # Attempts only ever go down: a later read of the intent shows the limit again.
        attempts = fields.get("verification_attempts_remaining")
        current = row.verification_attempts_remaining
        if attempts is not None and (current is None or attempts < current):
            row.verification_attempts_remaining = attempts
    if "blocked" in fields and row.blocked != fields["blocked"]:
        # Not forward only: Stripe lifts a block as well as adding one.
        row.blocked = fields["blocked"]
        changes.add("blocked" if fields["blocked"] else "unblocked")
    mandate_status = fields.get("mandate_status")
    if mandate_status and MANDATE_RANK.get(mandate_status, -1) > MANDATE_RANK.get(
        row.mandate_status, -1
    ):
        row.mandate_status = mandate_status
        changes.add("mandate_" + mandate_status)
    if fields.get("mandate_id") and row.mandate_id is None:
        row.mandate_id = fields["mandate_id"]
    if fields.get("mandate_accepted_at") and row.mandate_accepted_at is None:
        row.mandate_accepted_at = fields["mandate_accepted_at"]
    return changes


def _announce(row: PaymentMethod, changes: set[str], *, created: bool) -> None:
    app = sender()
    if created:
        payment_method_saved.send(app, payment_method=row)
    if "verified" in changes:
        payment_method_verified.send(app, payment_method=row)
    if "mandate_inactive" in changes:
        mandate_inactive.send(app, payment_method=row)


def apply_payment_method(
    state: FinConnState, stripe_id: str, pm: dict[str, Any] | None = None
) -> PaymentMethod | None:
    """Re-read (unless given) a PaymentMethod and its mandate, and move the row forward.

    None when no stored payment method has that ``pm_`` id (not this app's).
    """
    session = state.db.session
    row = _locked(state, PaymentMethod.stripe_id == stripe_id)
    if row is None:
        session.rollback()
        return None
    fresh = pm if pm is not None else state.stripe.retrieve_payment_method(stripe_id).to_dict()
    fields: dict[str, Any] = {"blocked": _block(fresh)}
    if fresh.get("customer") is None:
        fields["status"] = "detached"
    if row.mandate_id:
        mandate = state.stripe.retrieve_mandate(row.mandate_id).to_dict()
        fields["mandate_status"] = mandate.get("status")
    if fields.get("status") == "detached":
        fields["mandate_status"] = "inactive"
    changes = _advance(row, fields)
    session.commit()
    loaded(state, row)
    _announce(row, changes, created=False)
    return row


def apply_mandate(state: FinConnState, mandate_id: str) -> PaymentMethod | None:
    """Re-read a mandate and store its status on the payment method that holds it."""
    stripe_id = state.db.session.scalars(
        sa.select(PaymentMethod.stripe_id).where(PaymentMethod.mandate_id == mandate_id)
    ).first()
    if stripe_id is None:
        return None
    return apply_payment_method(state, stripe_id)


__all__ = [
    "BLOCK_REASONS",
    "VERIFICATION_ATTEMPTS",
    "apply_mandate",
    "apply_payment_method",
    "apply_setup_intent",
    "blocked_message",
    "sender",
]
