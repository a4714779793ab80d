"""Incremental transaction sync from Stripe, and the transaction listing of the routes.

Stripe stamps every transaction row with the ``fctxnref_`` id of the refresh that last
created or updated it, and lists ``transaction_refresh[after]=<id>`` as "everything a later
refresh touched". :func:`sync_transactions` keeps that id as ``Account.transactions_cursor``
and asks only for what changed since; the first sync takes the whole history.

Pages of 100 rows are streamed: each page is upserted with one ``INSERT ... ON CONFLICT
(account_id, id) DO UPDATE``, and the rows are committed together with the sync's progress
(``Account.transactions_sync``: the refresh the sync catches up to, the last row written,
the relink watermark), every page or every :data:`COMMIT_INTERVAL` seconds. The cursor
moves to the target only with the last page. A crash therefore loses nothing (the cursor
has not moved past anything unwritten) and repeats nothing (the rerun resumes after the
last committed row with the same filter and target, and counts only what it writes).
Memory does not grow with the history: no page outlives its write, and no ORM objects are
built for rows.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..errors import ValidationError
from ..models import Account, Transaction, from_unix
from ..state import FinConnState
from ..stripe_api import StripeTransaction
from .accounts import get_account

__all__ = [
    "COMMIT_INTERVAL",
    "SyncResult",
    "TransactionPage",
    "list_transactions",
    "sync_transactions",
    "transaction_row",
    "upsert_statement",
]

COMMIT_INTERVAL = 0.25
"""Seconds of sync work after which the pages written so far are committed."""

_TABLE: sa.Table = Transaction.__table__  # type: ignore[assignment]
_UPDATED_COLUMNS = (
    "amount",
    "currency",
    "description",
    "status",
    "transacted_at",
    "posted_at",
    "void_at",
    "transaction_refresh",
    "stripe_updated",
)


@dataclass(frozen=True)
class SyncResult:
    """What one sync did: rows ``added`` and ``updated``, ``pages`` read, the new ``cursor``.

    ``complete`` is False when another worker took over the same account's sync midway.
    """

    added: int
    updated: int
    pages: int
    cursor: str | None
    complete: bool = True


@dataclass(frozen=True)
class TransactionPage:
    """One page of the listing route: newest first, and the cursor of the next page."""

    data: list[Transaction]
    has_more: bool
    next_cursor: str | None


def finished_refresh_id(transaction_refresh: Mapping[str, Any] | None) -> str | None:
    """The ``fctxnref_`` id of a transaction refresh that is over (succeeded or failed).

    A pending refresh has stamped no rows yet; syncing "up to" it would later hide the rows
    it stamps, so it is never a target.
    """
    if not transaction_refresh or transaction_refresh.get("status") == "pending":
        return None
    ref = transaction_refresh.get("id")
    return ref if isinstance(ref, str) else None


def transaction_row(txn: StripeTransaction, account_id: str) -> dict[str, Any]:
    """A Stripe transaction as the column values of a ``finconn_transaction`` row."""
    transitions = txn.status_transitions
    return {
        "id": txn.id,
        "account_id": account_id,
        "amount": txn.amount,
        "currency": txn.currency,
        "description": txn.description or "",
        "status": txn.status,
        "transacted_at": from_unix(txn.transacted_at),
        "posted_at": from_unix(transitions.posted_at) if transitions else None,
        "void_at": from_unix(transitions.void_at) if transitions else None,
        "transaction_refresh": txn.transaction_refresh,
        "stripe_updated": txn.updated,
        "livemode": txn.livemode,
    }


def _on_conflict_update(statement: Any) -> Any:
    """``ON CONFLICT (account_id, id) DO UPDATE``, never rolling a row back.

    A row is only rewritten when Stripe's version is newer (``updated``) or comes from
    another refresh: an older page (a retried or racing sync) arriving late changes
    nothing, and neither does the same version delivered twice.
    """
    excluded = statement.excluded
    return statement.on_conflict_do_update(
        index_elements=[_TABLE.c.account_id, _TABLE.c.id],
        set_={name: excluded[name] for name in _UPDATED_COLUMNS},
        where=sa.or_(
            _TABLE.c.stripe_updated < excluded.stripe_updated,
            sa.and_(
                _TABLE.c.stripe_updated == excluded.stripe_updated,
                _TABLE.c.transaction_refresh != excluded.transaction_refresh,
            ),
        ),
    )


def upsert_statement(dialect: str) -> Any:
    """``INSERT ... ON CONFLICT (account_id, id) DO UPDATE`` of one row (executemany) for the
    dialect."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return _on_conflict_update(insert(_TABLE))


