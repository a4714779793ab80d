"""The event ledger's rows: how a verified event is written, and how an outcome is recorded.

:mod:`.events` decides what happens to an event; this module only writes its
``finconn_webhook_event`` row, in one of three ways:

- :func:`insert_alone`: ``INSERT ... ON CONFLICT DO NOTHING`` as its own transaction on an
  autocommit connection (the acknowledge path: durable when it returns). Deliveries that
  arrive together in one process share one multi-row statement (:mod:`.event_combiner`);
- :func:`insert_in_session`: the same insert, of a row already marked processed, inside the
  session's transaction, which the caller commits with the handler's work (inline
  processing: one commit per event, no separate mark). Until then the row is invisible to
  others, and a second delivery's insert of the same id waits for this transaction to end.
  On PostgreSQL the same statement reads the status of a row already stored under the id,
  so a copy of a finished event needs no claim;
- :func:`record_outcome`: an ``ignored`` or ``failed`` result written in a transaction of
  its own after the handler's was rolled back, which may have taken the row's insert with
  it (so the row is inserted again, with the result).
"""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

import sqlalchemy as sa
from flask_sqlalchemy.session import Session as _FlaskSession
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..models import WebhookEvent, from_unix, utcnow
from ..state import FinConnState
from .event_combiner import Ledger, combiner

EVENTS: sa.Table = WebhookEvent.__table__  # type: ignore[assignment]
COLUMNS = tuple(EVENTS.c)
_FSA_GET_BIND = _FlaskSession.get_bind
ERROR_LIMIT = 2000
DONE = ("processed", "ignored")  # statuses no claim takes (see events.claim)
TRACEBACK_LIMIT = 20_000


def _insert_statement(dialect: str) -> Any:
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    # Both report a row count of 0 for a conflict skipped by DO NOTHING, 1 for an insert.
    return insert(EVENTS).on_conflict_do_nothing(index_elements=["id"])


# Built once, compiled once per dialect (below).
_INSERTS = {name: _insert_statement(name) for name in ("postgresql", "sqlite")}

_Compiled = tuple[str, "tuple[str, ...] | None", dict[str, Any]]
_COMPILED: dict[tuple[str, str], _Compiled] = {}
_COMPILED_ROWS: dict[tuple[str, str, int], _Compiled] = {}


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
    params = _params(processors, values, raw)
    result = connection.exec_driver_sql(
        sql, params if order is None else tuple(params[k] for k in order)
    )
    return bool(result.rowcount == 1)


def _params(processors: dict[str, Any], values: dict[str, Any], raw: str | None) -> dict[str, Any]:
    """The row's values converted by the columns' types; ``raw`` as the payload if given."""
    params = {
        name: (process(values[name]) if process is not None else values[name])
        for name, process in processors.items()
        if raw is None or name != "payload"
    }
    if raw is not None:
        params["payload"] = raw
    return params


# PostgreSQL: the insert, and in the same statement the status of a row already stored
# under the id, as this statement's snapshot sees it (a row committed while the insert
# waited on its id is not seen: NULL).
_STORED = _INSERTS["postgresql"].returning(EVENTS.c.id).cte("stored")
_INSERT_OR_STATUS = sa.select(
    sa.select(sa.func.count()).select_from(_STORED).scalar_subquery().label("stored"),
    sa.select(EVENTS.c.status)
    .where(EVENTS.c.id == sa.bindparam("stored_id"))
    .scalar_subquery()
    .label("status"),
)
_COMPILED_OR_STATUS: dict[str, str] = {}


def _insert_or_status(
    connection: sa.Connection, values: dict[str, Any], raw: str | None
) -> tuple[bool, str | None]:
    """PostgreSQL: insert the row unless its id is stored, in one round trip; (whether it
    stored it, the status of the row it found stored, if its snapshot shows one)."""
    dialect = connection.dialect
    if dialect.driver not in _COMPILED_OR_STATUS:
        _COMPILED_OR_STATUS[dialect.driver] = _INSERT_OR_STATUS.compile(dialect=dialect).string
    params = _params(_compiled_insert(dialect)[2], values, raw)
    params["stored_id"] = values["id"]
    row = connection.exec_driver_sql(_COMPILED_OR_STATUS[dialect.driver], params).one()
    return bool(row[0]), row[1]


