"""Settling a debit that needs review: an operator's answer to a call Stripe never answered.

A debit whose claim was committed but whose request to Stripe got no answer for longer than
Stripe remembers idempotency keys is never sent again (:func:`.debits.needs_review`). A
person looks in the Stripe Dashboard and either names the PaymentIntent they found
(:func:`attach_payment_intent`) or says there is none (:func:`mark_payment_failed`). Neither
ever creates a PaymentIntent, and both check their claim against Stripe first. Each
settlement is logged on ``flask_finconn.payments`` (a warning, since money is involved) and
announced with the payment signals, as a webhook's change would be.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from ..errors import Conflict, NotFound
from ..models import Customer, Payment, PaymentMethod
from ..signals import payment_failed
from ..state import FinConnState
from .accounts import loaded
from .debits import locked, needs_review
from .payment_method_sync import sender
from .payments import MISSING_CODE, apply_intent, find_payment, mismatch

logger = logging.getLogger("flask_finconn.payments")

# How far the two clocks (ours when the debit was claimed, Stripe's when the intent was
# created) may disagree: listing a customer's intents stops at ones older than this.
CLOCK_MARGIN = timedelta(hours=1)
MISSING_MESSAGE = (
    "Stripe never created a PaymentIntent for this debit (checked by an operator), so the "
    "holder was not debited."
)


def attach_payment_intent(state: FinConnState, payment_id: str, intent_id: str) -> Payment:
    """Store the PaymentIntent an operator found for a debit that needs review, and apply it.

    The intent is read from Stripe and must be the one the debit created (its
    ``finconn_payment_id`` metadata, the holder's Customer and bank account, the amount and
    currency); its status is then applied exactly as a webhook's would be. Attaching the
    intent a debit already has returns it re-read (safe to repeat); any other debit that is
    not waiting for review is a ``Conflict`` (``payment_not_in_review``).
    """
    payment = _debit(state, payment_id)
    if payment.stripe_id != intent_id:
        _check_in_review(state, payment)
    try:
        intent = state.stripe.retrieve_payment_intent(intent_id).to_dict()
    except NotFound:
        raise NotFound(
            f"Stripe has no PaymentIntent {intent_id}; copy the pi_ id from the Stripe Dashboard.",
            code="payment_intent_not_found",
        ) from None
    reason = mismatch(state, payment, intent)
    if reason is not None:
        raise Conflict(
            f"The PaymentIntent {intent_id} is not the one the debit {payment.id} created: "
            f"{reason}. Look for the PaymentIntent with metadata "
            f"finconn_payment_id={payment.id}.",
            code="payment_intent_mismatch",
            extra={"payment": payment.id},
        )
    first = payment.stripe_id is None
    applied = apply_intent(state, intent, payment_id=payment.id)
    if applied is None:
        raise Conflict(
            f"The debit {payment.id} was settled meanwhile (by a webhook or another "
            f"operator); run `flask finconn payments show {payment.id}` to see how.",
            code="payment_not_in_review",
            extra={"payment": payment.id},
        )
    if first:
        logger.warning(
            "An operator attached PaymentIntent %s to debit %s (needed review); it is %s.",
            intent_id,
            applied.id,
            applied.status,
        )
    return applied


def mark_payment_failed(state: FinConnState, payment_id: str) -> Payment:
    """Mark a debit that needs review ``failed`` once Stripe shows no PaymentIntent for it.

    The holder's Customer's PaymentIntents are listed from Stripe (newest first, back to
    shortly before the debit was claimed); one with the debit's ``finconn_payment_id`` is a
    ``Conflict`` (``payment_intent_exists``) naming it, to attach instead. The failure is
    stored with the code ``payment_intent_missing`` and announced with ``payment_failed``.
    Repeating it on a debit it already failed returns that debit unchanged.
    """
    payment = _debit(state, payment_id)
    if payment.stripe_id is None and payment.failure_code == MISSING_CODE:
        return payment
    _check_in_review(state, payment)
    customer = _customer_of(state, payment)
    oldest = payment.created_at.timestamp() - CLOCK_MARGIN.total_seconds()
    for intent in state.stripe.customer_payment_intents(customer):
        if (intent.get("metadata") or {}).get("finconn_payment_id") == payment.id:
            raise Conflict(
                f"Stripe has the PaymentIntent {intent['id']} for the debit {payment.id}, so "
                f"it was sent after all; attach it instead: `flask finconn payments attach "
                f"{payment.id} {intent['id']}`.",
                code="payment_intent_exists",
                extra={"payment": payment.id, "payment_intent": intent["id"]},
            )
        if intent.get("created", 0) < oldest:
            break
    session = state.db.session
    row = locked(state, Payment.id == payment.id)
    assert row is not None
    if row.stripe_id is not None or row.status != "processing":
        # A webhook stored the intent while Stripe was being searched.
        session.rollback()
        raise _not_in_review(row)
    row.status = "failed"
    row.failure_code = MISSING_CODE
    row.failure_message = MISSING_MESSAGE
    session.commit()
    loaded(state, row)
    logger.warning(
        "An operator marked debit %s failed (needed review; Stripe has no PaymentIntent for it).",
        row.id,
    )
    payment_failed.send(sender(), payment=row)
    return row


def _debit(state: FinConnState, payment_id: str) -> Payment:
    if not payment_id.startswith("fcpay_"):
        raise NotFound(
            f"{payment_id} is not a debit id; pass the fcpay_ id that `flask finconn payments "
            "--refresh-stuck` listed.",
            code="payment_not_found",
        )
    return find_payment(state, payment_id)


def _customer_of(state: FinConnState, payment: Payment) -> str:
    method = state.db.session.get(PaymentMethod, payment.payment_method_id)
    assert method is not None
    customer = state.db.session.get(Customer, method.customer_id)
    assert customer is not None
    return customer.stripe_id


def _check_in_review(state: FinConnState, payment: Payment) -> None:
    if not needs_review(state, payment):
        raise _not_in_review(payment)


def _not_in_review(payment: Payment) -> Conflict:
    if payment.stripe_id is not None:
        detail = (
            f"it already has the PaymentIntent {payment.stripe_id} and is {payment.status}; "
            "nothing needs resolving"
        )
    elif payment.status == "processing":
        detail = (
            "its request to Stripe is less than 23 hours old and can still be retried safely; "
            "run `flask finconn payments --refresh-stuck --older-than 0` instead"
        )
    else:
        detail = f"Stripe refused it at once and it is {payment.status}; nothing needs resolving"
    return Conflict(
        f"The debit {payment.id} does not need review: {detail}.",
        code="payment_not_in_review",
        extra={"payment": payment.id},
    )


__all__ = ["CLOCK_MARGIN", "attach_payment_intent", "mark_payment_failed"]
