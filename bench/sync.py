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

``--scale N`` instead runs one first sync of N rows (say 1,000,000) per database and
prints the write side's cost per row (the page upserts and the commits, timed inside
the sync; wall time and CPU time) in windows along the way: the first 10k rows, then at
each tenfold size, then the last 10k rows. Then ``--rounds`` interleaved pairs: a new
10k-row account synced into an empty database and into the N-row one, in alternating
order, so the load of a shared machine hits both. Target: the median pair within 1.3x.
``--buffers`` adds the upsert's shared buffers per row (PostgreSQL with
pg_stat_statements loaded).

    source /tmp/finconn-dev-env   # for PostgreSQL (FINCONN_TEST_POSTGRES_URL)
    .venv/bin/python -m bench.sync [--transactions 100000] [--small 10000] [--only sqlite]
                                   [--repeat 3]
    .venv/bin/python -m bench.sync --scale 1000000 [--only sqlite] [--rounds 5] [--buffers]
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
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
from flask_finconn.services import transactions as transactions_service
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


class WriteClock:
    """Times the write side of syncs (the page upserts and the commits) on one app.

    Wall time, and CPU time: this thread's, plus the PostgreSQL backend's (read from
    ``/proc``, so the server must run on this machine). CPU time is what a row costs the
    two processes whatever else the machine runs; wall time is what a user waits.
    Also this thread's kernel CPU time and the bytes it wrote (``/proc/thread-self/io``):
    SQLite writes its journal and database pages from the syncing thread itself, where
    PostgreSQL's backend leaves its page writes to the background writer and checkpointer.
    ``marks`` holds (rows, wall s, CPU s, kernel s, bytes written) so far at the end of
    each ``window`` of rows.
    With ``buffers`` (PostgreSQL with pg_stat_statements loaded), ``buffer_marks`` holds
    the shared buffers the upsert statements found in memory (hit) and had to read, so far,
    at the same points.
    """

    def __init__(self, app: Flask, window: int, *, buffers: bool = False) -> None:
        self.app, self.window, self.buffers = app, window, buffers
        self.rows, self.wall, self.cpu = 0, 0.0, 0.0
        self.kernel, self.written = 0.0, 0
        self.marks: list[tuple[int, float, float, float, int]] = []
        self.buffer_marks: list[tuple[int, int, int]] = []
        self._backend: str | None = None
        self._backend_cpu = 0.0

    def _server_cpu(self) -> float:
        if self._backend is None:
            return 0.0
        with open(self._backend) as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _add(self, wall: float, cpu: float, kernel: tuple[float, int]) -> None:
        self.wall += wall
        self.cpu += cpu
        now = _thread_kernel()
        self.kernel += now[0] - kernel[0]
        self.written += now[1] - kernel[1]

    def sync(self, stripe_id: str) -> int:
        """One sync of the account, timed; returns the rows it added."""
        write = transactions_service._write
        commit_began: list[tuple[float, float, tuple[float, int]]] = []

        def timed_write(session: Any, dialect: str, rows: list[dict[str, Any]]) -> Any:
            kernel = _thread_kernel()
            began, began_cpu = time.perf_counter(), time.thread_time()
            try:
                return write(session, dialect, rows)
            finally:
                self._add(time.perf_counter() - began, time.thread_time() - began_cpu, kernel)
                before = self.rows
                self.rows += len(rows)
                if self.rows // self.window != before // self.window:
                    server = self._server_cpu()
                    self.cpu += server - self._backend_cpu
                    self._backend_cpu = server
                    self.marks.append((self.rows, self.wall, self.cpu, self.kernel, self.written))
                    if self.buffers:
                        hit, read = session.execute(UPSERT_BUFFERS).one()
                        self.buffer_marks.append((self.rows, int(hit), int(read)))

        def before_commit(session: Any) -> None:
            kernel = _thread_kernel()
            commit_began.append((time.perf_counter(), time.thread_time(), kernel))

        def after_commit(session: Any) -> None:
            if commit_began:
                began, began_cpu, kernel = commit_began.pop()
                self._add(time.perf_counter() - began, time.thread_time() - began_cpu, kernel)

        with self.app.app_context():
            state = get_state(self.app)
            session = state.db.session()
            if session.get_bind().dialect.name == "postgresql":
                pid = session.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
                session.commit()
                self._backend = f"/proc/{pid}/stat"
                self._backend_cpu = self._server_cpu()
                if self.buffers:
                    session.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"))
                    session.commit()
            sa.event.listen(session, "before_commit", before_commit)
            sa.event.listen(session, "after_commit", after_commit)
            transactions_service._write = timed_write
            try:
                applied = sync.sync_account_from_stripe(state, stripe_id)
            finally:
                transactions_service._write = write
                sa.event.remove(session, "before_commit", before_commit)
                sa.event.remove(session, "after_commit", after_commit)
            assert applied is not None and applied.sync is not None
            return applied.sync.added

    def per_row(self) -> dict[int, tuple[float, float, float, float]]:
        """Per row in each window, by the rows at its end: wall, CPU and kernel CPU
        microseconds, and bytes written."""
        result = {}
        previous: tuple[int, float, float, float, int] = (0, 0.0, 0.0, 0.0, 0)
        for mark in self.marks:
            rows = mark[0] - previous[0]
            result[mark[0]] = (
                (mark[1] - previous[1]) / rows * 1e6,
                (mark[2] - previous[2]) / rows * 1e6,
                (mark[3] - previous[3]) / rows * 1e6,
                (mark[4] - previous[4]) / rows,
            )
            previous = mark
        return result


