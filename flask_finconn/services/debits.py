"""Starting a debit exactly once, and reading Stripe's first answer to it.

:func:`debit` never charges twice for one ``(holder, idempotency_key)``:

1. A row with that key already stored is returned as it is (after checking that the
   retry asks for the same debit).
2. Otherwise a row is inserted and committed *before* Stripe is called; the table's
   unique ``(holder_id, idempotency_key)`` lets exactly one of several racing callers
   insert, and the others read the winner's row.
3. The PaymentIntent is created with an idempotency key derived from the holder's
   customer and the caller's key, so whichever caller reaches Stripe (the winner, a loser
   that found the row still without a ``pi_``, or a retry after a crash or a lost answer)
   gets the same PaymentIntent back.

A debit is a hot path: the payment method is read as plain columns, the statements run
without loading objects, and the returned :class:`Payment` is built from what was written
rather than read back. When the session holds none of the caller's work, the debit runs on
a connection of its own, outside the session's bookkeeping (given back to the pool for the
call to Stripe); otherwise on the session's, committing the caller's work with the claim.
What happens after the first answer
(webhooks, polling, cancelling) is :mod:`.payments`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, SessionTransaction, make_transient_to_detached, scoped_session
from sqlalchemy.orm.attributes import instance_dict

from ..errors import Conflict, FinConnError, InsufficientBalance, StripeUnavailable, ValidationError
from ..models import Account, Customer, Payment, PaymentMethod, new_payment_id, utcnow
from ..signals import payment_disputed, payment_failed, payment_processing, payment_succeeded
from ..state import FinConnState
from .accounts import loaded
from .payment_method_sync import apply_payment_method, blocked_message, sender
from .payment_methods import get_payment_method
from .refresh import start_refresh
from .sync import sync_account_from_stripe

# A balance older than this is refreshed before a checked debit.
BALANCE_MAX_AGE = timedelta(hours=1)
# Stripe remembers an idempotency key for about 24 hours; a debit never answered for longer
# than this is not sent again, since Stripe could then create a second PaymentIntent.
RESUBMIT_WINDOW = timedelta(hours=23)
MAX_KEY_LENGTH = 255
PAYMENT_TABLE = cast(sa.Table, Payment.__table__)
# Built once: what a debit needs of the payment method, and its customer's id.
_METHOD_AND_CUSTOMER = (
    sa.select(
        PaymentMethod.id,
        PaymentMethod.stripe_id,
        PaymentMethod.status,
        PaymentMethod.mandate_id,
        PaymentMethod.mandate_status,
        PaymentMethod.blocked,
        PaymentMethod.account_id,
        PaymentMethod.livemode,
        Customer.stripe_id.label("customer"),
    )
    .join(Customer, Customer.id == PaymentMethod.customer_id)
    .where(PaymentMethod.id == sa.bindparam("method_id"))
    .where(PaymentMethod.holder_id == sa.bindparam("holder_id"))
)
_CLAIM = PAYMENT_TABLE.insert()
# Built once: the first answer from Stripe, stored only if no racer stored it first.
_STORE_ANSWER = (
    PAYMENT_TABLE.update()
    .where(PAYMENT_TABLE.c.id == sa.bindparam("payment_id"))
    .where(PAYMENT_TABLE.c.stripe_id.is_(None))
    .values(
        stripe_id=sa.bindparam("stripe_id"),
        status=sa.bindparam("status"),
        failure_code=sa.bindparam("failure_code"),
        failure_message=sa.bindparam("failure_message"),
        updated_at=sa.bindparam("updated_at"),
    )
)

FAILURE_MESSAGES = {
    "insufficient_funds": "The bank returned the debit: not enough money in the account.",
    "account_closed": "The bank returned the debit: the account is closed.",
    "no_account": "The bank returned the debit: the account does not exist.",
    "debit_not_authorized": "The holder told their bank the debit was not authorized.",
    "bank_account_unusable": "The bank account can no longer be debited.",
    "bank_account_restricted": "The bank account does not accept debits.",
    "invalid_currency": "The bank account cannot be debited in this currency.",
    "payment_intent_mandate_invalid": "The mandate for this bank account is no longer active.",
}


@dataclass(frozen=True)
class DebitRequest:
    """What a caller asked to debit, compared with a stored row when a key is reused."""

    holder_id: str
    payment_method_id: str
    amount: int
    currency: str
    description: str
    idempotency_key: str
    metadata: dict[str, str]


def _validate(request: DebitRequest) -> None:
    if not isinstance(request.amount, int) or isinstance(request.amount, bool):
        raise ValidationError("The amount must be a whole number of cents.", code="invalid_amount")
    if request.amount <= 0:
        raise ValidationError("The amount must be at least 1 cent.", code="invalid_amount")
    if request.currency != "usd":
        raise ValidationError("Bank debits are in usd only.", code="invalid_currency")
    if not request.idempotency_key or len(request.idempotency_key) > MAX_KEY_LENGTH:
        raise ValidationError(
            "Pass an idempotency_key of 1 to 255 characters that names this debit (an order "
            "id, say), so that a retry never charges twice.",
            code="invalid_idempotency_key",
        )
    if not request.description:
        raise ValidationError("Describe the debit; the holder sees it.", code="invalid_description")


def _by_key(state: FinConnState, holder_id: str, key: str) -> Payment | None:
    return state.db.session.scalars(
        sa.select(Payment)
        .where(Payment.holder_id == holder_id, Payment.idempotency_key == key)
        .execution_options(populate_existing=True)
    ).first()


def _same_request(payment: Payment, request: DebitRequest) -> Payment:
    if (
        payment.payment_method_id,
        payment.amount,
        payment.currency,
        payment.description,
    ) != (request.payment_method_id, request.amount, request.currency, request.description):
        raise Conflict(
            "This idempotency key was already used for a different debit; use a new key for "
            "a new debit.",
            code="idempotency_key_reused",
            extra={"payment": payment.id},
        )
    return payment


def debit(state: FinConnState, request: DebitRequest, *, check_balance: bool = False) -> Payment:
    """Debit a verified, mandated payment method once per idempotency key (module docstring).

    A debit Stripe refuses at once (a blocked account, a revoked mandate) is stored and
    returned as ``failed``; when Stripe cannot be reached the row stays without a
    PaymentIntent and the error is raised: retry with the same key.

    Work the caller left in the session (pending or flushed) is committed with the debit's
    claim, or, when the key was claimed before, just before the stored debit is read; a
    debit refused before its claim (a bad request, an unusable method) leaves it pending.
    """
    _validate(request)
    own = None if check_balance else _own_connection(state)
    try:
        return _debit(state, request, own, check_balance=check_balance)
    finally:
        if own is not None:
            own.close()


def watch_sessions(db_session: scoped_session[Any]) -> None:
    """Track whether sessions of ``db_session``'s class hold a database transaction.

    A session starts a transaction for its bookkeeping alone (``add`` does), so whether it
    is in one does not tell whether it holds a connection with the caller's work on it; the
    session events marking that are public, its record of its connections is not.
    """
    for name, receiver in (("after_begin", _began), ("after_transaction_end", _ended)):
        if not sa.event.contains(db_session, name, receiver):
            sa.event.listen(db_session, name, receiver)


_IN_DATABASE = "flask_finconn.in_database_transaction"


def _began(session: Session, transaction: SessionTransaction, connection: sa.Connection) -> None:
    session.info[_IN_DATABASE] = True


def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_IN_DATABASE, None)


def _own_connection(state: FinConnState) -> sa.Connection | None:
    """A connection of its own for a debit, when the session holds none of the caller's work.

    Then the debit runs outside the session's bookkeeping (no transaction of the session
    begun, committed and expired twice), which is most of what it costs beyond the Stripe
    call. A session with pending objects or a database transaction of its own keeps the
    debit on its connection, so that the caller's work is committed with the claim rather
    than left holding locks the claim would wait for. So does a session bound to a
    connection (a test inside a transaction): its work must stay inside that transaction.

    The connection is closed before the session is used (to read a winner's row, store a
    refusal): a debit never holds two connections, which threads sharing a pool could
    otherwise exhaust while each waits for its second.
    """
    session = state.db.session()
    if session.info.get(_IN_DATABASE) or session.new or session.dirty or session.deleted:
        return None
    bind = session.get_bind()
    return bind.connect() if isinstance(bind, sa.Engine) else None


def _debit(
    state: FinConnState, request: DebitRequest, own: sa.Connection | None, *, check_balance: bool
) -> Payment:
    """:func:`debit` on ``own`` connection, or on the session's when ``own`` is None."""
    session = state.db.session
    connection = own if own is not None else session.connection()
    try:
        method = connection.execute(
            _METHOD_AND_CUSTOMER,
            {"method_id": request.payment_method_id, "holder_id": request.holder_id},
        ).first()
        if method is None:
            if own is not None:
                own.close()  # never two connections at once: see _own_connection
            # The same 404 as every other lookup of a payment method.
            get_payment_method(state, request.holder_id, request.payment_method_id)
        assert method is not None
        _check_debitable(method.status, method.mandate_status, method.blocked)
        if check_balance:
            _check_balance(state, method.account_id, request.amount)
    except FinConnError:
        if own is not None:
            own.close()
        # A retry of a debit made before the method became unusable returns that debit.
        existing = _by_key(state, request.holder_id, request.idempotency_key)
        if existing is None:
            raise
        return resume(state, _same_request(existing, request))
    target = _Target(method.customer, method.stripe_id, method.mandate_id)
    now = utcnow()
    columns = {
        "id": new_payment_id(),
        "holder_id": request.holder_id,
        "payment_method_id": method.id,
        "stripe_id": None,
        "amount": request.amount,
        "currency": request.currency,
        "description": request.description,
        "status": "processing",
        "failure_code": None,
        "failure_message": None,
        "idempotency_key": request.idempotency_key,
        "metadata": dict(request.metadata),
        "livemode": method.livemode,
        "created_at": now,
        "updated_at": now,
    }
    lost = _claim_alone(own, columns) if own is not None else _claim_in_session(state, columns)
    if lost is not None:
        winner = _by_key(state, request.holder_id, request.idempotency_key)
        if winner is None:
            raise lost
        return resume(state, _same_request(winner, request))
    return _submit(state, columns, target, own)


