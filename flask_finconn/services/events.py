"""Stripe events: store each once, claim it, process it once, replay what failed.

The life of an event (one ``finconn_webhook_event`` row per ``evt_`` id)::

    verified delivery ──store──▶ pending ──claim──▶ processing ──▶ processed
                         │                             └────────▶ failed ──claim──▶ ...
                         └─ already stored: a duplicate, acknowledged and not stored again

- :func:`receive` stores a verified event with ``INSERT ... ON CONFLICT DO NOTHING`` on an
  autocommit connection before anything else happens, so a 2xx always means "stored", and
  two deliveries of one event racing in two workers store one row. ``event_received`` is
  sent by the delivery that stored it. Then the event goes to the app's task queue
  (``state.queue``), which processes it at once (``inline``: the event is then stored
  already claimed for it) or carries it to a worker.
- :func:`process_event` first *claims* the event: one autocommit ``UPDATE ... RETURNING``
  that moves it from a claimable status to ``processing`` (on PostgreSQL only for the row
  a ``SELECT ... FOR UPDATE SKIP LOCKED`` got, so a second claimer moves on at once
  instead of queueing behind the first). Only the claimer runs the handler, so a worker
  that lost the race does nothing.
- The handler (:mod:`.handlers`) commits its own work and sends its signals after its
  commits; the ``processed`` mark is a commit of its own after that. If the handler raises,
  what it had not committed is rolled back, the event becomes ``failed`` with the error
  and its traceback (also logged), and ``event_failed`` is sent. Work committed before the
  failure stays: processing again is safe because handlers re-read from Stripe.
- Handlers treat events as nudges: the data service re-reads the account from Stripe
  with the stored row locked, so an old or duplicated event can only ever apply Stripe's
  current state, never roll it back.
- :func:`sweep` finds events a worker should look at again (pending too long, stuck in
  ``processing`` after a crash, failed with attempts left) and :func:`replay` reprocesses
  failed events or one event on request.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..errors import FinConnError, NotFound
from ..models import WebhookEvent, from_unix, utcnow
from ..signals import event_failed, event_received
from ..state import FinConnState
from .handlers import EventIgnored, handler_for

logger = logging.getLogger("flask_finconn.events")

Outcome = Literal["processed", "failed", "skipped", "ignored"]

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
TRACEBACK_LIMIT = 20_000


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
    # Both report a row count of 0 for a conflict skipped by DO NOTHING, 1 for an insert.
    return insert(EVENTS).on_conflict_do_nothing(index_elements=["id"])


# Built once, compiled once per dialect (below).
_INSERTS = {name: _insert_statement(name) for name in ("postgresql", "sqlite")}


def _created(value: int) -> datetime | None:
    try:
        return from_unix(value)
    except (OverflowError, OSError, ValueError):
        return None


def _row_values(event: dict[str, Any], *, claimed: bool = False) -> dict[str, Any]:
    """The event's row; an event no handler could act on is stored ``ignored`` at once.

    Stripe signed it, so it is acknowledged and kept, but a shape no Stripe event has (a
    ``created`` outside the calendar, an account id that is not a string) would fail on
    every retry.
    """
    obj = event["data"]["object"]
    is_account = obj.get("object") == "financial_connections.account"
    now = utcnow()
    created = _created(event["created"])
    account_id = obj.get("id") if is_account else None
    reason = None
    if created is None:
        reason = "The event's created time is outside the calendar."
    elif is_account and not (isinstance(account_id, str) and 0 < len(account_id) <= 255):
        reason = "The event's account id is not a string of at most 255 characters."
    values: dict[str, Any] = {
        "id": event["id"],
        "type": event["type"],
        "created": created or now,
        "account_stripe_id": None if reason else account_id,
        "livemode": bool(event.get("livemode", False)),
        "payload": event,
        "status": "processing" if claimed else "pending",
        "attempts": 1 if claimed else 0,
        "last_error": None,
        "last_traceback": None,
        "received_at": now,
        "claimed_at": now if claimed else None,
        "processed_at": None,
    }
    if reason is not None:
        values.update(status="ignored", attempts=0, last_error=reason, claimed_at=None)
        values["processed_at"] = now
    return values


def _execute_alone(
    state: FinConnState, statement: Any, params: dict[str, Any] | None = None
) -> sa.Row[Any] | None:
    """Run one statement as its own transaction; the first row it returns.

    On an engine it runs on an autocommit connection: durable when it returns, without the
    BEGIN and COMMIT round trips of a transaction (on the acknowledge path these are most
    of the time spent). It goes through SQLAlchemy, so the host's event listeners see it.
    """
    session = state.db.session
    bind = session.get_bind()
    if isinstance(bind, sa.Engine):
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return connection.execute(statement, params).first()
    row = session.execute(statement, params).first()  # a session bound to a connection
    session.commit()
    return row


def store_event(state: FinConnState, event: dict[str, Any]) -> WebhookEvent | None:
    """Store a verified event once (``pending``) and commit; None when its id was stored.

    Returns the stored row as a detached object.
    """
    values = _store(state, event)
    return None if values is None else WebhookEvent(**values)


_Compiled = tuple[str, "tuple[str, ...] | None", dict[str, Any]]
_COMPILED: dict[tuple[str, str], _Compiled] = {}


def _compiled_insert(dialect: sa.Dialect) -> _Compiled:
    """The insert compiled once per dialect: SQL, parameter order, the columns' converters."""
    key = (dialect.name, dialect.driver)
    if key not in _COMPILED:
        compiled = _INSERTS[dialect.name].compile(dialect=dialect)
        processors = {
            column.key: column.type.dialect_impl(dialect).bind_processor(dialect)
            for column in COLUMNS
        }
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        _COMPILED[key] = (compiled.string, order, processors)
    return _COMPILED[key]


