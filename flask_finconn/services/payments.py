"""Stored debits: lookups, following them to settlement, cancelling, operator queries.

A debit is started once by :mod:`.debits`; afterwards its state only moves forward
(:func:`apply_intent`): ``processing`` → ``succeeded`` | ``failed`` | ``canceled``, and
``succeeded`` → ``disputed``, each read again from Stripe, so webhooks in any order,
duplicates and replays are harmless.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, NotFound
from ..models import Customer, Payment, PaymentMethod, utcnow
from ..state import FinConnState
from .accounts import loaded
from .debits import announce, failure_message, locked, resume, status_of

logger = logging.getLogger("flask_finconn.payments")
# The failure code of a debit an operator marked failed: Stripe had no PaymentIntent for it.
MISSING_CODE = "payment_intent_missing"

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
    ``pi_`` id; None when there is none (a PaymentIntent this app did not create), when
    the row already stores another PaymentIntent's id, or when it has none but is no longer
    waiting for one (refused at once, or marked failed by an operator): the intent is then
    ignored.
    """
    session = state.db.session
    where = Payment.id == payment_id if payment_id else Payment.stripe_id == intent["id"]
    row = locked(state, where)
    if (
        row is None
        or row.stripe_id not in (None, intent["id"])
        or (row.stripe_id is None and row.status != "processing")
    ):
        # Not ours, another PaymentIntent than the one this debit created, or settled
        # without one (checked under the lock, as a racing operator may settle it).
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


def apply_intent_by_id(
    state: FinConnState, intent_id: str, *, claimed_by: str | None = None
) -> Payment | None:
    """Re-read a PaymentIntent and apply it, if one of our debits has it (webhooks).

    ``claimed_by`` is the ``finconn_payment_id`` an event's snapshot carries in its
    metadata: an event may arrive before the debit that created the intent stored its
    ``pi_`` id. The named debit then takes the intent only while it is still waiting for
    its first answer (``processing``, no ``pi_`` id) and the re-read intent is the one it
    created (:func:`mismatch`); anything else is ignored.
    """
    session = state.db.session
    known = session.scalars(sa.select(Payment.id).where(Payment.stripe_id == intent_id)).first()
    if known is not None:
        intent = state.stripe.retrieve_payment_intent(intent_id).to_dict()
        return apply_intent(state, intent)
    if not claimed_by:
        return None
    waiting = session.scalars(
        sa.select(Payment).where(
            Payment.id == claimed_by,
            Payment.stripe_id.is_(None),
            Payment.status == "processing",
        )
    ).first()
    if waiting is None:
        _alert_if_marked_missing(state, intent_id, claimed_by)
        return None
    intent = state.stripe.retrieve_payment_intent(intent_id).to_dict()
    reason = mismatch(state, waiting, intent)
    if reason is not None:
        logger.warning(
            "PaymentIntent %s names debit %s in its metadata, but %s; ignored.",
            intent_id,
            waiting.id,
            reason,
        )
        session.rollback()
        return None
    return apply_intent(state, intent, payment_id=waiting.id)


def _alert_if_marked_missing(state: FinConnState, intent_id: str, payment_id: str) -> None:
    """Log an error when the debit ``payment_id``, which an operator marked failed because
    Stripe had no PaymentIntent for it, turns out to have one after all.

    The row is left as it is (only a person can tell what happened), but money may move
    while it says failed, so this is logged as an error naming both ids.
    """
    marked = state.db.session.scalars(
        sa.select(Payment).where(
            Payment.id == payment_id,
            Payment.stripe_id.is_(None),
            Payment.failure_code == MISSING_CODE,
        )
    ).first()
    if marked is None:
        return
    intent = state.stripe.retrieve_payment_intent(intent_id).to_dict()
    if mismatch(state, marked, intent) is None:
        logger.error(
            "PaymentIntent %s (%s) is debit %s's, which was marked failed because Stripe had "
            "no PaymentIntent for it: money may move while the debit says failed. Check the "
            "PaymentIntent in the Stripe dashboard and cancel or refund it.",
            intent_id,
            intent.get("status"),
            payment_id,
        )


def _id_of(reference: Any) -> str | None:
    """The id of an expandable field, whether Stripe sent it expanded or not."""
    if isinstance(reference, dict):
        reference = reference.get("id")
    return reference if isinstance(reference, str) else None


def mismatch(state: FinConnState, payment: Payment, intent: dict[str, Any]) -> str | None:
    """Why ``intent`` is not the PaymentIntent this debit created; None when it is.

    A debit creates its intent with its own id as metadata ``finconn_payment_id``, for its
    holder's Customer and bank account, with its amount and currency; all must match, so
    an intent of another holder or of another installation sharing the Stripe account
    (whose Customers are not ours), or one whose metadata was copied, is never taken for
    this debit. The bank account of a failed intent is the one its last_payment_error names.
    """
    metadata = intent.get("metadata") or {}
    if metadata.get("finconn_payment_id") != payment.id:
        return f"its metadata finconn_payment_id is not {payment.id}"
    customer, method = (_id_of(intent.get(name)) for name in ("customer", "payment_method"))
    if method is None:
        # A failed attempt (an ACH return) clears the intent's payment_method; the bank
        # account it debited is then in last_payment_error.
        method = _id_of((intent.get("last_payment_error") or {}).get("payment_method"))
    ours = state.db.session.execute(
        sa.select(Customer.stripe_id, PaymentMethod.stripe_id)
        .join(PaymentMethod, PaymentMethod.customer_id == Customer.id)
        .where(PaymentMethod.id == payment.payment_method_id)
    ).one()
    if customer is None or customer != ours[0]:
        return "it debits another Stripe customer than the debit's holder"
    if method != ours[1]:
        return "it debits another bank account than the debit's"
    if (intent.get("amount"), intent.get("currency")) != (payment.amount, payment.currency):
        return (
            f"its amount ({intent.get('amount')} {intent.get('currency')}) is not the "
            f"debit's ({payment.amount} {payment.currency})"
        )
    return None


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
    "mismatch",
    "refresh_payment",
    "stuck_payments",
]