def _claim_alone(own: sa.Connection, columns: dict[str, Any]) -> IntegrityError | None:
    """Insert and commit the claim on ``own`` connection; the error when the key was taken."""
    try:
        # The unique (holder_id, idempotency_key) decides which racer owns the debit.
        own.execute(_CLAIM, columns)
        own.commit()
    except IntegrityError as exc:
        own.close()  # the winner's row is read through the session
        return exc
    # Back to the pool for the call to Stripe, which can take seconds: debits waiting on
    # Stripe must not hold every connection the app has.
    own.close()
    return None


def _claim_in_session(state: FinConnState, columns: dict[str, Any]) -> IntegrityError | None:
    """Insert the claim and commit it with the caller's work; the error if the key was taken.

    The insert runs in a savepoint, so that losing the key rolls back the claim alone: the
    caller's work is then committed by itself rather than lost.
    """
    session = state.db.session
    session.flush()  # the caller's own writes fail here, as the caller's own errors
    lost = None
    try:
        # The unique (holder_id, idempotency_key) decides which racer owns the debit.
        with session.begin_nested():
            # The savepoint is emitted when the nested transaction takes its connection.
            session.connection().execute(_CLAIM, columns)
    except IntegrityError as exc:
        lost = exc
    session.commit()
    return lost


