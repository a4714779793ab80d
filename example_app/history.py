"""The Events page's rows: which webhook events are the signed-in user's, and what each is about.

Account events carry the account's id in their own column. Payment events (payment and
setup intents, charges and disputes, payment methods, mandates) do not: they are the user's
when their object names the user's Stripe customer, or one of the user's saved bank
accounts, mandates, setup intents or payments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import url_for

from flask_finconn.models import Account, Customer, Payment, PaymentMethod, WebhookEvent

from .formatting import money
from .models import db


@dataclass(frozen=True)
class Subject:
    """What an event is about, for its row: a name, a link to it, and a detail after it."""

    name: str
    href: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class Mine:
    """The signed-in user's ids at Stripe, to pick their events out of everyone's."""

    holder_id: str
    accounts: dict[str, Account]
    customer: str | None
    methods: list[PaymentMethod]

    def condition(self) -> sa.ColumnElement[bool]:
        """Events about one of these accounts, or about this customer's payments."""
        obj = WebhookEvent.payload[("data", "object")]
        # The user's debits stay in the database: there may be more than a statement
        # takes parameters, and the page shows at most a hundred of them.
        intents = sa.select(Payment.stripe_id).where(
            Payment.holder_id == self.holder_id, Payment.stripe_id.isnot(None)
        )
        methods = sorted(m.stripe_id for m in self.methods)
        others = [
            *(m.mandate_id for m in self.methods if m.mandate_id),
            *(m.setup_intent_id for m in self.methods if m.setup_intent_id),
        ]
        about = [
            obj["id"].as_string().in_(sorted({*methods, *others})),
            obj["id"].as_string().in_(intents),
            obj["payment_intent"].as_string().in_(intents),
            obj["payment_method"].as_string().in_(methods),
        ]
        if self.customer:
            about.append(obj["customer"].as_string() == self.customer)
        return sa.or_(
            WebhookEvent.account_stripe_id.in_(list(self.accounts)),
            sa.and_(WebhookEvent.account_stripe_id.is_(None), sa.or_(*about)),
        )


def mine(holder_id: str, accounts: list[Account]) -> Mine:
    """The user's accounts by every Stripe id they had, customer and bank accounts."""
    by_stripe_id = {}
    for account in accounts:
        for stripe_id in (account.stripe_id, *account.previous_stripe_ids):
            by_stripe_id[stripe_id] = account
    customer = db.session.scalar(
        sa.select(Customer.stripe_id).where(Customer.holder_id == holder_id)
    )
    methods = db.session.scalars(
        sa.select(PaymentMethod).where(PaymentMethod.holder_id == holder_id)
    ).all()
    return Mine(holder_id, by_stripe_id, customer, list(methods))


def _intent(obj: dict[str, Any]) -> Any:
    """The PaymentIntent id an event's object is, or is about."""
    kind = obj.get("object")
    return obj.get("payment_intent") if kind in ("charge", "dispute") else obj.get("id")


def subjects(events: Sequence[WebhookEvent], user: Mine) -> dict[str, Subject | None]:
    """What each of these events is about, by event id (the user's debits they name read
    in one query)."""
    objects = {event.id: _object(event) for event in events}
    intents = {i for i in map(_intent, objects.values()) if isinstance(i, str)}
    payments = {
        payment.stripe_id: payment
        for payment in db.session.scalars(
            sa.select(Payment).where(
                Payment.holder_id == user.holder_id, Payment.stripe_id.in_(sorted(intents))
            )
        )
    }
    return {event.id: subject(event, objects[event.id], user, payments) for event in events}


def _object(event: WebhookEvent) -> dict[str, Any]:
    found = (event.payload.get("data") or {}).get("object") or {}
    return found if isinstance(found, dict) else {}


def _method_subject(method: PaymentMethod, accounts: dict[str, Account]) -> Subject:
    linked = next((a for a in accounts.values() if a.id == method.account_id), None)
    name = (linked.display_name if linked else None) or method.bank_name or "Bank account"
    detail = f"•••• {method.last4}" if method.last4 else ""
    return Subject(name, url_for("payments.index") + "#methods-title", detail)


def subject(
    event: WebhookEvent,
    obj: dict[str, Any],
    user: Mine,
    payments: Mapping[str | None, Payment],
) -> Subject | None:
    """The account, bank account or payment the event (its object ``obj``) is about (None
    when unknown); ``payments``: the user's debits by PaymentIntent id."""
    if event.account_stripe_id:
        account = user.accounts.get(event.account_stripe_id)
        if account is None:
            return None
        name = account.display_name or account.institution_name
        detail = f"•••• {account.last4}" if account.last4 else ""
        return Subject(name, url_for("pages.account", account_id=account.id), detail)
    kind = obj.get("object")
    intent = _intent(obj)
    payment = payments.get(intent) if isinstance(intent, str) else None
    if payment is not None:
        return Subject(
            payment.description,
            url_for("payments.index") + "#payments",
            money(payment.amount, payment.currency),
        )
    if kind in ("payment_intent", "charge", "dispute") and isinstance(obj.get("amount"), int):
        return Subject("Payment", None, money(obj["amount"], obj.get("currency")))
    method_id = obj.get("id") if kind == "payment_method" else obj.get("payment_method")
    for method in user.methods:
        if method_id == method.stripe_id or obj.get("id") in (
            method.setup_intent_id,
            method.mandate_id,
        ):
            return _method_subject(method, user.accounts)
    return None
