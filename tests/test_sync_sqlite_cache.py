"""On SQLite a sync writes with a large page cache and gives the connection its own back."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.errors import StripeUnavailable
from flask_finconn.services import sync, transactions
from flask_finconn.testing import create_app, link_accounts, sandbox_of

HOST_CACHE = -3000  # the host's own setting, in KiB


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    """A SQLite host app whose pooled connections all start with ``HOST_CACHE``."""
    app = create_app(
        f"sqlite:///{tmp_path}/app.sqlite3",
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
    )
    with app.app_context():
        engine = get_state(app).db.engine

    @sa.event.listens_for(engine, "connect")
    def host_setting(dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA cache_size = {HOST_CACHE}")

    engine.dispose()  # every connection from here on is made with the host's setting
    yield app
    engine.dispose()


@contextmanager
def cache_at_each_write(app: Flask) -> Iterator[list[int]]:
    """The connection's cache_size at each page upsert of the sync."""
    with app.app_context():
        engine = get_state(app).db.engine
    seen: list[int] = []

    def check(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if statement.startswith("INSERT INTO finconn_transaction"):
            seen.append(cursor.connection.execute("PRAGMA cache_size").fetchone()[0])

    sa.event.listen(engine, "before_cursor_execute", check)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", check)


def pooled_cache_sizes(app: Flask) -> set[int]:
    """cache_size of every connection the pool holds (checked out all at once)."""
    with app.app_context():
        engine = get_state(app).db.engine
    pool = cast(sa.pool.QueuePool, engine.pool)  # what create_engine builds for a SQLite file
    connections = [pool.connect() for _ in range(pool.checkedin())]
    try:
        # A checked-out connection always holds its sqlite3 connection.
        dbapi = [cast(sqlite3.Connection, c.dbapi_connection) for c in connections]
        return {d.execute("PRAGMA cache_size").fetchone()[0] for d in dbapi}
    finally:
        for connection in connections:
            connection.close()


def account_with_history(app: Flask, size: int) -> str:
    account = link_accounts(app, Holder("ada"), accounts=["checking"])[0]
    sandbox_of(app).set_history_size(account.stripe_id, size)
    sandbox_of(app).finish_refreshes(account.stripe_id)
    return account.stripe_id


def test_the_sync_writes_with_64_mib_and_restores_the_hosts_setting(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transactions, "COMMIT_INTERVAL", 0)  # a batch, a commit, per page
    stripe_id = account_with_history(app, 450)
    with cache_at_each_write(app) as seen, app.app_context():
        applied = sync.sync_account_from_stripe(get_state(app), stripe_id)
    assert applied is not None and applied.sync is not None
    assert applied.sync.added == 450
    assert seen == [-64 * 1024] * 5
    assert pooled_cache_sizes(app) == {HOST_CACHE}


def test_a_sync_that_fails_mid_batch_restores_the_hosts_setting(
    app: Flask, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transactions, "COMMIT_INTERVAL", 3600)  # one batch for the whole sync
    stripe_id = account_with_history(app, 450)
    sandbox = sandbox_of(app)

    def fail_page_3(rows: int, pages: int) -> None:
        if pages == 2:  # every try of the third page fails, the SDK's retries included
            sandbox.faults.fail_next(500, 500, 500)

    with cache_at_each_write(app) as seen, app.app_context():
        state = get_state(app)
        with pytest.raises(StripeUnavailable):
            sync.sync_account_from_stripe(state, stripe_id, on_page=fail_page_3)
        state.db.session.rollback()
    assert seen == [-64 * 1024] * 2
    assert pooled_cache_sizes(app) == {HOST_CACHE}


def test_a_larger_host_setting_is_left_alone(tmp_path: Path) -> None:
    app = create_app(
        f"sqlite:///{tmp_path}/big.sqlite3",
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
    )
    with app.app_context():
        engine = get_state(app).db.engine
    sa.event.listen(
        engine, "connect", lambda dbapi, record: dbapi.execute("PRAGMA cache_size = 100000")
    )
    engine.dispose()
    stripe_id = account_with_history(app, 150)
    with cache_at_each_write(app) as seen, app.app_context():
        sync.sync_account_from_stripe(get_state(app), stripe_id)
    assert seen == [100_000, 100_000]  # 100,000 pages of 4 KiB is more than 64 MiB
    engine.dispose()