@dataclass(frozen=True)
class _Target:
    """What Stripe needs to debit: read before the claim's commit expires the rows."""

    customer: str
    payment_method: str
    mandate: str | None


def _check_debitable(
    status: str, mandate_status: str | None, blocked: dict[str, Any] | None
) -> None:
    if status != "verified":
        raise Conflict(
            f"The bank account is {status.replace('_', ' ')}; only a verified one can be debited.",
            code="payment_method_not_verified"
            if status != "detached"
            else "payment_method_detached",
        )
    if blocked:
        raise Conflict(
            blocked_message(blocked),
            code="payment_method_blocked",
            extra={"reason": blocked.get("reason")},
        )
    if mandate_status != "active":
        raise Conflict(
            "The mandate for this bank account is not active; ask the holder to save the "
            "account again.",
            code="mandate_inactive",
        )


def _check_balance(state: FinConnState, account_id: str | None, amount: int) -> None:
    """Refuse a debit above the available balance, refreshing a stale balance first."""
    account = state.db.session.get(Account, account_id) if account_id else None
    if account is None or "balances" not in account.permissions:
        raise Conflict(
            "There is no balance for this bank account (it was entered by hand or linked "
            "without the balances permission); debit it without check_balance.",
            code="balance_unavailable",
        )
    snapshot = account.latest_balance
    if snapshot is None or utcnow() - snapshot.as_of > BALANCE_MAX_AGE:
        try:
            start_refresh(state, account, ["balance"])
        except Conflict as exc:
            if exc.code not in ("refresh_too_early", "refresh_in_progress"):
                raise
        sync_account_from_stripe(state, account.stripe_id)
        state.db.session.refresh(account)
        snapshot = account.latest_balance
        if snapshot is None or utcnow() - snapshot.as_of > BALANCE_MAX_AGE:
            raise Conflict(
                "The balance is being refreshed; try the debit again in a moment.",
                code="balance_refresh_pending",
            )
    available = snapshot.current if snapshot.available is None else snapshot.available
    if amount > available:
        raise InsufficientBalance(
            f"The available balance ({available} cents) is below the amount ({amount} "
            "cents); the debit was not made.",
            extra={"available": available, "amount": amount},
        )


