"""POST /webhook under load: gunicorn (2 workers) on loopback, SQLite and PostgreSQL.

Sends 5,000 signed events (10% of them a second delivery of an earlier one, all
shuffled) over 8 connections to three servers started in turn and prints events/s and
p99 latency for each:

  (a) baseline: a bare Flask route that reads the raw body and verifies the signature
      (the same ``flask_finconn.webhooks.verify``), stores nothing;
  (b) our route, ``FINCONN_TASK_QUEUE = "inline"``: store, claim, handle, mark processed;
  (c) our route, ``FINCONN_TASK_QUEUE = "celery"``: store and publish to Redis (the
      acknowledge path, measured alone); then a Celery worker process drains the queue.

The events are of a bench-only type whose handler inserts one row per run into a
``bench_effect`` table in the handler's transaction. After each of (b) and (c) the run
counts events *lost* (sent, but not stored and processed with exactly one effect row) and
events *processed twice* (more than one effect row); both must be 0.

    source /tmp/finconn-dev-env   # FINCONN_TEST_POSTGRES_URL, FINCONN_TEST_REDIS_URL
    .venv/bin/python bench/webhooks.py [--events N] [--connections N] [--databases LIST]

Not part of the test suite: it prints, it does not assert (the exit status is 1 when an
event was lost or processed twice).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
SECRET = "whsec_bench_secret"
EVENT_TYPE = "bench.effect"
THREADS = int(os.environ.get("FINCONN_BENCH_THREADS", "4"))  # per gunicorn worker
PATH = "/finconn/webhook"
EFFECTS = sa.Table(
    "bench_effect",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
)


# --- the servers (built inside gunicorn and Celery processes from environment variables)


def _config() -> tuple[str, str]:
    return os.environ["FINCONN_BENCH_VARIANT"], os.environ["FINCONN_BENCH_DB"]


def build_app(variant: str, database_url: str) -> Any:
    """The app a gunicorn worker serves for one variant."""
    from flask import Flask, jsonify, request

    from flask_finconn.webhooks import verify

    if variant == "baseline":
        app = Flask("bench_baseline")

        @app.post(PATH)
        def webhook() -> Any:
            verify(
                request.get_data(), request.headers.get("Stripe-Signature"), [SECRET], tolerance=300
            )
            return jsonify({"received": True})

        return app

    from flask_finconn.services import handlers
    from flask_finconn.testing import create_app

    app = create_app(
        database_url,
        TESTING=False,
        FINCONN_SANDBOX=False,
        FINCONN_STRIPE_SECRET_KEY="sk_test_bench",
        FINCONN_STRIPE_PUBLISHABLE_KEY="pk_test_bench",
        FINCONN_WEBHOOK_SECRET=SECRET,
        FINCONN_MERCHANT_NAME="Bench",
        FINCONN_TASK_QUEUE="celery" if variant == "queue" else "inline",
    )

    def record_effect(state: Any, event: Any) -> None:
        state.db.session.execute(sa.insert(EFFECTS).values(event_id=event.id))

    handlers.HANDLERS[EVENT_TYPE] = record_effect
    if variant == "queue":
        from flask_finconn.tasks import init_celery

        init_celery(_celery(), app)
    return app


def _celery() -> Any:
    from celery import Celery

    celery = Celery("finconn_bench", broker=os.environ["FINCONN_TEST_REDIS_URL"])
    celery.conf.update(
        task_default_queue=os.environ["FINCONN_BENCH_QUEUE"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return celery


def serve() -> Any:
    """gunicorn's app factory: ``webhooks:serve()``."""
    return build_app(*_config())


def __getattr__(name: str) -> Any:
    """``celery -A webhooks:celery_app``: the worker's Celery, wired to the bench app."""
    if name == "celery_app":
        app = build_app(*_config())
        return app.extensions["celery"]
    raise AttributeError(name)


# --- the load


def _event(n: int) -> dict[str, Any]:
    """A delivery about the size of a real FC account event (about 1.5 KB)."""
    account = {
        "id": f"fca_bench{n:019d}",
        "object": "financial_connections.account",
        "account_holder": {"customer": "cus_bench", "type": "customer"},
        "balance": {
            "as_of": 1_790_000_000,
            "cash": {"available": {"usd": 6000}},
            "current": {"usd": 6000},
            "type": "cash",
        },
        "balance_refresh": {
            "last_attempted_at": 1_790_000_000,
            "next_refresh_available_at": 1_790_003_600,
            "status": "succeeded",
        },
        "category": "cash",
        "created": 1_789_000_000,
        "display_name": "Sample Checking Account",
        "institution_name": "StripeBank",
        "last4": "6789",
        "livemode": False,
        "ownership": None,
        "ownership_refresh": None,
        "permissions": ["balances", "transactions"],
        "status": "active",
        "status_details": None,
        "subcategory": "checking",
        "subscriptions": ["transactions"],
        "supported_payment_method_types": ["us_bank_account"],
        "transaction_refresh": {
            "id": f"fctxnref_{n:020d}",
            "last_attempted_at": 1_790_000_000,
            "next_refresh_available_at": 1_790_086_400,
            "status": "succeeded",
        },
    }
    return {
        "id": "evt_" + uuid.uuid4().hex[:24],
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "data": {"object": account},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": EVENT_TYPE,
    }


