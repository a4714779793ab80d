"""POST /webhook under load: gunicorn (2 workers) on loopback, SQLite and PostgreSQL.

Sends 5,000 signed events (10% of them a second delivery of an earlier one, all
shuffled) over 8 connections to four servers and prints events/s, p50 and p99 latency:

  (a) verify only: a bare Flask route that reads the raw body and verifies the signature
      (the same ``flask_finconn.webhooks.verify``), stores nothing;
  (h) hand-written: the minimal correct route without the extension:
      ``stripe.Webhook.construct_event``, then in one transaction one ``INSERT ... ON
      CONFLICT DO NOTHING`` of the event and, when it was new, the same effect;
  (b) our route, ``FINCONN_TASK_QUEUE = "inline"``: in one transaction, insert the event
      into the durable ledger (``ON CONFLICT DO NOTHING``, marked processed) and run the
      handler; one commit (a failure is recorded in a second transaction);
  (c) our route, ``FINCONN_TASK_QUEUE = "celery"``: store and publish to Redis (the
      acknowledge path, measured alone).

The four servers run side by side; each round sends a slice of the deliveries to each in
turn, in an order that rotates every round, so a busy machine slows all alike; the
median of the rounds' ratios is reported. Targets: b/h >= 0.9; c/a >= 0.6 on PostgreSQL.

Then a duplicate burst on (h), (b) and (c): 100 events, each delivered 8 times at once
(8 processes released together by a barrier for every event). Then Celery workers drain
(c)'s queue: one worker process, then two (each ``--pool threads --concurrency 4``) on a
fresh batch, and the drain rate is events processed per second.

``--chaos N`` runs a chaos drain instead: N events queued on (c), a Celery worker killed
with SIGKILL once a fifth of them are processed, a second worker started, and the sweep
run as beat runs it once the dead worker's claims are past ``STUCK_AFTER``; it prints how
many were processed at the kill, how many the sweep queued again, and lost / twice.

The events are of a bench-only type whose handler inserts one row per run into a
``bench_effect`` table in the handler's transaction (it is one of the handlers that run in
the event's own transaction, ``handlers.IN_EVENT_TRANSACTION``). The audit counts events *lost*
(sent, but not stored and processed with exactly one effect row) and events *processed
twice* (more than one effect row); both must be 0.

    source /tmp/finconn-dev-env   # FINCONN_TEST_POSTGRES_URL, FINCONN_TEST_REDIS_URL
    .venv/bin/python bench/webhooks.py [--events N] [--connections N] [--databases LIST]
                                       [--rounds N] [--drain N] [--chaos N]

Not part of the test suite: it prints, it does not assert (the exit status is 1 when an
event was lost or processed twice).
"""

from __future__ import annotations

