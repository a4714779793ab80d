"""Saved bank payment methods: a ``us_bank_account`` PaymentMethod with a mandate, per holder.

Two ways in, one result: a SetupIntent the browser collected an account into (Stripe.js
confirms it, then :func:`complete_setup_intent` re-reads it from Stripe), or a linked
account saved from the server (:func:`save_account`) with the mandate the holder accepted
in this request. Then microdeposit verification (:func:`verify`) and removal
(:func:`detach`). What Stripe answers is stored by :mod:`.payment_method_sync`, forward
only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import Conflict, FinConnError, NotFound, ValidationError
from ..models import Account, Customer, PaymentMethod, utcnow
from ..signals import account_linked
from ..state import FinConnState, Holder
from .accounts import find_by_stripe_id, get_account, loaded, upsert_account
from .customers import get_or_create_customer
from .payment_method_sync import (
    apply_payment_method,
    apply_setup_intent,
    sender,
)

logger = logging.getLogger("flask_finconn")

DEBITABLE_SUBCATEGORIES = ("checking", "savings")


@dataclass(frozen=True)
class NewSetupIntent:
    """A SetupIntent the browser can collect into: hand ``client_secret`` to Stripe.js only."""

    id: str
    client_secret: str
    mandate_text: str
    billing_details: dict[str, str | None]


@dataclass(frozen=True)
class CompletedSetup:
    """What a SetupIntent saved: the payment method and the accounts it came with."""

    payment_method: PaymentMethod | None
    accounts: list[Account]
    cancelled: bool


def mandate_text(merchant_name: str) -> str:
    """The authorization the holder accepts before a bank account is saved for debits.

    It follows the Nacha rules for online authorizations of recurring debits: who may
    debit, until when, how to revoke, and the notice periods.
    """
    return (
        f"By saving your bank account, you authorize {merchant_name} to debit the account "
        "for any amount owed for charges arising from your use of its services and/or "
        "purchase of its products, pursuant to its terms, until this authorization is "
        f"revoked. You may amend or cancel this authorization at any time by notifying "
        f"{merchant_name} with 30 (thirty) days notice. If you use {merchant_name}'s "
        "services or purchase its products periodically pursuant to its terms, you "
        "authorize it to debit your bank account periodically. Payments that fall outside "
        "the regular debits authorized above will only be debited after your "
        "authorization is obtained. If a debit is returned, a fee may apply."
    )


def billing_details(holder: Holder) -> dict[str, str | None]:
    """The name and email Stripe records on a holder's bank payment method.

    Stripe requires a name for a ``us_bank_account``: the holder's name, else their
    email, else their id.
    """
    return {"name": holder.name or holder.email or holder.id, "email": holder.email}


def _not_found() -> NotFound:
    return NotFound(
        "There is no such payment method for this user.", code="payment_method_not_found"
    )


def list_payment_methods(state: FinConnState, holder_id: str) -> list[PaymentMethod]:
    """The holder's saved bank payment methods, newest first (detached ones included)."""
    query = (
        sa.select(PaymentMethod)
        .where(PaymentMethod.holder_id == holder_id)
        .order_by(PaymentMethod.created_at.desc(), PaymentMethod.id)
    )
    return list(state.db.session.scalars(query))


def get_payment_method(state: FinConnState, holder_id: str, method_id: str) -> PaymentMethod:
    """One of the holder's payment methods; another holder's id is a 404 like a missing one."""
    query = sa.select(PaymentMethod).where(
        PaymentMethod.id == method_id, PaymentMethod.holder_id == holder_id
    )
    method = state.db.session.scalars(query).first()
    if method is None:
        raise _not_found()
    return method


def create_setup_intent(state: FinConnState, holder: Holder) -> NewSetupIntent:
    """A SetupIntent on the holder's customer, asking for the configured permissions.

    ``payment_method`` is always among them: Stripe refuses the others alone.
    """
    customer = get_or_create_customer(state, holder)
    permissions = [
        "payment_method",
        *(p for p in state.settings.permissions if p != "payment_method"),
    ]
    intent = state.stripe.create_setup_intent(customer.stripe_id, permissions=permissions)
    return NewSetupIntent(
        id=intent.id,
        client_secret=str(intent.client_secret),
        mandate_text=mandate_text(state.settings.merchant_name),
        billing_details=billing_details(holder),
    )


def complete_setup_intent(state: FinConnState, holder: Holder, intent_id: str) -> CompletedSetup:
    """Store what a SetupIntent collected, as Stripe says (the browser's word is not taken).

    A SetupIntent of another customer is a 404. One the holder left without an account
    (the modal closed, deposits could not be sent) is ``cancelled``.
    """
    customer = get_or_create_customer(state, holder)
    try:
        intent = state.stripe.retrieve_setup_intent(intent_id).to_dict()
    except NotFound:
        raise _si_not_found() from None
    if intent.get("customer") != customer.stripe_id:
        raise _si_not_found()
    pm = intent.get("payment_method")
    if not isinstance(pm, dict) or intent.get("status") not in ("succeeded", "requires_action"):
        return CompletedSetup(payment_method=None, accounts=[], cancelled=True)
    accounts = _store_linked_account(state, customer, pm)
    method = apply_setup_intent(state, intent, customer=customer, holder_id=holder.id)
    return CompletedSetup(payment_method=method, accounts=accounts, cancelled=False)


def _si_not_found() -> NotFound:
    return NotFound("There is no such setup intent for this user.", code="setup_intent_not_found")


