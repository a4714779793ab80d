"""The load of ``webhooks.py``: signed deliveries, and the client processes that send them.

Each delivery is a bench-only event about the size of a real FC account event; the
clients post over loopback, one connection per delivery, and time every answer.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import queue
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

SECRET = "whsec_bench_secret"
EVENT_TYPE = "bench.effect"
PATH = "/finconn/webhook"
# Generous: on a box at load 20 a gunicorn worker can take over 30 s to boot, and the
# first deliveries wait in the listen backlog meanwhile.
CLIENT_TIMEOUT = 300


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
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
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

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] * 1000


def drive(port: int, sent: list[tuple[bytes, str]], connections: int) -> Load:
    """Send every delivery over ``connections`` client processes (one connection each)."""
    context = multiprocessing.get_context("fork")
    start = context.Barrier(connections)
    out = context.Queue()
    shares = [sent[i::connections] for i in range(connections)]
    workers = [context.Process(target=_client, args=(port, share, start, out)) for share in shares]
    for worker in workers:
        worker.start()
    results: list[tuple[float, float, list[float], int]] = []
    deadline = time.monotonic() + 600
    while len(results) < len(workers):
        try:
            results.append(out.get(timeout=1))
        except queue.Empty:
            # A client that died (the server refused or reset its connection, e.g. because
            # gunicorn's workers failed to boot) never answers: stop now, not in 10 minutes.
            failed = [w for w in workers if w.exitcode not in (None, 0)]
            if failed or time.monotonic() > deadline:
                for worker in workers:
                    worker.terminate()
                raise RuntimeError(
                    f"{len(failed)} of {len(workers)} client processes failed before sending "
                    "everything; the server's log in the bench's work directory says why."
                ) from None
    for worker in workers:
        worker.join()
    began = min(r[0] for r in results)
    ended = max(r[1] for r in results)
    latencies = [x for r in results for x in r[2]]
    return Load(ended - began, latencies, sum(r[3] for r in results))


def _burst_client(port: int, work: list[tuple[bytes, str]], barrier: Any, out: Any) -> None:
    failures = 0
    for body, header in work:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
        connection.connect()  # connected before the barrier: the copies land together
        barrier.wait()
        connection.request(
            "POST",
            PATH,
            body=body,
            headers={"Content-Type": "application/json", "Stripe-Signature": header},
        )
        response = connection.getresponse()
        response.read()
        failures += response.status != 200
        connection.close()
    out.put(failures)


def burst(port: int, events: int, copies: int) -> tuple[set[str], int]:
    """Each of ``events`` new events delivered ``copies`` times at once; (ids, non-200s)."""
    from flask_finconn.webhooks import sign

    work, ids = [], set()
    for n in range(events):
        event = _event(n)
        ids.add(event["id"])
        body = json.dumps(event, separators=(",", ":")).encode()
        work.append((body, sign(body, SECRET)))
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(copies)
    out = context.Queue()
    senders = [
        context.Process(target=_burst_client, args=(port, work, barrier, out))
        for _ in range(copies)
    ]
    for sender in senders:
        sender.start()
    failures = sum(out.get(timeout=600) for _ in senders)
    for sender in senders:
        sender.join()
    return ids, failures