import argparse
import contextlib
import os
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
from webhook_load import EVENT_TYPE, PATH, SECRET, Load, burst, deliveries, drive

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
THREADS = int(os.environ.get("FINCONN_BENCH_THREADS", "4"))  # per gunicorn worker
EFFECTS = sa.Table(
    "bench_effect",
    sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("event_id", sa.String(64), nullable=False),
)
HAND_WRITTEN = sa.Table(
    "bench_stripe_event",
    sa.MetaData(),
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("type", sa.String(128), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
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

    if variant == "hand-written":
        return hand_written_app(database_url)

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
    # It only writes through the session, like the hand-written route's effect: inline, it
    # runs in the event's own transaction.
    handlers.IN_EVENT_TRANSACTION.add(record_effect)
    if variant == "queue":
        from flask_finconn.tasks import init_celery

        init_celery(_celery(), app)
    return app


def hand_written_app(database_url: str) -> Any:
    """The minimal correct webhook route a developer would write without the extension."""
    import stripe
    from flask import Flask, jsonify, request
    from sqlalchemy.dialects import postgresql, sqlite

    app = Flask("bench_hand_written")
    engine = sa.create_engine(database_url, pool_size=THREADS)
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    # RETURNING says whether this delivery stored the event (a duplicate returns nothing).
    store = (
        insert(HAND_WRITTEN)
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(HAND_WRITTEN.c.id)
    )

    @app.post(PATH)
    def webhook() -> Any:
        payload = request.get_data()
        try:
            event = stripe.Webhook.construct_event(
                payload, request.headers.get("Stripe-Signature", ""), SECRET
            )
        except (ValueError, stripe.SignatureVerificationError):
            return jsonify({"error": "Bad signature."}), 400
        with engine.begin() as conn:
            new = conn.execute(
                store, {"id": event.id, "type": event.type, "payload": payload.decode()}
            ).first()
            if new is not None and event.type == EVENT_TYPE:
                conn.execute(sa.insert(EFFECTS).values(event_id=event.id))
        return jsonify({"received": True})

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
    """Create the extension's tables and the bench's before the workers start."""
    from flask_finconn.testing import create_app

    app = create_app(database_url)
    with app.app_context():
        engine = app.extensions["sqlalchemy"].engine
        EFFECTS.create(engine)
        HAND_WRITTEN.create(engine)
        if engine.dialect.name == "sqlite":
            with engine.begin() as conn:  # readers never block the writer
                conn.exec_driver_sql("PRAGMA journal_mode=WAL")
        engine.dispose()


def processed_query(variant: str) -> sa.TextClause:
    """The ids of the events a variant has stored and processed."""
    if variant == "hand-written":
        return sa.text("SELECT id FROM bench_stripe_event WHERE type = :t")
    return sa.text("SELECT id FROM finconn_webhook_event WHERE status = 'processed' AND type = :t")


def audit(database_url: str, variant: str, ids: set[str], timeout: float) -> tuple[int, int, float]:
    """(lost, processed twice, seconds), waiting up to ``timeout`` s for a queue to drain."""
    engine = sa.create_engine(database_url)
    started = time.monotonic()
    deadline = started + timeout
    try:
        while True:
            with engine.connect() as conn:
                processed = set(conn.execute(processed_query(variant), {"t": EVENT_TYPE}).scalars())
                counts: dict[str, int] = dict(
                    conn.execute(
                        sa.text("SELECT event_id, COUNT(*) FROM bench_effect GROUP BY event_id")
                    ).all()
                )
            done = ids <= processed
            if done or time.monotonic() > deadline:
                lost = len([i for i in ids if i not in processed or counts.get(i, 0) < 1])
                twice = len([i for i in ids if counts.get(i, 0) > 1])
                return lost, twice, time.monotonic() - started
            time.sleep(0.05)
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


@dataclass
class Outcome:
    load: Load
    ratios: list[float]
    lost: int | None = None
    twice: int | None = None
    burst_lost: int | None = None
    burst_twice: int | None = None


LABELS = {
    "baseline": "(a) verify only",
    "hand-written": "(h) hand-written",
    "inline": "(b) store + process inline",
    "queue": "(c) store + queue (ack)",
}


def celery_worker(env: dict[str, str], workdir: Path, name: str) -> Any:
    """One Celery worker process (4 threads) on the queue variant's app."""
    command = [
        str(VENV_BIN / "celery"),
        "-A",
        "webhooks:celery_app",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "4",
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        "warning",
    ]
    return process(command, env, workdir / f"{name}.log")


def drain(queue: Server, ids: set[str], workers: int, workdir: Path) -> tuple[float, int, int]:
    """Start ``workers`` Celery workers on a filled queue: (events/s, lost, twice).

    The rate counts from the first processed event, so worker start-up is left out.
    """
    engine = sa.create_engine(queue.url)
    query = processed_query("queue")

    def done() -> int:
        with engine.connect() as conn:
            return len(ids & set(conn.execute(query, {"t": EVENT_TYPE}).scalars()))

    with contextlib.ExitStack() as stack:
        for n in range(workers):
            stack.enter_context(celery_worker(queue.env, workdir, f"drain{workers}-{n}"))
        deadline = time.monotonic() + 600
        while (first := done()) == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        began = time.monotonic()
        lost, twice, _ = audit(queue.url, "queue", ids, timeout=600)
        seconds = time.monotonic() - began
    engine.dispose()
    return (len(ids) - first) / seconds, lost, twice


def sweep_later(queue: Server) -> int:
    """Beat's sweep as it runs once a dead worker's claims are older than ``STUCK_AFTER``:
    what it held is put back and queued again. Returns how many events it queued."""
    from datetime import timedelta

    from flask_finconn import get_state
    from flask_finconn.models import utcnow
    from flask_finconn.services import events

    os.environ["FINCONN_BENCH_QUEUE"] = queue.env["FINCONN_BENCH_QUEUE"]
    app = build_app("queue", queue.url)
    with app.app_context():
        state = get_state(app)
        due = events.sweep(state, now=utcnow() + events.STUCK_AFTER + timedelta(seconds=1))
        state.queue.enqueue(app, due)  # published by this process's publisher thread
    return len(due)


def chaos(kind: str, workdir: Path, count: int) -> tuple[int, int, int, int, int]:
    """Kill a draining worker with SIGKILL: (processed at the kill, swept, lost, twice, non-200)."""
    sent, ids = deliveries(count, seed=5)
    with server("queue", kind, workdir) as queue:
        failures = drive(queue.port, sent, 8).failures
        engine = sa.create_engine(queue.url)
        query = processed_query("queue")

        def done() -> int:
            with engine.connect() as conn:
                return len(ids & set(conn.execute(query, {"t": EVENT_TYPE}).scalars()))

        with celery_worker(queue.env, workdir, "chaos-killed") as first:
            deadline = time.monotonic() + 600
            while done() < len(ids) // 5 and time.monotonic() < deadline:
                time.sleep(0.01)
            first.kill()  # SIGKILL: no warm shutdown, no acknowledgement
            first.wait()
        at_kill = done()
        engine.dispose()
        with celery_worker(queue.env, workdir, "chaos-second"):
            swept = sweep_later(queue)
            lost, twice, _ = audit(queue.url, "queue", ids, timeout=600)
    return at_kill, swept, lost, twice, failures


def run_database(
    kind: str, workdir: Path, events: int, connections: int, rounds: int, drained: int
) -> tuple[dict[str, Outcome], list[tuple[int, float, int, int]]]:
    """All four variants on one kind of database, in rotating rounds, then bursts, drains."""
    sent, ids = deliveries(events, seed=2)
    with (
        server("baseline", kind, workdir) as base,
        server("hand-written", kind, workdir) as hand,
        server("inline", kind, workdir) as inline,
        server("queue", kind, workdir) as queue,
    ):
        plan = [base, hand, inline, queue]
        loads: dict[str, Load] = {}
        rates: dict[str, list[float]] = {srv.variant: [] for srv in plan}
        for r in range(rounds):
            for srv in plan[r % len(plan) :] + plan[: r % len(plan)]:
                load = drive(srv.port, sent[r::rounds], connections)
                rates[srv.variant].append(load.rate)
                loads[srv.variant] = (
                    loads[srv.variant].merge(load) if srv.variant in loads else load
                )
        outcomes = {
            "baseline": Outcome(loads["baseline"], []),
            "hand-written": Outcome(
                loads["hand-written"],
                [b / a for b, a in zip(rates["hand-written"], rates["baseline"], strict=True)],
            ),
            "inline": Outcome(
                loads["inline"],
                [b / h for b, h in zip(rates["inline"], rates["hand-written"], strict=True)],
            ),
            "queue": Outcome(
                loads["queue"],
                [c / a for c, a in zip(rates["queue"], rates["baseline"], strict=True)],
            ),
        }
        burst_ids: dict[str, set[str]] = {}
        for srv in (hand, inline, queue):
            burst_ids[srv.variant], failures = burst(srv.port, 100, 8)
            outcomes[srv.variant].load.failures += failures
        for srv in (hand, inline):
            outcome = outcomes[srv.variant]
            outcome.lost, outcome.twice, _ = audit(srv.url, srv.variant, ids, timeout=10)
            outcome.burst_lost, outcome.burst_twice, _ = audit(
                srv.url, srv.variant, burst_ids[srv.variant], timeout=10
            )
        # The acknowledge path was measured alone (workers run on other machines in
        # production); now workers drain what it queued, then a fresh batch with two.
        drains = []
        queued = ids | burst_ids["queue"]
        for workers, batch_seed in ((1, None), (2, 4)):
            if batch_seed is not None:
                more, queued = deliveries(drained, seed=batch_seed)
                outcomes["queue"].load.failures += drive(queue.port, more, connections).failures
            rate, lost, twice = drain(queue, queued, workers, workdir)
            drains.append((workers, rate, lost, twice))
        outcome = outcomes["queue"]
        outcome.lost, outcome.twice, _ = audit(queue.url, "queue", ids, timeout=10)
        outcome.burst_lost, outcome.burst_twice, _ = audit(
            queue.url, "queue", burst_ids["queue"], timeout=10
        )
    return outcomes, drains


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--drain", type=int, default=2000, help="events for the 2-worker drain")
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--chaos", type=int, default=0, help="instead: N events, a draining worker killed"
    )
    args = parser.parse_args()
    for key in ("FINCONN_TEST_POSTGRES_URL", "FINCONN_TEST_REDIS_URL"):
        if key not in os.environ:
            print(f"Set {key} (source /tmp/finconn-dev-env) first.", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="finconn-bench-"))
    bad = False
    if not args.chaos:
        print(
            f"{args.events} signed events per variant (10% duplicates, shuffled), "
            f"{args.connections} connections, gunicorn --workers 2 --threads {THREADS} on "
            f"loopback, {args.rounds} rotating rounds"
        )
    try:
        for kind in args.databases.split(",") if args.chaos else ():
            at_kill, swept, lost, twice, failures = chaos(kind, workdir, args.chaos)
            bad |= bool(lost) or bool(twice) or bool(failures)
            print(
                f"\n{kind}: chaos drain of {args.chaos} deliveries: worker killed (SIGKILL) "
                f"after {at_kill} processed; the sweep queued {swept} again; "
                f"lost {lost}, twice {twice}, non-200 {failures}"
            )
        for kind in args.databases.split(",") if not args.chaos else ():
            outcomes, drains = run_database(
                kind, workdir, args.events, args.connections, args.rounds, args.drain
            )
            print(f"\n{kind}:")
            print(
                f"  {'variant':<28}{'events/s':>9}{'p50 ms':>8}{'p99 ms':>8}{'non-200':>8}"
                f"{'lost':>6}{'twice':>6}   burst: lost twice"
            )
            for variant, o in outcomes.items():
                bad |= bool(o.lost) or bool(o.twice) or bool(o.load.failures)
                bad |= bool(o.burst_lost) or bool(o.burst_twice)
                print(
                    f"  {LABELS[variant]:<28}{o.load.rate:>9.0f}{o.load.percentile_ms(0.5):>8.1f}"
                    f"{o.load.percentile_ms(0.99):>8.1f}{o.load.failures:>8}"
                    f"{_dash(o.lost):>6}{_dash(o.twice):>6}"
                    f"   {_dash(o.burst_lost):>11}{_dash(o.burst_twice):>6}"
                )
            h = statistics.median(outcomes["hand-written"].ratios)
            b = statistics.median(outcomes["inline"].ratios)
            c = statistics.median(outcomes["queue"].ratios)
            print(
                f"  ratios (median of rounds): h/a = {h:.2f}; b/h = {b:.2f} (target >= 0.9); "
                f"c/a = {c:.2f} (target >= 0.6 on PostgreSQL)"
            )
            for workers, rate, lost, twice in drains:
                bad |= bool(lost) or bool(twice)
                print(
                    f"  Celery drain, {workers} worker(s) x 4 threads: {rate:6.0f} events/s "
                    f"(lost {lost}, twice {twice})"
                )
    except BaseException:
        bad = True  # keep the servers' logs: they say why the run stopped
        raise
    finally:
        if bad:
            print(f"\nLogs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bad else 0


def _dash(value: int | None) -> str:
    return "-" if value is None else str(value)


if __name__ == "__main__":
    sys.exit(main())