def resume(state: FinConnState, payment: Payment) -> Payment:
    """A stored debit for a reused key: finish submitting it if its first call did not.

    A debit claimed more than :data:`RESUBMIT_WINDOW` ago (by the clock of the Stripe the
    client talks to) is not sent again: it raises ``Conflict`` (``payment_needs_review``)
    without calling Stripe.
    """
    if payment.stripe_id is not None or payment.status != "processing":
        return payment
    if needs_review(state, payment):
        raise Conflict(
            f"The debit {payment.id} was never answered by Stripe and is more than 23 hours "
            "old, past the time Stripe remembers its idempotency key, so it is not sent "
            "again (that could debit the holder twice). Look in the Stripe Dashboard for a "
            f"PaymentIntent with metadata finconn_payment_id={payment.id}, then run `flask "
            f"finconn payments attach {payment.id} <pi_ id>` if there is one, or `flask "
            f"finconn payments mark-failed {payment.id}` if there is none.",
            code="payment_needs_review",
            extra={"payment": payment.id},
        )
    session = state.db.session
    method = session.get(PaymentMethod, payment.payment_method_id)
    assert method is not None
    customer = session.get(Customer, method.customer_id)
    assert customer is not None
    target = _Target(customer.stripe_id, method.stripe_id, method.mandate_id)
    columns = {
        column.name: getattr(payment, "metadata_" if column.name == "metadata" else column.name)
        for column in PAYMENT_TABLE.columns
    }
    return _submit(state, columns, target)


def needs_review(state: FinConnState, payment: Payment) -> bool:
    """Whether a debit was never answered by Stripe and is too old to be sent again.

    Its age is read on the clock of the Stripe the client talks to, as Stripe's memory of
    idempotency keys is.
    """
    if payment.stripe_id is not None or payment.status != "processing":
        return False
    age = state.stripe.now() - payment.created_at.timestamp()
    return age > RESUBMIT_WINDOW.total_seconds()


