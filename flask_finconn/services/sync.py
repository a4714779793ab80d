"""Applying a fresh read of an account from Stripe: balances, owners, status, transactions.

Whatever the trigger (a webhook, a poll, the CLI, a refresh just started), what Stripe
says about an account is applied by one function, :func:`apply_account`, from a fresh
read, so duplicate or out-of-order events cannot roll anything back:

- a finished balance refresh stores a :class:`~..models.BalanceSnapshot` (history for
  charts; the account points at the latest) and sends ``balance_refreshed``;
- a finished ownership refresh stores that snapshot's owners and sends
  ``ownership_refreshed``;
- a finished transaction refresh runs the incremental sync
  (:func:`~.transactions.sync_transactions`) and sends ``transactions_synced``;
- status changes send ``account_deactivated``, ``account_reactivated`` or
  ``account_disconnected``; other changed fields send ``account_updated``.

Every signal is sent after the commit of what it reports. Balances keep Stripe's signs:
positive is money owed to the holder, negative is owed by the holder, so a credit card or
a mortgage usually shows a negative ``current``.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app

from ..errors import NotFound
from ..models import Account, BalanceSnapshot, Customer, Owner
from ..signals import (
    account_deactivated,
    account_disconnected,
    account_reactivated,
    account_updated,
    balance_refreshed,
    ownership_refreshed,
    transactions_synced,
)
from ..state import REFRESH_FEATURES, FinConnState
from .accounts import loaded, upsert_account
from .owners import store_ownership
from .privacy import delete_account_data
from .transactions import SyncResult, finished_refresh_id, sync_transactions

logger = logging.getLogger("flask_finconn")

__all__ = [
    "STATE_FIELD",
    "Applied",
    "accounts_to_sync",
    "apply_account",
    "sync_account",
    "sync_account_from_stripe",
]

STATE_FIELD = {
    "balance": "balance_refresh",
    "ownership": "ownership_refresh",
    "transactions": "transaction_refresh",
}
"""The account column holding each refresh feature's state."""
# One lock per account being synced, for databases without row locks; reentrant, since a
# signal receiver may sync the same account again in its thread. Weak values: a lock goes
# away with the last sync holding it.
_LOCKS: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
_LOCKS_GUARD = threading.Lock()
_STATUS_SIGNALS = {
    "deactivated": account_deactivated,
    "reactivated": account_reactivated,
    "disconnected": account_disconnected,
}


@dataclass
class Applied:
    """What applying a fresh read of an account changed.

    ``finished`` maps each refresh that ended since the last read to its status
    (``succeeded``/``failed``). ``status_change`` is ``deactivated``, ``reactivated``,
    ``disconnected`` or None. ``balance`` is the snapshot a successful balance refresh
    stored, ``owners`` the owners a successful ownership refresh stored, ``sync`` the
    transaction sync that ran (None when there was nothing to sync).
    """

    account: Account
    finished: dict[str, str] = field(default_factory=dict)
    status_change: str | None = None
    balance: BalanceSnapshot | None = None
    owners: list[Owner] | None = None
    sync: SyncResult | None = None


def _sender() -> Flask:
    return current_app._get_current_object()  # type: ignore[attr-defined,no-any-return]


