"""Account owners: stored per ownership snapshot, listed from the latest one."""

from __future__ import annotations

import re
import unicodedata

import sqlalchemy as sa

from ..models import Account, Owner, from_unix
from ..state import FinConnState, Holder
from .accounts import get_account

__all__ = ["OWNER_MATCHES", "list_owners", "match_owners", "store_ownership"]

OWNER_MATCHES = ("match", "partial", "no_match", "unavailable")


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


def _name_key(value: str | None) -> str:
    """A name without case, accents, punctuation, titles' dots or word order."""
    if not value:
        return ""
    plain = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode()
    words = re.sub(r"[^a-z0-9 ]+", " ", plain.casefold()).split()
    return " ".join(sorted(words))


def _email_key(value: str | None) -> str:
    return (value or "").strip().casefold()


def match_owners(state: FinConnState, holder: Holder, account_id: str) -> str:
    """How the account's owners (latest ownership refresh) compare with the holder.

    ``match``: one owner has the holder's name and email (each that the holder has);
    ``partial``: an owner shares only one of them; ``no_match``: owners are known and none
    shares either; ``unavailable``: no owners are stored (ownership not refreshed, or not
    permitted) or the holder has neither name nor email. Banks often leave fields out and
    joint accounts have several owners, so hosts should review a mismatch rather than
    refuse on it.
    """
    owners = list_owners(state, holder.id, account_id)
    name, email = _name_key(holder.name), _email_key(holder.email)
    if not owners or not (name or email):
        return "unavailable"
    best = "no_match"
    for owner in owners:
        same_name = bool(name) and _name_key(owner.name) == name
        same_email = bool(email) and _email_key(owner.email) == email
        if (same_name or not name) and (same_email or not email):
            return "match"
        if same_name or same_email:
            best = "partial"
    return best
