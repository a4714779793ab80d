"""Erasing a holder: their bank data is personal data, and they may ask for it to go.

:func:`erase_holder` first acts at Stripe: it disconnects the holder's accounts, detaches
their saved bank payment methods (their mandates end) and deletes their Stripe Customer
when this installation created it. Then it deletes in one commit everything stored about
them: accounts, balances, owners, transactions, link sessions, payment methods, debits and
the holder↔customer mapping, and blanks the stored payload of every event about their
accounts, customer, payment methods or debits. The ledger keeps each event's id, type and
status, so a redelivery is still recognised and never processed again.

:func:`delete_account_data` is the narrower ``FINCONN_DELETE_DATA_ON_DISCONNECT`` step:
a disconnected account's transactions and owners.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field

import sqlalchemy as sa

from ..errors import Conflict, NotFound
from ..models import (
    Account,
    BalanceSnapshot,
    Customer,
    LinkSession,
    Owner,
    Payment,
    PaymentMethod,
    Transaction,
    WebhookEvent,
)
from ..state import FinConnState
from .installation import installation_id

__all__ = ["Erased", "delete_account_data", "erase_holder"]

logger = logging.getLogger("flask_finconn")

# Debits whose money may still move: their rows must outlive an erasure. A debit claimed
# but not yet answered by Stripe is stored as processing, so it is among them.
IN_FLIGHT = ("processing", "requires_verification")


@dataclass
class Erased:
    """What :func:`erase_holder` removed (counts of rows; events blanked, not deleted)."""

    holder_id: str
    accounts: int = 0
    disconnected: list[str] = field(default_factory=list)  # fca_ ids disconnected now
    balances: int = 0
    owners: int = 0
    transactions: int = 0
    sessions: int = 0
    payment_methods: int = 0
    detached: list[str] = field(default_factory=list)  # pm_ ids detached now
    payments: int = 0
    events_blanked: int = 0
    customer: str | None = None  # the cus_ id whose mapping was deleted
    customer_deleted: bool = False  # deleted at Stripe (now, or before)
    customer_scrubbed: bool = False

    @property
    def found(self) -> bool:
        """Whether anything was stored about the holder."""
        return bool(self.accounts or self.customer or self.sessions or self.payment_methods)


def erase_holder(
    state: FinConnState,
    holder_id: str,
    *,
    scrub_customer: bool = False,
    delete_customer: bool = True,
) -> Erased:
    """Disconnect, detach and delete everything stored about one holder (the module doc).

    Everything at Stripe happens first; a Stripe failure there (an outage) raises before
    anything is deleted here, so running it again later is safe. The Stripe Customer is
    deleted only when its metadata names this installation and holder (the extension
    created it) and ``delete_customer`` is true; a Customer that is kept has its email and
    name blanked when ``scrub_customer`` is true. Erasing a holder with nothing stored
    does nothing. A holder with a debit still in flight (``processing``,
    ``requires_verification``, or not yet answered by Stripe) is refused with ``Conflict``
    (``payments_in_flight``) before anything happens at Stripe or here: that money may
    still move, and its record must stay.
    """
    session = state.db.session
    _refuse_payments_in_flight(state, holder_id)
    erased = Erased(holder_id)
    accounts = list(session.scalars(sa.select(Account).where(Account.holder_id == holder_id)))
    customer = session.scalars(sa.select(Customer).where(Customer.holder_id == holder_id)).first()
    methods = list(
        session.scalars(sa.select(PaymentMethod).where(PaymentMethod.holder_id == holder_id))
    )
    for account in accounts:
        if account.status != "disconnected":
            _disconnect(state, account)
            erased.disconnected.append(account.stripe_id)
    for method in methods:
        if method.status != "detached":
            with contextlib.suppress(NotFound, Conflict):  # gone, or detached at Stripe already
                state.stripe.detach_payment_method(method.stripe_id)
            erased.detached.append(method.stripe_id)
    if customer is not None:
        if delete_customer and _created_here(state, customer):
            with contextlib.suppress(NotFound):
                state.stripe.delete_customer(customer.stripe_id)
            erased.customer_deleted = True
        elif scrub_customer:
            state.stripe.update_customer(customer.stripe_id, email=None, name=None)
            erased.customer_scrubbed = True
    ids = [a.id for a in accounts]
    stripe_ids = sorted({s for a in accounts for s in (a.stripe_id, *a.previous_stripe_ids)})
    about = [sa.cast(WebhookEvent.payload, sa.Text).contains(s) for s in stripe_ids]
    payments = list(session.scalars(sa.select(Payment).where(Payment.holder_id == holder_id)))
    payment_ids = {
        s
        for s in (
            *(m.stripe_id for m in methods),
            *(m.mandate_id for m in methods),
            *(m.setup_intent_id for m in methods),
            *(p.stripe_id for p in payments),
        )
        if s is not None
    }
    about += [sa.cast(WebhookEvent.payload, sa.Text).contains(s) for s in sorted(payment_ids)]
    if customer is not None:
        about.append(sa.cast(WebhookEvent.payload, sa.Text).contains(customer.stripe_id))
    if stripe_ids or about:
        erased.events_blanked = _count(
            session.execute(
                sa.update(WebhookEvent)
                .where(sa.or_(WebhookEvent.account_stripe_id.in_(stripe_ids), *about))
                .values(payload={}, last_traceback=None)
                .execution_options(synchronize_session=False)
            )
        )
    erased.payments = _delete(state, Payment, Payment.holder_id == holder_id)
    erased.payment_methods = _delete(state, PaymentMethod, PaymentMethod.holder_id == holder_id)
    if ids:
        session.execute(
            sa.update(Account).where(Account.id.in_(ids)).values(latest_balance_id=None)
        )
        erased.transactions = _delete(state, Transaction, Transaction.account_id.in_(ids))
        erased.owners = _delete(state, Owner, Owner.account_id.in_(ids))
        erased.balances = _delete(state, BalanceSnapshot, BalanceSnapshot.account_id.in_(ids))
        erased.accounts = _delete(state, Account, Account.id.in_(ids))
    erased.sessions = _delete(state, LinkSession, LinkSession.holder_id == holder_id)
    if customer is not None:
        erased.customer = customer.stripe_id
        _delete(state, Customer, Customer.id == customer.id)
    session.commit()
    session.expunge_all()
    logger.info("Erased holder %s: %s", holder_id, erased)
    return erased


def _refuse_payments_in_flight(state: FinConnState, holder_id: str) -> None:
    in_flight = list(
        state.db.session.scalars(
            sa.select(Payment.id)
            .where(Payment.holder_id == holder_id)
            .where(Payment.status.in_(IN_FLIGHT))
            .order_by(Payment.id)
        )
    )
    if in_flight:
        raise Conflict(
            f"Holder {holder_id} has {len(in_flight)} debit(s) still in flight "
            f"({', '.join(in_flight)}); nothing was erased. Wait for them to settle (or "
            "cancel them), then erase the holder again.",
            code="payments_in_flight",
            extra={"payments": in_flight},
        )


def delete_account_data(state: FinConnState, account: Account) -> None:
    """Delete a disconnected account's transactions and owners (no commit).

    The account row and its balances stay, so the holder still sees what was linked.
    """
    _delete(state, Transaction, Transaction.account_id == account.id)
    _delete(state, Owner, Owner.account_id == account.id)
    account.transactions_cursor = None
    account.transactions_sync = None
    account.ownership_id = None


def _created_here(state: FinConnState, customer: Customer) -> bool:
    """Whether the Stripe Customer was created by this installation for this holder.

    One that is gone already counts: there is nothing left to keep.
    """
    try:
        found = state.stripe.retrieve_customer(customer.stripe_id)
    except NotFound:
        return True
    if found.get("deleted"):
        return True
    metadata = found.get("metadata") or {}
    return metadata.get("finconn_installation") == installation_id(state) and (
        metadata.get("finconn_holder_id") == customer.holder_id
    )


def _disconnect(state: FinConnState, account: Account) -> None:
    # Already gone at Stripe (404) or refusing because it is inactive (409): nothing more
    # can be read from it either way.
    if "transactions" in account.subscriptions:
        with contextlib.suppress(NotFound, Conflict):
            state.stripe.unsubscribe_transactions(account.stripe_id)
    with contextlib.suppress(NotFound, Conflict):
        state.stripe.disconnect_account(account.stripe_id)


def _delete(state: FinConnState, model: type[object], condition: sa.ColumnElement[bool]) -> int:
    result = state.db.session.execute(
        sa.delete(model).where(condition).execution_options(synchronize_session=False)
    )
    return _count(result)


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
