"""Refreshes, and applying what Stripe reports about an account: balances, owners, status.

Stripe's refreshes are asynchronous: ``POST .../refresh`` only marks them ``pending``; the
result arrives later with a ``refreshed_*`` webhook (or is found by polling). Whatever the
trigger, the result is applied by one function, :func:`apply_account`, from a fresh read
of the account, so duplicate or out-of-order events cannot roll anything back:

- a finished balance refresh stores a :class:`~..models.BalanceSnapshot` (history for
  charts; the account points at the latest) and sends ``balance_refreshed``;
- a finished ownership refresh stores that snapshot's owners and sends
  ``ownership_refreshed``;
- a finished transaction refresh runs the incremental sync
  (:func:`~.transactions.sync_transactions`) and sends ``transactions_synced``;
- status changes send ``account_deactivated``, ``account_reactivated`` or
  ``account_disconnected``; other changed fields send ``account_updated``.

Balances keep Stripe's signs: positive is money owed to the holder, negative is owed by
the holder, so a credit card or a mortgage usually shows a negative ``current``. Credit
accounts have no ``available`` (it is null, and the JSON shows ``current`` instead).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from blinker import Signal
from flask import Flask, current_app

from ..errors import Conflict, FinConnError, NotFound, ValidationError
from ..extension import FinConnState, Holder
from ..models import Account, BalanceSnapshot, Customer, Owner
from ..schemas import iso_unix
from ..signals import (
    account_deactivated,
    account_disconnected,
    account_reactivated,
    account_updated,
    balance_refreshed,
    ownership_refreshed,
    transactions_synced,
)
from .accounts import get_account, upsert_account
from .owners import store_ownership
from .transactions import SyncResult, finished_refresh_id, sync_transactions

logger = logging.getLogger("flask_finconn")

__all__ = [
    "FEATURES",
    "FEATURE_PERMISSION",
    "AccountSync",
    "Applied",
    "Notice",
    "RefreshOutcome",
    "accounts_to_sync",
    "apply_account",
    "disconnect_account",
    "plan_refreshes",
    "refresh_accounts",
    "request_refresh",
    "run_refresh",
    "start_refresh",
    "sync_account",
    "sync_account_from_stripe",
    "wait_for_refreshes",
]

FEATURES = ("balance", "ownership", "transactions")
FEATURE_PERMISSION = {
    "balance": "balances",
    "ownership": "ownership",
    "transactions": "transactions",
}
_STATE_FIELD = {
    "balance": "balance_refresh",
    "ownership": "ownership_refresh",
    "transactions": "transaction_refresh",
}
_STATUS_SIGNALS = {
    "deactivated": account_deactivated,
    "reactivated": account_reactivated,
    "disconnected": account_disconnected,
}


Notice = tuple[Signal, dict[str, Any]]
"""A signal to send and its keyword arguments."""


@dataclass(frozen=True)
class AccountSync:
    """A transaction sync run for an account, and the ``transactions_synced`` it warrants."""

    result: SyncResult
    notice: Notice | None

    @property
    def added(self) -> int:
        return self.result.added

    @property
    def updated(self) -> int:
        return self.result.updated


@dataclass
class Applied:
    """What applying a fresh read of an account changed.

    ``finished`` maps each refresh that ended since the last read to its status
    (``succeeded``/``failed``). ``status_change`` is ``deactivated``, ``reactivated``,
    ``disconnected`` or None. ``balance`` is the snapshot a successful balance refresh
    stored, ``owners`` the owners a successful ownership refresh stored, ``sync`` the
    transaction sync that ran, ``notices`` the signals (sent unless the caller said not to).
    """

    account: Account
    finished: dict[str, str] = field(default_factory=dict)
    status_change: str | None = None
    balance: BalanceSnapshot | None = None
    owners: list[Owner] | None = None
    sync: AccountSync | None = None
    notices: list[Notice] = field(default_factory=list)


def _sender(app: Flask | None) -> Flask:
    return app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]


def _ended(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> str | None:
    """The status of a refresh that ended between two reads of its state, else None."""
    if not after or after.get("status") not in ("succeeded", "failed"):
        return None
    if before is not None and all(
        before.get(key) == after.get(key) for key in ("status", "last_attempted_at", "id")
    ):
        return None
    return str(after["status"])


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
    app: Flask | None = None,
    send_signals: bool = True,
    on_page: Callable[[int, int], None] | None = None,
) -> Applied:
    """Store a fresh read of the account from Stripe and act on what finished.

    ``raw`` is Stripe's ``financial_connections.account`` for ``account.stripe_id``.
    Balance snapshot, owners and status are committed together, then their signals sent;
    then, when a transaction refresh newer than the stored cursor is over (or a sync was
    interrupted), the transaction sync runs and ``transactions_synced`` follows. With
    ``send_signals=False`` the signals are only listed in ``Applied.notices`` for the caller
    to send (the event processor sends them once the event is marked processed).
    ``on_page(rows, pages)`` follows the transaction sync (progress bars, tests).
    """
    if raw.get("id") != account.stripe_id:
        raise ValueError(
            f"apply_account got {raw.get('id')} for an account stored as {account.stripe_id}."
        )
    session = state.db.session
    before_status = account.status
    before_states = {f: getattr(account, _STATE_FIELD[f]) for f in FEATURES}
    before_ownership = account.ownership_id
    customer = session.get(Customer, account.customer_id)
    assert customer is not None, "every stored account has its customer"
    upserted = upsert_account(state, customer, dict(raw))
    applied = Applied(account)
    for feature in FEATURES:
        status = _ended(before_states[feature], getattr(account, _STATE_FIELD[feature]))
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
    session.commit()

    notices = applied.notices
    if applied.status_change is not None:
        notices.append((_STATUS_SIGNALS[applied.status_change], {"account": account}))
    elif upserted.change == "updated":
        notices.append((account_updated, {"account": account}))
    if "balance" in applied.finished:
        notices.append(
            (
                balance_refreshed,
                {
                    "account": account,
                    "snapshot": applied.balance,
                    "status": applied.finished["balance"],
                },
            )
        )
    if "ownership" in applied.finished:
        notices.append(
            (
                ownership_refreshed,
                {
                    "account": account,
                    "owners": applied.owners or [],
                    "status": applied.finished["ownership"],
                },
            )
        )
    applied.sync = sync_account(state, account, app=app, send_signals=False, on_page=on_page)
    if applied.sync is not None and applied.sync.notice is not None:
        notices.append(applied.sync.notice)
    if send_signals:
        _send(notices, app)
    return applied


def _send(notices: Iterable[Notice], app: Flask | None) -> None:
    sender = _sender(app)
    for signal, kwargs in notices:
        signal.send(sender, **kwargs)


def sync_account(
    state: FinConnState,
    account: Account,
    *,
    app: Flask | None = None,
    on_page: Callable[[int, int], None] | None = None,
    send_signals: bool = True,
) -> AccountSync | None:
    """Sync stored transactions up to the account's last finished refresh, if behind.

    Runs when that refresh is not yet the stored cursor, or an earlier sync was cut short;
    None when there was nothing to do. ``transactions_synced`` (its ``notice``) goes out
    when the sync changed rows or caught up to a successful refresh.
    """
    target = finished_refresh_id(account.transaction_refresh)
    behind = target is not None and target != account.transactions_cursor
    if account.status == "disconnected" or not (behind or account.transactions_sync):
        return None
    succeeded = (account.transaction_refresh or {}).get("status") == "succeeded"
    result = sync_transactions(state, account, on_page=on_page)
    notice: Notice | None = None
    # Rows this worker wrote are reported even when another worker finished the sync: each
    # row is counted by the one that wrote it, so the signals add up to what was stored.
    if result.added or result.updated or (result.complete and succeeded):
        notice = (
            transactions_synced,
            {"account": account, "added": result.added, "updated": result.updated},
        )
        if send_signals:
            _send([notice], app)
    return AccountSync(result, notice)


def sync_account_from_stripe(
    state: FinConnState,
    stripe_account_id: str,
    *,
    app: Flask | None = None,
    send_signals: bool = True,
    on_page: Callable[[int, int], None] | None = None,
) -> Applied | None:
    """Re-read an account from Stripe and apply it: the webhook handlers' one call.

    The event payload is only a nudge: the account is read again, under a row lock on
    PostgreSQL so that racing workers apply their reads in order, and applied with
    :func:`apply_account`. None when no stored account has that ``fca_`` id (an account of
    another app, or one replaced by a relink), or Stripe no longer knows it.
    """
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
    return apply_account(state, account, raw, app=app, send_signals=send_signals, on_page=on_page)


# starting refreshes


def _relink_error(account: Account) -> Conflict:
    if account.status == "disconnected":
        return Conflict(
            "This bank account was disconnected; link it again to see new data.",
            code="account_disconnected",
            extra={"action": "relink_required"},
        )
    return Conflict(
        "This bank account is inactive; link it again to resume updates.",
        code="account_inactive",
        extra={"action": "relink_required"},
    )


def _stripe_now(state: FinConnState) -> int:
    """Now by the clock of the Stripe we talk to (the sandbox's clock can be moved)."""
    return state.sandbox.now() if state.sandbox is not None else int(time.time())


def _check_permissions(account: Account, features: list[str]) -> None:
    missing = [
        FEATURE_PERMISSION[f] for f in features if FEATURE_PERMISSION[f] not in account.permissions
    ]
    if missing:
        names = ", ".join(f"'{p}'" for p in missing)
        raise ValidationError(
            f"The account holder did not grant the {names} permission for this account; "
            "link it again in a session that asks for it.",
            code="permission_missing",
            fields={"features": [f"Missing permission: {p}." for p in missing]},
        )


def _not_ready(account: Account, features: list[str], now: int) -> Conflict | None:
    """A 409 for features that cannot start now: one still running, or too early."""
    running = []
    early: list[tuple[str, int]] = []
    for feature in features:
        refresh = getattr(account, _STATE_FIELD[feature])
        if not refresh:
            continue
        available = refresh.get("next_refresh_available_at")
        if refresh.get("status") == "pending":
            running.append(feature)
        elif available is not None and available > now:
            early.append((feature, available))
    if running:
        return Conflict(
            f"A {', '.join(running)} refresh is already running for this account; its result "
            "arrives shortly.",
            code="refresh_in_progress",
            extra={"features": running},
        )
    if early:
        when = iso_unix(max(available for _, available in early))
        return Conflict(
            f"The {', '.join(f for f, _ in early)} refresh can run again at {when}; "
            "try again then.",
            code="refresh_too_early",
            extra={"features": [f for f, _ in early], "next_refresh_available_at": when},
        )
    return None


def start_refresh(
    state: FinConnState, account: Account, features: Iterable[str], *, app: Flask | None = None
) -> Account:
    """Start refreshes of ``features`` for a stored account (no holder check).

    Refused with the same errors as :func:`request_refresh`. A stored state that still says
    ``pending`` is first checked against Stripe, since its webhook may not have arrived.
    """
    wanted = list(dict.fromkeys(features))
    unknown = [f for f in wanted if f not in FEATURES]
    if unknown or not wanted:
        raise ValueError(f"Refresh features must be some of {', '.join(FEATURES)}.")
    if account.status != "active":
        raise _relink_error(account)
    _check_permissions(account, wanted)
    if any((getattr(account, _STATE_FIELD[f]) or {}).get("status") == "pending" for f in wanted):
        sync_account_from_stripe(state, account.stripe_id, app=app)
        if account.status != "active":
            raise _relink_error(account)
    refused = _not_ready(account, wanted, _stripe_now(state))
    if refused is not None:
        raise refused
    before = {f: getattr(account, _STATE_FIELD[f]) for f in wanted}
    try:
        raw = state.stripe.refresh_account(account.stripe_id, wanted).to_dict()
    except Conflict as exc:
        if exc.code != "account_inactive":
            raise
        # Stripe knows the account went inactive before its webhook reached us.
        sync_account_from_stripe(state, account.stripe_id, app=app)
        raise _relink_error(account) from None
    apply_account(state, account, raw, app=app)
    not_started = [
        f
        for f in wanted
        if (getattr(account, _STATE_FIELD[f]) or {}).get("status") != "pending"
        or _same_attempt(before[f], getattr(account, _STATE_FIELD[f]))
    ]
    if not_started:
        # Stripe starts nothing when it is too early and says so only by the unchanged state.
        refused = _not_ready(account, not_started, _stripe_now(state))
        raise refused or Conflict(
            "Stripe did not start the refresh; try again in a moment.", code="refresh_too_early"
        )
    return account


def _same_attempt(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
    return (
        before is not None
        and after is not None
        and before.get("status") == "pending"
        and before.get("last_attempted_at") == after.get("last_attempted_at")
    )


def request_refresh(
    state: FinConnState,
    holder: Holder,
    account_id: str,
    features: Iterable[str],
    *,
    app: Flask | None = None,
) -> Account:
    """Start refreshes of one of the holder's accounts (``POST /accounts/<id>/refresh``).

    Errors: 404 ``account_not_found`` (also for another holder's account); 400
    ``permission_missing`` naming the permission the holder did not grant; 409
    ``refresh_too_early`` with ``next_refresh_available_at``, or ``refresh_in_progress``;
    409 ``account_inactive`` / ``account_disconnected`` (``action: relink_required``).
    Results arrive later by webhook or poll, through :func:`apply_account`.
    """
    account = get_account(state, holder.id, account_id)
    return start_refresh(state, account, features, app=app)


@dataclass(frozen=True)
class RefreshOutcome:
    """What ``flask finconn refresh`` did for one account: started features, or an error."""

    account: Account
    features: tuple[str, ...]
    error: FinConnError | None = None


def plan_refreshes(
    state: FinConnState,
    *,
    account_id: str | None = None,
    features: Iterable[str] | None = None,
    max_age: timedelta = timedelta(hours=24),
) -> list[tuple[Account, tuple[str, ...]]]:
    """Which accounts to refresh, and which features of each.

    One account (our ``fcacct_`` id or its ``fca_`` id): every requested feature it has the
    permission for. Otherwise every active account with a requested feature last attempted
    more than ``max_age`` ago (or never), by Stripe's clock. ``features`` defaults to all.
    """
    wanted = tuple(features) if features else FEATURES
    session = state.db.session
    if account_id is not None:
        account = session.scalars(
            sa.select(Account).where(
                sa.or_(Account.id == account_id, Account.stripe_id == account_id)
            )
        ).first()
        if account is None:
            raise NotFound(f"There is no stored account {account_id}.", code="account_not_found")
        return [(account, tuple(f for f in wanted if FEATURE_PERMISSION[f] in account.permissions))]
    stale_before = _stripe_now(state) - int(max_age.total_seconds())
    plan = []
    query = sa.select(Account).where(Account.status == "active").order_by(Account.linked_at)
    for account in session.scalars(query):
        due = []
        for feature in wanted:
            if FEATURE_PERMISSION[feature] not in account.permissions:
                continue
            refresh = getattr(account, _STATE_FIELD[feature]) or {}
            if refresh.get("status") == "pending":
                continue
            last = refresh.get("last_attempted_at")
            if last is None or last < stale_before:
                due.append(feature)
        if due:
            plan.append((account, tuple(due)))
    return plan


def run_refresh(
    state: FinConnState, account: Account, features: tuple[str, ...], *, app: Flask | None = None
) -> RefreshOutcome:
    """Start one planned refresh, turning a refusal into the outcome's ``error``."""
    if not features:
        return RefreshOutcome(
            account,
            (),
            ValidationError(
                "The account has none of the requested permissions.", code="permission_missing"
            ),
        )
    try:
        start_refresh(state, account, features, app=app)
    except FinConnError as exc:
        state.db.session.rollback()
        return RefreshOutcome(account, features, exc)
    return RefreshOutcome(account, features)


def refresh_accounts(
    state: FinConnState,
    *,
    account_id: str | None = None,
    features: Iterable[str] | None = None,
    max_age: timedelta = timedelta(hours=24),
    app: Flask | None = None,
) -> list[RefreshOutcome]:
    """Start refreshes of stale accounts (or one account); one outcome per account."""
    plan = plan_refreshes(state, account_id=account_id, features=features, max_age=max_age)
    return [run_refresh(state, account, feats, app=app) for account, feats in plan]


def wait_for_refreshes(
    state: FinConnState,
    started: Iterable[tuple[Account, Iterable[str]]],
    *,
    timeout: float = 60.0,
    interval: float = 1.0,
    app: Flask | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, dict[str, str]]:
    """Poll Stripe until the started refreshes leave ``pending``, for hosts without webhooks.

    Each poll goes through :func:`sync_account_from_stripe`, the webhook handlers' path, so
    results are stored and signalled the same way. Returns, per account id, each feature's
    final status; a feature still running when ``timeout`` seconds are up is ``pending``.
    """
    waiting = {account.stripe_id: (account.id, tuple(feats)) for account, feats in started}
    results: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for stripe_id, (account_id, feats) in list(waiting.items()):
            applied = sync_account_from_stripe(state, stripe_id, app=app)
            statuses = {
                f: str(
                    (getattr(applied.account, _STATE_FIELD[f]) or {}).get("status", "failed")
                    if applied is not None
                    else "failed"
                )
                for f in feats
            }
            results[account_id] = statuses
            if "pending" not in statuses.values():
                del waiting[stripe_id]
        if not waiting or time.monotonic() >= deadline:
            return results
        sleep(min(interval, max(0.0, deadline - time.monotonic())))


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


def disconnect_account(
    state: FinConnState, holder: Holder, account_id: str, *, app: Flask | None = None
) -> Account:
    """Disconnect one of the holder's accounts at Stripe (``POST /accounts/<id>/disconnect``).

    Unsubscribes from daily transaction refreshes first, then disconnects; disconnecting
    again answers the account as it is. The data already synced stays stored and readable;
    Stripe will no longer refresh it, and a new link is needed for new data.
    """
    account = get_account(state, holder.id, account_id)
    if account.status == "disconnected":
        return account
    if "transactions" in account.subscriptions:
        # Inactive at Stripe (a Conflict) means nothing is refreshed anyway.
        with contextlib.suppress(Conflict):
            state.stripe.unsubscribe_transactions(account.stripe_id)
    raw = state.stripe.disconnect_account(account.stripe_id).to_dict()
    apply_account(state, account, raw, app=app)
    return account
