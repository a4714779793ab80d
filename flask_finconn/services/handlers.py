"""What each Stripe event means: the handler table of the event ledger (:mod:`.events`).

Events are nudges: an account event re-reads the account from Stripe and applies that
(:func:`.sync.sync_account_from_stripe`), whatever the event's snapshot says, so an old or
duplicated event can only ever apply Stripe's current state. Handlers commit their own
work and send their signals after their commits, except those of
:data:`IN_EVENT_TRANSACTION`, which write in the event's transaction and never commit.
Types without a handler are stored, acknowledged and left alone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from ..errors import FinConnError
from ..models import Account, Customer, WebhookEvent
from ..signals import account_linked, account_updated
from ..state import FinConnState
from .accounts import loaded, upsert_account
from .payment_events import PAYMENT_EVENT_TYPES, PAYMENT_HANDLERS
from .sync import sync_account_from_stripe

logger = logging.getLogger("flask_finconn.events")

PREFIX = "financial_connections."
ACCOUNT = PREFIX + "account."
ACCOUNT_EVENT_TYPES = tuple(
    ACCOUNT + name
    for name in (
        "created",
        "deactivated",
        "reactivated",
        "disconnected",
        "refreshed_balance",
        "refreshed_ownership",
        "refreshed_transactions",
        "account_numbers_updated",
        "upcoming_account_number_expiry",
        "supported_payment_method_types_updated",
        "upcoming_deactivation",
        "expected_deactivation_date_updated",
    )
)
AUTHORIZATION_EVENT_TYPES = (
    PREFIX + "authorization.upcoming_deactivation",
    PREFIX + "authorization.expected_deactivation_date_updated",
)
EVENT_TYPES = ACCOUNT_EVENT_TYPES + AUTHORIZATION_EVENT_TYPES + PAYMENT_EVENT_TYPES

Handler = Callable[[FinConnState, WebhookEvent], None]


class EventIgnored(FinConnError):
    """A handler's verdict that the event cannot or need not be acted on, for good.

    The ledger records the event ``ignored`` with this message as the reason; it is
    acknowledged and never retried. Never rendered as an HTTP answer.
    """

    status = 422
    code = "event_ignored"
    message = "The event cannot be acted on; it is recorded as ignored."


def handler_for(event_type: str) -> Handler:
    """The handler of an event type; unknown types are acknowledged and left alone."""
    return HANDLERS.get(event_type, ignore)


def in_event_transaction(event_type: str) -> bool:
    """Whether the type's handler may run inside the event's own transaction.

    Such a handler (one of :data:`IN_EVENT_TRANSACTION`) only writes through the session:
    it never commits or rolls back, so the inline queue inserts the event, runs it and
    marks it processed in one transaction with one commit. Every other handler manages its
    transactions (it locks, re-reads Stripe, commits per page, rolls back a lost race): the
    event's claim is committed before it runs, so no rollback of its can take the claim.
    """
    return handler_for(event_type) in IN_EVENT_TRANSACTION


def ignore(state: FinConnState, event: WebhookEvent) -> None:
    """Store-only: the event needs no action."""
    logger.info("Stored event %s of type %s, which needs no action.", event.id, event.type)


def account_event(state: FinConnState, event: WebhookEvent) -> None:
    """Re-read the account from Stripe and apply that, whatever the event's snapshot says.

    The sync service locks the stored row, re-reads, stores what finished (balance,
    owners, status) and syncs transactions when a newer transaction refresh finished; it
    commits itself (the sync per page, so a failure resumes where it stopped) and sends
    its signals after its commits. An account we do not store yet but whose customer is
    ours (the webhook beat the browser's completion) is linked here.
    """
    stripe_id = event.account_stripe_id
    if stripe_id is None:
        raise EventIgnored("The event names no financial_connections.account id.")
    if sync_account_from_stripe(state, stripe_id) is None:
        _link_new_account(state, event, stripe_id)


def _link_new_account(state: FinConnState, event: WebhookEvent, stripe_id: str) -> None:
    session = state.db.session
    obj = (event.payload.get("data") or {}).get("object") or {}
    holder = obj.get("account_holder") if isinstance(obj, dict) else None
    if not isinstance(holder, dict):
        raise EventIgnored("The account's account_holder is not an object.")
    customer = _customer(state, holder.get("customer"))
    if customer is None:
        # Another installation's customer (staging beside dev on one Stripe account), or
        # no customer at all: nothing of it is ours to store.
        raise EventIgnored(
            f"Account {stripe_id} belongs to a Stripe Customer this installation did not create."
        )
    if _superseded(state, customer, stripe_id):
        logger.info("Event %s is about %s, replaced by a relink; ignored.", event.id, stripe_id)
        return
    fresh = state.stripe.retrieve_account(stripe_id).to_dict()
    # The payload is only a nudge: link the account only if Stripe says it is this customer's.
    if (fresh.get("account_holder") or {}).get("customer") != customer.stripe_id:
        raise EventIgnored(
            f"The event names customer {customer.stripe_id} for {stripe_id}; Stripe does not."
        )
    for attempt in range(2):
        try:
            result = upsert_account(state, customer, fresh)
            session.commit()
        except IntegrityError:
            # The browser's completion stored it meanwhile; the second pass updates that row.
            session.rollback()
            if attempt:
                raise
            continue
        loaded(state, result.account)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if result.change in ("created", "relinked"):
            account_linked.send(app, account=result.account)
        elif result.change == "updated":
            account_updated.send(app, account=result.account)
        return


def _customer(state: FinConnState, stripe_customer_id: Any) -> Customer | None:
    if not isinstance(stripe_customer_id, str):
        return None
    query = sa.select(Customer).where(Customer.stripe_id == stripe_customer_id)
    return state.db.session.scalars(query).first()


def _superseded(state: FinConnState, customer: Customer, stripe_id: str) -> bool:
    """Whether a relink replaced this ``fca_`` id on one of the customer's accounts."""
    previous = state.db.session.scalars(
        sa.select(Account.previous_stripe_ids).where(Account.customer_id == customer.id)
    )
    return any(stripe_id in ids for ids in previous)


HANDLERS: dict[str, Handler] = {
    **{name: account_event for name in ACCOUNT_EVENT_TYPES},
    # An authorization is the login behind several accounts; Stripe sends the matching
    # account events too, and those carry everything stored about the accounts.
    **{name: ignore for name in AUTHORIZATION_EVENT_TYPES},
    # Payment events re-read their intent, PaymentMethod or mandate (payment_events.py).
    **PAYMENT_HANDLERS,
}

#: Handlers that neither commit nor roll back (see :func:`in_event_transaction`).
IN_EVENT_TRANSACTION: set[Handler] = {ignore}

__all__ = [
    "EVENT_TYPES",
    "HANDLERS",
    "IN_EVENT_TRANSACTION",
    "EventIgnored",
    "Handler",
    "account_event",
    "handler_for",
    "ignore",
    "in_event_transaction",
]