def _store(
    state: FinConnState, event: dict[str, Any], *, claimed: bool = False
) -> dict[str, Any] | None:
    """Insert the event's row unless its id is stored; the values, or None for a duplicate.

    The acknowledge path's one statement. On an engine it runs on an autocommit connection
    of the app's engine (durable when it returns, without the BEGIN and COMMIT round trips
    of a transaction), as SQL compiled once with the values converted by the columns' own
    types: ``exec_driver_sql`` skips only the per-call compile-cache machinery, and the
    host's engine and connection event listeners see the statement like any other.
    """
    session = state.db.session
    values = _row_values(event, claimed=claimed)
    bind = session.get_bind()
    if bind.dialect.name in _INSERTS and isinstance(bind, sa.Engine):
        sql, order, processors = _compiled_insert(bind.dialect)
        params = {
            name: (process(values[name]) if process is not None else values[name])
            for name, process in processors.items()
        }
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            result = connection.exec_driver_sql(
                sql, params if order is None else tuple(params[k] for k in order)
            )
        return values if result.rowcount == 1 else None
    statement = _INSERTS.get(bind.dialect.name)
    if statement is not None:  # a session bound to a connection (tests in a transaction)
        inserted = session.execute(statement, values).rowcount == 1  # type: ignore[attr-defined]
        session.commit()
        return values if inserted else None
    try:
        session.execute(sa.insert(EVENTS), values)
        session.commit()
    except IntegrityError:
        session.rollback()
        return None
    return values


