"""The Stripe request budget: the sandbox's 429 knob, the Redis bucket, and a sync under both."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, cast

import pytest
import stripe
from conftest import require_redis
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.errors import ConfigurationError
from flask_finconn.ratelimit import LocalBucket, RedisBucket, retry_after
from flask_finconn.sandbox import Sandbox
from flask_finconn.services import sync
from flask_finconn.testing import create_app, link_accounts, sandbox_of


def busiest_second(stamps: list[float]) -> int:
    """The most timestamps that fall in any one-second window."""
    stamps = sorted(stamps)
    return max(sum(1 for t in stamps[i:] if t < start + 1.0) for i, start in enumerate(stamps))


def test_the_sandbox_window_slides() -> None:
    faults = Sandbox(":memory:").faults
    faults.rate_limit = 5
    assert [faults.admit(now=t / 10) for t in range(5)] == [True] * 5
    assert faults.admit(now=0.5) is False  # six in one second
    assert faults.admit(now=1.0) is True  # the request at 0.0 has left the window
    assert faults.admit(now=1.05) is False
    assert (faults.peak_rate, faults.rate_limited) == (5, 2)


def test_the_sandbox_answers_429_with_retry_after_above_its_rate() -> None:
    sb = Sandbox(":memory:")
    client = sb.stripe_client(max_network_retries=0)
    sb.faults.rate_limit = 1
    client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.customers.list()  # the same second: one request too many
    assert raised.value.http_status == 429
    assert raised.value.json_body is not None
    body = cast(dict[str, Any], raised.value.json_body)  # the SDK types the decoded JSON as object
    assert body["error"]["code"] == "rate_limit"
    assert raised.value.headers is not None and raised.value.headers["Retry-After"] == "1"
    assert sb.faults.rate_limited == 1


def test_retry_after_is_honoured_and_backs_off_without_it() -> None:
    assert retry_after({"Retry-After": "3"}, 0) == 3.0
    assert [retry_after({}, attempt) for attempt in range(8)] == [
        0.5,
        1.0,
        2.0,
        4.0,
        8.0,
        16.0,
        30.0,
        30.0,
    ]


def test_the_local_bucket_spaces_requests() -> None:
    now = [0.0]
    bucket = LocalBucket(rate=4, burst=1, clock=lambda: now[0])
    assert bucket.take() == 0
    assert bucket.take() == pytest.approx(0.25)
    now[0] = 0.25
    assert bucket.take() == 0
    bucket.pause(2)
    assert bucket.take() == pytest.approx(2)
    now[0] = 2.3  # 0.05 s after the pause: a fifth of a token, none saved from before
    assert bucket.take() == pytest.approx(0.2)


def test_processes_sharing_the_redis_bucket_keep_to_one_rate() -> None:
    import redis

    key = f"finconn:test-rate:{uuid.uuid4().hex}"
    # Two buckets on one key, as two worker processes would build them, four threads each.
    buckets = [RedisBucket(redis.Redis.from_url(require_redis()), key, rate=20, burst=1)]
    buckets.append(RedisBucket(redis.Redis.from_url(require_redis()), key, rate=20, burst=1))
    stamps: list[float] = []
    lock = threading.Lock()

    def work(bucket: RedisBucket) -> None:
        for _ in range(8):
            while (wait := bucket.take()) > 0:
                time.sleep(wait)
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=work, args=(b,)) for b in buckets for _ in range(4)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stamps) == 64
    assert busiest_second(stamps) <= 21  # the rate, plus the one token of burst
    assert time.monotonic() - started >= 63 / 20 * 0.9  # 64 tokens at 20 a second


def linked_with_history(app: Flask, rows: int) -> str:
    account = link_accounts(app, Holder("ada"), accounts=["checking"])[0]
    sandbox_of(app).set_history_size(account.stripe_id, rows)
    sandbox_of(app).finish_refreshes(account.stripe_id)
    return account.stripe_id


def test_a_sync_faster_than_stripe_allows_absorbs_the_429s(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
        FINCONN_STRIPE_RATE_LIMIT=100,  # more than the sandbox below allows
    )
    stripe_id = linked_with_history(app, 1500)
    faults = sandbox_of(app).faults
    faults.rate_limit = 6
    with app.app_context():
        applied = sync.sync_account_from_stripe(get_state(app), stripe_id)
    assert applied is not None and applied.sync is not None
    assert applied.sync.added == 1500  # nothing failed, nothing skipped
    assert faults.rate_limited > 0  # Stripe said 429, and the request was sent again
    assert faults.peak_rate <= 6


def test_a_sync_on_the_shared_budget_never_meets_a_429(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(
        FINCONN_PERMISSIONS=["transactions"],
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
        FINCONN_STRIPE_RATE_LIMIT=8,
        FINCONN_REDIS_URL=require_redis(),
    )
    stripe_id = linked_with_history(app, 1500)
    faults = sandbox_of(app).faults
    faults.rate_limit = 9  # the budget plus its one token of burst
    started = time.monotonic()
    with app.app_context():
        applied = sync.sync_account_from_stripe(get_state(app), stripe_id)
    assert applied is not None and applied.sync is not None
    assert applied.sync.added == 1500
    assert (faults.rate_limited, faults.peak_rate <= 9) == (0, True)
    assert time.monotonic() - started >= 15 / 8 * 0.9  # 16+ requests at 8 a second


@pytest.mark.parametrize("value", ["fast", -1])
def test_a_bad_rate_limit_is_a_clear_error(value: object, tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(ConfigurationError, match="FINCONN_STRIPE_RATE_LIMIT"):
        create_app(f"sqlite:///{tmp_path}/x.sqlite3", FINCONN_STRIPE_RATE_LIMIT=value)