def _thread_kernel() -> tuple[float, int]:
    """This thread's kernel CPU seconds and bytes written through system calls so far."""
    with open("/proc/thread-self/io") as io:
        written = next(int(line.split()[1]) for line in io if line.startswith("wchar:"))
    return resource.getrusage(resource.RUSAGE_THREAD).ru_stime, written


UPSERT_BUFFERS = sa.text(
    "SELECT coalesce(sum(shared_blks_hit), 0), coalesce(sum(shared_blks_read), 0) "
    "FROM pg_stat_statements WHERE query LIKE 'INSERT INTO finconn_transaction%' "
    "AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


def statements_loaded(app: Flask) -> bool:
    """Whether the PostgreSQL server of ``app`` loads pg_stat_statements."""
    with app.app_context():
        session = get_state(app).db.session
        loaded = session.execute(sa.text("SHOW shared_preload_libraries")).scalar_one()
        session.rollback()
    return "pg_stat_statements" in str(loaded)


def scale(kind: str, workdir: str, size: int, rounds: int, buffers: bool = False) -> None:
    """The write side's cost per row along one first sync of ``size`` rows, then interleaved.

    The first and last windows of one long sync are minutes apart, and on a shared machine
    the load can change the wall time of a window by half in that time. So after the long
    sync, ``rounds`` times in alternating order: the first sync of a new 10k-row account
    into an empty database, and the same into the database that now holds ``size`` rows.
    Both sides of each pair see the same load; the target is read on their median ratio.
    """
    window = 10_000
    with database(kind, workdir) as url:
        started = time.perf_counter()
        app, _, stripe_id = linked_account(url, size)
        print(f"{kind:10} {size} rows generated in {time.perf_counter() - started:.0f} s")
        if buffers and (kind != "postgresql" or not statements_loaded(app)):
            print(f"{kind:10} --buffers needs PostgreSQL started with pg_stat_statements loaded")
            buffers = False
        clock = WriteClock(app, window, buffers=buffers)
        started = time.perf_counter()
        added = clock.sync(stripe_id)
        total = time.perf_counter() - started
        assert added == size, added
        per_row = clock.per_row()
        points = [min(per_row)]
        n = window * 10
        while n < size:
            points.append(n)
            n *= 10
        points.append(max(per_row))
        for label, index in (("wall", 0), ("CPU", 1)):
            shown = "   ".join(
                f"{r // 1000}k: {per_row[r][index]:.1f}" for r in dict.fromkeys(points)
            )
            growth = per_row[max(per_row)][index] / per_row[min(per_row)][index]
            print(
                f"{kind:10} write side, {label} us per row in the 10k rows ending at   {shown}"
                f"   (last / first {growth:.2f})"
            )
        print(f"{kind:10} first sync of {size} rows in {total:.0f} s")
        if clock.buffer_marks:
            counts = []
            previous = (0, 0, 0)
            for mark in clock.buffer_marks:
                if mark[0] in points:
                    rows = mark[0] - previous[0]
                    hit, read = (mark[1] - previous[1]) / rows, (mark[2] - previous[2]) / rows
                    counts.append(f"{mark[0] // 1000}k: {hit:.2f} hit, {read:.3f} read")
                previous = mark
            print(f"{kind:10} upsert's shared buffers per row:   " + "   ".join(counts))
        pairs: list[tuple[tuple[float, ...], tuple[float, ...]]] = []
        for round_ in range(rounds):
            measured: dict[str, tuple[float, ...]] = {}
            for side in ("empty", "full") if round_ % 2 == 0 else ("full", "empty"):
                measured[side] = one_window(kind, workdir, app if side == "full" else None, round_)
            pairs.append((measured["empty"], measured["full"]))
            print(
                f"{kind:10} round {round_ + 1}: 10k rows into an empty table "
                f"{measured['empty'][0]:.1f} us/row wall, {measured['empty'][1]:.1f} CPU; into "
                f"{size} rows {measured['full'][0]:.1f} wall, {measured['full'][1]:.1f} CPU"
                + (
                    f"; kernel CPU {measured['empty'][2]:.1f} and {measured['full'][2]:.1f}, "
                    f"written {measured['empty'][3] / 1024:.1f} and "
                    f"{measured['full'][3] / 1024:.1f} KiB/row"
                    if kind == "sqlite"
                    else ""
                )
            )
        for label, index in (("wall", 0), ("CPU", 1)) if pairs else ():
            ratios = [full[index] / empty[index] for empty, full in pairs]
            print(
                f"{kind:10} interleaved, {label}: {size} rows / empty, median of {rounds} = "
                f"{statistics.median(ratios):.2f} (target <= 1.3; rounds "
                + " ".join(f"{r:.2f}" for r in ratios)
                + ")"
            )
        if kind == "sqlite" and pairs:
            median = {
                side: [statistics.median(pair[n][i] for pair in pairs) for i in (1, 2, 3)]
                for n, side in enumerate(("empty", f"{size} rows"))
            }
            print(
                f"{kind:10} interleaved, medians per row: "
                + ";  ".join(
                    f"{side}: CPU {cpu:.1f} us of which kernel {kernel:.1f}, "
                    f"{written / 1024:.1f} KiB written"
                    for side, (cpu, kernel, written) in median.items()
                )
            )
        with app.app_context():
            get_state(app).db.engine.dispose()


def one_window(
    kind: str, workdir: str, app: Flask | None, round_: int
) -> tuple[float, float, float, float]:
    """(wall, CPU, kernel CPU) us and bytes written per row of the first sync of a new
    10k-row account.

    Into ``app``'s database, or into a new empty database when ``app`` is None (which then
    holds only the 1,000 rows of the warm-up account).
    """
    window = 10_000

    def run(target: Flask) -> tuple[float, float, float, float]:
        # An untimed 1,000-row account first, so that neither side pays for compiling the
        # statement, preparing it on the connection or loading the server's caches.
        timed = None
        for size, name in ((1_000, "warm"), (window, "timed")):
            account = link_accounts(target, Holder(f"{name}{round_}"), accounts=["checking"])[0]
            sandbox = sandbox_of(target)
            sandbox.set_history_size(account.stripe_id, size)
            sandbox.finish_refreshes(account.stripe_id)
            timed = WriteClock(target, window)
            assert timed.sync(account.stripe_id) == size
        assert timed is not None
        return timed.per_row()[window]

    if app is not None:
        return run(app)
    with database(kind, workdir) as url:
        empty = create_app(
            url, FINCONN_PERMISSIONS=["transactions"], FINCONN_SANDBOX_REFRESH_DELAY=10 * DAY
        )
        try:
            return run(empty)
        finally:
            with empty.app_context():
                get_state(empty).db.engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--only", choices=("sqlite", "postgresql"))
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for a, b, c")
    parser.add_argument(
        "--scale", type=int, default=None, help="only the write cost along a sync of N rows"
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="with --scale: interleaved 10k-row rounds"
    )
    parser.add_argument(
        "--buffers",
        action="store_true",
        help="with --scale on PostgreSQL loading pg_stat_statements: the upsert's buffers",
    )
    args = parser.parse_args()
    stripe.enable_telemetry = False
    kinds = [args.only] if args.only else ["sqlite", "postgresql"]
    if "postgresql" in kinds and not os.environ.get("FINCONN_TEST_POSTGRES_URL"):
        print("postgresql: skipped (FINCONN_TEST_POSTGRES_URL is not set; source the dev env)")
        kinds.remove("postgresql")
    with tempfile.TemporaryDirectory() as workdir:
        if args.scale:
            for kind in kinds:
                scale(kind, workdir, args.scale, args.rounds, args.buffers)
            return
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
