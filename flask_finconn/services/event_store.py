"""The event ledger's rows: how a verified event is written, and how an outcome is recorded.

:mod:`.events` decides what happens to an event; this module only writes its
``finconn_webhook_event`` row, in one of three ways:

- :func:`insert_alone`: ``INSERT ... ON CONFLICT DO NOTHING`` as its own transaction on an
  autocommit connection (the acknowledge path: durable when it returns);
- :func:`insert_in_session`: the same insert, of a row already marked processed, inside the
  session's transaction, which the caller commits with the handler's work (inline
  processing: one commit per event, no separate mark). Until then the row is invisible to
  others, and a second delivery's insert of the same id waits for this transaction to end;
- :func:`record_outcome`: an ``ignored`` or ``failed`` result written in a transaction of
  its own after the handler's was rolled back, which may have taken the row's insert with
  it (so the row is inserted again, with the result).
"""

from __future__ import annotations

import traceback
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa
from flask_sqlalchemy.session import Session as _FlaskSession
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..models import WebhookEvent, from_unix, utcnow
from ..state import FinConnState

EVENTS: sa.Table = WebhookEvent.__table__  # type: ignore[assignment]
COLUMNS = tuple(EVENTS.c)
_FSA_GET_BIND = _FlaskSession.get_bind
ERROR_LIMIT = 2000
TRACEBACK_LIMIT = 20_000


def _insert_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Both report a row count of 0 for a conflict skipped by DO NOTHING, 1 for an insert.
    return insert(EVENTS).on_conflict_do_nothing(index_elements=["id"])


# Built once, compiled once per dialect (below).
_INSERTS = {name: _insert_statement(name) for name in ("postgresql", "sqlite")}

_Compiled = tuple[str, "tuple[str, ...] | None", dict[str, Any]]
_COMPILED: dict[tuple[str, str], _Compiled] = {}


def _created(value: int) -> datetime | None:
    try:
        return from_unix(value)
    except (OverflowError, OSError, ValueError):
        return None


def row_values(event: dict[str, Any], *, claimed: bool = False) -> dict[str, Any]:
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


def _insert_on(connection: sa.Connection, values: dict[str, Any], raw: str | None) -> bool:
    """Run the compiled insert on ``connection``; whether it stored a row.

    ``exec_driver_sql`` skips only the per-call compile-cache machinery: the values are
    converted by the columns' own types, and the host's engine and connection event
    listeners see the statement like any other. ``raw``, the verified body as text, is
    stored as the payload as it came: it is the JSON the payload column would have
    serialized again.
    """
    sql, order, processors = _compiled_insert(connection.dialect)
    params = {
        name: (process(values[name]) if process is not None else values[name])
        for name, process in processors.items()
        if raw is None or name != "payload"
    }
    if raw is not None:
        params["payload"] = raw
    result = connection.exec_driver_sql(
        sql, params if order is None else tuple(params[k] for k in order)
    )
    return bool(result.rowcount == 1)


def execute_alone(
    state: FinConnState, statement: Any, params: dict[str, Any] | None = None
) -> sa.Row[Any] | None:
    """Run one statement as its own transaction; the first row it returns.

    On an engine it runs on an autocommit connection: durable when it returns, without the
    BEGIN and COMMIT round trips of a transaction. It goes through SQLAlchemy, so the
    host's event listeners see it.
    """
    session = state.db.session
    bind = session.get_bind()
    if isinstance(bind, sa.Engine):
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return connection.execute(statement, params).first()
    row = session.execute(statement, params).first()  # a session bound to a connection
    session.commit()
    return row


def insert_alone(
    state: FinConnState, event: dict[str, Any], *, claimed: bool = False, raw: str | None = None
) -> dict[str, Any] | None:
    """Insert the event's row unless its id is stored, durably; the values, or None.

    The acknowledge path's one statement, on an autocommit connection of the app's engine.
    """
    session = state.db.session
    values = row_values(event, claimed=claimed)
    bind = _bind(state)
    if bind.dialect.name in _INSERTS and isinstance(bind, sa.Engine):
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return values if _insert_on(connection, values, raw) else None
    stored = _insert_in(state, values, raw)  # a session bound to a connection (tests in one)
    session.commit()
    return values if stored else None


