"""Fleet sync: every linked account synced by a task of its own, from cron or Celery beat.

A run has an id and a record in Redis of what became of each account: synced (rows added
and updated), or failed with the reason (a Stripe error, or any other exception, named).
Each account's task first takes the account's lock in Redis (``SET NX`` with an expiry
that every written page extends), so two workers never sync one account at once.

One run is current at a time. Starting a run while the current one is unfinished does not
start another: while the run made progress (an outcome, a page written) within
``FINCONN_SYNC_LOCK_TTL`` it is still running and nothing is queued; idle for longer, it is
resumed: its accounts without an outcome are queued again. So a worker killed mid-run
costs nothing but a later ``sync --all``: the killed worker's lock expires within
``FINCONN_SYNC_LOCK_TTL``, its resume point is in the database
(``Account.transactions_sync``), and the account's sync continues after the last committed
row. A worker that finds its lock expired midway stops writing and fails the account. A
task delivered twice (queued again, or handed on by the broker's visibility timeout) finds
its account's outcome recorded and does nothing. Running twice adds nothing the first run
added: the sync only writes what changed at Stripe.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigurationError, FinConnError
from ..state import FinConnState
from . import sync

__all__ = [
    "LOCK_TTL",
    "AccountLock",
    "LockLost",
    "RunSummary",
    "Start",
    "record",
    "redis_client",
    "start_or_resume",
    "summary",
    "sync_one",
    "touch",
]

logger = logging.getLogger("flask_finconn.fleet")

LOCK_TTL = 60.0
"""Default seconds an account's lock outlives the last page its holder wrote
(``FINCONN_SYNC_LOCK_TTL``)."""
RUN_TTL = 7 * 86_400
"""Seconds a run's record is kept in Redis."""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LockLost(FinConnError):
    """The holder of an :class:`AccountLock` found it expired (and maybe taken) midway."""

    code = "sync_lock_lost"


class AccountLock:
    """The lock on one account's sync: held by one token, expiring unless extended."""

    def __init__(self, redis: Any, account_id: str, ttl: float = LOCK_TTL) -> None:
        self.redis, self.key, self.ttl_ms = (
            redis,
            f"finconn:sync-lock:{account_id}",
            int(ttl * 1000),
        )
        self.token = secrets.token_hex(8)

    def acquire(self) -> bool:
        return bool(self.redis.set(self.key, self.token, nx=True, px=self.ttl_ms))

    def remaining(self) -> float:
        """Seconds until the current holder's lock expires (0 when nobody holds it)."""
        return max(0.0, int(self.redis.pttl(self.key)) / 1000)

    def extend(self) -> None:
        """Push the expiry back; :class:`LockLost` when another holder has the lock now."""
        if not self.redis.eval(_EXTEND, 1, self.key, self.token, self.ttl_ms):
            raise LockLost(
                "The account's sync lock expired while this worker was syncing it and another "
                "worker may have taken it over; it stopped writing. Raise "
                "FINCONN_SYNC_LOCK_TTL above the time one page takes, then run the sync again."
            )

    def release(self) -> None:
        self.redis.eval(_RELEASE, 1, self.key, self.token)


@dataclass(frozen=True)
class RunSummary:
    """What a run did so far: accounts ``synced`` and ``failed`` out of ``total``."""

    run_id: str
    total: int
    synced: int
    failed: int
    added: int
    updated: int
    failures: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.synced + self.failed >= self.total

    def line(self) -> str:
        return (
            f"{self.synced + self.failed}/{self.total} accounts: {self.synced} synced "
            f"({self.added} rows added, {self.updated} updated), {self.failed} failed"
        )


def redis_client(state: FinConnState) -> Any:
    """A Redis client on ``FINCONN_REDIS_URL``; a clear error when it is not set."""
    if state.settings.redis_url is None:
        raise ConfigurationError(
            "A fleet sync on Celery keeps its locks and progress in Redis; set "
            "FINCONN_REDIS_URL (for example to your Celery broker's Redis)."
        )
    import redis

    return redis.Redis.from_url(state.settings.redis_url)


def _key(run_id: str) -> str:
    return f"finconn:sync-run:{run_id}"


def _accounts_key(run_id: str) -> str:
    return f"finconn:sync-run:{run_id}:accounts"


def _current_key(scope: str) -> str:
    # One current run per installation: apps that share a Redis keep their runs apart.
    return f"finconn:sync-run:current:{scope}"


_CLEAR_IF = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class Start:
    """What :func:`start_or_resume` did: the run, and the accounts to queue now.

    ``running`` is a current run that made progress lately (or was started by another
    command just now): its tasks are still queued or running, so nothing is queued again.
    """

    run_id: str
    resumed: bool
    total: int
    to_queue: list[tuple[str, str]]
    running: bool = False


def _now(redis: Any) -> float:
    # Redis's clock, not this host's: the commands and workers of a run share only Redis.
    seconds, micros = redis.time()
    return float(seconds) + int(micros) / 1_000_000


