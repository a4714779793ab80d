"""Stripe events: store each once, claim it, process it once, replay what failed.

The life of an event (one ``finconn_webhook_event`` row per ``evt_`` id)::

    verified delivery ──store──▶ pending ──claim──▶ processing ──▶ processed
                         │                             └────────▶ failed ──claim──▶ ...
                         └─ already stored: a duplicate, acknowledged and not stored again

- :func:`receive` stores a verified event with ``INSERT ... ON CONFLICT DO NOTHING`` in
  autocommit before anything else happens, so a 2xx always means "stored", and two
  deliveries of one event racing in two workers store one row. ``event_received`` is sent
  by the delivery that stored it. Then the event goes to ``FINCONN_TASK_QUEUE``.
- :func:`process_event` first *claims* the event: one autocommit ``UPDATE ... RETURNING``
  that moves it from a claimable status to ``processing`` (on PostgreSQL only for the row
  a ``SELECT ... FOR UPDATE SKIP LOCKED`` got, so a second claimer moves on at once
  instead of queueing behind the first). Only the claimer runs the handler, so a worker
  that lost the race does nothing. With ``inline`` a new event is stored already claimed.
  The handler's work and the ``processed`` mark commit together; if it raises, its work
  is rolled back, the event becomes ``failed`` with the error, and ``event_failed`` is sent.
- Handlers treat events as nudges: the data service re-reads the account from Stripe
  with the stored row locked, so an old or duplicated event can only ever apply Stripe's
  current state, never roll it back.
- :func:`sweep` finds events a worker should look at again (pending too long, stuck in
  ``processing`` after a crash, failed with attempts left) and :func:`replay` reprocesses
  failed events or one event on request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from blinker import Signal
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from .. import tasks
from ..errors import ConfigurationError, FinConnError, NotFound
from ..extension import FinConnState
from ..models import Account, Base, Customer, WebhookEvent, from_unix, utcnow
from ..signals import account_linked, account_updated, event_failed, event_received
from . import refresh
from .accounts import Upserted, upsert_account

logger = logging.getLogger("flask_finconn.events")

Outcome = Literal["processed", "failed", "skipped"]

# A claimed event whose worker has not finished after this long is taken to be lost
# (the process died); well above any handler's run time.
STUCK_AFTER = timedelta(minutes=15)
# A stored event nobody claimed within this long lost its queue message.
PENDING_AFTER = timedelta(minutes=2)
# Automatic retries of failed events (replay by hand has no limit), with backoff.
MAX_ATTEMPTS = 5
RETRY_BASE = timedelta(minutes=1)
SWEEP_BATCH = 500
ERROR_LIMIT = 2000

PREFIX = "financial_connections."
ACCOUNT = PREFIX + "account."
ACCOUNT_EVENT_TYPES = tuple(
    ACCOUNT + name
    for name in (
        "created",
        "deactivated",
        "reactivated",
        "disconnected",
        "refreshed_balance",
        "refreshed_ownership",
        "refreshed_transactions",
        "account_numbers_updated",
        "upcoming_account_number_expiry",
        "supported_payment_method_types_updated",
        "upcoming_deactivation",
        "expected_deactivation_date_updated",
    )
)
AUTHORIZATION_EVENT_TYPES = (
    PREFIX + "authorization.upcoming_deactivation",
    PREFIX + "authorization.expected_deactivation_date_updated",
)
EVENT_TYPES = ACCOUNT_EVENT_TYPES + AUTHORIZATION_EVENT_TYPES

Notice = tuple[Signal, dict[str, Any]]
Handler = Callable[[FinConnState, WebhookEvent], list[Notice]]


class EventProcessingFailed(FinConnError):
    """Inline processing of a stored event raised; Stripe should deliver it again (500)."""

    status = 500
    code = "event_processing_failed"
    message = (
        "The event was stored but processing it failed; it is marked failed and will be "
        "processed again when Stripe retries the delivery or on replay."
    )


@dataclass(frozen=True)
class Received:
    """What became of one verified delivery."""

    event_id: str
    duplicate: bool
    outcome: Outcome | None  # inline processing only; None when queued or not processed


# storing

EVENTS: sa.Table = WebhookEvent.__table__  # type: ignore[assignment]
COLUMNS = tuple(EVENTS.c)


def _insert_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # RETURNING gives a row only when inserted (rowcount is unreliable after DO NOTHING).
    return insert(EVENTS).on_conflict_do_nothing(index_elements=["id"]).returning(EVENTS.c.id)


# Built once: the hot path then reuses their compiled forms.
_INSERTS = {name: _insert_statement(name) for name in ("postgresql", "sqlite")}


def _row_values(event: dict[str, Any], *, claimed: bool) -> dict[str, Any]:
    obj = event["data"]["object"]
    is_account = obj.get("object") == "financial_connections.account"
    now = utcnow()
    return {
        "id": event["id"],
        "type": event["type"],
        "created": from_unix(event["created"]),
        "account_stripe_id": obj.get("id") if is_account else None,
        "livemode": bool(event.get("livemode", False)),
        "payload": event,
        "status": "processing" if claimed else "pending",
        "attempts": 1 if claimed else 0,
        "last_error": None,
        "received_at": now,
        "claimed_at": now if claimed else None,
        "processed_at": None,
    }


def _execute_alone(
    state: FinConnState, statement: Any, params: dict[str, Any] | None = None
) -> sa.Row[Any] | None:
    """Run one statement as its own transaction; the first row it returns.

    In autocommit it is durable when it returns, without the BEGIN and COMMIT round trips
    of a transaction: on the acknowledge path these are most of the time spent.
    """
    session = state.db.session
    bind = session.get_bind()
    if isinstance(bind, sa.Engine):
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return connection.execute(statement, params).first()
    row = session.execute(statement, params).first()  # a session bound to a connection
    session.commit()
    return row


_DriverInsert = tuple[str, "tuple[str, ...] | None", dict[str, Any]]
_DRIVER_INSERTS: dict[tuple[str, str], _DriverInsert] = {}


def _driver_insert(dialect: sa.Dialect) -> _DriverInsert:
    """The insert compiled once for a dialect: SQL, parameter order, bind processors."""
    key = (dialect.name, dialect.driver)
    if key not in _DRIVER_INSERTS:
        compiled = _INSERTS[dialect.name].compile(dialect=dialect)
        processors = {
            column.key: column.type.dialect_impl(dialect).bind_processor(dialect)
            for column in COLUMNS
        }
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        _DRIVER_INSERTS[key] = (compiled.string, order, processors)
    return _DRIVER_INSERTS[key]


def _insert_on_driver(engine: sa.Engine, values: dict[str, Any]) -> bool:
    """Store one event with the driver's cursor, in autocommit; False for a duplicate.

    The acknowledge path's one statement: SQLAlchemy compiled it and its column types
    convert the values, as in any execute, but running it on the driver's cursor skips
    the per-call execution machinery, about half of the statement's CPU time (host
    ``before_cursor_execute`` listeners do not see it).
    """
    sql, order, processors = _driver_insert(engine.dialect)
    params = {
        name: (process(values[name]) if process is not None else values[name])
        for name, process in processors.items()
    }
    connection = engine.raw_connection()
    try:
        driver = connection.dbapi_connection
        assert driver is not None, "a connection fresh from the pool is open"
        engine.dialect.set_isolation_level(driver, "AUTOCOMMIT")
        try:
            cursor = connection.cursor()
            cursor.execute(sql, params if order is None else tuple(params[k] for k in order))
            inserted = cursor.fetchone() is not None
            cursor.close()
        finally:
            engine.dialect.reset_isolation_level(driver)
    finally:
        connection.close()
    return inserted


def store_event(
    state: FinConnState, event: dict[str, Any], *, claimed: bool = False
) -> WebhookEvent | None:
    """Store a verified event once and commit; None when its id was already stored.

    Returns the stored row as a detached object. With ``claimed`` it is stored already
    claimed by the caller (``processing``, first attempt), saving a round of claiming when
    the caller processes it at once.
    """
    values = _store(state, event, claimed=claimed)
    return None if values is None else WebhookEvent(**values)


def _store(state: FinConnState, event: dict[str, Any], *, claimed: bool) -> dict[str, Any] | None:
    session = state.db.session
    values = _row_values(event, claimed=claimed)
    bind = session.get_bind()
    if bind.dialect.name in _INSERTS and isinstance(bind, sa.Engine):
        return values if _insert_on_driver(bind, values) else None
    statement = _INSERTS.get(bind.dialect.name)
    if statement is not None:
        return values if _execute_alone(state, statement, values) is not None else None
    try:
        session.execute(sa.insert(EVENTS), values)
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return values


def receive(state: FinConnState, event: dict[str, Any]) -> Received:
    """Store a verified event, then hand it to ``FINCONN_TASK_QUEUE``.

    A duplicate delivery is acknowledged without storing again. With the ``inline`` queue
    the event is processed before this returns, and a duplicate of an event still waiting
    or failed is a retry and processed (at most once, by whoever claims it); a failure
    raises :class:`EventProcessingFailed` after it is recorded, so Stripe delivers again.
    With a real queue only new events are queued; :func:`sweep` catches the rest.
    ``event_received`` is sent once the event is stored, before it is processed.
    """
    event_id = event["id"]
    queue = tasks.get_queue(state)
    values = _store(state, event, claimed=queue.inline)
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    # The row object only when someone uses it: on the acknowledge path it is not free.
    stored = None
    if values is not None and (queue.inline or event_received.has_receivers_for(app)):
        stored = WebhookEvent(**values)
        try:
            event_received.send(app, event=stored)
        except Exception:
            # A receiver's bug must not strand an event that is stored and claimed.
            logger.exception("An event_received receiver raised for event %s.", event_id)
    if queue.inline:
        if stored is not None:
            outcome = run_claimed(state, stored)
        else:
            outcome = process_event(state, event_id)
        if outcome == "failed":
            raise EventProcessingFailed()
        return Received(event_id, duplicate=values is None, outcome=outcome)
    if values is not None:
        try:
            queue.enqueue(app, [event_id])
        except ConfigurationError:
            raise
        except Exception:
            # The event is stored and acknowledged; the sweep queues it once the broker is back.
            logger.exception("Could not queue event %s; the sweep will queue it again.", event_id)
    return Received(event_id, duplicate=values is None, outcome=None)


# claiming and processing

CLAIMABLE = ("pending", "failed")


def claim(
    state: FinConnState, event_id: str, statuses: Sequence[str] = CLAIMABLE
) -> WebhookEvent | None:
    """Move an event in one of ``statuses`` to ``processing`` and commit; None if taken.

    An event stuck in ``processing`` for :data:`STUCK_AFTER` (its worker died) is taken
    over too, so Stripe's own retry recovers it even where no sweep runs. At most one
    caller gets the event, on any number of threads and processes. Returns the claimed row
    as a detached object.
    """
    session = state.db.session
    now = utcnow()
    stuck = sa.and_(EVENTS.c.status == "processing", EVENTS.c.claimed_at < now - STUCK_AFTER)
    # The status condition makes the UPDATE itself the claim where there are no row locks.
    target = sa.and_(EVENTS.c.id == event_id, sa.or_(EVENTS.c.status.in_(statuses), stuck))
    if session.get_bind().dialect.name == "postgresql":
        # A second claimer skips the row another one has locked instead of waiting for it.
        locked = sa.select(EVENTS.c.id).where(target).with_for_update(skip_locked=True)
        target = sa.and_(target, EVENTS.c.id == locked.scalar_subquery())
    row = _execute_alone(
        state,
        sa.update(EVENTS)
        .where(target)
        .values(status="processing", attempts=EVENTS.c.attempts + 1, claimed_at=now)
        .returning(*COLUMNS),
    )
    return None if row is None else WebhookEvent(**row._mapping)


def process_event(
    state: FinConnState, event_id: str, statuses: Sequence[str] = CLAIMABLE
) -> Outcome:
    """Claim an event and run its handler; ``skipped`` when someone else has it or it is done."""
    event = claim(state, event_id, statuses)
    if event is None:
        return "skipped"
    return run_claimed(state, event)


def run_claimed(state: FinConnState, event: WebhookEvent) -> Outcome:
    """Run the handler of an event this caller claimed, and record the outcome.

    The handler's writes and the ``processed`` mark commit together. On an exception the
    work is rolled back, the event is marked ``failed`` with the error and ``event_failed``
    is sent; the exception does not propagate (the event row is the record).
    """
    session = state.db.session
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        notices = handler_for(event.type)(state, event)
        session.execute(
            sa.update(EVENTS)
            .where(EVENTS.c.id == event.id)
            .values(status="processed", processed_at=utcnow(), last_error=None)
        )
        session.commit()
    except Exception as exc:
        session.rollback()
        _mark_failed(state, event.id, exc)
        logger.warning("Processing event %s failed: %s", event.id, _describe(exc))
        failed = session.get(WebhookEvent, event.id, populate_existing=True)
        event_failed.send(app, event=failed, error=exc)
        return "failed"
    for signal, kwargs in notices:
        for value in kwargs.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Base) and item in session:
                    # Loaded again after the commit, so receivers may keep it past the request.
                    session.refresh(item)
        signal.send(app, **kwargs)
    return "processed"


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


def _mark_failed(state: FinConnState, event_id: str, exc: BaseException) -> None:
    session = state.db.session
    session.execute(
        sa.update(EVENTS)
        .where(EVENTS.c.id == event_id, EVENTS.c.status == "processing")
        .values(status="failed", last_error=_describe(exc))
    )
    session.commit()


# handlers


def handler_for(event_type: str) -> Handler:
    """The handler of an event type; unknown types are acknowledged and left alone."""
    return HANDLERS.get(event_type, _ignore)


def _ignore(state: FinConnState, event: WebhookEvent) -> list[Notice]:
    logger.info("Stored event %s of type %s, which needs no action.", event.id, event.type)
    return []


def _account_event(state: FinConnState, event: WebhookEvent) -> list[Notice]:
    """Re-read the account from Stripe and apply that, whatever the event's snapshot says.

    The data service locks the stored row, re-reads, stores what finished (balance,
    owners, status) and syncs transactions when a newer transaction refresh finished; it
    commits itself (the sync per page, so a failure resumes where it stopped) and hands
    back its signals for after the ``processed`` mark. An account we do not store yet but
    whose customer is ours (the webhook beat the browser's completion) is linked here.
    """
    stripe_id = event.account_stripe_id
    if stripe_id is None:
        return _ignore(state, event)
    applied = refresh.sync_account_from_stripe(state, stripe_id, send_signals=False)
    if applied is not None:
        return list(applied.notices)
    return _link_new_account(state, event, stripe_id)


def _link_new_account(state: FinConnState, event: WebhookEvent, stripe_id: str) -> list[Notice]:
    session = state.db.session
    holder = event.payload["data"]["object"].get("account_holder") or {}
    customer = _customer(state, holder.get("customer"))
    if customer is None:
        logger.info("Event %s is about account %s, which is not ours.", event.id, stripe_id)
        return []
    if _superseded(state, customer, stripe_id):
        logger.info("Event %s is about %s, replaced by a relink; ignored.", event.id, stripe_id)
        return []
    fresh = state.stripe.retrieve_account(stripe_id).to_dict()
    if (fresh.get("account_holder") or {}).get("customer") != customer.stripe_id:
        return []
    for attempt in range(2):
        try:
            result = upsert_account(state, customer, fresh)
            session.commit()
        except IntegrityError:
            # The browser's completion stored it meanwhile; the second pass updates that row.
            session.rollback()
            if attempt:
                raise
            continue
        return _notices(result)
    raise AssertionError("unreachable")


def _customer(state: FinConnState, stripe_customer_id: Any) -> Customer | None:
    if not isinstance(stripe_customer_id, str):
        return None
    query = sa.select(Customer).where(Customer.stripe_id == stripe_customer_id)
    return state.db.session.scalars(query).first()


def _superseded(state: FinConnState, customer: Customer, stripe_id: str) -> bool:
    """Whether a relink replaced this ``fca_`` id on one of the customer's accounts."""
    previous = state.db.session.scalars(
        sa.select(Account.previous_stripe_ids).where(Account.customer_id == customer.id)
    )
    return any(stripe_id in ids for ids in previous)


def _notices(result: Upserted) -> list[Notice]:
    if result.change in ("created", "relinked"):
        return [(account_linked, {"account": result.account})]
    return [(account_updated, {"account": result.account})] if result.change == "updated" else []


HANDLERS: dict[str, Handler] = {
    **{name: _account_event for name in ACCOUNT_EVENT_TYPES},
    # An authorization is the login behind several accounts; Stripe sends the matching
    # account events too, and those carry everything stored about the accounts.
    **{name: _ignore for name in AUTHORIZATION_EVENT_TYPES},
}


# sweeping, replaying, listing


def sweep(state: FinConnState, *, now: datetime | None = None) -> list[str]:
    """The ids of events a worker should take again, oldest first (the caller queues them).

    Events stuck in ``processing`` past :data:`STUCK_AFTER` are put back to ``pending``;
    ``pending`` ones older than :data:`PENDING_AFTER` lost their queue message; ``failed``
    ones are retried with exponential backoff until :data:`MAX_ATTEMPTS`.
    """
    session = state.db.session
    at = now or utcnow()
    skip_locked = session.get_bind().dialect.name == "postgresql"
    stuck = session.execute(
        sa.update(WebhookEvent)
        .where(WebhookEvent.status == "processing", WebhookEvent.claimed_at < at - STUCK_AFTER)
        .values(status="pending")
        .returning(WebhookEvent.id, WebhookEvent.received_at)
        .execution_options(synchronize_session=False)
    ).all()
    pending = (
        sa.select(WebhookEvent.id, WebhookEvent.received_at)
        .where(
            WebhookEvent.status == "pending",
            # Claimed once and put back: its queue message is gone for sure.
            sa.or_(
                WebhookEvent.received_at < at - PENDING_AFTER, WebhookEvent.claimed_at.isnot(None)
            ),
        )
        .order_by(WebhookEvent.received_at)
        .limit(SWEEP_BATCH)
    )
    failed = (
        sa.select(
            WebhookEvent.id,
            WebhookEvent.received_at,
            WebhookEvent.attempts,
            WebhookEvent.claimed_at,
        )
        .where(
            WebhookEvent.status == "failed",
            WebhookEvent.attempts < MAX_ATTEMPTS,
            WebhookEvent.claimed_at < at - RETRY_BASE,
        )
        .order_by(WebhookEvent.received_at)
        .limit(SWEEP_BATCH)
    )
    if skip_locked:  # rows being claimed right now are someone else's already
        pending = pending.with_for_update(skip_locked=True)
        failed = failed.with_for_update(skip_locked=True)
    due = {row.id: row.received_at for row in stuck}
    due.update((row.id, row.received_at) for row in session.execute(pending))
    for row in session.execute(failed):
        if row.claimed_at <= at - RETRY_BASE * 2 ** max(row.attempts - 1, 0):
            due[row.id] = row.received_at
    session.commit()
    return sorted(due, key=lambda event_id: (due[event_id], event_id))


def requeue(state: FinConnState) -> list[str]:
    """Sweep and hand what it found to ``FINCONN_TASK_QUEUE``; returns the ids."""
    ids = sweep(state)
    if ids:
        tasks.get_queue(state).enqueue(current_app._get_current_object(), ids)  # type: ignore[attr-defined]
    return ids


def replay(
    state: FinConnState, event_id: str | None = None, *, failed: bool = False
) -> list[tuple[str, Outcome]]:
    """Process one event again (any status but ``processing``) or every failed event once.

    Runs here, not on the queue, so the caller sees each outcome. Claims still apply: an
    event another worker is processing is ``skipped``.
    """
    if event_id is not None:
        if state.db.session.get(WebhookEvent, event_id) is None:
            raise NotFound(f"No event {event_id} is stored.", code="event_not_found")
        return [(event_id, process_event(state, event_id, ("pending", "failed", "processed")))]
    if not failed:
        raise ValueError("Pass an event id, or failed=True to replay every failed event.")
    ids = list(
        state.db.session.scalars(
            sa.select(WebhookEvent.id)
            .where(WebhookEvent.status == "failed")
            .order_by(WebhookEvent.received_at, WebhookEvent.id)
        )
    )
    state.db.session.commit()
    return [(each, process_event(state, each, ("failed",))) for each in ids]


def list_events(
    state: FinConnState,
    *,
    status: str | None = None,
    types: Iterable[str] = (),
    limit: int = 50,
) -> list[WebhookEvent]:
    """Stored events, newest first, optionally of one status and some types."""
    query = sa.select(WebhookEvent).order_by(
        WebhookEvent.received_at.desc(), WebhookEvent.id.desc()
    )
    if status:
        query = query.where(WebhookEvent.status == status)
    wanted = list(types)
    if wanted:
        query = query.where(WebhookEvent.type.in_(wanted))
    return list(state.db.session.scalars(query.limit(limit)))


__all__ = [
    "EVENT_TYPES",
    "EventProcessingFailed",
    "Received",
    "claim",
    "list_events",
    "process_event",
    "receive",
    "replay",
    "requeue",
    "run_claimed",
    "store_event",
    "sweep",
]