def _bind(state: FinConnState) -> sa.Engine | sa.Connection:
    """What ``state.db.session.get_bind()`` answers, without creating a session to ask.

    The acknowledge path needs only the engine: a session built just to name it, and
    removed when the request ends, took about 7% of a gunicorn thread's time per delivery.
    Flask-SQLAlchemy's session class answers the default engine; a session of another
    class, or one already in use in this context, is asked.
    """
    session = state.db.session
    if not session.registry.has() and session.session_factory.class_.get_bind is _FSA_GET_BIND:
        engines = state.db.engines
        if None in engines:
            return engines[None]
    return session.get_bind()


def insert_in_session(
    state: FinConnState, event: dict[str, Any], raw: str | None = None
) -> dict[str, Any] | None:
    """Insert the event's row, marked processed, in the session's transaction; None for a
    stored id.

    Nothing is committed: the caller runs the handler in this transaction and commits the
    row with its work, which makes the mark true, or rolls both back. Nobody sees the row
    before then; a concurrent insert of the same id waits for that end, then finds it
    stored (or, after a rollback, stores it itself).
    """
    values = row_values(event, claimed=True)
    if values["status"] == "processing":
        values.update(status="processed", processed_at=values["claimed_at"])
    return values if _insert_in(state, values, raw) else None


def _insert_in(state: FinConnState, values: dict[str, Any], raw: str | None) -> bool:
    session = state.db.session
    connection = session.connection()
    if connection.dialect.name in _INSERTS:
        return _insert_on(connection, values, raw)
    try:  # another database: its unique key is the arbiter
        with session.begin_nested():
            session.execute(sa.insert(EVENTS), values)
    except IntegrityError:
        return False
    return True


def store_event(state: FinConnState, event: dict[str, Any]) -> WebhookEvent | None:
    """Store a verified event once (``pending``) and commit; None when its id was stored.

    Returns the stored row as a detached object.
    """
    values = insert_alone(state, event)
    return None if values is None else WebhookEvent(**values)


def describe(exc: BaseException) -> str:
    """``Type: message``, cut to what a row keeps."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= ERROR_LIMIT else text[: ERROR_LIMIT - 1] + "…"


def record_outcome(
    state: FinConnState,
    event: WebhookEvent,
    status: Literal["failed", "ignored"],
    reason: str,
    exc: BaseException | None = None,
) -> bool:
    """Record that processing the claimed ``event`` failed or was ignored, and commit;
    whether the row was written.

    Call after the handler's transaction was rolled back. The row is written whether or not
    that rollback took its insert: inserted again with the outcome, or updated if it is
    still this claim's (``processing`` with the same ``claimed_at``). A row another
    delivery stored and processed meanwhile is left alone (False). ``exc``'s traceback is
    kept.
    """
    session = state.db.session
    now = utcnow()
    outcome: dict[str, Any] = {
        "status": status,
        "last_error": reason[:ERROR_LIMIT],
        "last_traceback": (
            None if exc is None else "".join(traceback.format_exception(exc))[-TRACEBACK_LIMIT:]
        ),
        "processed_at": now if status == "ignored" else None,
    }
    dialect = session.get_bind().dialect.name
    mine = sa.and_(EVENTS.c.status == "processing", EVENTS.c.claimed_at == event.claimed_at)
    if dialect in _INSERTS:
        row = {column.key: getattr(event, column.key) for column in COLUMNS}
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(EVENTS)
        # A row comes back only when the upsert wrote one (its WHERE may refuse the update).
        upsert = insert.values({**row, **outcome}).on_conflict_do_update(
            index_elements=["id"], set_=outcome, where=mine
        )
        wrote = session.execute(upsert.returning(EVENTS.c.id)).first() is not None
    else:
        result = session.execute(
            sa.update(EVENTS).where(EVENTS.c.id == event.id, mine).values(outcome)
        )
        wrote = getattr(result, "rowcount", 0) == 1
    session.commit()
    return wrote


__all__ = [
    "COLUMNS",
    "EVENTS",
    "describe",
    "execute_alone",
    "insert_alone",
    "insert_in_session",
    "record_outcome",
    "row_values",
    "store_event",
]
