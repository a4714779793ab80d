"""Starting refreshes of an account's data, planning them, waiting for them; disconnecting.

Stripe's refreshes are asynchronous: ``POST .../refresh`` only marks them ``pending``; the
result arrives later with a ``refreshed_*`` webhook (or is found by polling), and is
applied by :func:`.sync.apply_account` from a fresh read of the account.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from ..errors import Conflict, FinConnError, NotFound, ValidationError
from ..models import Account, iso_unix
from ..state import FEATURE_PERMISSION, REFRESH_FEATURES, FinConnState, Holder
from .accounts import get_account
from .sync import STATE_FIELD, apply_account, sync_account_from_stripe

__all__ = [
    "RefreshOutcome",
    "disconnect_account",
    "plan_refreshes",
    "request_refresh",
    "run_refresh",
    "start_refresh",
    "wait_for_refreshes",
]


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
        refresh = getattr(account, STATE_FIELD[feature])
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


def start_refresh(state: FinConnState, account: Account, features: Iterable[str]) -> Account:
    """Start refreshes of ``features`` for a stored account (no holder check).

    Refused with the same errors as :func:`request_refresh`. A stored state that still says
    ``pending`` is first checked against Stripe, since its webhook may not have arrived.
    """
    wanted = list(dict.fromkeys(features))
    unknown = [f for f in wanted if f not in REFRESH_FEATURES]
    if unknown or not wanted:
        raise ValueError(f"Refresh features must be some of {', '.join(REFRESH_FEATURES)}.")
    if account.status != "active":
        raise _relink_error(account)
    _check_permissions(account, wanted)
    if any((getattr(account, STATE_FIELD[f]) or {}).get("status") == "pending" for f in wanted):
        sync_account_from_stripe(state, account.stripe_id)
        if account.status != "active":
            raise _relink_error(account)
    refused = _not_ready(account, wanted, state.stripe.now())
    if refused is not None:
        raise refused
    before = {f: getattr(account, STATE_FIELD[f]) for f in wanted}
    try:
        raw = state.stripe.refresh_account(account.stripe_id, wanted).to_dict()
    except Conflict as exc:
        if exc.code != "account_inactive":
            raise
        # Stripe knows the account went inactive before its webhook reached us.
        sync_account_from_stripe(state, account.stripe_id)
        raise _relink_error(account) from None
    apply_account(state, account, raw)
    not_started = [
        f
        for f in wanted
        if (getattr(account, STATE_FIELD[f]) or {}).get("status") != "pending"
        or _same_attempt(before[f], getattr(account, STATE_FIELD[f]))
    ]
    if not_started:
        # Stripe starts nothing when it is too early and says so only by the unchanged state.
        refused = _not_ready(account, not_started, state.stripe.now())
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
) -> Account:
    """Start refreshes of one of the holder's accounts (``POST /accounts/<id>/refresh``).

    Errors: 404 ``account_not_found`` (also for another holder's account); 400
    ``permission_missing`` naming the permission the holder did not grant; 409
    ``refresh_too_early`` with ``next_refresh_available_at``, or ``refresh_in_progress``;
    409 ``account_inactive`` / ``account_disconnected`` (``action: relink_required``).
    Results arrive later by webhook or poll, through :func:`apply_account`.
    """
    account = get_account(state, holder.id, account_id)
    return start_refresh(state, account, features)


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
    wanted = tuple(features) if features else REFRESH_FEATURES
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
    stale_before = state.stripe.now() - int(max_age.total_seconds())
    plan = []
    query = sa.select(Account).where(Account.status == "active").order_by(Account.linked_at)
    for account in session.scalars(query):
        due = []
        for feature in wanted:
            if FEATURE_PERMISSION[feature] not in account.permissions:
                continue
            refresh = getattr(account, STATE_FIELD[feature]) or {}
            if refresh.get("status") == "pending":
                continue
            last = refresh.get("last_attempted_at")
            if last is None or last < stale_before:
                due.append(feature)
        if due:
            plan.append((account, tuple(due)))
    return plan


def run_refresh(state: FinConnState, account: Account, features: tuple[str, ...]) -> RefreshOutcome:
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
        start_refresh(state, account, features)
    except FinConnError as exc:
        state.db.session.rollback()
        return RefreshOutcome(account, features, exc)
    return RefreshOutcome(account, features)


def wait_for_refreshes(
    state: FinConnState,
    started: Iterable[tuple[Account, Iterable[str]]],
    *,
    timeout: float = 60.0,
    interval: float = 1.0,
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
            applied = sync_account_from_stripe(state, stripe_id)
            statuses = {
                f: str(
                    (getattr(applied.account, STATE_FIELD[f]) or {}).get("status", "failed")
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


def disconnect_account(state: FinConnState, holder: Holder, account_id: str) -> Account:
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
    apply_account(state, account, raw)
    return account
