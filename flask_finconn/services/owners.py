"""Account owners: stored per ownership snapshot, listed from the latest one."""

from __future__ import annotations

import sqlalchemy as sa

from ..models import Account, Owner, from_unix
from ..state import FinConnState
from .accounts import get_account

__all__ = ["list_owners", "store_ownership"]


def store_ownership(state: FinConnState, account: Account, ownership_id: str) -> list[Owner]:
    """Fetch the owners of an ``fcaowns_`` snapshot from Stripe and store them (no commit).

    Each ownership refresh is a new snapshot with new owner ids, so earlier snapshots stay
    as history; storing the same snapshot twice changes nothing.
    """
    session = state.db.session
    stored = list(
        session.scalars(
            sa.select(Owner).where(
                Owner.account_id == account.id, Owner.ownership_id == ownership_id
            )
        )
    )
    if stored:
        return stored
    owners = [
        Owner(
            id=owner.id,
            account_id=account.id,
            ownership_id=ownership_id,
            name=owner.name or "",
            email=owner.email,
            phone=owner.phone,
            raw_address=owner.raw_address,
            refreshed_at=from_unix(owner.refreshed_at),
        )
        for owner in state.stripe.account_owners(account.stripe_id, ownership_id)
    ]
    session.add_all(owners)
    return owners


def list_owners(state: FinConnState, holder_id: str, account_id: str) -> list[Owner]:
    """The owners from the latest ownership refresh of one of the holder's accounts.

    Empty until an ownership refresh succeeds; still readable after deactivation.
    """
    account = get_account(state, holder_id, account_id)
    if account.ownership_id is None:
        return []
    query = (
        sa.select(Owner)
        .where(Owner.account_id == account.id, Owner.ownership_id == account.ownership_id)
        .order_by(Owner.name, Owner.id)
    )
    return list(state.db.session.scalars(query))
