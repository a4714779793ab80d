"""GET /accounts for 1, 10 and 100 accounts: SQL statements per request and time vs hand-written.

The baseline is the route a careful developer would write by hand in the same app: read
the holder from the request, run one query (the accounts joined to their latest balance,
through the same engine and session), build the same JSON document in Python and
``jsonify`` it. The bench checks that both answer the same document, then drives both
through Flask's test client in interleaved batches, so the ratio is what the extension
costs over doing the same job by hand, database round trip included. Target: <= 1.5 on
SQLite and PostgreSQL.

    .venv/bin/python bench/accounts_list.py [--database-url URL] [--requests N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

import sqlalchemy as sa
from flask import Flask, jsonify, request

from flask_finconn import get_state
from flask_finconn.models import Account, BalanceSnapshot, Customer
from flask_finconn.testing import (
    HOLDER_HEADER,
    count_statements,
    create_app,
    throwaway_database,
)

SIZES = (1, 10, 100)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.strftime("%Y-%m-%dT%H:%M:%SZ")


def _iso_unix(value: int | None) -> str | None:
    return None if value is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def _refresh(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    return {
        "status": raw.get("status"),
        "last_attempted_at": _iso_unix(raw.get("last_attempted_at")),
        "next_refresh_available_at": _iso_unix(raw.get("next_refresh_available_at")),
    }


def add_hand_written_route(app: Flask) -> None:
    """``GET /by-hand/accounts``: the listing as one would write it without the extension."""
    account, balance = Account.__table__, BalanceSnapshot.__table__
    query = (
        sa.select(
            account.c.id,
            account.c.institution_name,
            account.c.display_name,
            account.c.last4,
            account.c.category,
            account.c.subcategory,
            account.c.status,
            account.c.action,
            account.c.permissions,
            account.c.subscriptions,
            account.c.balance_refresh,
            account.c.ownership_refresh,
            account.c.transaction_refresh,
            account.c.linked_at,
            account.c.updated_at,
            balance.c.current,
            balance.c.available,
            balance.c.currency,
            balance.c.as_of,
        )
        .outerjoin(balance, balance.c.id == account.c.latest_balance_id)
        .where(account.c.holder_id == sa.bindparam("holder_id"))
        .order_by(account.c.linked_at, account.c.id)
    )

    @app.get("/by-hand/accounts")
    def by_hand() -> Any:
        holder_id = request.headers.get(HOLDER_HEADER)
        if not holder_id:
            return jsonify({"error": "Sign in first."}), 401
        rows = get_state(app).db.session.execute(query, {"holder_id": holder_id})
        return jsonify(
            {
                "data": [
                    {
                        "id": row.id,
                        "institution_name": row.institution_name,
                        "display_name": row.display_name,
                        "last4": row.last4,
                        "category": row.category,
                        "subcategory": row.subcategory,
                        "status": row.status,
                        "action": row.action,
                        "permissions": row.permissions,
                        "subscriptions": row.subscriptions,
                        "balance": None
                        if row.current is None
                        else {
                            "current": row.current,
                            "available": row.current if row.available is None else row.available,
                            "currency": row.currency,
                            "as_of": _iso(row.as_of),
                        },
                        "refresh": {
                            "balance": _refresh(row.balance_refresh),
                            "ownership": _refresh(row.ownership_refresh),
                            "transactions": _refresh(row.transaction_refresh),
                        },
                        "linked_at": _iso(row.linked_at),
                        "updated_at": _iso(row.updated_at),
                    }
                    for row in rows
                ]
            }
        )


def add_accounts(app: Flask, holder_id: str, count: int) -> None:
    """Store ``count`` linked accounts, each with a balance, for one holder."""
    with app.app_context():
        db = get_state(app).db
        customer = Customer(holder_id=holder_id, stripe_id=f"cus_{holder_id}")
        db.session.add(customer)
        db.session.flush()
        for n in range(count):
            raw = {"id": f"fca_{holder_id}_{n}", "object": "financial_connections.account"}
            account = Account(
                stripe_id=raw["id"],
                holder_id=holder_id,
                customer_id=customer.id,
                institution_name="StripeBank",
                display_name=f"Checking {n}",
                last4=f"{n:04d}",
                category="cash",
                subcategory="checking",
                status="active",
                permissions=["balances", "transactions"],
                subscriptions=["transactions"],
                balance_refresh={
                    "status": "succeeded",
                    "last_attempted_at": 1_790_000_000,
                    "next_refresh_available_at": 1_790_003_600,
                },
                transaction_refresh={
                    "id": f"fctxnref_{n}",
                    "status": "succeeded",
                    "last_attempted_at": 1_790_000_000,
                    "next_refresh_available_at": 1_790_003_600,
                },
                raw=raw,
            )
            db.session.add(account)
            db.session.flush()
            account.latest_balance = BalanceSnapshot(
                account_id=account.id,
                as_of=datetime(2026, 11, 1, tzinfo=UTC),
                type="cash",
                currency="usd",
                current=100_00 + n,
                available=90_00 + n,
            )
        db.session.commit()


def interleaved(
    ours: Callable[[], Any], bare: Callable[[], Any], requests: int, rounds: int = 15
) -> tuple[float, float, float]:
    """Median seconds per call of each, and the median of per-round ratios.

    The two are timed in alternating batches so that load from other processes on the
    machine hits both alike.
    """
    batch = max(1, requests // rounds)
    for _ in range(batch * 2):
        ours()
        bare()
    ours_times, bare_times, ratios = [], [], []
    for _ in range(rounds):
        timings = []
        for call in (ours, bare):
            start = time.perf_counter()
            for _ in range(batch):
                call()
            timings.append((time.perf_counter() - start) / batch)
        ours_times.append(timings[0])
        bare_times.append(timings[1])
        ratios.append(timings[0] / timings[1])
    return (
        statistics.median(ours_times),
        statistics.median(bare_times),
        statistics.median(ratios),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--database-url",
        default=None,
        help="a SQLite file or PostgreSQL URL; the bench runs in a scratch database beside it "
        "(default: a SQLite file in a temporary directory)",
    )
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_database(args.database_url or f"sqlite:///{tmp}/bench.sqlite3") as url,
    ):
        app = create_app(url)
        add_hand_written_route(app)

        with app.app_context():
            engine = get_state(app).db.engine

        client = app.test_client()
        print(f"database: {engine.dialect.name}; {args.requests} requests per figure")
        columns = ("accounts", "SQL/request", "ours ms", "by hand ms", "ratio")
        print("  ".join(f"{name:>{len(name)}}" for name in columns))
        for size in SIZES:
            holder = f"holder{size}"
            add_accounts(app, holder, size)
            headers = {HOLDER_HEADER: holder}
            with count_statements(app) as statements:
                response = client.get("/finconn/accounts", headers=headers)
            assert response.status_code == 200, response.json
            queries = len(statements)
            assert len(response.get_json()["data"]) == size
            with count_statements(app) as statements:
                assert client.get("/by-hand/accounts", headers=headers).json == response.json
            assert len(statements) == 1  # the baseline does one round trip too

            ours, base, ratio = interleaved(
                partial(client.get, "/finconn/accounts", headers=headers),
                partial(client.get, "/by-hand/accounts", headers=headers),
                args.requests,
            )
            print(
                f"{size:>8}  {queries:>11}  {ours * 1000:>8.3f}  {base * 1000:>10.3f}  "
                f"{ratio:>6.2f}"
            )
        with app.app_context():
            get_state(app).db.engine.dispose()


if __name__ == "__main__":
    main()