_UPSERTS = {name: upsert_statement(name) for name in ("sqlite", "postgresql")}
_COLUMNS = [column.name for column in _TABLE.columns]


def _pg_upsert() -> Any:
    """PostgreSQL's page upsert: the rows as one array per column, unnested in lockstep.

    Twelve bound arrays parse and plan the same for every page, where a 100-row VALUES list
    (or an executemany, one statement per row with psycopg) costs more than the write.
    RETURNING says which rows were inserted (a fresh row has no deleting transaction id,
    ``xmax = 0``) and which updated; rows the guard skipped return nothing.
    """
    arrays = sa.select(
        *(
            sa.func.unnest(sa.bindparam(name, type_=postgresql.ARRAY(_TABLE.c[name].type)))
            for name in _COLUMNS
        )
    )
    statement = postgresql.insert(_TABLE).from_select(_COLUMNS, arrays)
    return _on_conflict_update(statement).returning(sa.literal_column("xmax = 0"))


_PG_UPSERT = _pg_upsert()

_EXISTING = sa.select(_TABLE.c.id, _TABLE.c.stripe_updated, _TABLE.c.transaction_refresh).where(
    _TABLE.c.account_id == sa.bindparam("account_id"),
    _TABLE.c.id.in_(sa.bindparam("ids", expanding=True)),
)