def _compiled_rows(dialect: sa.Dialect, count: int) -> _Compiled:
    """The insert of ``count`` rows returning the ids it stored, compiled once per size."""
    key = (dialect.name, dialect.driver, count)
    if key not in _COMPILED_ROWS:
        statement = (
            _INSERTS[dialect.name]
            .values([{column.key: None for column in COLUMNS}] * count)
            .returning(EVENTS.c.id)
        )
        compiled = statement.compile(dialect=dialect)
        order = tuple(compiled.positiontup) if compiled.positiontup else None
        _COMPILED_ROWS[key] = (compiled.string, order, _compiled_insert(dialect)[2])
    return _COMPILED_ROWS[key]


def _insert_rows(
    connection: sa.Connection, rows: Sequence[tuple[dict[str, Any], str | None]]
) -> set[str]:
    """Insert ``rows`` (values, raw body) in one statement; the ids it stored.

    Like :func:`_insert_on`, through ``exec_driver_sql`` with the columns' own converters,
    so the host's event listeners see the statement.
    """
    dialect = connection.dialect
    if (
        dialect.name == "postgresql"
        and len(rows) * len(COLUMNS) > CACHED_PARAMETERS
        and all(raw is not None for _, raw in rows)
    ):
        return _insert_arrays(connection, rows)
    sql, order, processors = _compiled_rows(dialect, len(rows))
    params: dict[str, Any] = {}
    for n, (values, raw) in enumerate(rows):
        for name, process in processors.items():
            if raw is not None and name == "payload":
                params[f"payload_m{n}"] = raw
            else:
                value = values[name]
                params[f"{name}_m{n}"] = value if process is None else process(value)
    result = connection.exec_driver_sql(
        sql, params if order is None else tuple(params[k] for k in order)
    )
    return set(result.scalars())


_ARRAY_INSERTS: dict[str, str] = {}
# psycopg keeps its conversion of a statement (and prepares it on the server) only when it
# has at most this many parameters: up to 3 rows of 13 as a VALUES list.
CACHED_PARAMETERS = 50


def _array_insert(dialect: sa.Dialect) -> str:
    """PostgreSQL: ``INSERT ... SELECT * FROM unnest(<one array per column>) ON CONFLICT DO
    NOTHING RETURNING id``, the same text for any number of rows.

    For more rows than a ``VALUES`` list of :data:`CACHED_PARAMETERS` holds: psycopg would
    convert such a list (and PostgreSQL plan it) again every time, while dumping the
    arrays costs more than a short list's cached parameters. The arrays go in binary
    (``%(name)b``): as text, every quote of every payload would be escaped by a regular
    expression.
    """
    if dialect.driver not in _ARRAY_INSERTS:
        types = dialect.type_compiler_instance
        arrays = ", ".join(
            f"%({column.key})b::{types.process(column.type.dialect_impl(dialect))}[]"
            for column in COLUMNS
        )
        names = ", ".join(column.name for column in COLUMNS)
        _ARRAY_INSERTS[dialect.driver] = (
            f"INSERT INTO {EVENTS.name} ({names}) SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({EVENTS.c.id.name}) DO NOTHING RETURNING {EVENTS.c.id.name}"
        )
    return _ARRAY_INSERTS[dialect.driver]


def _insert_arrays(
    connection: sa.Connection, rows: Sequence[tuple[dict[str, Any], str | None]]
) -> set[str]:
    """:func:`_insert_rows` on PostgreSQL: each column's values as one array, in row order
    (the raw bodies as the payloads)."""
    dialect = connection.dialect
    processors = _compiled_insert(dialect)[2]
    params: dict[str, list[Any]] = {name: [] for name in processors}
    for values, raw in rows:
        for name, process in processors.items():
            if name == "payload":
                params[name].append(raw)
            else:
                value = values[name]
                params[name].append(value if process is None else process(value))
    return set(connection.exec_driver_sql(_array_insert(dialect), params).scalars())