def _submit(
    state: FinConnState,
    columns: dict[str, Any],
    target: _Target,
    own: sa.Connection | None = None,
) -> Payment:
    """Create the PaymentIntent (same key, same intent) and store its first answer.

    ``columns`` is the stored row, by column name; the answer is stored on a connection of
    ``own``'s engine (``own`` claimed the row and is closed by now), or through the session
    when ``own`` is None.
    """
    session = state.db.session
    payment_id = columns["id"]
    try:
        intent = state.stripe.create_debit(
            customer=target.customer,
            payment_method=target.payment_method,
            mandate=target.mandate,
            amount=columns["amount"],
            currency=columns["currency"],
            description=columns["description"],
            metadata={**columns["metadata"], "finconn_payment_id": payment_id},
            idempotency_key=columns["idempotency_key"],
        )
    except Conflict as exc:
        return _refused(state, payment_id, target, exc)
    except StripeUnavailable:
        if own is None:
            session.rollback()
        raise
    status, code = status_of(intent)
    values: dict[str, Any] = {
        "stripe_id": intent["id"],
        "status": status or "processing",
        "failure_code": code if status == "failed" else None,
        "failure_message": failure_message(code) if status == "failed" else None,
        "updated_at": utcnow(),
    }
    # Only the first caller to store the answer announces it; a racer that lost finds
    # the intent stored and returns the row as it is.
    if own is not None:
        # ``own`` went back to the pool for the call: the answer takes a connection afresh.
        with own.engine.connect() as connection:
            result = cast(
                "sa.CursorResult[Any]",
                connection.execute(_STORE_ANSWER, {"payment_id": payment_id, **values}),
            )
            connection.commit()
    else:
        result = cast(
            "sa.CursorResult[Any]",
            session.connection().execute(_STORE_ANSWER, {"payment_id": payment_id, **values}),
        )
        session.commit()
    # A row claimed on ``own`` connection was made by this call: the session cannot hold it.
    if result.rowcount != 1 or (
        own is None and session.identity_key(Payment, payment_id) in session.identity_map
    ):
        payment = session.get(Payment, payment_id, populate_existing=True)
        assert payment is not None
        if result.rowcount == 1:
            announce(payment)
        return payment
    # Everything stored is known here: make the row without reading it back. The values go
    # into the new object's dict as a load puts them there: committed, no change events,
    # nothing to expire (set_committed_value per attribute does the same, slower).
    payment = Payment()
    stored = instance_dict(payment)
    stored.update(columns)
    stored["metadata_"] = stored.pop("metadata")
    stored.update(values)
    make_transient_to_detached(payment)
    session.add(payment)
    announce(payment)
    return payment


def failure_message(code: str | None) -> str:
    """The sentence stored with a failed debit, for Stripe's failure code."""
    return FAILURE_MESSAGES.get(
        code or "", "The bank returned the debit; ask the holder for another account."
    )


def _refused(state: FinConnState, payment_id: str, target: _Target, exc: Conflict) -> Payment:
    """Store a debit Stripe refused at once as ``failed``.

    A refusal for a blocked account re-reads the payment method, so that the block is
    stored and the next debit is refused here with the reason, without asking Stripe.
    """
    session = state.db.session
    row = locked(state, Payment.id == payment_id)
    assert row is not None
    changed = row.status == "processing"
    if changed:
        row.status = "failed"
        row.failure_code = exc.code
        row.failure_message = FAILURE_MESSAGES.get(exc.code, exc.message)
    session.commit()
    if exc.code == "bank_account_unusable":
        # The refusal is stored either way; the block also arrives by webhook.
        with contextlib.suppress(FinConnError):
            apply_payment_method(state, target.payment_method)
    loaded(state, row)
    if changed:
        payment_failed.send(sender(), payment=row)
    return row


def locked(state: FinConnState, where: Any) -> Payment | None:
    """The debit matching ``where``, locked for update and read afresh."""
    return state.db.session.scalars(
        sa.select(Payment).where(where).with_for_update().execution_options(populate_existing=True)
    ).first()


def status_of(intent: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Our status for a PaymentIntent, and the failure code when it failed."""
    status = intent.get("status")
    charge = intent.get("latest_charge")
    if status == "succeeded":
        disputed = isinstance(charge, dict) and charge.get("disputed")
        return ("disputed" if disputed else "succeeded"), None
    if status == "processing":
        return "processing", None
    if status == "requires_action":
        return "requires_verification", None
    if status == "canceled":
        return "canceled", None
    error = intent.get("last_payment_error") or {}
    if status == "requires_payment_method" and error:
        code = error.get("code")
        if not code and isinstance(charge, dict):
            code = charge.get("failure_code")
        return "failed", code or "payment_failed"
    return None, None


def announce(row: Payment) -> None:
    """Send the signal for the debit's current status (after the commit that stored it)."""
    signal = {
        "processing": payment_processing,
        "succeeded": payment_succeeded,
        "failed": payment_failed,
        "disputed": payment_disputed,
    }.get(row.status)
    # Most apps connect no receiver to most signals: then there is nothing to send.
    if signal is not None and signal.receivers:
        signal.send(sender(), payment=row)


__all__ = [
    "BALANCE_MAX_AGE",
    "FAILURE_MESSAGES",
    "RESUBMIT_WINDOW",
    "DebitRequest",
    "announce",
    "debit",
    "failure_message",
    "locked",
    "needs_review",
    "resume",
    "status_of",
]
