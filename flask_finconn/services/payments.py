"""Stored debits: lookups, following them to settlement, cancelling, operator queries.

A debit is started once by :mod:`.debits`; afterwards its state only moves forward
(:func:`apply_intent`): ``processing`` → ``succeeded`` | ``failed`` | ``canceled``, and
``succeeded`` → ``disputed``, each read again from Stripe, so webhooks in any order,
duplicates and replays are harmless.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, NotFound
from ..models import Payment, utcnow
from ..state import FinConnState
from .accounts import loaded
from .debits import announce, failure_message, locked, resume, status_of

STATUSES = ("requires_verification", "processing", "succeeded", "failed", "canceled", "disputed")
RANK = {
    "requires_verification": 0,
    "processing": 1,
    "succeeded": 2,
    "failed": 2,
    "canceled": 2,
    "disputed": 3,
}


def list_payments(state: FinConnState, holder_id: str) -> list[Payment]:
    """The holder's debits, newest first."""
    query = (
        sa.select(Payment)
        .where(Payment.holder_id == holder_id)
        .order_by(Payment.created_at.desc(), Payment.id.desc())
    )
    return list(state.db.session.scalars(query))


def get_payment(state: FinConnState, holder_id: str, payment_id: str) -> Payment:
    """One of the holder's debits; another holder's id is a 404 like a missing one."""
    query = sa.select(Payment).where(Payment.id == payment_id, Payment.holder_id == holder_id)
    payment = state.db.session.scalars(query).first()
    if payment is None:
        raise NotFound("There is no such payment for this user.", code="payment_not_found")
    return payment


def apply_intent(
    state: FinConnState, intent: dict[str, Any], *, payment_id: str | None = None
) -> Payment | None:
    """Move the stored debit of a PaymentIntent forward to what the intent says.

    The row is found by ``payment_id`` (the debit that created the intent) or by the
    ``pi_`` id; None when there is none (a PaymentIntent this app did not create), or when
    the row already stores another PaymentIntent's id (the intent is then ignored).
    """
    session = state.db.session
    where = Payment.id == payment_id if payment_id else Payment.stripe_id == intent["id"]
    row = locked(state, where)
    if row is None or row.stripe_id not in (None, intent["id"]):
        # Not ours, or another PaymentIntent than the one this debit created: ignored.
        session.rollback()
        return None
    first = row.stripe_id is None
    if first:
        row.stripe_id = intent["id"]
    status, code = status_of(intent)
    changed = status is not None and RANK[status] > RANK[row.status]
    if first and status == row.status == "processing":
        changed = True  # the first answer from Stripe: announce the start once
    if changed and status is not None:
        row.status = status
        if status == "failed":
            row.failure_code = code
            row.failure_message = failure_message(code)
    session.commit()
    loaded(state, row)
    if changed:
        announce(row)
    return row


def refresh_payment(state: FinConnState, payment: Payment) -> Payment:
    """Re-read a debit's PaymentIntent from Stripe and store what it says."""
    if payment.stripe_id is None:
        return resume(state, payment)
    intent = state.stripe.retrieve_payment_intent(payment.stripe_id).to_dict()
    return apply_intent(state, intent) or payment


def apply_intent_by_id(state: FinConnState, intent_id: str) -> Payment | None:
    """Re-read a PaymentIntent and apply it, if one of our debits has it (webhooks)."""
    known = state.db.session.scalars(
        sa.select(Payment.id).where(Payment.stripe_id == intent_id)
    ).first()
    if known is None:
        return None
    intent = state.stripe.retrieve_payment_intent(intent_id).to_dict()
    return apply_intent(state, intent)


def cancel(state: FinConnState, holder_id: str, payment_id: str) -> Payment:
    """Cancel a debit that has not settled; Stripe refuses once the bank has it.

    A debit whose request to Stripe has not been answered yet is refused without calling
    Stripe: cancelling never sends a debit.
    """
    payment = get_payment(state, holder_id, payment_id)
    if payment.stripe_id is None and payment.status == "processing":
        raise Conflict(
            "The debit's request to Stripe has not finished, so it cannot be cancelled yet; "
            "try again shortly, or run `flask finconn payments --refresh-stuck` first.",
            code="payment_not_submitted",
        )
    if payment.stripe_id is None or payment.status not in ("processing", "requires_verification"):
        raise Conflict(
            f"The payment is {payment.status} and can no longer be cancelled.",
            code="payment_not_cancelable",
        )
    intent = state.stripe.cancel_payment_intent(payment.stripe_id).to_dict()
    return apply_intent(state, intent) or payment


def find_payments(
    state: FinConnState,
    *,
    holder_id: str | None = None,
    status: str | None = None,
    limit: int = 50,
) -> list[Payment]:
    """Debits of every holder (or one), newest first, for operators (no holder scoping)."""
    query = sa.select(Payment).order_by(Payment.created_at.desc(), Payment.id.desc()).limit(limit)
    if holder_id is not None:
        query = query.where(Payment.holder_id == holder_id)
    if status is not None:
        query = query.where(Payment.status == status)
    return list(state.db.session.scalars(query))


def find_payment(state: FinConnState, payment_id: str) -> Payment:
    """A debit by our ``fcpay_`` id or its ``pi_`` id, whoever's it is (operators)."""
    query = sa.select(Payment).where(
        sa.or_(Payment.id == payment_id, Payment.stripe_id == payment_id)
    )
    payment = state.db.session.scalars(query).first()
    if payment is None:
        raise NotFound(f"There is no payment {payment_id}.", code="payment_not_found")
    return payment


def stuck_payments(state: FinConnState, older_than: timedelta) -> list[Payment]:
    """Debits still ``processing`` (or never submitted) since before ``older_than`` ago."""
    cutoff = utcnow() - older_than
    query = (
        sa.select(Payment)
        .where(Payment.status.in_(("processing", "requires_verification")))
        .where(Payment.updated_at < cutoff)
        .order_by(Payment.created_at)
    )
    return list(state.db.session.scalars(query))


__all__ = [
    "STATUSES",
    "apply_intent",
    "apply_intent_by_id",
    "cancel",
    "find_payment",
    "find_payments",
    "get_payment",
    "list_payments",
    "refresh_payment",
    "stuck_payments",
]
