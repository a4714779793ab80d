"""SQLite storage for the sandbox: one connection, one lock, explicit transactions.

A file database survives restarts and may be shared by several processes (WAL, and
``BEGIN IMMEDIATE`` for writes so they queue instead of failing). Inside one process a
re-entrant lock serialises access, so concurrent requests never interleave.

Values read on every request (the clock offset, when the next task is due) are kept in
memory with :meth:`Store.cached`. They stay valid while the database's *generation* does:
it moves on when another connection (another process sharing the file) has committed,
which ``PRAGMA data_version`` tells at the start of each transaction, and when a
transaction of this one rolls back. Code that writes a cached value updates it with
:meth:`Store.remember` in the same transaction.

Whole answers to reads (the API's GET responses) may be kept too, with :meth:`Store.keep`:
they stay valid while the generation does *and* this connection has changed no row since
(:meth:`Store.version`), so any write at all (this process's, committed or rolled back, or
another connection's) voids them; :meth:`Store.kept` checks that with one ``PRAGMA
data_version`` outside any transaction.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS customers (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created INTEGER NOT NULL, email TEXT,
    data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS customers_seq ON customers (seq);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created INTEGER NOT NULL,
    client_secret TEXT NOT NULL UNIQUE, state TEXT NOT NULL, expires_at INTEGER NOT NULL,
    data TEXT NOT NULL, internal TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS accounts (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created INTEGER NOT NULL, session TEXT,
    customer TEXT, holder_account TEXT, data TEXT NOT NULL, internal TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS accounts_seq ON accounts (seq);
CREATE INDEX IF NOT EXISTS accounts_session ON accounts (session, seq);
CREATE INDEX IF NOT EXISTS accounts_customer ON accounts (customer, seq);
CREATE INDEX IF NOT EXISTS accounts_holder_account ON accounts (holder_account, seq);
CREATE TABLE IF NOT EXISTS ownerships (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS owners (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, ownership TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS owners_ownership ON owners (ownership, seq);
CREATE TABLE IF NOT EXISTS txn_refreshes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, account TEXT NOT NULL,
    created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS transactions (
    id TEXT PRIMARY KEY, account TEXT NOT NULL, transacted_at INTEGER NOT NULL,
    status TEXT NOT NULL, refresh_seq INTEGER NOT NULL, amount INTEGER NOT NULL,
    description TEXT NOT NULL, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS transactions_order ON transactions (account, transacted_at, id);
CREATE INDEX IF NOT EXISTS transactions_refresh ON transactions (account, refresh_seq);
CREATE INDEX IF NOT EXISTS transactions_pending ON transactions (account, status);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created INTEGER NOT NULL,
    type TEXT NOT NULL, account TEXT, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY, target TEXT NOT NULL UNIQUE, url TEXT, path TEXT,
    secret TEXT NOT NULL, created INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event TEXT NOT NULL, endpoint TEXT NOT NULL,
    due_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, state TEXT NOT NULL,
    last_status INTEGER);
CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (state, due_at);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT, delivery INTEGER NOT NULL, event TEXT NOT NULL,
    endpoint TEXT NOT NULL, at INTEGER NOT NULL, status INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT, due_at REAL NOT NULL, kind TEXT NOT NULL,
    account TEXT NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (due_at);
CREATE INDEX IF NOT EXISTS tasks_account ON tasks (account, kind);
CREATE TABLE IF NOT EXISTS idempotency (
    api_key TEXT NOT NULL, key TEXT NOT NULL, method TEXT NOT NULL, path TEXT NOT NULL,
    params TEXT NOT NULL, status INTEGER NOT NULL, body TEXT NOT NULL, created INTEGER NOT NULL,
    PRIMARY KEY (api_key, key));
"""


