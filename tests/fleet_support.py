"""A Celery worker process for the fleet sync tests, on a sandbox served over HTTP.

``celery -A fleet_support worker`` (run from ``tests/``) builds the host app from the
environment: ``FLEET_DATABASE_URL`` (the host database), ``FLEET_REDIS_URL`` (broker,
locks, request budget), ``FLEET_SANDBOX_URL`` (the one standalone sandbox every worker
talks to), ``FLEET_QUEUE``, and optional ``FLEET_RATE_LIMIT`` and ``FLEET_LOCK_TTL``.
The app's Stripe client is pointed at the served sandbox, so every worker's requests
reach the same sandbox, as they would reach one Stripe.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis as redis_lib
import stripe
from celery import Celery
from flask import Flask
from process_support import process

from flask_finconn import get_state
from flask_finconn.ratelimit import RateLimitedHTTPClient, RedisBucket
from flask_finconn.sandbox import Sandbox
from flask_finconn.stripe_api import API_VERSION, StripeAPI
from flask_finconn.tasks import init_celery
from flask_finconn.testing import create_app

HERE = Path(__file__).resolve().parent


def point_at_served_sandbox(app: Flask, base_url: str, rate: float, redis_url: str) -> None:
    """Send the app's Stripe requests to the sandbox at ``base_url``, ``rate`` a second
    at most across every process (a Redis bucket), 429s absorbed."""
    http: stripe.HTTPClient = stripe.new_default_http_client()
    if rate:
        bucket = RedisBucket(redis_lib.Redis.from_url(redis_url), "finconn:fleet-rate", rate, 1)
        http = RateLimitedHTTPClient(http, bucket)
    client = stripe.StripeClient(
        Sandbox.api_key,
        stripe_version=API_VERSION,
        base_addresses={"api": base_url},
        http_client=http,
        max_network_retries=2,
    )
    get_state(app).stripe = StripeAPI(client, livemode=False)


def make_celery(app: Flask, redis_url: str, queue: str) -> Celery:
    """A Celery app on ``queue`` with Flask-FinConn's tasks registered for ``app``."""
    celery = Celery("finconn_fleet", broker=redis_url)
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
        return None  # imported by a test, not by a worker
    app = create_app(
        env["FLEET_DATABASE_URL"],
        FINCONN_TASK_QUEUE="celery",
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_REDIS_URL=env["FLEET_REDIS_URL"],
        FINCONN_SYNC_LOCK_TTL=float(env.get("FLEET_LOCK_TTL", "60")),
    )
    rate = float(env.get("FLEET_RATE_LIMIT", "0"))
    point_at_served_sandbox(app, env["FLEET_SANDBOX_URL"], rate, env["FLEET_REDIS_URL"])
    return make_celery(app, env["FLEET_REDIS_URL"], env["FLEET_QUEUE"])


celery = _worker_celery()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served_sandbox(database: str, log: Path) -> Iterator[str]:
    """The sandbox on ``database`` served over HTTP by ``python -m flask_finconn.sandbox
    serve`` in a process of its own; yields its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "flask_finconn.sandbox", "serve", "--port", str(port)]
    with process([*command, "--database", database], dict(os.environ), log):
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"The sandbox did not start:\n{log.read_text()}") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"


def worker_command() -> list[str]:
    """A Celery worker on this module's app: one process that runs one task at a time."""
    return [
        str(Path(sys.executable).parent / "celery"),
        "-A",
        "fleet_support",
        "worker",
        "--pool=solo",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "--loglevel=WARNING",
    ]