def sync_transactions(
    state: FinConnState,
    account: Account,
    *,
    target: str | None = None,
    on_page: Callable[[int, int], None] | None = None,
) -> SyncResult:
    """Bring the account's stored transactions up to a finished refresh, page by page.

    ``target`` is the ``fctxnref_`` id to catch up to (default: the account's stored
    ``transaction_refresh`` when it is over). An interrupted sync of the same ``fca_`` id is
    resumed first, with its own target. Sends no signal (callers send
    ``transactions_synced`` with the counts). ``on_page(rows, pages)`` is called after each
    page is written (progress bars, tests).

    Each commit carries the pages written since the last one with the resume point after
    them. A commit is made once :data:`COMMIT_INTERVAL` seconds have passed since the batch
    began, and with the last page: with real Stripe (a few hundred ms a page) that is every
    page; with a fast source it spares a disk flush per 100 rows while keeping database
    locks short.
    """
    session = state.db.session
    progress = account.transactions_sync
    if progress is not None and progress.get("stripe_id") != account.stripe_id:
        progress = None  # a relink replaced the fca_ id: the old listing means nothing now
    fresh = progress is None
    if progress is None:
        target = target or finished_refresh_id(account.transaction_refresh)
        if target is None or target == account.transactions_cursor:
            return SyncResult(0, 0, 0, account.transactions_cursor)
        since = None
        if account.transactions_cursor is None and account.previous_stripe_ids:
            since = _relink_watermark(state, account.id)
        progress = {
            "stripe_id": account.stripe_id,
            "target": target,
            "after": None,
            "since": since,
        }
    account_id, stripe_id = account.id, account.stripe_id
    after_refresh = account.transactions_cursor
    dialect = session.get_bind().dialect.name
    added = updated = pages = 0
    pending_added = pending_updated = 0
    expected = account.transactions_sync
    open_since: float | None = None  # when the uncommitted batch began
    pages_iter = state.stripe.transaction_pages(
        stripe_id,
        after_refresh=after_refresh,
        starting_after=progress["after"],
        transacted_after=progress["since"],
    )
    cache = _SQLiteCache() if dialect == "sqlite" else None
    try:
        for data, has_more in pages_iter:
            if open_since is None:
                # The row lock makes racing syncs of one account take turns batch by batch; the
                # progress check makes the one that lost the race stop instead of interleaving.
                current = session.execute(
                    sa.select(Account.transactions_sync, Account.transactions_cursor)
                    .where(Account.id == account_id)
                    .with_for_update()
                ).one()
                if (
                    current.transactions_sync != expected
                    or current.transactions_cursor != after_refresh
                ):
                    session.rollback()
                    return SyncResult(added, updated, pages, after_refresh, complete=False)
                open_since = time.monotonic()
                if cache is not None:
                    cache.enlarge(session)
            if fresh and pages == 0 and progress["since"] is not None:
                _drop_unsettled(state, account_id)
            rows = [transaction_row(txn, account_id) for txn in data]
            page_added, page_updated = _write(session, dialect, rows)
            pending_added += page_added
            pending_updated += page_updated
            pages += 1
            if has_more:
                progress = {**progress, "after": rows[-1]["id"]}
            if not has_more or time.monotonic() - open_since >= COMMIT_INTERVAL:
                values: dict[str, Any] = (
                    {"transactions_sync": progress}
                    if has_more
                    else {"transactions_sync": None, "transactions_cursor": progress["target"]}
                )
                session.execute(sa.update(Account).where(Account.id == account_id).values(**values))
                if cache is not None:
                    cache.restore()
                session.commit()
                expected, open_since = values["transactions_sync"], None
                added, updated = added + pending_added, updated + pending_updated
                pending_added = pending_updated = 0
            if on_page is not None:
                on_page(len(rows), pages)
    finally:
        if cache is not None:
            cache.restore()
    return SyncResult(added, updated, pages, progress["target"])


class _SQLiteCache:
    """Gives a SQLite connection a large page cache for the length of one batch.

    Transaction ids are random, so each page of rows lands on scattered leaves of the
    account's part of the primary key. With SQLite's default 2 MB cache those leaves stop
    fitting once the account holds a few hundred thousand rows, and every batch re-reads
    and spills them: the cost per row more than doubled from 10k to 1M rows. With 64 MiB
    during the batch it stays flat. The connection's own setting is put back before the
    commit (and on any way out), so the host's pooled connections keep what they had.
    """

    SIZE = -64 * 1024  # negative: KiB, as SQLite reads it

    def __init__(self) -> None:
        self._connection: Any = None
        self._saved: int | None = None

    def enlarge(self, session: Any) -> None:
        connection = session.connection().connection.dbapi_connection
        saved = connection.execute("PRAGMA cache_size").fetchone()[0]
        # Compare in KiB: a positive setting counts pages of the database's page size.
        page_kib = connection.execute("PRAGMA page_size").fetchone()[0] / 1024
        if (saved * page_kib if saved > 0 else -saved) < -self.SIZE:
            connection.execute(f"PRAGMA cache_size = {self.SIZE}")
            self._connection, self._saved = connection, saved

    def restore(self) -> None:
        if self._connection is not None:
            self._connection.execute(f"PRAGMA cache_size = {int(self._saved or 0)}")
            self._connection = self._saved = None


