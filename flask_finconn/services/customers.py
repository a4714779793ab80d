"""One Stripe Customer per holder, created on first use."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..models import Customer
from ..state import FinConnState, Holder
from .installation import installation_id


def find_customer(state: FinConnState, holder_id: str) -> Customer | None:
    """The holder's stored customer, or None before their first link."""
    session = state.db.session
    return session.scalars(sa.select(Customer).where(Customer.holder_id == holder_id)).first()


def get_or_create_customer(state: FinConnState, holder: Holder) -> Customer:
    """The holder's customer, creating it at Stripe and storing it the first time.

    When the holder's email or name changed since, the customer is updated, so that Stripe
    keeps recognising a returning user. Creation carries an idempotency key derived from
    this installation's id and the holder id (:mod:`.installation`), so concurrent first
    requests (or a retry after a crash) get the same ``cus_`` back from Stripe while
    another installation on the same Stripe account gets its own; the unique ``holder_id``
    then lets exactly one insert win and the others read its row.
    """
    existing = find_customer(state, holder.id)
    if existing is not None:
        if (existing.email, existing.name) != (holder.email, holder.name):
            _update(state, existing, holder)
        return existing
    stripe_customer = state.stripe.create_customer(
        holder.id, installation=installation_id(state), email=holder.email, name=holder.name
    )
    session = state.db.session
    customer = Customer(
        holder_id=holder.id,
        stripe_id=stripe_customer.id,
        email=holder.email,
        name=holder.name,
        livemode=bool(stripe_customer.livemode),
    )
    session.add(customer)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        winner = find_customer(state, holder.id)
        if winner is None:
            raise
        return winner
    return customer


def _update(state: FinConnState, customer: Customer, holder: Holder) -> None:
    state.stripe.update_customer(customer.stripe_id, email=holder.email, name=holder.name)
    customer.email = holder.email
    customer.name = holder.name
    state.db.session.commit()
