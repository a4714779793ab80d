"""A real Celery worker killed with SIGKILL mid-drain: no event lost, none processed twice.

The route stores and queues events; a worker process (``celery_chaos_app``, Redis broker,
late acknowledgement) drains them until it is killed in the middle of its handlers. A
second worker takes over what is still queued, and the sweep (as beat runs it once the dead
worker's claims are past ``STUCK_AFTER``) puts back what the killed one held. Then every
event is processed, with exactly one effect each.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from celery_chaos_app import EFFECT_TYPE, EFFECTS, make_celery
from conftest import require_postgres, require_redis, stripe_event
from process_support import process

from flask_finconn import get_state
from flask_finconn.models import WebhookEvent, utcnow
from flask_finconn.services import events
from flask_finconn.tasks import init_celery
from flask_finconn.testing import create_app, throwaway_database

TESTS = Path(__file__).resolve().parent
EVENTS = 40
# How long a step may take before the test fails: a worker boots in a few seconds, but on
# a 2-core box shared with other test suites (load 20) booting alone can take a minute.
BOOT = 120


@contextmanager
def worker(
    env: dict[str, str], name: str, queue: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery worker process (4 threads) on the chaos app consuming ``queue``."""
    command = [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "celery_chaos_app:celery",
        "worker",
        "--pool",
        "threads",
        "--concurrency",
        "4",
        "--hostname",
        f"{name}@{socket.gethostname()}",
        "--queues",
        queue,
        "--without-mingle",
        "--without-gossip",
        "--loglevel",
        "warning",
    ]
    with process(command, env, log) as proc:
        yield proc


def wait_for(condition: Callable[[], bool], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"The workers did not get there in time; see {log}.")
        time.sleep(0.02)


def test_a_worker_killed_mid_drain_loses_no_event_and_processes_none_twice(
    tmp_path: Path, post_webhook: Callable[..., Any]
) -> None:
    postgres_url = require_postgres()
    require_redis()  # the worker processes read it from the environment
    queue = f"finconn-chaos-{uuid.uuid4().hex[:8]}"
    with throwaway_database(postgres_url) as url:
        app = create_app(url, FINCONN_TASK_QUEUE="celery")
        state = get_state(app)
        with app.app_context():
            EFFECTS.create(state.db.engine)
        celery = make_celery(queue)
        init_celery(celery, app)
        engine = sa.create_engine(url)

        def processed() -> set[str]:
            with engine.connect() as conn:
                query = sa.select(WebhookEvent.id).where(WebhookEvent.status == "processed")
                return set(conn.execute(query).scalars())

        env = {
            **os.environ,
            "FINCONN_CHAOS_DATABASE": url,
            "FINCONN_CHAOS_QUEUE": queue,
            "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        }
        first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
        sent = [
            stripe_event(EFFECT_TYPE, {"id": f"obj_{n}", "object": "test"}) for n in range(EVENTS)
        ]
        ids = {event["id"] for event in sent}
        try:
            # Both start now (a loaded box takes seconds to boot one); the second stands by
            # on a queue of its own until the first is dead.
            with (
                worker(env, "first", queue, first_log) as first,
                worker(env, "second", f"{queue}-standby", second_log),
            ):
                for event in sent:
                    assert post_webhook(app, event).status_code == 200
                wait_for(lambda: len(processed()) >= EVENTS // 5, BOOT, first_log)
                first.kill()  # SIGKILL: no warm shutdown, no acknowledgement, no cleanup
                first.wait()
                assert len(processed()) < EVENTS  # it died mid-drain
                # The second worker takes over what is still queued.
                wait_for(lambda: bool(take_over(celery, queue)), BOOT, second_log)
                # The beat's sweep, run as it would be once the dead worker's claims are
                # older than STUCK_AFTER, puts back what it held: claimed, or prefetched
                # and never acknowledged.
                with app.app_context():
                    later = utcnow() + events.STUCK_AFTER + timedelta(seconds=1)
                    due = events.sweep(state, now=later)
                    state.queue.enqueue(app, due)
                assert due
                wait_for(lambda: ids <= processed(), BOOT, second_log)
            with engine.connect() as conn:
                query = sa.select(EFFECTS.c.event_id, sa.func.count()).group_by(EFFECTS.c.event_id)
                effects = {row[0]: row[1] for row in conn.execute(query)}
        finally:
            engine.dispose()
    lost = [i for i in ids if effects.get(i, 0) == 0]
    twice = [i for i in ids if effects.get(i, 0) > 1]
    assert (len(lost), len(twice)) == (0, 0)
    assert set(effects) == ids


def take_over(celery: Any, queue: str) -> list[Any]:
    """Ask the standby worker to consume ``queue``; its replies (none while it boots)."""
    return list(
        celery.control.add_consumer(
            queue, destination=[f"second@{socket.gethostname()}"], reply=True, timeout=0.5
        )
    )
