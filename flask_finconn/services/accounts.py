"""Reading a holder's accounts, and storing Stripe's view of an account.

:func:`upsert_account` is the one place a Stripe ``financial_connections.account`` becomes
an :class:`~flask_finconn.models.Account` row; linking, refreshes and webhook handlers all
use it, then commit and signal themselves. Refresh states are stored as Stripe sends them
(``{status, last_attempted_at, next_refresh_available_at[, id]}`` with Unix seconds); the
schemas turn them into ISO strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import joinedload, raiseload

from ..errors import NotFound
from ..models import Account, BalanceSnapshot, Customer, from_unix, utcnow
from ..state import FinConnState
from ..stripe_api import StripeAccount

Change = Literal["created", "relinked", "updated", "unchanged"]

_TRACKED = (
    "institution_name",
    "display_name",
    "last4",
    "category",
    "subcategory",
    "status",
    "action",
    "permissions",
    "subscriptions",
    "supported_payment_method_types",
    "balance_refresh",
    "ownership_refresh",
    "transaction_refresh",
    "ownership_id",
)


@dataclass(frozen=True)
class Upserted:
    """The stored account and what happened to it."""

    account: Account
    change: Change


def list_accounts(state: FinConnState, holder_id: str) -> list[Account]:
    """The holder's accounts, oldest link first, each with its latest balance (one query)."""
    query = (
        sa.select(Account)
        .where(Account.holder_id == holder_id)
        .options(joinedload(Account.latest_balance), raiseload("*"))
        .order_by(Account.linked_at, Account.id)
    )
    return list(state.db.session.scalars(query).unique())


def loaded(state: FinConnState, *objects: Any) -> None:
    """Load again what a commit expired, before a signal hands the objects to receivers.

    Receivers may keep them past the request, when they can no longer load themselves.
    """
    session = state.db.session
    for obj in objects:
        if obj is not None and obj in session and sa.inspect(obj).expired_attributes:
            session.refresh(obj)


def get_account(state: FinConnState, holder_id: str, account_id: str) -> Account:
    """One of the holder's accounts by our id; another holder's id is a 404 like a missing one."""
    query = (
        sa.select(Account)
        .where(Account.id == account_id, Account.holder_id == holder_id)
        .options(joinedload(Account.latest_balance))
    )
    account = state.db.session.scalars(query).first()
    if account is None:
        raise NotFound("There is no such bank account for this user.", code="account_not_found")
    return account


def find_by_stripe_id(state: FinConnState, stripe_id: str) -> Account | None:
    """The stored account whose current ``fca_`` id this is.

    Ids replaced by a relink (``previous_stripe_ids``) are not found: events about them
    are stale and must not touch the row.
    """
    query = sa.select(Account).where(Account.stripe_id == stripe_id)
    return state.db.session.scalars(query).first()


def action_of(raw: dict[str, Any]) -> str:
    """What the holder must do: ``relink_required`` for inactive accounts, else Stripe's word."""
    status = raw.get("status")
    details = raw.get("status_details") or {}
    action = (details.get(status) or {}).get("action") if isinstance(status, str) else None
    if action:
        return str(action)
    return "relink_required" if status == "inactive" else "none"


def _fields(raw: dict[str, Any]) -> dict[str, Any]:
    ownership = raw.get("ownership")
    if isinstance(ownership, dict):
        ownership = ownership.get("id")
    return {
        "institution_name": raw.get("institution_name") or "",
        "display_name": raw.get("display_name"),
        "last4": raw.get("last4"),
        "category": raw.get("category") or "other",
        "subcategory": raw.get("subcategory") or "other",
        "status": raw.get("status") or "active",
        "action": action_of(raw),
        "permissions": list(raw.get("permissions") or []),
        "subscriptions": list(raw.get("subscriptions") or []),
        "supported_payment_method_types": list(raw.get("supported_payment_method_types") or []),
        "balance_refresh": raw.get("balance_refresh"),
        "ownership_refresh": raw.get("ownership_refresh"),
        "transaction_refresh": raw.get("transaction_refresh"),
        "ownership_id": ownership,
    }


