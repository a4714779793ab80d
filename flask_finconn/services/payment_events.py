"""What the payment events mean: nudges that re-read the intent, PaymentMethod or mandate.

As with account events, the event's snapshot is never applied: each handler reads the
object again from Stripe and moves the stored row forward only
(:mod:`.payment_method_sync`, :mod:`.payments`), so duplicates, replays and any arrival order
end in Stripe's current state. An event about an object this app did not create (another
app on the same Stripe account) finds no row and does nothing.
"""

from __future__ import annotations

import logging
from typing import Any

import sqlalchemy as sa

from ..models import Customer, PaymentMethod, WebhookEvent
from ..state import FinConnState
from . import payments
from .payment_method_sync import apply_mandate, apply_payment_method, apply_setup_intent

logger = logging.getLogger("flask_finconn.events")

SETUP_INTENT_EVENT_TYPES = tuple(
    "setup_intent." + name
    for name in ("created", "requires_action", "succeeded", "setup_failed", "canceled")
)
PAYMENT_INTENT_EVENT_TYPES = tuple(
    "payment_intent." + name
    for name in (
        "created",
        "requires_action",
        "processing",
        "succeeded",
        "payment_failed",
        "canceled",
    )
)
CHARGE_EVENT_TYPES = tuple(
    "charge." + name
    for name in (
        "pending",
        "succeeded",
        "failed",
        "updated",
        "dispute.created",
        "dispute.closed",
    )
)
PAYMENT_METHOD_EVENT_TYPES = tuple(
    "payment_method." + name for name in ("attached", "detached", "automatically_updated")
)
MANDATE_EVENT_TYPES = ("mandate.updated",)
PAYMENT_EVENT_TYPES = (
    SETUP_INTENT_EVENT_TYPES
    + PAYMENT_INTENT_EVENT_TYPES
    + CHARGE_EVENT_TYPES
    + PAYMENT_METHOD_EVENT_TYPES
    + MANDATE_EVENT_TYPES
)


def _object(event: WebhookEvent) -> dict[str, Any]:
    obj: dict[str, Any] = event.payload["data"]["object"]
    return obj


def _not_ours(event: WebhookEvent) -> None:
    logger.info("Event %s is about an object this app did not create; ignored.", event.id)


def setup_intent_event(state: FinConnState, event: WebhookEvent) -> None:
    """Re-read the SetupIntent; store or advance the payment method it saved for our customer.

    The event may beat the browser's completion: a SetupIntent of one of our customers
    that collected an account is stored here, the completion then finds the row.
    """
    intent_id = _object(event).get("id")
    if not isinstance(intent_id, str):
        return
    intent = state.stripe.retrieve_setup_intent(intent_id).to_dict()
    customer = state.db.session.scalars(
        sa.select(Customer).where(Customer.stripe_id == intent.get("customer"))
    ).first()
    if customer is None:
        _not_ours(event)
        return
    if not isinstance(intent.get("payment_method"), dict):
        return
    known = state.db.session.scalars(
        sa.select(PaymentMethod.id).where(PaymentMethod.setup_intent_id == intent_id)
    ).first()
    if known is None and intent.get("status") not in ("succeeded", "requires_action"):
        return
    apply_setup_intent(state, intent, customer=customer, holder_id=customer.holder_id)


def payment_intent_event(state: FinConnState, event: WebhookEvent) -> None:
    """Re-read the PaymentIntent and advance the debit that created it.

    The event can beat the debit's own answer from Stripe: the debit named by the
    snapshot's ``finconn_payment_id`` metadata then takes the intent, once the re-read
    intent proves to be the one it created (:func:`.payments.apply_intent_by_id`).
    """
    snapshot = _object(event)
    intent_id = snapshot.get("id")
    claimed_by = (snapshot.get("metadata") or {}).get("finconn_payment_id")
    if not isinstance(claimed_by, str):
        claimed_by = None
    if (
        not isinstance(intent_id, str)
        or payments.apply_intent_by_id(state, intent_id, claimed_by=claimed_by) is None
    ):
        _not_ours(event)


def charge_event(state: FinConnState, event: WebhookEvent) -> None:
    """A charge or dispute changed: re-read its PaymentIntent (disputes show on its charge)."""
    intent_id = _object(event).get("payment_intent")
    if isinstance(intent_id, dict):
        intent_id = intent_id.get("id")
    if not isinstance(intent_id, str) or payments.apply_intent_by_id(state, intent_id) is None:
        _not_ours(event)


def payment_method_event(state: FinConnState, event: WebhookEvent) -> None:
    """Re-read the PaymentMethod and its mandate (detached, blocked)."""
    pm_id = _object(event).get("id")
    if not isinstance(pm_id, str) or apply_payment_method(state, pm_id) is None:
        _not_ours(event)


def mandate_event(state: FinConnState, event: WebhookEvent) -> None:
    """Re-read the mandate and store its status (a dispute or revocation ends it)."""
    mandate_id = _object(event).get("id")
    if not isinstance(mandate_id, str) or apply_mandate(state, mandate_id) is None:
        _not_ours(event)


PAYMENT_HANDLERS = {
    **{name: setup_intent_event for name in SETUP_INTENT_EVENT_TYPES},
    **{name: payment_intent_event for name in PAYMENT_INTENT_EVENT_TYPES},
    **{name: charge_event for name in CHARGE_EVENT_TYPES},
    **{name: payment_method_event for name in PAYMENT_METHOD_EVENT_TYPES},
    **{name: mandate_event for name in MANDATE_EVENT_TYPES},
}

__all__ = ["PAYMENT_EVENT_TYPES", "PAYMENT_HANDLERS"]