class Store:
    """A SQLite connection shared by the threads of one process, used under a lock."""

    #: How many bytes of answers :meth:`keep` holds at most (a page of 100 transactions is
    #: ~40 kB: about 1,600 such pages); the least recently used go first.
    KEPT_BYTES = 64 << 20

    def __init__(self, database: str) -> None:
        self.database = database
        self._lock = threading.RLock()
        self._depth = 0
        self._writing = False
        # Only a file can be shared with another connection; a private database is never
        # changed behind this one's back.
        self._shared = database not in (":memory:", "")
        self._conn = _connect(database)
        self._data_version = -1
        self._generation = 0
        self._cache: dict[str, tuple[int, Any]] = {}
        self._kept: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._kept_bytes = 0
        self._kept_version = (-1, -1)
        if self._shared:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
        self.ensure(SCHEMA)

    def ensure(self, schema: str) -> None:
        """Create the tables and indexes of ``schema`` that do not exist yet.

        A resource module calls this when the sandbox is built, outside any transaction, with
        ``CREATE ... IF NOT EXISTS`` statements, so an older file database gains them.
        """
        with self._lock:
            if self._depth:
                raise RuntimeError("Create tables when the sandbox is built, not in a transaction.")
            self._conn.executescript(schema)

    def tx(self, write: bool = True) -> _Transaction:
        """Run a ``with`` block in one transaction (nested blocks join the outer one)."""
        return _Transaction(self, write)

    # --- values kept in memory ---------------------------------------------------------

    def cached(self, name: str, load: Callable[[], T]) -> T:
        """The value ``load`` reads from the database, read again only when the database
        may have changed since (see the module's docstring)."""
        with self._lock:
            if not self._depth:
                self._sync()
            hit = self._cache.get(name)
            if hit is not None and hit[0] == self._generation:
                return hit[1]  # type: ignore[no-any-return]
            value = load()
            self._cache[name] = (self._generation, value)
            return value

    def remember(self, name: str, value: Any) -> None:
        """Record the new value of ``name`` after writing it (inside the transaction)."""
        with self._lock:
            self._cache[name] = (self._generation, value)

    def forget(self, name: str) -> None:
        """Make the next :meth:`cached` read of ``name`` load it again."""
        with self._lock:
            self._cache.pop(name, None)

    def version(self) -> tuple[int, int]:
        """Where the database stands for this connection, inside a transaction: it differs
        after any write (this connection's row changes, committed or not, a rollback, or
        another connection's commit seen when the transaction began)."""
        with self._lock:
            if not self._depth:
                raise RuntimeError("Read the version inside a transaction.")
            # total_changes counts every row this connection inserted, updated or deleted,
            # rolled back or not; the generation covers other connections and rollbacks.
            return self._generation, self._conn.total_changes

    def kept(self, key: Hashable) -> Any:
        """The value :meth:`keep` kept under ``key``, or None when there is none or the
        database has changed since (one ``PRAGMA data_version``); always None inside a
        transaction, whose reads may see its own writes."""
        with self._lock:
            if self._depth:
                return None
            self._sync()
            if (self._generation, self._conn.total_changes) != self._kept_version:
                self._drop_kept()
                return None
            entry = self._kept.get(key)
            if entry is None:
                return None
            self._kept.move_to_end(key)
            return entry[0]

    def keep(self, key: Hashable, value: Any, size: int, since: tuple[int, int]) -> None:
        """Keep ``value`` (``size`` bytes) under ``key`` until the database changes.

        Call it inside the transaction that produced ``value``, with the :meth:`version`
        read before it did: if anything was written since, nothing is kept (a rollback
        afterwards voids it, as any later write does). The least recently used values go
        first past :attr:`KEPT_BYTES`.
        """
        with self._lock:
            version = (self._generation, self._conn.total_changes)
            if version != since or size > self.KEPT_BYTES:
                return
            if version != self._kept_version:
                self._drop_kept()
                self._kept_version = version
            old = self._kept.pop(key, None)
            if old is not None:
                self._kept_bytes -= old[1]
            self._kept[key] = (value, size)
            self._kept_bytes += size
            while self._kept_bytes > self.KEPT_BYTES:
                self._kept_bytes -= self._kept.popitem(last=False)[1][1]

    def _drop_kept(self) -> None:
        self._kept.clear()
        self._kept_bytes = 0

    def _sync(self) -> None:
        if self._shared:
            # fetchall: a half-read statement would keep its read snapshot open.
            version = self._conn.execute("PRAGMA data_version").fetchall()[0][0]
            if version != self._data_version:
                self._data_version = version
                self._generation += 1

    # Every statement runs under the lock: one sqlite3 connection must not be used by two
    # threads at once, even for a read outside a transaction.

    def execute(self, sql: str, args: Sequence[Any] = ()) -> None:
        with self._lock:
            self._conn.execute(sql, args).close()

    def executemany(self, sql: str, rows: Any) -> None:
        with self._lock:
            self._conn.executemany(sql, rows).close()

    def one(self, sql: str, args: Sequence[Any] = ()) -> Any:
        # Close the cursor at once: a half-read statement keeps a stale read snapshot open,
        # and another connection's write would then make this one's next write wait forever.
        with self._lock:
            cursor = self._conn.execute(sql, args)
            try:
                return cursor.fetchone()
            finally:
                cursor.close()

    def all(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def column(self, sql: str, args: Sequence[Any] = ()) -> list[Any]:
        """The first column of every row of ``sql``."""
        with self._lock:
            return [row[0] for row in self._conn.execute(sql, args).fetchall()]

    def next_seq(self, table: str) -> int:
        row = self.one(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table}")
        return int(row[0])

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        self.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _connect(database: str) -> sqlite3.Connection:
    """Open ``database``; ``:memory:`` through SQLite's ``memdb`` VFS where it has one.

    A classic ``:memory:`` database's COMMIT slows down as the database grows (a sandbox
    holding 8,000 debits took ten times as long per COMMIT as a new one); one in the
    ``memdb`` VFS (SQLite 3.36 and later) commits in time proportional to what the
    transaction wrote; it holds at most 1 GiB. The name has no leading ``/``, so the
    database is private to this connection, as ``:memory:`` is; it is freed when the
    connection closes.
    """
    if database == ":memory:":
        try:
            return sqlite3.connect(
                "file:finconn-sandbox?vfs=memdb",
                uri=True,
                check_same_thread=False,
                isolation_level=None,
            )
        except sqlite3.OperationalError:
            pass  # an SQLite without the memdb VFS: the classic in-memory database
    return sqlite3.connect(database, check_same_thread=False, isolation_level=None, timeout=30.0)


class _Transaction:
    # A class rather than a generator: entered several times on every request.
    __slots__ = ("_outer", "_store", "_write")

    def __init__(self, store: Store, write: bool) -> None:
        self._store, self._write, self._outer = store, write, False

    def __enter__(self) -> None:
        store = self._store
        store._lock.acquire()
        try:
            if store._depth:
                if self._write and not store._writing:
                    # A deferred read transaction that starts writing can fail to get the
                    # write lock once another connection has committed: never allow it.
                    raise RuntimeError("A write was nested inside a read-only transaction.")
                store._depth += 1
                return
            store._conn.execute("BEGIN IMMEDIATE" if self._write else "BEGIN")
            store._depth, store._writing, self._outer = 1, self._write, True
            try:
                # The check also starts the read, so the cache agrees with what this
                # transaction sees.
                store._sync()
            except BaseException:
                self._rollback()
                raise
        except BaseException:
            store._lock.release()
            raise

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        store = self._store
        try:
            if not self._outer:
                store._depth -= 1
            elif exc_type is not None:
                self._rollback()
            else:
                store._depth = 0
                try:
                    store._conn.execute("COMMIT")
                except BaseException:
                    # Nothing was written, so what this transaction remembered is void too.
                    self._rollback()
                    raise
        finally:
            store._lock.release()

    def _rollback(self) -> None:
        store = self._store
        store._depth = 0
        store._generation += 1  # what this transaction remembered is void
        # A failed COMMIT may have ended the transaction already (or left it open).
        if store._conn.in_transaction:
            store._conn.execute("ROLLBACK")