def _relink_candidate(
    state: FinConnState, holder_id: str, fields: dict[str, Any]
) -> Account | None:
    """An account this holder linked before at the same bank with the same number and kind.

    A relink gives Stripe a new ``fca_`` id; matching on (holder, institution, last4,
    subcategory) keeps one row, its public id and its history instead of a duplicate.
    """
    if not fields["last4"]:
        return None
    query = sa.select(Account).where(
        Account.holder_id == holder_id,
        Account.institution_name == fields["institution_name"],
        Account.last4 == fields["last4"],
        Account.subcategory == fields["subcategory"],
    )
    return state.db.session.scalars(query.order_by(Account.linked_at.desc())).first()


def upsert_account(
    state: FinConnState,
    customer: Customer,
    stripe_account: StripeAccount | dict[str, Any],
    *,
    session_id: str | None = None,
) -> Upserted:
    """Store Stripe's current view of an account for the customer's holder (no commit).

    New ``fca_`` ids become new rows, or take over a previously linked row of the same bank
    account (a relink); known ids are updated in place. A balance in the object is recorded
    as a snapshot and becomes the latest balance.
    """
    raw = stripe_account if isinstance(stripe_account, dict) else stripe_account.to_dict()
    stripe_id = raw["id"]
    fields = _fields(raw)
    session = state.db.session
    account = find_by_stripe_id(state, stripe_id)
    change: Change
    if account is None:
        account = _relink_candidate(state, customer.holder_id, fields)
        # Two accounts of one session are never the same bank account.
        if account is not None and session_id is not None and account.session_id == session_id:
            account = None
        if account is not None and account.stripe_id == stripe_id:
            # A racing request (a webhook that beat the browser) stored this relink after
            # our first look: it is this row, not a relink of the id onto itself (which
            # would list the live id as replaced, and the relink would disconnect it).
            before = {name: getattr(account, name) for name in _TRACKED}
            change = "unchanged" if before == fields else "updated"
        elif account is not None:
            account.previous_stripe_ids = [*account.previous_stripe_ids, account.stripe_id]
            account.stripe_id = stripe_id
            account.linked_at = utcnow()
            account.transactions_cursor = None
            account.ownership_id = None
            change = "relinked"
        else:
            account = Account(
                stripe_id=stripe_id,
                holder_id=customer.holder_id,
                customer_id=customer.id,
                livemode=bool(raw.get("livemode", False)),
                stripe_created=from_unix(raw.get("created")),
                raw=raw,
                **fields,
            )
            session.add(account)
            change = "created"
    else:
        before = {name: getattr(account, name) for name in _TRACKED}
        change = "unchanged" if before == fields else "updated"
    if session_id is not None and (account.session_id is None or change == "relinked"):
        account.session_id = session_id
    for name, value in fields.items():
        if getattr(account, name) != value:
            setattr(account, name, value)
    account.raw = raw
    if raw.get("balance"):
        session.flush()
        snapshot = record_balance(state, account, raw["balance"])
        if snapshot is not None and account.latest_balance_id != snapshot.id:
            account.latest_balance = snapshot
            if change == "unchanged":
                change = "updated"
    return Upserted(account, change)


def record_balance(
    state: FinConnState, account: Account, balance: dict[str, Any]
) -> BalanceSnapshot | None:
    """Store a Stripe balance as a snapshot (once per ``as_of`` and currency; no commit).

    Returns the snapshot for the account's main currency (``usd`` when present).
    """
    current = balance.get("current") or {}
    if not current or balance.get("as_of") is None:
        return None
    as_of = from_unix(balance["as_of"])
    assert as_of is not None
    kind = balance.get("type") or "cash"
    available = ((balance.get("cash") or {}).get("available")) or {}
    used = ((balance.get("credit") or {}).get("used")) or {}
    session = state.db.session
    existing = {
        snap.currency: snap
        for snap in session.scalars(
            sa.select(BalanceSnapshot).where(
                BalanceSnapshot.account_id == account.id, BalanceSnapshot.as_of == as_of
            )
        )
    }
    main: BalanceSnapshot | None = None
    for currency, amount in current.items():
        snap = existing.get(currency)
        if snap is None:
            snap = BalanceSnapshot(
                account_id=account.id,
                as_of=as_of,
                type=kind,
                currency=currency,
                current=amount,
                available=available.get(currency),
                credit_used=used.get(currency),
            )
            session.add(snap)
        if main is None or currency == "usd":
            main = snap
    session.flush()
    return main