def _ended(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    """The status of a refresh that ended between two reads of its state, else None."""
    if not after or after.get("status") not in ("succeeded", "failed"):
        return None
    if before is not None and all(
        before.get(key) == after.get(key) for key in ("status", "last_attempted_at", "id")
    ):
        return None
    return str(after["status"])


_STATUS_RANK = {"pending": 0, "succeeded": 1, "failed": 1}


def _older_read(account: Account, raw: Mapping[str, Any]) -> str | None:
    """Why ``raw`` is an older read of the account than the one stored, or None if it is not.

    Stripe's own clocks order reads: a refresh's ``last_attempted_at`` (and, for the same
    attempt, pending before finished) only moves forward, as does the balance's ``as_of``.
    """
    for feature in REFRESH_FEATURES:
        stored = getattr(account, STATE_FIELD[feature])
        incoming = raw.get(STATE_FIELD[feature])
        if not isinstance(stored, Mapping):
            continue
        if not isinstance(incoming, Mapping):
            return (
                f"no {feature} refresh, stored one attempted at {stored.get('last_attempted_at')}"
            )
        before = (
            _number(stored.get("last_attempted_at")),
            _STATUS_RANK.get(str(stored.get("status")), 0),
        )
        after = (
            _number(incoming.get("last_attempted_at")),
            _STATUS_RANK.get(str(incoming.get("status")), 0),
        )
        if after < before:
            return f"{feature} refresh {after} before the stored {before}"
    balance = raw.get("balance")
    latest = account.latest_balance
    if isinstance(balance, Mapping) and latest is not None:
        as_of = _number(balance.get("as_of"))
        if as_of < latest.as_of.timestamp():
            return f"balance as of {as_of}, stored as of {int(latest.as_of.timestamp())}"
    return None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else 0.0


def _status_change(before: str, after: str) -> str | None:
    if before == after:
        return None
    if after == "disconnected":
        return "disconnected"
    if after == "inactive":
        return "deactivated"
    if after == "active" and before == "inactive":
        return "reactivated"
    return None


def apply_account(
    state: FinConnState,
    account: Account,
    raw: Mapping[str, Any],
    *,
    on_page: Callable[[int, int], None] | None = None,
) -> Applied:
    """Store a fresh read of the account from Stripe and act on what finished.

    ``raw`` is Stripe's ``financial_connections.account`` for ``account.stripe_id``.
    Balance snapshot, owners and status are committed together; then, when a transaction
    refresh newer than the stored cursor is over (or a sync was interrupted), the
    transaction sync runs and commits and ``transactions_synced`` is sent; then the signals
    of the first commit. ``on_page(rows, pages)`` follows the transaction sync (progress
    bars, tests).
    """
    if raw.get("id") != account.stripe_id:
        raise ValueError(
            f"apply_account got {raw.get('id')} for an account stored as {account.stripe_id}."
        )
    session = state.db.session
    stale = _older_read(account, raw)
    if stale is not None:
        # Two reads applied out of order (overlapping deliveries where the database has no
        # row locks): the stored state is newer, and announcing it again would repeat
        # signals already sent.
        logger.info("Kept account %s as stored: the read applied is older (%s).", raw["id"], stale)
        session.rollback()
        return Applied(account)
    before_status = account.status
    before_states = {f: getattr(account, STATE_FIELD[f]) for f in REFRESH_FEATURES}
    before_ownership = account.ownership_id
    customer = session.get(Customer, account.customer_id)
    assert customer is not None, "every stored account has its customer"
    upserted = upsert_account(state, customer, dict(raw))
    applied = Applied(account)
    for feature in REFRESH_FEATURES:
        status = _ended(before_states[feature], getattr(account, STATE_FIELD[feature]))
        if status is not None:
            applied.finished[feature] = status
    if applied.finished.get("balance") == "succeeded":
        applied.balance = account.latest_balance
    # Not only when this read saw the refresh end: a prefetch can finish before the session
    # is completed, and the account then arrives already holding its new ownership id.
    # store_ownership is a no-op for a snapshot already stored.
    if account.ownership_id and (
        account.ownership_id != before_ownership
        or (account.ownership_refresh or {}).get("status") == "succeeded"
    ):
        applied.owners = store_ownership(state, account, account.ownership_id)
    applied.status_change = _status_change(before_status, account.status)
    if applied.status_change == "disconnected" and state.settings.delete_data_on_disconnect:
        delete_account_data(state, account)
        applied.owners = None
    session.commit()
    # The sync commits too: the signals of this read follow it, with their objects loaded.
    applied.sync = sync_account(state, account, on_page=on_page)
    loaded(state, account, applied.balance, *(applied.owners or []))
    sender = _sender()
    if applied.status_change is not None:
        _STATUS_SIGNALS[applied.status_change].send(sender, account=account)
    elif upserted.change == "updated":
        account_updated.send(sender, account=account)
    if "balance" in applied.finished:
        balance_refreshed.send(
            sender, account=account, snapshot=applied.balance, status=applied.finished["balance"]
        )
    if "ownership" in applied.finished:
        ownership_refreshed.send(
            sender,
            account=account,
            owners=applied.owners or [],
            status=applied.finished["ownership"],
        )
    return applied


def sync_account(
    state: FinConnState,
    account: Account,
    *,
    on_page: Callable[[int, int], None] | None = None,
) -> SyncResult | None:
    """Sync stored transactions up to the account's last finished refresh, if behind.

    Runs when that refresh is not yet the stored cursor, or an earlier sync was cut short;
    None when there was nothing to do. ``transactions_synced`` goes out after the sync's
    commits when it changed rows or caught up to a successful refresh.
    """
    target = finished_refresh_id(account.transaction_refresh)
    behind = target is not None and target != account.transactions_cursor
    if account.status == "disconnected" or not (behind or account.transactions_sync):
        return None
    succeeded = (account.transaction_refresh or {}).get("status") == "succeeded"
    result = sync_transactions(state, account, on_page=on_page)
    # Rows this worker wrote are reported even when another worker finished the sync: each
    # row is counted by the one that wrote it, so the signals add up to what was stored.
    if result.added or result.updated or (result.complete and succeeded):
        loaded(state, account)
        transactions_synced.send(
            _sender(), account=account, added=result.added, updated=result.updated
        )
    return result


def sync_account_from_stripe(
    state: FinConnState,
    stripe_account_id: str,
    *,
    on_page: Callable[[int, int], None] | None = None,
) -> Applied | None:
    """Re-read an account from Stripe and apply it: the webhook handlers' one call.

    The event payload is only a nudge: the account is read again, under a row lock on
    PostgreSQL so that racing workers apply their reads in order, and applied with
    :func:`apply_account`. None when no stored account has that ``fca_`` id (an account of
    another app, or one replaced by a relink), or Stripe no longer knows it.
    """
    session = state.db.session
    if session.get_bind().dialect.name == "postgresql":
        return _read_and_apply(state, stripe_account_id, on_page)
    # No row locks (SQLite): serialise the read-and-apply of one account in this process,
    # so that two threads' reads commit in the order they were made. Across processes the
    # timestamps checked by apply_account still keep an older read from being applied.
    with _LOCKS_GUARD:
        lock = _LOCKS.get(stripe_account_id)
        if lock is None:
            lock = _LOCKS[stripe_account_id] = threading.RLock()
    with lock:
        return _read_and_apply(state, stripe_account_id, on_page)


def _read_and_apply(
    state: FinConnState,
    stripe_account_id: str,
    on_page: Callable[[int, int], None] | None,
) -> Applied | None:
    session = state.db.session
    # populate_existing: a row read earlier in this transaction may be stale by the time
    # the lock is ours, and "what finished" is judged against what is stored.
    account = session.scalars(
        sa.select(Account)
        .where(Account.stripe_id == stripe_account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if account is None:
        session.rollback()
        return None
    try:
        raw = state.stripe.retrieve_account(stripe_account_id).to_dict()
    except NotFound:
        session.rollback()
        logger.warning("Stripe no longer knows account %s; left as stored.", stripe_account_id)
        return None
    except BaseException:
        session.rollback()
        raise
    return apply_account(state, account, raw, on_page=on_page)


def accounts_to_sync(state: FinConnState, account_id: str | None = None) -> list[tuple[str, str]]:
    """(our id, ``fca_`` id) of one stored account, or of every account not disconnected.

    ``account_id`` may be our ``fcacct_`` id or the current ``fca_`` id; unknown gives [].
    """
    query = sa.select(Account.id, Account.stripe_id).order_by(Account.linked_at, Account.id)
    if account_id is None:
        query = query.where(Account.status != "disconnected")
    else:
        query = query.where(sa.or_(Account.id == account_id, Account.stripe_id == account_id))
    return [(row[0], row[1]) for row in state.db.session.execute(query)]
