"""``flask finconn sync --all`` of a fleet: real Celery workers, one sandbox over HTTP.

Seeds ``--accounts`` linked accounts of ``--transactions`` transactions each (host tables
on PostgreSQL, Redis for the broker, the locks and the request budget), serves the
sandbox with gunicorn (one worker process, so one rate counter), and runs the first sync
of every account with 1, then 2, Celery worker processes (solo pool). The sandbox answers
429 above ``--rate`` requests a second (its ``rate_limit`` fault, a sliding 1 s window as
Stripe's); the workers share one budget of ``--rate`` a second through Redis.

Printed per run: accounts/s and rows/s from the command's start to the run's end; the
most requests the sandbox served in any 1 s window (never above the limit) and the most
that arrived at it (429s included); the 429s the workers absorbed; failed accounts. Then
the chaos run: two workers, one killed with SIGKILL once half the accounts have an
outcome; ``sync --all`` run again resumes the run; then SQL counts the rows of each
account: no account missed, no row twice.

    source scripts/_services.sh; start_postgres; start_redis   # in a bash script
    .venv/bin/python bench/fleet_sync.py [--accounts 1000] [--transactions 1000]
                                         [--rate 25] [--lock-ttl 10] [--no-chaos]

This module is also the workers' Celery app (``celery -A fleet_sync worker``) and the
sandbox's gunicorn factory (``fleet_sync:serve_sandbox()``), configured from the
environment the bench gives those processes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import redis as redis_lib
import sqlalchemy as sa
import stripe
from celery import Celery
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Account, Transaction
from flask_finconn.ratelimit import RateLimitedHTTPClient, RedisBucket
from flask_finconn.sandbox import Sandbox
from flask_finconn.services import fleet
from flask_finconn.stripe_api import API_VERSION, StripeAPI
from flask_finconn.tasks import init_celery
from flask_finconn.testing import create_app, link_accounts, sandbox_of, throwaway_database

BENCH_DIR = Path(__file__).resolve().parent
VENV_BIN = Path(sys.executable).parent
METER_PATH = "/_bench/meter"
KINDS = ["checking", "savings"]  # accounts linked per holder


# --- the sandbox process ----------------------------------------------------------------


class Meter:
    """Counts the API requests that reach the sandbox, 429s included, in a sliding 1 s
    window (the window the sandbox's own ``rate_limit`` uses)."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._arrived: deque[float] = deque()
        self._lock = threading.Lock()
        self.peak = 0
        self.requests = 0

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == METER_PATH:
            faults = self.sandbox.faults
            body = json.dumps(
                {
                    "arrived_peak": self.peak,
                    "served_peak": faults.peak_rate,
                    "rate_limited": faults.rate_limited,
                    "requests": self.requests,
                }
            ).encode()
            start_response("200 OK", [("Content-Type", "application/json")])
            return [body]
        if path.startswith("/v1/") and not path.startswith("/v1/test_helpers"):
            now = time.monotonic()
            with self._lock:
                arrived = self._arrived
                while arrived and arrived[0] <= now - 1.0:
                    arrived.popleft()
                arrived.append(now)
                self.peak = max(self.peak, len(arrived))
                self.requests += 1
        answer: Iterable[bytes] = self.sandbox.wsgi_app(environ, start_response)
        return answer


def serve_sandbox() -> Any:
    """gunicorn's factory: the sandbox on ``FLEET_SANDBOX``, 429 above ``FLEET_RATE``."""
    sandbox = Sandbox(os.environ["FLEET_SANDBOX"])
    sandbox.faults.rate_limit = float(os.environ["FLEET_RATE"])
    return Meter(sandbox)


# --- the worker processes ---------------------------------------------------------------


def point_at_served_sandbox(app: Flask, base_url: str, rate: float, bucket_key: str) -> None:
    """Send the app's Stripe requests to the sandbox at ``base_url`` through one Redis
    budget of ``rate`` a second shared by every worker."""
    redis_url = get_state(app).settings.redis_url or ""
    bucket = RedisBucket(redis_lib.Redis.from_url(redis_url), bucket_key, rate, burst=1)
    client = stripe.StripeClient(
        Sandbox.api_key,
        stripe_version=API_VERSION,
        base_addresses={"api": base_url},
        http_client=RateLimitedHTTPClient(stripe.new_default_http_client(), bucket),
        max_network_retries=2,
    )
    get_state(app).stripe = StripeAPI(client, livemode=False)


def make_app(database_url: str, redis_url: str, **config: Any) -> Flask:
    return create_app(
        database_url,
        FINCONN_TASK_QUEUE="celery",
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_REDIS_URL=redis_url,
        **config,
    )


def make_celery(app: Flask, redis_url: str, queue: str) -> Celery:
    celery = Celery("finconn_fleet_bench", broker=redis_url)
    celery.conf.update(
        task_default_queue=queue,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    init_celery(celery, app)
    return celery


def _worker_celery() -> Celery | None:
    env = os.environ
    if "FLEET_DATABASE_URL" not in env:
        return None  # the bench itself, or gunicorn
    app = make_app(
        env["FLEET_DATABASE_URL"],
        env["FLEET_REDIS_URL"],
        FINCONN_SYNC_LOCK_TTL=float(env["FLEET_LOCK_TTL"]),
    )
    point_at_served_sandbox(
        app, env["FLEET_SANDBOX_URL"], float(env["FLEET_RATE"]), env["FLEET_BUCKET"]
    )
    return make_celery(app, env["FLEET_REDIS_URL"], env["FLEET_QUEUE"])


celery = _worker_celery()


# --- the bench --------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def started(
    command: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as output:
        proc = subprocess.Popen(command, env=env, cwd=BENCH_DIR, stdout=output, stderr=output)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@contextmanager
def served_sandbox(database: str, rate: float, log: Path) -> Iterator[str]:
    port = _free_port()
    command = [
        str(VENV_BIN / "gunicorn"),
        "--workers=1",
        "--worker-class=gthread",
        "--threads=4",
        f"--bind=127.0.0.1:{port}",
        "fleet_sync:serve_sandbox()",
    ]
    env = {**os.environ, "FLEET_SANDBOX": database, "FLEET_RATE": str(rate)}
    env.pop("FLEET_DATABASE_URL", None)
    with started(command, env, log) as proc:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"


def meter(base_url: str) -> dict[str, int]:
    import requests

    answer: dict[str, int] = requests.get(base_url + METER_PATH, timeout=10).json()
    return answer


def seed(app: Flask, accounts: int, transactions: int) -> dict[str, str]:
    """Link ``accounts`` accounts with ``transactions`` rows each; {account id: Stripe id}."""
    started_at = time.perf_counter()
    sandbox = sandbox_of(app)
    sandbox.default_history_size = transactions  # each account is linked with its size
    linked: list[Any] = []
    holders = (accounts + len(KINDS) - 1) // len(KINDS)
    for i in range(holders):
        kinds = KINDS[: min(len(KINDS), accounts - len(linked))]
        linked += link_accounts(app, Holder(f"holder{i:05d}"), accounts=kinds)
    linking = time.perf_counter() - started_at
    for account in linked:
        sandbox.finish_refreshes(account.stripe_id)
    print(
        f"seeded {len(linked)} accounts x {transactions} transactions: linking "
        f"{linking:.1f} s, histories {time.perf_counter() - started_at - linking:.1f} s"
    )
    return {a.id: a.stripe_id for a in linked}


def reset(app: Flask) -> None:
    """Forget every synced row and cursor: the next sync is every account's first."""
    with app.app_context():
        session = get_state(app).db.session
        session.execute(sa.delete(Transaction))
        session.execute(sa.update(Account).values(transactions_cursor=None, transactions_sync=None))
        session.commit()


def counts(app: Flask) -> tuple[dict[str, int], int, int]:
    """Rows per account, all rows, distinct transaction ids (SQL)."""
    with app.app_context():
        session = get_state(app).db.session
        per_account = dict(
            session.execute(
                sa.select(Transaction.account_id, sa.func.count()).group_by(Transaction.account_id)
            ).all()
        )
        total, distinct = session.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(Transaction.id)))
        ).one()
        session.commit()
    return {str(k): int(v) for k, v in per_account.items()}, int(total), int(distinct)


