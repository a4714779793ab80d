"""Opening a linking session for a holder, and storing what it linked once the modal closes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from ..errors import FinConnError, NotFound, ValidationError
from ..models import Account, Customer, LinkSession, utcnow
from ..signals import account_linked
from ..state import FinConnState, Holder
from .accounts import Upserted, upsert_account
from .customers import get_or_create_customer

logger = logging.getLogger("flask_finconn")


@dataclass(frozen=True)
class NewSession:
    """A session the browser can open: hand ``client_secret`` to Stripe.js, nothing else."""

    id: str
    client_secret: str


@dataclass(frozen=True)
class CompletedSession:
    """The accounts a session linked; ``cancelled`` when the holder linked none."""

    accounts: list[Account]
    cancelled: bool


def _session_not_found() -> NotFound:
    return NotFound("There is no such linking session for this user.", code="session_not_found")


def create_session(
    state: FinConnState, holder: Holder, *, permissions: list[str] | None = None
) -> NewSession:
    """Open a Financial Connections session for the holder's customer.

    ``permissions`` may narrow the configured ``FINCONN_PERMISSIONS``, never widen them.
    Prefetches are limited to what the session's permissions allow.
    """
    allowed = state.settings.permissions
    if permissions:
        refused = [p for p in permissions if p not in allowed]
        if refused:
            raise ValidationError(
                "Some fields of the request are not valid.",
                fields={
                    "permissions": [
                        f"{', '.join(refused)} is not enabled; ask for any of {', '.join(allowed)}."
                    ]
                },
            )
        chosen = list(dict.fromkeys(permissions))
    else:
        chosen = list(allowed)
    prefetch = [p for p in state.settings.prefetch if p in chosen]
    customer = get_or_create_customer(state, holder)
    subcategories = state.settings.account_subcategories
    stripe_session = state.stripe.create_session(
        customer.stripe_id,
        permissions=chosen,
        prefetch=prefetch,
        country=state.settings.country,
        account_subcategories=list(subcategories) if subcategories else None,
    )
    db = state.db.session
    db.add(
        LinkSession(
            id=stripe_session.id,
            holder_id=holder.id,
            customer_id=customer.id,
            permissions=chosen,
        )
    )
    db.commit()
    return NewSession(id=stripe_session.id, client_secret=stripe_session.client_secret or "")


def complete_session(state: FinConnState, holder: Holder, session_id: str) -> CompletedSession:
    """Store the accounts a session linked, re-read from Stripe; safe to call again.

    The browser's word is never trusted: the session must be one we opened for this holder,
    and its accounts are listed from Stripe by session and checked to belong to the
    holder's customer (a 404 otherwise, like an unknown id). Completing again stores
    nothing new and sends no second ``account_linked``.
    """
    db = state.db.session
    link = _own_session(state, holder, session_id)
    customer = db.get(Customer, link.customer_id)
    if customer is None:
        raise _session_not_found()
    # Stripe lists newest first; store and answer in the order the bank offered them.
    linked = [a.to_dict() for a in reversed(state.stripe.session_accounts(session_id))]
    for raw in linked:
        if (raw.get("account_holder") or {}).get("customer") != customer.stripe_id:
            logger.warning(
                "Session %s lists an account of another customer; refusing it.", session_id
            )
            raise _session_not_found()

    results = _store(state, holder, session_id, customer, linked)
    _subscribe(state, customer, session_id, results)
    _retire_replaced(state, results)

    app = current_app._get_current_object()  # type: ignore[attr-defined]
    for result in results:
        if result.change in ("created", "relinked"):
            account_linked.send(app, account=result.account)
    return CompletedSession(accounts=[r.account for r in results], cancelled=not results)


def _own_session(state: FinConnState, holder: Holder, session_id: str) -> LinkSession:
    query = sa.select(LinkSession).where(
        LinkSession.id == session_id, LinkSession.holder_id == holder.id
    )
    link = state.db.session.scalars(query).first()
    if link is None:
        raise _session_not_found()
    return link


def _store(
    state: FinConnState,
    holder: Holder,
    session_id: str,
    customer: Customer,
    linked: list[dict[str, Any]],
) -> list[Upserted]:
    """Upsert the session's accounts and close the session in one commit.

    Two completions racing for the same new account both try to insert its ``fca_`` id;
    the loser's flush fails on the unique constraint, so it rolls back and redoes the
    upsert, now finding the winner's rows.
    """
    db = state.db.session
    attempts = 3
    for attempt in range(attempts):
        try:
            link = _own_session(state, holder, session_id)
            results = [
                upsert_account(state, customer, raw, session_id=session_id) for raw in linked
            ]
            if link.status == "open":
                link.status = "completed" if linked else "cancelled"
                link.completed_at = utcnow()
            elif linked and link.status == "cancelled":
                link.status = "completed"
            db.commit()
        except IntegrityError:
            db.rollback()
            if attempt == attempts - 1:
                raise
            continue
        return results
    raise AssertionError("unreachable")


def _subscribe(
    state: FinConnState, customer: Customer, session_id: str, results: list[Upserted]
) -> None:
    """Subscribe new active accounts to daily transaction refreshes when the holder allowed it.

    A failure here leaves the link stored and is only logged: completing the session again
    (or the next refresh) retries it.
    """
    if not state.settings.subscribe_transactions:
        return
    changed = False
    for result in results:
        account = result.account
        if (
            "transactions" in account.permissions
            and "transactions" not in account.subscriptions
            and account.status == "active"
        ):
            try:
                stripe_account = state.stripe.subscribe_transactions(account.stripe_id)
            except FinConnError as exc:
                logger.warning(
                    "Could not subscribe account %s to transactions: %s", account.id, exc.code
                )
            else:
                upsert_account(state, customer, stripe_account, session_id=session_id)
                changed = True
    if changed:
        state.db.session.commit()


def _retire_replaced(state: FinConnState, results: list[Upserted]) -> None:
    """Disconnect the ``fca_`` ids that this session's accounts replaced by a relink.

    Stripe would otherwise keep refreshing (and billing) the old link. The relink may have
    been stored here or by a webhook that beat the browser, so every account of the
    session with a replaced id is retired; the call's idempotency key makes a repeat
    cheap. Best effort: a failure leaves an unused link at Stripe and is logged.
    """
    for result in results:
        previous = result.account.previous_stripe_ids
        if not previous:
            continue
        try:
            state.stripe.disconnect_account(previous[-1])
        except FinConnError as exc:
            logger.warning("Could not disconnect replaced account %s: %s", previous[-1], exc.code)