def _write(session: Any, dialect: str, rows: list[dict[str, Any]]) -> tuple[int, int]:
    """Upsert one page in one statement; returns (added, updated), counting real changes."""
    if not rows:
        return 0, 0
    if dialect == "postgresql":
        columns = {name: [row[name] for row in rows] for name in _COLUMNS}
        inserted = session.execute(_PG_UPSERT, columns).scalars().all()
        added = sum(1 for fresh in inserted if fresh)
        return added, len(inserted) - added
    # SQLite: an in-process lookup is cheap, and its executemany runs in C.
    known = {
        row[0]: (row[1], row[2])
        for row in session.execute(
            _EXISTING, {"account_id": rows[0]["account_id"], "ids": [row["id"] for row in rows]}
        )
    }
    added = updated = 0
    changed = []
    for row in rows:
        stored = known.get(row["id"])
        if stored is None:
            added += 1
        elif row["stripe_updated"] > stored[0] or (
            row["stripe_updated"] == stored[0] and row["transaction_refresh"] != stored[1]
        ):
            updated += 1
        else:
            continue
        changed.append(row)
    if changed:
        session.execute(_UPSERTS["sqlite"], changed)
    return added, updated


def _relink_watermark(state: FinConnState, account_id: str) -> int | None:
    """The newest settled transaction time of a relinked account, in Unix seconds.

    The new ``fca_`` id lists the bank's history again under new ids; taking only what came
    after the history already stored continues it without counting anything twice.
    """
    newest = state.db.session.scalar(
        sa.select(sa.func.max(Transaction.transacted_at)).where(
            Transaction.account_id == account_id, Transaction.status != "pending"
        )
    )
    return None if newest is None else int(newest.timestamp())


def _drop_unsettled(state: FinConnState, account_id: str) -> None:
    """Delete a relinked account's pending rows: the old link can no longer settle them, and
    the new link lists them again, pending or settled."""
    state.db.session.execute(
        sa.delete(Transaction).where(
            Transaction.account_id == account_id, Transaction.status == "pending"
        )
    )


# listing


def encode_cursor(row: Transaction) -> str:
    """An opaque position after ``row`` in the newest-first order."""
    text = f"{int(row.transacted_at.timestamp())}:{row.id}"
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (transacted_at, id) a cursor points after; a 400 when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        seconds, _, txn_id = text.partition(":")
        when = from_unix(int(seconds))
    except (ValueError, binascii.Error, UnicodeDecodeError, OverflowError):
        when, txn_id = None, ""
    if when is None or not txn_id:
        raise ValidationError(
            "The cursor is not valid; pass the next_cursor of the previous page.",
            code="invalid_cursor",
            fields={"cursor": ["Not a cursor returned by this API."]},
        )
    return when, txn_id


def list_transactions(
    state: FinConnState,
    holder_id: str,
    account_id: str,
    *,
    limit: int = 25,
    cursor: str | None = None,
    status: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> TransactionPage:
    """A page of one of the holder's accounts' transactions, newest first.

    ``since`` is inclusive and ``until`` exclusive (``transacted_at``). Keyset pagination on
    (``transacted_at``, ``id``): rows arriving from a sync never shift or repeat a page.
    Readable whatever the account's status (deactivation keeps the data).
    """
    account = get_account(state, holder_id, account_id)
    query = sa.select(Transaction).where(Transaction.account_id == account.id)
    if status is not None:
        query = query.where(Transaction.status == status)
    if since is not None:
        query = query.where(Transaction.transacted_at >= since)
    if until is not None:
        query = query.where(Transaction.transacted_at < until)
    if cursor is not None:
        when, txn_id = decode_cursor(cursor)
        # One row-value comparison, not ``t < when OR (t = when AND id < txn_id)``: both
        # databases turn it into a range on the (account_id, transacted_at, id) index and
        # seek straight to the page, where the OR form walks every newer row first. A
        # plain tuple on the right binds each value with its column's type (UTC handling).
        query = query.where(sa.tuple_(Transaction.transacted_at, Transaction.id) < (when, txn_id))
    query = query.order_by(Transaction.transacted_at.desc(), Transaction.id.desc())
    rows = list(state.db.session.scalars(query.limit(limit + 1)))
    has_more = len(rows) > limit
    rows = rows[:limit]
    return TransactionPage(
        data=rows,
        has_more=has_more,
        next_cursor=encode_cursor(rows[-1]) if has_more and rows else None,
    )