def start_or_resume(
    redis: Any, scope: str, accounts: list[tuple[str, str]], *, stale_after: float = LOCK_TTL
) -> Start:
    """Start a run of ``accounts`` (``(account id, Stripe id)`` pairs) for the installation
    ``scope``, or resume its current run when that is unfinished.

    An unfinished run that made progress (an account's outcome, a page written) within the
    last ``stale_after`` seconds (the sync lock's TTL) is still running: nothing is queued.
    One idle for longer lost its workers: its accounts without an outcome are returned, to
    be queued again (the run keeps the accounts it started with; accounts linked since wait
    for the next run)."""
    current_key = _current_key(scope)
    while True:
        current = redis.get(current_key)
        if current is not None:
            run_id = current.decode()
            status = summary(redis, run_id)
            if status.total and not status.finished:
                recorded = redis.hgetall(_key(run_id))
                progress = float(recorded.get(b"progress", 0))
                # The claim keeps two commands that find the run idle at once from both
                # queueing its accounts again.
                if _now(redis) - progress <= stale_after or not redis.set(
                    f"{_key(run_id)}:resumed", 1, nx=True, px=int(stale_after * 1000)
                ):
                    return Start(run_id, True, status.total, [], running=True)
                pending = sorted(
                    (k.decode(), v.decode())
                    for k, v in redis.hgetall(_accounts_key(run_id)).items()
                    if b"account:" + k not in recorded
                )
                redis.hset(_key(run_id), "progress", _now(redis))
                return Start(run_id, True, status.total, pending)
            redis.eval(_CLEAR_IF, 1, current_key, run_id)
        # The run's record comes first, then the claim: whoever sees a current run sees
        # its total, so a run that is starting is never taken for a finished one.
        run_id = secrets.token_hex(8)
        pipe = redis.pipeline()
        pipe.hset(
            _key(run_id),
            mapping={"total": len(accounts), "synced": 0, "failed": 0, "progress": _now(redis)},
        )
        if accounts:
            pipe.hset(_accounts_key(run_id), mapping=dict(accounts))
        for key in (_key(run_id), _accounts_key(run_id)):
            pipe.expire(key, RUN_TTL)
        pipe.execute()
        if not redis.set(current_key, run_id, nx=True, ex=RUN_TTL):
            # Another command started a run just now and queues its accounts itself: drop
            # ours and report that one (or start again if it is already over).
            redis.delete(_key(run_id), _accounts_key(run_id))
            continue
        return Start(run_id, False, len(accounts), list(accounts))


def touch(redis: Any, run_id: str) -> None:
    """Note that the run made progress now (a page written): it is not to be resumed yet."""
    redis.hset(_key(run_id), "progress", _now(redis))


def record(
    redis: Any,
    run_id: str,
    account_id: str,
    *,
    added: int = 0,
    updated: int = 0,
    reason: str | None = None,
) -> None:
    """Record one account's outcome once (a redelivered task does not count it twice)."""
    key = _key(run_id)
    if not redis.hsetnx(key, f"account:{account_id}", reason or "synced"):
        return
    pipe = redis.pipeline()
    pipe.hset(key, "progress", _now(redis))
    if reason is None:
        pipe.hincrby(key, "synced", 1)
        pipe.hincrby(key, "added", added)
        pipe.hincrby(key, "updated", updated)
    else:
        pipe.hincrby(key, "failed", 1)
    pipe.execute()


def summary(redis: Any, run_id: str) -> RunSummary:
    """The run's record as it stands."""
    raw = {k.decode(): v.decode() for k, v in redis.hgetall(_key(run_id)).items()}
    failures = sorted(
        f"{name.removeprefix('account:')}: {value}"
        for name, value in raw.items()
        if name.startswith("account:") and value != "synced"
    )
    return RunSummary(
        run_id,
        int(raw.get("total", 0)),
        int(raw.get("synced", 0)),
        int(raw.get("failed", 0)),
        int(raw.get("added", 0)),
        int(raw.get("updated", 0)),
        failures,
    )


def _on_page(redis: Any, run_id: str, lock: AccountLock) -> None:
    lock.extend()
    touch(redis, run_id)


def sync_one(
    state: FinConnState, redis: Any, run_id: str, account_id: str, stripe_id: str
) -> float:
    """Sync one account under its lock and record the outcome in the run.

    Returns 0 when done (or when the run already has this account's outcome: the task was
    delivered twice), or the seconds until another holder's lock expires (the caller tries
    again then: that holder may have died mid-sync). Any exception of the sync is recorded
    as the account's failure, with its reason, and logged.
    """
    if redis.hexists(_key(run_id), f"account:{account_id}"):
        return 0.0
    ttl = state.settings.sync_lock_ttl
    lock = AccountLock(redis, account_id, ttl)
    if not lock.acquire():
        return max(lock.remaining(), 0.1)
    started = time.monotonic()
    # The outcome is recorded before the lock goes: a redelivered task that takes the lock
    # next finds the account done instead of syncing it again.
    try:
        try:
            applied = sync.sync_account_from_stripe(
                state, stripe_id, on_page=lambda rows, pages: _on_page(redis, run_id, lock)
            )
        except FinConnError as exc:
            state.db.session.rollback()
            record(redis, run_id, account_id, reason=exc.message)
            return 0.0
        except Exception as exc:
            state.db.session.rollback()
            logger.exception("Syncing account %s failed unexpectedly.", account_id)
            record(
                redis,
                run_id,
                account_id,
                reason=(
                    f"unexpected {type(exc).__name__}: {exc} (the worker's log has the traceback)"
                ),
            )
            return 0.0
        done = applied.sync if applied is not None else None
        if done is not None and not done.complete:
            # Another worker took the account over midway (its lock had expired on us).
            return max(ttl - (time.monotonic() - started), 0.1)
        record(
            redis,
            run_id,
            account_id,
            added=done.added if done else 0,
            updated=done.updated if done else 0,
        )
        return 0.0
    finally:
        lock.release()
