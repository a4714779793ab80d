"""First and incremental transaction sync of a large sandbox account, SQLite and PostgreSQL.

For each database, an account whose history the sandbox fills to ``--transactions`` rows:

(a) fetch only: the same pages through the real SDK, nothing written;
(c) a raw bulk insert of the same rows (one executemany, one commit), nothing fetched;
(b) the full first sync: ``sync_account_from_stripe`` (fetch, upsert per page, commit
    per page with the resume point).

It prints b / (a + c) (target <= 1.5): what the sync costs over fetching and writing.
Then the peak Python memory of a first sync (tracemalloc) for ``--small`` vs
``--transactions`` rows (target: growth under 50 MB), and an incremental sync after about
50 changed rows (new and settled), with its SQL statements per page.

    source /tmp/finconn-dev-env   # for PostgreSQL (FINCONN_TEST_POSTGRES_URL)
    .venv/bin/python -m bench.sync [--transactions 100000] [--small 10000] [--only sqlite]
                                   [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import sqlalchemy as sa
import stripe
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Account, Transaction
from flask_finconn.services import refresh, sync
from flask_finconn.services.transactions import transaction_row
from flask_finconn.testing import (
    count_statements,
    create_app,
    link_accounts,
    sandbox_of,
    throwaway_database,
)

DAY = 86_400
HISTORY_DAYS = 180


def database(kind: str, workdir: str) -> AbstractContextManager[str]:
    """A fresh, empty database URL of that kind, dropped afterwards."""
    if kind == "sqlite":
        return throwaway_database(f"sqlite:///{workdir}/bench.sqlite3")
    return throwaway_database(os.environ["FINCONN_TEST_POSTGRES_URL"])


def linked_account(url: str, size: int) -> tuple[Flask, str, str]:
    """An app on ``url`` with one checking account whose finished refresh holds ``size`` rows."""
    app = create_app(
        url, FINCONN_PERMISSIONS=["transactions"], FINCONN_SANDBOX_REFRESH_DELAY=10 * DAY
    )
    account = link_accounts(app, Holder("bench"), accounts=["checking"])[0]
    sandbox = sandbox_of(app)
    sandbox.set_history_size(account.stripe_id, size)
    sandbox.finish_refreshes(account.stripe_id)
    return app, account.id, account.stripe_id


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    started = time.perf_counter()
    result = run()
    return time.perf_counter() - started, result


def fetch_only(app: Flask, stripe_id: str) -> int:
    with app.app_context():
        pages = get_state(app).stripe.transaction_pages(stripe_id)
        return sum(len(page) for page, _ in pages)


def bulk_insert(app: Flask, rows: list[dict[str, Any]]) -> None:
    with app.app_context():
        session = get_state(app).db.session
        session.execute(sa.insert(Transaction), rows)
        session.commit()


def clear(app: Flask, account_id: str) -> None:
    with app.app_context():
        session = get_state(app).db.session
        session.execute(sa.delete(Transaction).where(Transaction.account_id == account_id))
        session.execute(
            sa.update(Account)
            .where(Account.id == account_id)
            .values(transactions_cursor=None, transactions_sync=None)
        )
        session.commit()


def full_sync(app: Flask, stripe_id: str) -> sync.Applied:
    with app.app_context():
        applied = sync.sync_account_from_stripe(get_state(app), stripe_id)
        assert applied is not None and applied.sync is not None
        return applied


def throughput(kind: str, workdir: str, size: int, repeat: int) -> None:
    """(a), (b) and (c), each the best of ``repeat`` runs on an otherwise busy machine."""
    with database(kind, workdir) as url:
        app, account_id, stripe_id = linked_account(url, size)
        fetch_only(app, stripe_id)  # warm the sandbox's and the SDK's caches
        a = min(timed(lambda: fetch_only(app, stripe_id))[0] for _ in range(repeat))
        fetched = fetch_only(app, stripe_id)
        with app.app_context():
            pages = get_state(app).stripe.transaction_pages(stripe_id)
            rows = [transaction_row(txn, account_id) for page, _ in pages for txn in page]
        c = b = float("inf")
        for _ in range(repeat):
            clear(app, account_id)
            c = min(c, timed(lambda: bulk_insert(app, rows))[0])
        rows.clear()
        for _ in range(repeat):
            clear(app, account_id)
            seconds, applied = timed(lambda: full_sync(app, stripe_id))
            assert applied.sync.added == fetched, (applied.sync.added, fetched)
            b = min(b, seconds)
        print(
            f"{kind:10} {fetched:>7} rows  (a) fetch only {a:6.2f} s   (c) raw bulk insert "
            f"{c:6.2f} s   (b) full sync {b:6.2f} s   b/(a+c) = {b / (a + c):.2f}"
        )
        incremental(app, stripe_id, kind)
        with app.app_context():
            get_state(app).db.engine.dispose()


def incremental(app: Flask, stripe_id: str, kind: str) -> None:
    """About 50 changed rows at the bank (new ones, and pending ones settling), then sync."""
    sandbox = sandbox_of(app)
    with app.app_context():
        query = sa.select(sa.func.count()).select_from(Transaction)
        size = get_state(app).db.session.execute(query).scalar_one()
    per_day = size / HISTORY_DAYS
    sandbox.advance_time(max(sandbox.refresh_cooldown + 1, 47 / per_day * DAY))
    with app.app_context():
        state = get_state(app)
        account = state.db.session.scalars(
            sa.select(Account).where(Account.stripe_id == stripe_id)
        ).one()
        refresh.start_refresh(state, account, ["transactions"])
    sandbox.finish_refreshes(stripe_id)
    with count_statements(app) as statements:
        seconds, applied = timed(lambda: full_sync(app, stripe_id))
    done = applied.sync
    changed = done.added + done.updated
    # The sync's own statements start with its locked read of the sync progress; before
    # them come re-reading the account from Stripe and storing it.
    start = next(
        i
        for i, sql in enumerate(statements)
        if sql.startswith("SELECT finconn_account.transactions_sync")
    )
    per_page = (len(statements) - start) / done.pages
    print(
        f"{kind:10} incremental: {changed} changed rows ({done.added} new, {done.updated} "
        f"settled) in {seconds * 1000:.0f} ms, {done.pages} page(s); {len(statements)} SQL "
        f"statements: {start} to re-read and store the account, {per_page:.0f} per page"
    )


def peak_memory(kind: str, workdir: str, size: int) -> float:
    """Peak Python allocations (MB) during the first sync of ``size`` rows."""
    with database(kind, workdir) as url:
        app, _, stripe_id = linked_account(url, size)
        gc.collect()
        tracemalloc.start()
        try:
            full_sync(app, stripe_id)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        with app.app_context():
            get_state(app).db.engine.dispose()
        return peak / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for a, b, c")
    args = parser.parse_args()
    stripe.enable_telemetry = False
    kinds = [args.only] if args.only else ["sqlite", "postgresql"]
    if "postgresql" in kinds and not os.environ.get("FINCONN_TEST_POSTGRES_URL"):
        print("postgresql: skipped (FINCONN_TEST_POSTGRES_URL is not set; source the dev env)")
        kinds.remove("postgresql")
    with tempfile.TemporaryDirectory() as workdir:
        for kind in kinds:
            throughput(kind, workdir, args.transactions, args.repeat)
        for kind in kinds:
            small = peak_memory(kind, workdir, args.small)
            large = peak_memory(kind, workdir, args.transactions)
            print(
                f"{kind:10} peak memory of a first sync: {small:6.1f} MB for {args.small} rows, "
                f"{large:6.1f} MB for {args.transactions} rows (growth {large - small:+.1f} MB)"
            )


if __name__ == "__main__":
    main()
