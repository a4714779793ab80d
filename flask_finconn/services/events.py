"""Stripe events: store each once, claim it, process it once, replay what failed.

The life of an event (one ``finconn_webhook_event`` row per ``evt_`` id)::

    verified delivery ──store──▶ pending ──claim──▶ processing ──▶ processed
                         │                             └────────▶ failed ──claim──▶ ...
                         └─ already stored: a duplicate, acknowledged and not stored again

- :func:`receive` stores a verified event with ``INSERT ... ON CONFLICT DO NOTHING``
  (:mod:`.event_store`) and hands it to the app's task queue (``state.queue``). A queue
  that carries events to a worker gets the row inserted on an autocommit connection
  before anything else happens, so a 2xx always means "stored". The ``inline`` queue
  processes the event in the delivery's request. When the type's handler writes in the
  event's transaction (:func:`.handlers.in_event_transaction`), the row is inserted
  already marked processed, the handler runs, and one commit makes both durable (a
  rollback, both gone); a second delivery of the same id racing in another worker waits
  on the first one's insert and then finds it stored, so it is processed once. For a
  handler that manages its own transactions the claimed row is committed first.
  ``event_received`` is sent by the delivery that stored the event once that is
  committed.
- :func:`process_event` first *claims* the event: one autocommit ``UPDATE ... RETURNING``
  that moves it from a claimable status to ``processing`` (on PostgreSQL only for the row
  a ``SELECT ... FOR UPDATE SKIP LOCKED`` got, so a second claimer moves on at once
  instead of queueing behind the first). Only the claimer runs the handler, so a worker
  that lost the race does nothing.
- The handler (:mod:`.handlers`) may commit its work itself and sends its signals after
  its commits; the ``processed`` mark is committed after it returns (with the handler's
  work, and on the inline path with the row's insert, when the handler does not commit).
  If the handler raises, what was not committed is rolled back and the event is recorded
  ``failed`` with the error and its traceback (also logged) in a transaction of its own,
  inserting the row again if the rollback took it, then ``event_failed`` is sent; the
  sweep or a replay retries it. Work committed before the failure stays: processing
  again is safe because handlers re-read from Stripe.
- Handlers treat events as nudges: the data service re-reads the account from Stripe
  with the stored row locked, so an old or duplicated event can only ever apply Stripe's
  current state, never roll it back.
- :func:`sweep` finds events a worker should look at again (pending too long, stuck in
  ``processing`` after a crash, failed with attempts left) and :func:`replay` reprocesses
  failed events or one event on request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal, cast

import sqlalchemy as sa
from flask import current_app

from ..errors import FinConnError, NotFound
from ..models import WebhookEvent, utcnow
from ..signals import event_failed, event_received
from ..state import FinConnState
from .event_store import (
    COLUMNS,
    EVENTS,
    describe,
    execute_alone,
    insert_alone,
    insert_in_session,
    record_outcome,
    store_event,
)
from .handlers import EventIgnored, handler_for, in_event_transaction

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


def receive(state: FinConnState, event: dict[str, Any], raw: bytes | None = None) -> Received:
    """Store a verified event, then hand it to the app's task queue (``state.queue``).

    A duplicate delivery is acknowledged without storing again; the queue still hears of it
    (the ``inline`` queue processes a duplicate of an event still waiting or failed, as a
    retry; a worker queue leaves it to :func:`sweep`). When the queue processed the event
    and that failed, :class:`EventProcessingFailed` is raised after the failure is
    recorded, so Stripe delivers again. ``event_received`` is sent once the stored event
    is committed: before it is processed on a worker queue; after the commit that stores
    and processes it (or records its failure) on the inline queue. ``raw``, the verified
    body ``event`` was parsed from, is stored as the payload as it came (no second
    serialization).
    """
    event_id = event["id"]
    queue = state.queue
    inline = queue.claims_on_receipt
    session = state.db.session
    # Inline, for a handler that writes in the event's transaction: the row joins the
    # session's transaction, which processing commits. Otherwise it is durable at once
    # (claimed for an inline handler that manages its own transactions).
    joined = inline and in_event_transaction(event["type"])
    text = _text(raw)
    done = False
    if joined:
        values, done = insert_in_session(state, event, text)
    else:
        values = insert_alone(state, event, claimed=inline, raw=text)
    stored = None
    if values is not None and values["status"] == "ignored":
        if joined:
            session.commit()
        logger.warning("Stored event %s as ignored: %s", event_id, values["last_error"])
        return Received(event_id, duplicate=False, outcome="ignored")
    if values is None and joined:
        # Nothing written: end the transaction before the queue claims. A COMMIT, since
        # after any ROLLBACK psycopg drops every statement it prepared on the connection.
        _commit_keeping_loaded(session)
        if done:  # processed or ignored already: no claim would take it
            return Received(event_id, duplicate=True, outcome="skipped")
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    listened = values is not None and event_received.has_receivers_for(app)
    # The row object only when someone uses it: on the acknowledge path it is not free.
    if values is not None and (inline or listened):
        stored = WebhookEvent(**values)
    if listened and stored is not None and not inline:
        _received(app, stored)  # committed: on the acknowledge path, before processing
    outcome = cast(
        "Outcome | None",
        queue.received(state, event_id, new=values is not None, stored=stored if inline else None),
    )
    if listened and stored is not None and inline:
        _received(app, stored)  # committed with the processing, or recorded as failed
    if outcome == "failed":
        raise EventProcessingFailed()
    return Received(event_id, duplicate=values is None, outcome=outcome)


def _text(raw: bytes | None) -> str | None:
    """The body as UTF-8 text (what Stripe sends), or None to serialize the parsed event."""
    if raw is None:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:  # JSON in another encoding, parsed all the same
        return None


def _received(app: Any, stored: WebhookEvent) -> None:
    """Send ``event_received`` for an event this delivery stored (a receiver's error is logged)."""
    try:
        event_received.send(app, event=stored)
    except Exception:
        # A receiver's bug must not turn a stored event into an error answer.
        logger.exception("An event_received receiver raised for event %s.", stored.id)


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
    row = execute_alone(
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

    The handler may commit its own work and sends its signals after its commits; the
    ``processed`` mark is committed after it returns, with whatever of the handler's work
    is still uncommitted in the session. A row the inline path inserted already marked,
    in the session's open transaction, needs no mark: this commit makes it true. On
    an exception that is rolled back, the event is recorded ``failed`` with the error and
    its traceback (also logged) in a transaction of its own and ``event_failed`` is sent;
    the exception does not propagate (the event row is the record). When another delivery
    processed the event meanwhile, its row is left alone and the outcome is ``processed``.
    """
    session = state.db.session
    try:
        handler_for(event.type)(state, event)
        if event.status != "processed":  # else inserted marked, in this transaction
            session.execute(_MARK_PROCESSED, {"event_id": event.id, "now": utcnow()})
        # The mark changes no loaded object: keep what the handler's signals handed out
        # loaded, since receivers may read it after the request.
        _commit_keeping_loaded(session)
    except Exception as exc:
        session.rollback()
        if _permanent(exc):
            reason = str(exc) if isinstance(exc, EventIgnored) else describe(exc)
            record_outcome(state, event, "ignored", reason)
            logger.warning("Event %s ignored: %s", event.id, reason)
            return "ignored"
        if not record_outcome(state, event, "failed", describe(exc), exc):
            # Another delivery processed the event meanwhile: it is done, not failed.
            logger.warning(
                "Processing event %s failed (%s), but another delivery processed it.",
                event.id,
                describe(exc),
            )
            return "processed"
        logger.exception("Processing event %s failed: %s", event.id, describe(exc))
        failed = session.get(WebhookEvent, event.id, populate_existing=True)
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        event_failed.send(app, event=failed, error=exc)
        return "failed"
    return "processed"


def _commit_keeping_loaded(session: Any) -> None:
    """Commit the session without expiring the objects it has loaded."""
    own = session()
    expire, own.expire_on_commit = own.expire_on_commit, False
    try:
        session.commit()
    finally:
        own.expire_on_commit = expire


_MARK_PROCESSED = (
    sa.update(EVENTS)
    .where(EVENTS.c.id == sa.bindparam("event_id"))
    .values(
        status="processed", processed_at=sa.bindparam("now"), last_error=None, last_traceback=None
    )
)


def _permanent(exc: Exception) -> bool:
    """Whether processing the event again can only fail the same way.

    A handler's :class:`EventIgnored`, and Stripe's 4xx answers about the event's objects
    (an account Stripe no longer knows, one in a state that refuses the operation).
    """
    if isinstance(exc, EventIgnored):
        return True
    return isinstance(exc, FinConnError) and 400 <= exc.status < 500


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
