"""GET /accounts/<id>/transactions deep in a 1M-row history vs its first page.

One account gets ``--transactions`` rows (default 1,000,000), bulk-inserted straight into
``finconn_transaction`` (a sync of that size would take minutes and measure something
else). Four rows share each timestamp, so ties on ``transacted_at`` are the rule and the
cursor's ``id`` half does real work. The newest rows are pending and about 1% are void,
as in a real history.

Each figure is the median time of a page of 25 through Flask's test client (holder check,
keyset query, marshmallow dump), timed in interleaved batches with the first page so
that load from other processes hits both alike; the ratio is deep page / first page.
Target: a deep page <= 1.5x the first. The status filter variants are measured too.

    .venv/bin/python bench/listing_depth.py [--database-url URL] [--transactions N]
                                            [--requests N]

Without ``--database-url`` it uses a SQLite file in a temporary directory; with a SQLite
file or PostgreSQL URL (for example ``$FINCONN_TEST_POSTGRES_URL``) it creates a scratch
database beside it (``flask_finconn.testing.throwaway_database``) and drops it at the end.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Transaction
from flask_finconn.services.transactions import encode_cursor
from flask_finconn.testing import HOLDER_HEADER, create_app, link_accounts, throwaway_database

HOLDER = "bench-depth"
NEWEST = datetime(2026, 11, 1, tzinfo=UTC)
TIES = 4  # rows per timestamp
PENDING = 40  # the newest rows are still pending
CHUNK = 20_000
COLUMNS = [column.name for column in Transaction.__table__.columns]


def rows(account_id: str, count: int) -> Iterator[dict[str, Any]]:
    """The account's history, newest first: TIES rows a second, every 100th row void."""
    for n in range(count):
        when = NEWEST - timedelta(seconds=150 * (n // TIES))
        status = "pending" if n < PENDING else "void" if n % 100 == 57 else "posted"
        yield {
            "id": f"fctxn_bench{count - n:012d}",
            "account_id": account_id,
            "amount": -(n % 9_000) - 100,
            "currency": "usd",
            "description": f"Card purchase {n % 500}",
            "status": status,
            "transacted_at": when,
            "posted_at": when + timedelta(days=1) if status == "posted" else None,
            "void_at": when + timedelta(days=1) if status == "void" else None,
            "transaction_refresh": "fctxnref_bench",
            "stripe_updated": int(when.timestamp()),
            "livemode": False,
        }


def bulk_insert(app: Flask, account_id: str, count: int) -> None:
    """Insert the history: COPY on PostgreSQL, chunked executemany on SQLite."""
    with app.app_context():
        engine = get_state(app).db.engine
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            names = ", ".join(COLUMNS)
            with cursor.copy(f"COPY finconn_transaction ({names}) FROM STDIN") as copy:
                for row in rows(account_id, count):
                    copy.write_row(
                        [
                            row[name].replace(tzinfo=None)
                            if isinstance(row[name], datetime)
                            else row[name]
                            for name in COLUMNS
                        ]
                    )
            raw.commit()
            cursor.execute("ANALYZE finconn_transaction")
            raw.commit()
        finally:
            raw.close()
        return
    chunk: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in rows(account_id, count):
            chunk.append(row)
            if len(chunk) == CHUNK:
                conn.execute(sa.insert(Transaction), chunk)
                chunk.clear()
        if chunk:
            conn.execute(sa.insert(Transaction), chunk)
        conn.exec_driver_sql("ANALYZE")


def cursor_at(app: Flask, account_id: str, depth: int, status: str | None = None) -> str:
    """The cursor of the page that starts after the ``depth``-th newest row (0-based)."""
    with app.app_context():
        query = sa.select(Transaction).where(Transaction.account_id == account_id)
        if status is not None:
            query = query.where(Transaction.status == status)
        query = query.order_by(Transaction.transacted_at.desc(), Transaction.id.desc())
        row = get_state(app).db.session.scalars(query.offset(depth).limit(1)).one()
        return encode_cursor(row)


def interleaved(
    calls: dict[str, Callable[[], Any]],
    reference: dict[str, str],
    requests: int,
    rounds: int = 15,
) -> dict[str, tuple[float, float]]:
    """Median seconds per call of each, and its median per-round ratio to its reference."""
    batch = max(1, requests // rounds)
    for call in calls.values():
        for _ in range(batch):
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    ratios: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        spent = {}
        for name, call in calls.items():
            started = time.perf_counter()
            for _ in range(batch):
                call()
            spent[name] = (time.perf_counter() - started) / batch
        for name in calls:
            times[name].append(spent[name])
            ratios[name].append(spent[name] / spent[reference[name]])
    return {
        name: (statistics.median(times[name]), statistics.median(ratios[name])) for name in calls
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=None, help="default: a SQLite file")
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=600, help="per figure")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_database(args.database_url or f"sqlite:///{tmp}/bench.sqlite3") as url,
    ):
        app = create_app(url, FINCONN_PERMISSIONS=["balances"])
        account = link_accounts(app, Holder(HOLDER), accounts=["checking"])[0]
        started = time.perf_counter()
        bulk_insert(app, account.id, args.transactions)
        with app.app_context():
            dialect = get_state(app).db.engine.dialect.name
        print(
            f"database: {dialect}; {args.transactions} rows inserted in "
            f"{time.perf_counter() - started:.1f} s; {args.requests} requests per figure, "
            "pages of 25"
        )
        count = args.transactions
        voids = sum(1 for n in range(PENDING, count) if n % 100 == 57)
        posted = count - PENDING - voids
        # name: (query, the page its time is compared with)
        cases: dict[str, tuple[dict[str, Any], str]] = {
            "first": ({}, "first"),
            "50%": ({"cursor": cursor_at(app, account.id, count // 2)}, "first"),
            "99.9%": ({"cursor": cursor_at(app, account.id, count - count // 1000)}, "first"),
            "posted, first": ({"status": "posted"}, "posted, first"),
            "posted, 99.9%": (
                {
                    "status": "posted",
                    "cursor": cursor_at(app, account.id, posted - posted // 1000, "posted"),
                },
                "posted, first",
            ),
            "void, first": ({"status": "void"}, "void, first"),
            "void, 99.9%": (
                {
                    "status": "void",
                    "cursor": cursor_at(app, account.id, voids - voids // 1000 - 26, "void"),
                },
                "void, first",
            ),
            "pending, first": ({"status": "pending"}, "pending, first"),
            "pending, last": (
                {"status": "pending", "cursor": cursor_at(app, account.id, 24, "pending")},
                "pending, first",
            ),
        }
        client = app.test_client()
        path = f"/finconn/accounts/{account.id}/transactions"
        headers = {HOLDER_HEADER: HOLDER}

        def page(query: dict[str, Any]) -> Any:
            response = client.get(path, headers=headers, query_string={"limit": 25, **query})
            assert response.status_code == 200, response.json
            return response.json

        for query, _ in cases.values():  # every case answers rows of its status
            data = page(query)["data"]
            assert data and all(t["status"] == query.get("status", t["status"]) for t in data)

        results = interleaved(
            {name: partial(page, query) for name, (query, _) in cases.items()},
            {name: reference for name, (_, reference) in cases.items()},
            args.requests,
        )
        print(f"{'page':<16}{'ms':>8}  {'x its first page':>16}")
        for name, (seconds, ratio) in results.items():
            print(f"{name:<16}{seconds * 1000:>8.2f}  {ratio:>16.2f}")
        deepest = max(ratio for name, (_, ratio) in results.items() if "first" not in name)
        print(f"deepest page / its first page: {deepest:.2f} (target <= 1.5)")
        with app.app_context():
            get_state(app).db.engine.dispose()


if __name__ == "__main__":
    main()