def deliveries(count: int, seed: int = 6) -> tuple[list[tuple[bytes, str]], set[str]]:
    """``count`` signed deliveries, 10% of them repeats of earlier ones, shuffled."""
    from flask_finconn.webhooks import sign

    rng = random.Random(seed)
    unique = count - count // 10
    first = []
    ids = set()
    for n in range(unique):
        event = _event(n)
        ids.add(event["id"])
        body = json.dumps(event, separators=(",", ":")).encode()
        first.append((body, sign(body, SECRET)))
    sent = first + rng.sample(first, count - unique)
    rng.shuffle(sent)
    return sent, ids


def _client(port: int, work: list[tuple[bytes, str]], start: Any, out: Any) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, failures = [], 0
    start.wait()
    began = time.monotonic()
    for body, header in work:
        t0 = time.perf_counter()
        # A connection per delivery: kept-alive ones would all stick to whichever gunicorn
        # worker accepted them first and leave the other one idle.
        connection.request(
            "POST",
            PATH,
            body=body,
            headers={
                "Content-Type": "application/json",
                "Stripe-Signature": header,
                "Connection": "close",
            },
        )
        response = connection.getresponse()
        response.read()
        latencies.append(time.perf_counter() - t0)
        failures += response.status != 200
        connection.close()
    out.put((began, time.monotonic(), latencies, failures))


