"""Webhook endpoints and delivery: signed as Stripe signs, retried with backoff, with chaos.

A delivery row is created per (event, endpoint) when the event is created. ``deliver``
sends what is due, records every attempt, and reschedules failures 5 s, 10 s, 20 s, ...
later on the sandbox clock (capped at an hour) until the eighth attempt fails.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from . import _data
from ._store import Store
from .faults import Faults

log = logging.getLogger("flask_finconn.sandbox")

WSGIApp = Callable[..., Any]
MAX_ATTEMPTS = 8
RETRY_BASE = 5.0
RETRY_CAP = 3600.0
# While one process delivers a batch, other processes on the same file leave it alone.
LEASE = 60.0


def sign(body: str, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header for ``body``: ``t=<timestamp>,v1=<hex HMAC-SHA256 of
    "<timestamp>.<body>" keyed with the endpoint secret>``, as Stripe signs webhooks."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


class Webhooks:
    """The endpoints of one sandbox and the delivery of its events to them."""

    def __init__(self, store: Store, clock: Callable[[], float], faults: Faults) -> None:
        self.store = store
        self.clock = clock
        self.faults = faults
        self.targets: dict[str, WSGIApp] = {}
        self._lock = threading.Lock()

    def add_endpoint(
        self, url: str | None, wsgi_app: WSGIApp | None, path: str, secret: str | None, now: int
    ) -> dict[str, str]:
        if (url is None) == (wsgi_app is None):
            raise ValueError("Pass exactly one of url= or wsgi_app=.")
        if secret is not None and not secret.startswith("whsec_"):
            raise ValueError("A webhook secret starts with 'whsec_'.")
        target = f"url:{url}" if url is not None else f"wsgi:{path}"
        with self.store.tx():
            row = self.store.one("SELECT id, secret FROM endpoints WHERE target = ?", (target,))
            if row is None:
                ep_id = _data.new_id("we_")
                secret = secret or _data.new_id("whsec_")
                self.store.execute(
                    "INSERT INTO endpoints (id, target, url, path, secret, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (ep_id, target, url, None if url is not None else path, secret, now),
                )
                self.store.forget("webhooks.endpoints")
            else:
                ep_id = row[0]
                if secret is not None and secret != row[1]:
                    self.store.execute(
                        "UPDATE endpoints SET secret = ? WHERE id = ?", (secret, ep_id)
                    )
                secret = secret or row[1]
        if wsgi_app is not None:
            self.targets[ep_id] = wsgi_app
        assert secret is not None
        return {"id": ep_id, "secret": secret}

    def remove_endpoint(self, endpoint_id: str) -> None:
        with self.store.tx():
            self.store.execute("DELETE FROM endpoints WHERE id = ?", (endpoint_id,))
            self.store.forget("webhooks.endpoints")
            self.store.execute(
                "UPDATE deliveries SET state = 'dropped' WHERE endpoint = ? AND state = 'pending'",
                (endpoint_id,),
            )
        self.targets.pop(endpoint_id, None)

    def endpoint_ids(self) -> list[str]:
        """Every endpoint's id, oldest first (kept in memory: every event asks)."""
        return list(self.store.cached("webhooks.endpoints", self._load_endpoint_ids))

    def _load_endpoint_ids(self) -> tuple[str, ...]:
        return tuple(r[0] for r in self.store.all("SELECT id FROM endpoints ORDER BY created, id"))

    def enqueue(self, event_id: str, endpoints: list[str]) -> None:
        """Schedule delivery of a new event to ``endpoints`` (inside the caller's transaction)."""
        if not endpoints:
            return
        due = self.clock() + self.faults.webhook_delay
        self.store.executemany(
            "INSERT INTO deliveries (event, endpoint, due_at, state) VALUES (?, ?, ?, 'pending')",
            [(event_id, ep, due) for ep in endpoints],
        )

    def deliver(self, *, retry_now: bool = False) -> int:
        """Send every due delivery this process can reach; returns the attempts made."""
        with self._lock:
            batch = self._claim(retry_now)
            if self.faults.webhook_reorder:
                batch.reverse()
            attempts = 0
            for delivery_id, event_id, endpoint_id, tries, url, path, secret, body in batch:
                copies = 2 if self.faults.roll_duplicate() else 1
                results = [self._post(endpoint_id, url, path, secret, body) for _ in range(copies)]
                attempts += copies
                self._record(delivery_id, event_id, endpoint_id, tries, results)
            return attempts

    def _claim(self, retry_now: bool) -> list[Any]:
        with self.store.tx():
            now = self.clock()
            rows = self.store.all(
                "SELECT d.id, d.event, d.endpoint, d.attempts, e.url, e.path, e.secret, "
                "ev.body FROM deliveries d JOIN endpoints e ON e.id = d.endpoint "
                "JOIN events ev ON ev.id = d.event WHERE d.state = 'pending' "
                + ("" if retry_now else "AND d.due_at <= ? ")
                + "ORDER BY d.due_at, d.id",
                () if retry_now else (now,),
            )
            batch = [r for r in rows if r[4] is not None or r[2] in self.targets]
            self.store.executemany(
                "UPDATE deliveries SET due_at = ? WHERE id = ?",
                [(now + LEASE, r[0]) for r in batch],
            )
        return batch

    def _record(
        self,
        delivery_id: int,
        event_id: str,
        endpoint_id: str,
        tries: int,
        results: list[tuple[int | None, str | None]],
    ) -> None:
        with self.store.tx():
            at = int(self.clock())
            self.store.executemany(
                "INSERT INTO attempts (delivery, event, endpoint, at, status, error) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(delivery_id, event_id, endpoint_id, at, s, e) for s, e in results],
            )
            status = results[-1][0]
            tries += 1
            if status is not None and 200 <= status < 300:
                state, due = "delivered", self.clock()
            elif tries >= MAX_ATTEMPTS:
                state, due = "failed", self.clock()
            else:
                state = "pending"
                due = self.clock() + min(RETRY_BASE * 2 ** (tries - 1), RETRY_CAP)
            self.store.execute(
                "UPDATE deliveries SET state = ?, attempts = ?, last_status = ?, due_at = ? "
                "WHERE id = ?",
                (state, tries, status, due, delivery_id),
            )

    def _post(
        self, endpoint_id: str, url: str | None, path: str | None, secret: str, body: str
    ) -> tuple[int | None, str | None]:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(body, secret),
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        }
        try:
            if url is None:
                from werkzeug.test import Client

                response = Client(self.targets[endpoint_id]).post(
                    path or "/", data=body.encode(), headers=headers
                )
                response.close()
                return response.status_code, None
            req = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status), None
        except urllib.error.HTTPError as exc:
            return exc.code, None
        except Exception as exc:  # a failing endpoint must never stop delivery to the others
            log.warning("Webhook delivery to %s failed: %s", url or path, exc)
            return None, f"{type(exc).__name__}: {exc}"

    def attempts(self, event: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT delivery, event, endpoint, at, status, error FROM attempts"
        args: tuple[Any, ...] = ()
        if event:
            sql += " WHERE event = ?"
            args = (event,)
        with self.store.tx(write=False):
            rows = self.store.all(sql + " ORDER BY id", args)
        keys = ("delivery", "event", "endpoint", "at", "status", "error")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def pending(self) -> int:
        with self.store.tx(write=False):
            return int(self.store.one("SELECT COUNT(*) FROM deliveries WHERE state = 'pending'")[0])