def receive(state: FinConnState, event: dict[str, Any]) -> Received:
    """Store a verified event, then hand it to the app's task queue (``state.queue``).

    A duplicate delivery is acknowledged without storing again; the queue still hears of it
    (the ``inline`` queue processes a duplicate of an event still waiting or failed, as a
    retry; a worker queue leaves it to :func:`sweep`). When the queue processed the event
    and that failed, :class:`EventProcessingFailed` is raised after the failure is
    recorded, so Stripe delivers again. ``event_received`` is sent once the event is
    stored, before it is processed.
    """
    event_id = event["id"]
    queue = state.queue
    values = _store(state, event, claimed=queue.claims_on_receipt)
    stored = None
    if values is not None and values["status"] == "ignored":
        logger.warning("Stored event %s as ignored: %s", event_id, values["last_error"])
        return Received(event_id, duplicate=False, outcome="ignored")
    if values is not None:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        # The row object only when someone uses it: on the acknowledge path it is not free.
        if queue.claims_on_receipt or event_received.has_receivers_for(app):
            stored = WebhookEvent(**values)
        if event_received.has_receivers_for(app):
            try:
                event_received.send(app, event=stored)
            except Exception:
                # A receiver's bug must not strand an event that is stored and claimed.
                logger.exception("An event_received receiver raised for event %s.", event_id)
    outcome = cast(
        "Outcome | None",
        queue.received(
            state,
            event_id,
            new=values is not None,
            stored=stored if queue.claims_on_receipt else None,
        ),
    )
    if outcome == "failed":
        raise EventProcessingFailed()
    return Received(event_id, duplicate=values is None, outcome=outcome)


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

    The handler commits its own work and sends its signals; the ``processed`` mark is
    committed after it returns. On an exception what the handler had not committed is
    rolled back, the event is marked ``failed`` with the error and its traceback (also
    logged) and ``event_failed`` is sent; the exception does not propagate (the event row
    is the record).
    """
    session = state.db.session
    try:
        handler_for(event.type)(state, event)
        session.execute(
            sa.update(EVENTS)
            .where(EVENTS.c.id == event.id)
            .values(status="processed", processed_at=utcnow(), last_error=None, last_traceback=None)
        )
        # The mark changes no loaded object: keep what the handler's signals handed out
        # loaded, since receivers may read it after the request.
        own = session()
        expire, own.expire_on_commit = own.expire_on_commit, False
        try:
            session.commit()
        finally:
            own.expire_on_commit = expire
    except Exception as exc:
        session.rollback()
        if _permanent(exc):
            reason = str(exc) if isinstance(exc, EventIgnored) else _describe(exc)
            _mark_ignored(state, event.id, reason)
            logger.warning("Event %s ignored: %s", event.id, reason)
            return "ignored"
        _mark_failed(state, event.id, exc)
        logger.exception("Processing event %s failed: %s", event.id, _describe(exc))
        failed = session.get(WebhookEvent, event.id, populate_existing=True)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        event_failed.send(app, event=failed, error=exc)
        return "failed"
    return "processed"


def _permanent(exc: Exception) -> bool:
    """Whether processing the event again can only fail the same way.

    A handler's :class:`EventIgnored`, and Stripe's 4xx answers about the event's objects
    (an account Stripe no longer knows, one in a state that refuses the operation).
    """
    if isinstance(exc, EventIgnored):
        return True
    return isinstance(exc, FinConnError) and 400 <= exc.status < 500


def _mark_ignored(state: FinConnState, event_id: str, reason: str) -> None:
    session = state.db.session
    session.execute(
        sa.update(EVENTS)
        .where(EVENTS.c.id == event_id, EVENTS.c.status == "processing")
        .values(
            status="ignored",
            processed_at=utcnow(),
            last_error=reason[:ERROR_LIMIT],
            last_traceback=None,
        )
    )
    session.commit()


def _describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


def _mark_failed(state: FinConnState, event_id: str, exc: BaseException) -> None:
    session = state.db.session
    trace = "".join(traceback.format_exception(exc))
    session.execute(
        sa.update(EVENTS)
        .where(EVENTS.c.id == event_id, EVENTS.c.status == "processing")
        .values(status="failed", last_error=_describe(exc), last_traceback=trace[-TRACEBACK_LIMIT:])
    )
    session.commit()


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
    """Sweep and hand what it found to the app's task queue; returns the ids."""
    ids = sweep(state)
    if ids:
        state.queue.enqueue(current_app._get_current_object(), ids)  # type: ignore[attr-defined]
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