class Fleet:
    """One scenario's processes: the served sandbox and the worker processes."""

    def __init__(self, args: argparse.Namespace, app: Flask, db_url: str, workdir: Path) -> None:
        self.args, self.app, self.db_url, self.workdir = args, app, db_url, workdir
        self.redis_url = os.environ["FINCONN_TEST_REDIS_URL"]
        self.redis = redis_lib.Redis.from_url(self.redis_url)
        self.log = workdir / "processes.log"

    @contextmanager
    def running(self, workers: int) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
        queue = f"finconn-bench-{uuid.uuid4().hex[:8]}"
        celery_app = make_celery(self.app, self.redis_url, queue)
        self.app.extensions["celery"] = celery_app  # this scenario's queue, not the last one's
        with ExitStack() as stack:
            url = stack.enter_context(served_sandbox(self.args.sandbox, self.args.rate, self.log))
            env = {
                **os.environ,
                "FLEET_DATABASE_URL": self.db_url,
                "FLEET_REDIS_URL": self.redis_url,
                "FLEET_SANDBOX_URL": url,
                "FLEET_QUEUE": queue,
                "FLEET_RATE": str(self.args.rate),
                "FLEET_BUCKET": f"finconn:bench-rate:{queue}",
                "FLEET_LOCK_TTL": str(self.args.lock_ttl),
            }
            procs = []
            for n in range(workers):
                command = [
                    str(VENV_BIN / "celery"), "-A", "fleet_sync", "worker", "--pool=solo",
                    f"--hostname=bench{n}@%h", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "--loglevel=WARNING",
                ]  # fmt: skip
                procs.append(stack.enter_context(started(command, env, self.log)))
            deadline = time.monotonic() + 120
            while len(celery_app.control.ping(timeout=1.0)) < workers:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"The workers did not start:\n{self.log.read_text()}")
            yield url, procs

    def sync_all(self, *args: str) -> tuple[int, str]:
        result = self.app.test_cli_runner().invoke(args=["finconn", "sync", "--all", *args])
        return result.exit_code, result.output

    def measure(self, workers: int) -> None:
        reset(self.app)
        with self.running(workers) as (url, _):
            started_at = time.perf_counter()
            code, output = self.sync_all("--timeout", "86400")
            elapsed = time.perf_counter() - started_at
            seen = meter(url)
        run_id = output.split()[1].rstrip(":")
        status = fleet.summary(self.redis, run_id)
        _, total, _ = counts(self.app)
        print(
            f"{workers} worker(s): {status.synced} synced, {status.failed} failed in "
            f"{elapsed:.1f} s: {status.synced / elapsed:.1f} accounts/s, "
            f"{total / elapsed:,.0f} rows/s; sandbox peak {seen['served_peak']} req/s served "
            f"({seen['arrived_peak']} arrived) against a limit of {self.args.rate:g}; "
            f"{seen['rate_limited']} 429s absorbed of {seen['requests']} requests (exit {code})"
        )
        for failure in status.failures[:5]:
            print(f"  failed: {failure}")

    def chaos(self, expected: dict[str, int]) -> None:
        reset(self.app)
        with self.running(2) as (url, procs):
            started_at = time.perf_counter()
            code, output = self.sync_all("--timeout", "0")
            run_id = output.split()[1].rstrip(":")
            half = len(expected) // 2
            while True:
                status = fleet.summary(self.redis, run_id)
                if status.synced + status.failed >= half:
                    break
                time.sleep(0.05)
            os.kill(procs[0].pid, signal.SIGKILL)
            procs[0].wait()
            killed_at = status.synced + status.failed
            # The other worker carries on; once the run has been idle for the lock's TTL
            # (only the killed worker's accounts are left), ``sync --all`` resumes it.
            resumed = ""
            while not resumed:
                time.sleep(1.0)
                code, output = self.sync_all("--timeout", "0")
                resumed = next((ln for ln in output.splitlines() if "resuming" in ln), "")
            code, output = self.sync_all("--timeout", "86400")
            elapsed = time.perf_counter() - started_at
            seen = meter(url)
        queued_again = resumed.split(";")[1].strip().rstrip(".")
        status = fleet.summary(self.redis, run_id)
        per_account, total, distinct = counts(self.app)
        missed = sum(1 for a, n in expected.items() if per_account.get(a, 0) != n)
        print(
            f"chaos, 2 workers, one killed (SIGKILL) at {killed_at}/{len(expected)} outcomes; "
            f"{queued_again}; finished in {elapsed:.1f} s (exit {code}): "
            f"{status.synced} synced, {status.failed} failed; accounts missed {missed}; "
            f"duplicate rows {total - distinct}; rows {total:,} of {sum(expected.values()):,}; "
            f"sandbox peak {seen['served_peak']} req/s served ({seen['arrived_peak']} arrived) "
            f"against {self.args.rate:g}; {seen['rate_limited']} 429s absorbed"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--transactions", type=int, default=1000)
    parser.add_argument(
        "--rate", type=float, default=25.0, help="requests a second (Stripe's limit per endpoint)"
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--lock-ttl", type=float, default=10.0, help="FINCONN_SYNC_LOCK_TTL")
    parser.add_argument("--no-chaos", action="store_true")
    args = parser.parse_args()
    for name in ("FINCONN_TEST_POSTGRES_URL", "FINCONN_TEST_REDIS_URL"):
        if not os.environ.get(name):
            sys.exit(f"{name} is not set: start PostgreSQL and Redis (see bench/README.md).")
    print(f"load average {os.getloadavg()[0]:.1f} at the start")
    with (
        tempfile.TemporaryDirectory() as tmp,
        throwaway_database(os.environ["FINCONN_TEST_POSTGRES_URL"]) as db_url,
    ):
        workdir = Path(tmp)
        args.sandbox = str(workdir / "sandbox.sqlite3")
        app = make_app(
            db_url,
            os.environ["FINCONN_TEST_REDIS_URL"],
            FINCONN_SANDBOX_DATABASE=args.sandbox,
            FINCONN_SANDBOX_REFRESH_DELAY=86400,
            FINCONN_SYNC_LOCK_TTL=args.lock_ttl,  # as the workers': when a run is idle
        )
        stripe_ids = seed(app, args.accounts, args.transactions)
        sandbox_of(app).close()
        bench = Fleet(args, app, db_url, workdir)
        for workers in args.workers:
            bench.measure(workers)
        if not args.no_chaos:
            bench.chaos({a: args.transactions for a in stripe_ids})
        print(f"load average {os.getloadavg()[0]:.1f} at the end")
        with app.app_context():
            get_state(app).db.engine.dispose()


if __name__ == "__main__":
    main()
