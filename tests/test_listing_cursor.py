"""Keyset pagination of GET /accounts/<id>/transactions: ties, filters, and the index seek."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Transaction
from flask_finconn.testing import HOLDER_HEADER, link_accounts

ADA = Holder("ada", email="ada@example.com")
NEWEST = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ROWS = 300
TIES = 10  # rows sharing each transacted_at


def history(account_id: str, start: int = 0, count: int = ROWS) -> list[dict[str, Any]]:
    """Rows with ten to a timestamp, ids in no relation to insertion or time order."""
    rows = []
    for n in range(start, start + count):
        when = NEWEST - timedelta(minutes=n // TIES)
        status = "pending" if n % 7 == 3 else "void" if n % 11 == 5 else "posted"
        rows.append(
            {
                # 7919 is prime to 10,000: every id distinct, their order shuffled against n.
                "id": f"fctxn_{(n * 7919) % 10_000:05d}",
                "account_id": account_id,
                "amount": -100 - n,
                "currency": "usd",
                "description": f"Row {n}",
                "status": status,
                "transacted_at": when,
                "posted_at": None,
                "void_at": None,
                "transaction_refresh": "fctxnref_test",
                "stripe_updated": int(when.timestamp()),
                "livemode": False,
            }
        )
    return rows


def newest_first(rows: list[dict[str, Any]]) -> list[str]:
    ordered = sorted(rows, key=lambda row: (row["transacted_at"], row["id"]), reverse=True)
    return [row["id"] for row in ordered]


@pytest.fixture
def account(make_finconn_app: Callable[..., Flask]) -> tuple[Flask, str, list[dict[str, Any]]]:
    """An app and one of Ada's accounts holding :func:`history`, inserted directly."""
    app = make_finconn_app(FINCONN_PERMISSIONS=["balances"])
    account_id = link_accounts(app, ADA, accounts=["checking"])[0].id
    rows = history(account_id)
    insert(app, rows)
    return app, account_id, rows


def insert(app: Flask, rows: list[dict[str, Any]]) -> None:
    with app.app_context():
        session = get_state(app).db.session
        session.execute(sa.insert(Transaction), rows)
        session.commit()


def pages(
    app: Flask, account_id: str, limit: int, between: Callable[[], None] | None = None, **query: Any
) -> Iterator[list[str]]:
    """The ids of each page, following next_cursor to the end; ``between`` runs after each."""
    client = app.test_client()
    cursor = None
    while True:
        params = {"limit": limit, **query, **({"cursor": cursor} if cursor else {})}
        response = client.get(
            f"/finconn/accounts/{account_id}/transactions",
            headers={HOLDER_HEADER: ADA.id},
            query_string=params,
        )
        assert response.status_code == 200, response.json
        page = response.get_json()
        assert page["has_more"] == (page["next_cursor"] is not None)
        assert len(page["data"]) <= limit
        yield [txn["id"] for txn in page["data"]]
        cursor = page["next_cursor"]
        if cursor is None:
            return
        if between is not None:
            between()


@pytest.mark.parametrize("limit", [1, 7, 10, 100])
def test_every_row_once_in_order_across_ties(
    account: tuple[Flask, str, list[dict[str, Any]]], limit: int
) -> None:
    app, account_id, rows = account
    listed = [txn for page in pages(app, account_id, limit) for txn in page]
    assert listed == newest_first(rows)


@pytest.mark.parametrize("status", ["pending", "posted", "void"])
def test_status_filter_pages_every_row_once(
    account: tuple[Flask, str, list[dict[str, Any]]], status: str
) -> None:
    app, account_id, rows = account
    listed = [txn for page in pages(app, account_id, 9, status=status) for txn in page]
    expected = newest_first([row for row in rows if row["status"] == status])
    assert expected and listed == expected


def test_window_pages_every_row_once(account: tuple[Flask, str, list[dict[str, Any]]]) -> None:
    app, account_id, rows = account
    since, until = NEWEST - timedelta(minutes=20), NEWEST - timedelta(minutes=5)
    query: dict[str, Any] = {"since": since.isoformat(), "until": until.isoformat()}
    listed = [txn for page in pages(app, account_id, 8, **query) for txn in page]
    expected = newest_first([row for row in rows if since <= row["transacted_at"] < until])
    assert expected and listed == expected


def test_rows_arriving_mid_listing_neither_shift_nor_repeat_a_page(
    account: tuple[Flask, str, list[dict[str, Any]]],
) -> None:
    """A sync adding newer rows, and rows at the timestamps already listed, while paging."""
    app, account_id, rows = account
    batches = iter(range(ROWS, ROWS + 10 * 20, 20))

    def sync_more() -> None:
        start = next(batches, None)
        if start is not None:
            newer = history(account_id, start, 20)
            for row in newer:  # half newer than everything, half inside the listed range
                if row["stripe_updated"] % 2:
                    row["transacted_at"] = NEWEST + timedelta(hours=1)
            insert(app, newer)

    listed = [txn for page in pages(app, account_id, 13, between=sync_more) for txn in page]
    assert len(listed) == len(set(listed))
    original = set(newest_first(rows))
    assert [txn for txn in listed if txn in original] == newest_first(rows)


@contextmanager
def captured_listing(app: Flask) -> Iterator[list[tuple[str, Any]]]:
    """The SQL (statement, parameters) of the transaction listing queries run inside."""
    with app.app_context():
        engine = get_state(app).db.engine
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *rest: Any) -> None:
        if "FROM finconn_transaction" in statement and "ORDER BY" in statement:
            seen.append((statement, parameters))

    sa.event.listen(engine, "before_cursor_execute", capture)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", capture)


@pytest.mark.parametrize(
    ("status", "index"),
    [
        (None, "ix_finconn_transaction_account_time"),
        ("void", "ix_finconn_transaction_account_status_time"),
    ],
)
def test_a_deep_page_is_one_index_range(
    account: tuple[Flask, str, list[dict[str, Any]]], status: str | None, index: str
) -> None:
    """The cursor is part of the index range (a seek), not a filter over the newer rows."""
    app, account_id, _ = account
    query: dict[str, Any] = {"status": status} if status else {}
    listing = pages(app, account_id, 10, **query)
    next(listing)
    with captured_listing(app) as seen:
        next(listing)
    statement, parameters = seen[-1]
    with app.app_context():
        engine = get_state(app).db.engine
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                plan = " ".join(
                    row[-1]
                    for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters)
                )
                assert f"INDEX {index} (" in plan, plan
                assert "(transacted_at,id)<(?,?)" in plan, plan
            else:
                # A few hundred rows would be read whole; ask for the plan of a big table.
                conn.exec_driver_sql("ANALYZE finconn_transaction")
                conn.exec_driver_sql("SET enable_seqscan = off")
                conn.exec_driver_sql("SET enable_bitmapscan = off")
                plan = "\n".join(
                    row[0] for row in conn.exec_driver_sql(f"EXPLAIN {statement}", parameters)
                )
                assert f"Index Scan Backward using {index}" in plan, plan
                condition = next(line for line in plan.splitlines() if "Index Cond" in line)
                assert "ROW(transacted_at, (id)::text) < ROW(" in condition, plan
                assert "Filter" not in plan, plan