@dataclass
class Load:
    seconds: float
    latencies: list[float]
    failures: int

    def merge(self, other: Load) -> Load:
        return Load(
            self.seconds + other.seconds,
            self.latencies + other.latencies,
            self.failures + other.failures,
        )

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    @property
    def p99_ms(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000


def drive(port: int, sent: list[tuple[bytes, str]], connections: int) -> Load:
    """Send every delivery over ``connections`` client processes (one connection each)."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(connections)
    out = context.Queue()
    shares = [sent[i::connections] for i in range(connections)]
    workers = [context.Process(target=_client, args=(port, share, start, out)) for share in shares]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=600) for _ in workers]
    for worker in workers:
        worker.join()
    began = min(r[0] for r in results)
    ended = max(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    return Load(ended - began, latencies, sum(r[3] for r in results))


# --- orchestration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database(kind: str, workdir: Path) -> AbstractContextManager[str]:
    """A fresh, empty database for one variant, dropped afterwards."""
    from flask_finconn.testing import throwaway_database

    if kind == "sqlite":
        return throwaway_database(f"sqlite:///{workdir}/bench.sqlite3")
    return throwaway_database(os.environ["FINCONN_TEST_POSTGRES_URL"])


@contextmanager
def process(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as output:
        proc = subprocess.Popen(args, env=env, cwd=BENCH_DIR, stdout=output, stderr=output)
        try:
            yield proc
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"gunicorn did not listen on {port}; see {log}")


def prepare(database_url: str) -> None:
    """Create the extension's tables and the effect table before the workers start."""
    from flask_finconn.testing import create_app

    app = create_app(database_url)
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
        EFFECTS.create(engine)
        if engine.dialect.name == "sqlite":
            with engine.begin() as conn:  # readers never block the writer
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()


def audit(database_url: str, ids: set[str], timeout: float) -> tuple[int, int]:
    """(lost, processed twice), waiting up to ``timeout`` s for a queue to drain."""
    engine = sa.create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            with engine.connect() as conn:
                processed = set(
                    conn.execute(
                        sa.text(
                            "SELECT id FROM finconn_webhook_event "
                            "WHERE status = 'processed' AND type = :t"
                        ),
                        {"t": EVENT_TYPE},
                    ).scalars()
                )
                counts: dict[str, int] = dict(
                    conn.execute(
                        sa.text("SELECT event_id, COUNT(*) FROM bench_effect GROUP BY event_id")
                    ).all()
                )
            done = ids <= processed
            if done or time.monotonic() > deadline:
                lost = len([i for i in ids if i not in processed or counts.get(i, 0) < 1])
                twice = len([i for i, n in counts.items() if n > 1])
                return lost, twice
            time.sleep(0.25)
    finally:
        engine.dispose()


@dataclass
class Server:
    variant: str
    url: str
    port: int
    env: dict[str, str]


@contextmanager
def server(variant: str, kind: str, workdir: Path) -> Iterator[Server]:
    """One variant's database and its gunicorn (2 sync workers), warmed up."""
    with database(kind, workdir) as url:
        if variant != "baseline":
            prepare(url)
        port = _free_port()
        env = {
            **os.environ,
            "FINCONN_BENCH_VARIANT": variant,
            "FINCONN_BENCH_DB": url,
            "FINCONN_BENCH_QUEUE": f"finconn-bench-{uuid.uuid4().hex[:8]}",
            "PYTHONPATH": f"{BENCH_DIR}{os.pathsep}{ROOT}",
        }
        gunicorn = [
            str(VENV_BIN / "gunicorn"),
            "--workers",
            "2",
            "--worker-class",
            "gthread",
            "--threads",
            str(THREADS),
            "--bind",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            "webhooks:serve()",
        ]
        log = workdir / f"{variant}-{kind}.log"
        with process(gunicorn, env, log) as proc:
            _wait_for_port(port, proc, log)
            warm, _ = deliveries(100, seed=1)
            drive(port, warm, 8)  # imports, pools, first connections
            yield Server(variant, url, port, env)


def run_database(
    kind: str, workdir: Path, events: int, connections: int, rounds: int
) -> dict[str, tuple[Load, int | None, int | None, list[float]]]:
    """All three variants on one kind of database, in interleaved rounds.

    The three servers run side by side and each round sends a slice of every variant's
    deliveries to each in turn, so a busy machine slows all three alike; the ratio of
    each round is kept and the median reported.
    """
    sent_inline, ids_inline = deliveries(events, seed=2)
    sent_queue, ids_queue = deliveries(events, seed=3)
    with (
        server("baseline", kind, workdir) as base,
        server("inline", kind, workdir) as inline,
        server("queue", kind, workdir) as queue,
    ):
        loads: dict[str, Load] = {}
        ratios: dict[str, list[float]] = {"inline": [], "queue": []}
        plan = [(base, sent_inline), (inline, sent_inline), (queue, sent_queue)]
        for r in range(rounds):
            rates = {}
            for srv, sent in plan:
                load = drive(srv.port, sent[r::rounds], connections)
                rates[srv.variant] = load.rate
                loads[srv.variant] = (
                    loads[srv.variant].merge(load) if srv.variant in loads else load
                )
            for variant in ratios:
                ratios[variant].append(rates[variant] / rates["baseline"])
        lost_inline, twice_inline = audit(inline.url, ids_inline, timeout=10)
        celery = [
            str(VENV_BIN / "celery"),
            "-A",
            "webhooks:celery_app",
            "worker",
            "--pool",
            "threads",
            "--concurrency",
            "4",
            "--loglevel",
            "warning",
        ]
        # The acknowledge path was measured alone (workers run on other machines in
        # production); now a worker drains the queue so the audit sees every event.
        with process(celery, queue.env, workdir / f"worker-{kind}.log"):
            lost_queue, twice_queue = audit(queue.url, ids_queue, timeout=300)
    return {
        "baseline": (loads["baseline"], None, None, []),
        "inline": (loads["inline"], lost_inline, twice_inline, ratios["inline"]),
        "queue": (loads["queue"], lost_queue, twice_queue, ratios["queue"]),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    for key in ("FINCONN_TEST_POSTGRES_URL", "FINCONN_TEST_REDIS_URL"):
        if key not in os.environ:
            print(f"Set {key} (source /tmp/finconn-dev-env) first.", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="finconn-bench-"))
    bad = False
    labels = {
        "baseline": "(a) verify only",
        "inline": "(b) store + process inline",
        "queue": "(c) store + queue (ack)",
    }
    print(
        f"{args.events} signed events per variant (10% duplicates, shuffled), "
        f"{args.connections} connections, gunicorn --workers 2 --threads {THREADS} on loopback, "
        f"{args.rounds} interleaved rounds"
    )
    try:
        for kind in args.databases.split(","):
            results = run_database(kind, workdir, args.events, args.connections, args.rounds)
            print(f"\n{kind}:")
            header = f"{'variant':<28}{'events/s':>10}{'p99 ms':>9}{'non-200':>9}"
            print(f"  {header}{'lost':>6}{'twice':>7}")
            for variant, (load, lost, twice, _) in results.items():
                bad |= bool(lost) or bool(twice) or bool(load.failures)
                print(
                    f"  {labels[variant]:<28}{load.rate:>10.0f}{load.p99_ms:>9.1f}"
                    f"{load.failures:>9}{'-' if lost is None else lost:>6}"
                    f"{'-' if twice is None else twice:>7}"
                )
            b = statistics.median(results["inline"][3])
            c = statistics.median(results["queue"][3])
            print(f"  ratios (median of rounds): b/a = {b:.2f}, c/a = {c:.2f} (target c/a >= 0.5)")
    finally:
        if bad:
            print(f"\nLogs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
