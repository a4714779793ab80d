"""GET /accounts for 1, 10 and 100 accounts: SQL statements per request and time vs bare Flask.

The baseline is a bare Flask route in the same app returning the same JSON document
(precomputed, so it does no SQL and no serialisation work beyond ``jsonify``). Both are
driven through Flask's test client in the same run, so the ratio is what the extension
adds: the holder check, one joined query, ORM loading and the marshmallow dump.

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

from flask import Flask, jsonify

from flask_finconn import get_state
from flask_finconn.models import Account, BalanceSnapshot, Customer
from flask_finconn.testing import HOLDER_HEADER, count_statements, create_app

SIZES = (1, 10, 100)


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
    parser.add_argument("--database-url", default=None, help="default: a SQLite file")
    parser.add_argument("--requests", type=int, default=1500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.sqlite3"
        app = create_app(url)
        documents: dict[int, Any] = {}

        @app.get("/bare/<int:size>")
        def bare(size: int) -> Any:
            return jsonify(documents[size])

        with app.app_context():
            engine = get_state(app).db.engine

        client = app.test_client()
        print(f"database: {engine.dialect.name}; {args.requests} requests per figure")
        print(f"{'accounts':>8}  {'SQL/request':>11}  {'ours ms':>8}  {'bare ms':>8}  {'ratio':>6}")
        for size in SIZES:
            holder = f"holder{size}"
            add_accounts(app, holder, size)
            headers = {HOLDER_HEADER: holder}
            with count_statements(app) as statements:
                response = client.get("/finconn/accounts", headers=headers)
            assert response.status_code == 200, response.json
            queries = len(statements)
            documents[size] = response.json
            assert len(documents[size]["data"]) == size
            assert client.get(f"/bare/{size}").json == documents[size]

            ours, base, ratio = interleaved(
                partial(client.get, "/finconn/accounts", headers=headers),
                partial(client.get, f"/bare/{size}"),
                args.requests,
            )
            print(
                f"{size:>8}  {queries:>11}  {ours * 1000:>8.3f}  {base * 1000:>8.3f}  {ratio:>6.2f}"
            )
        with app.app_context():
            get_state(app).db.engine.dispose()


if __name__ == "__main__":
    main()