def _store_linked_account(
    state: FinConnState, customer: Customer, pm: dict[str, Any]
) -> list[Account]:
    """Store the Financial Connections account behind a collected PaymentMethod, if any."""
    fca = (pm.get("us_bank_account") or {}).get("financial_connections_account")
    if not fca:
        return []
    existing = find_by_stripe_id(state, fca)
    if existing is not None:
        return [existing]
    raw = state.stripe.retrieve_account(fca).to_dict()
    if (raw.get("account_holder") or {}).get("customer") != customer.stripe_id:
        return []
    session = state.db.session
    try:
        result = upsert_account(state, customer, raw)
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = find_by_stripe_id(state, fca)
        return [winner] if winner is not None else []
    loaded(state, result.account)
    account_linked.send(sender(), account=result.account)
    return [result.account]


def debit_refusal(account: Account) -> FinConnError | None:
    """Why a linked account cannot be saved for debits, or None when it can."""
    if account.category != "cash" or account.subcategory not in DEBITABLE_SUBCATEGORIES:
        return ValidationError(
            "Only checking and savings accounts can be debited; choose another account.",
            code="account_not_debitable",
        )
    if "payment_method" not in account.permissions:
        return ValidationError(
            "The account was linked without the payment_method permission; link it again "
            "and allow payments.",
            code="permission_missing",
            extra={"permission": "payment_method", "action": "relink_required"},
        )
    if account.status != "active":
        return ValidationError(
            f"The account is {account.status}; link it again before saving it for payments.",
            code=f"account_{account.status}",
            extra={"action": "relink_required"},
        )
    if "us_bank_account" not in (account.supported_payment_method_types or []):
        return ValidationError(
            "The bank has not confirmed this account's numbers for debits; link another "
            "account or enter its numbers by hand.",
            code="account_not_debitable",
        )
    return None


def save_account(
    state: FinConnState,
    holder: Holder,
    account_id: str,
    *,
    ip_address: str,
    user_agent: str,
    accepted_at: datetime | None = None,
) -> PaymentMethod:
    """Save one of the holder's linked accounts for debits, with the mandate just accepted.

    Creates and confirms a SetupIntent from the ``fca_`` with an online mandate carrying
    the request's IP address, user agent and time. An account already saved (and not
    detached) returns its payment method. Refusals are 400s naming why.
    """
    account = get_account(state, holder.id, account_id)
    refusal = debit_refusal(account)
    if refusal is not None:
        raise refusal
    current = state.db.session.scalars(
        sa.select(PaymentMethod).where(
            PaymentMethod.account_id == account.id, PaymentMethod.status != "detached"
        )
    ).first()
    if current is not None:
        return current
    customer = get_or_create_customer(state, holder)
    when = accepted_at or utcnow()
    acceptance = {
        "type": "online",
        "accepted_at": int(when.timestamp()),
        "online": {"ip_address": ip_address, "user_agent": user_agent},
    }
    billing = billing_details(holder)
    try:
        intent = state.stripe.setup_from_account(
            customer.stripe_id,
            account.stripe_id,
            billing_name=billing["name"] or holder.id,
            billing_email=billing["email"],
            acceptance=acceptance,
        ).to_dict()
    except FinConnError as exc:
        if exc.status == 502 and exc.code == "stripe_request_rejected":
            raise ValidationError(
                "Stripe would not save this account for payments; link it again with "
                "payments allowed, or choose another account.",
                code="account_not_debitable",
            ) from exc
        raise
    return apply_setup_intent(state, intent, customer=customer, holder_id=holder.id)


def verify(
    state: FinConnState, holder_id: str, method_id: str, values: dict[str, Any]
) -> PaymentMethod:
    """Send the microdeposit values to Stripe and store the outcome.

    A wrong value is a 400 ``verification_failed`` with ``attempts_remaining``; the count
    is stored too. Too many wrong values, or too late, fails the payment method for good.
    """
    method = get_payment_method(state, holder_id, method_id)
    if method.status != "requires_verification" or method.setup_intent_id is None:
        raise Conflict(
            f"The bank account is {method.status.replace('_', ' ')}, not waiting for verification.",
            code="verification_not_required",
        )
    customer = state.db.session.get(Customer, method.customer_id)
    assert customer is not None
    try:
        intent = state.stripe.verify_microdeposits(method.setup_intent_id, values).to_dict()
    except ValidationError as exc:
        remaining = exc.extra.get("attempts_remaining")
        intent = state.stripe.retrieve_setup_intent(method.setup_intent_id).to_dict()
        fresh = apply_setup_intent(state, intent, customer=customer, holder_id=holder_id)
        if remaining is not None and fresh.status == "requires_verification":
            fresh.verification_attempts_remaining = remaining
            state.db.session.commit()
        raise
    return apply_setup_intent(state, intent, customer=customer, holder_id=holder_id)


def detach(state: FinConnState, holder_id: str, method_id: str) -> PaymentMethod:
    """Detach the payment method at Stripe (its mandate is revoked) and store that."""
    method = get_payment_method(state, holder_id, method_id)
    if method.status == "detached":
        return method
    pm = state.stripe.detach_payment_method(method.stripe_id).to_dict()
    return apply_payment_method(state, method.stripe_id, pm) or method


__all__ = [
    "CompletedSetup",
    "NewSetupIntent",
    "billing_details",
    "complete_setup_intent",
    "create_setup_intent",
    "debit_refusal",
    "detach",
    "get_payment_method",
    "list_payment_methods",
    "mandate_text",
    "save_account",
    "verify",
]