def _claim_stored(connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Of these rows' ids, those whose stored row is the one a delivery sent: the same
    ``received_at`` (and ``claimed_at``); each taken by this delivery alone.

    Two deliveries of one event (two processes) may read the same microsecond, so finding
    the values is not enough: an ``UPDATE`` of the row's ``received_at`` to a later time,
    committed on its own, is the claim, and only one delivery's ``UPDATE`` finds the row
    still as it sent it. The inline queue's row keeps the ``claimed_at`` read with its
    time, which no other delivery's row then matches; a ``pending`` row (a worker queue's,
    whose own claim runs it once) only a delivery that read the very microsecond of the
    ``UPDATE``. ``rows`` that get the row are changed to its new ``received_at``: a second
    recheck of the same delivery finds it its own again. A row a statement's own answer
    gave to its delivery is not moved (that would cost every delivery a statement), so a
    recheck of another delivery that read the same microsecond still finds it as sent:
    nothing in the row tells the two apart.
    """
    taken: set[str] = set()
    for values in rows:
        sent = values["received_at"]
        later = max(utcnow(), sent + timedelta(microseconds=1))
        found = connection.execute(
            sa.update(EVENTS)
            .where(
                EVENTS.c.id == values["id"],
                EVENTS.c.received_at == sent,
                EVENTS.c.claimed_at.is_not_distinct_from(values["claimed_at"]),
            )
            .values(received_at=later)
            .returning(EVENTS.c.id)
        ).first()
        if found is not None:
            values["received_at"] = later
            taken.add(values["id"])
    return taken


def _release(connection: sa.Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Put rows stored claimed (``processing``, the inline queue's) back to ``pending`` while
    nobody has claimed them since: the delivery that stored each gave up (it was answered
    an error), so Stripe's retry, finding a duplicate, claims and processes it at once
    rather than waiting for the claim to count as stuck."""
    for values in rows:
        if values["status"] != "processing":
            continue
        connection.execute(
            sa.update(EVENTS)
            .where(
                EVENTS.c.id == values["id"],
                EVENTS.c.status == "processing",
                EVENTS.c.claimed_at == values["claimed_at"],
            )
            .values(status="pending")  # as the sweep puts back a stuck one
        )


_LEDGER = Ledger(insert=_insert_rows, claim_stored=_claim_stored, release=_release)


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

    The acknowledge path's one statement, on an autocommit connection of the app's engine,
    shared with the deliveries this process is storing at the same moment
    (:class:`.event_combiner.Combiner`).
    """
    session = state.db.session
    values = row_values(event, claimed=claimed)
    bind = _bind(state)
    if bind.dialect.name in _INSERTS and isinstance(bind, sa.Engine):
        shared = combiner(bind, _LEDGER)
        stored = shared.insert(bind, values, raw, state.settings.webhook_store_timeout)
        return values if stored else None
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
) -> tuple[dict[str, Any] | None, bool]:
    """Insert the event's row, marked processed, in the session's transaction: (the values,
    or None for a stored id; whether that stored row is already done).

    Nothing is committed: the caller runs the handler in this transaction and commits the
    row with its work, which makes the mark true, or rolls both back. Nobody sees the row
    before then; a concurrent insert of the same id waits for that end, then finds it
    stored (or, after a rollback, stores it itself). "Done" means ``processed`` or
    ``ignored``, statuses no claim takes, as the same statement found it on PostgreSQL
    (elsewhere, and for a row committed while the insert waited, it is False: the caller
    has to try a claim to know).
    """
    values = row_values(event, claimed=True)
    if values["status"] == "processing":
        values.update(status="processed", processed_at=values["claimed_at"])
    connection = state.db.session.connection()
    if connection.dialect.name == "postgresql":
        stored, status = _insert_or_status(connection, values, raw)
        return (values if stored else None), status in DONE
    return (values if _insert_in(state, values, raw) else None), False


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
