"""A request budget for Stripe, shared by every process through Redis or kept in one.

Every request to Stripe takes a token from a bucket first. The bucket refills at
``rate`` tokens a second and holds at most ``burst``; a 429 from Stripe pauses the whole
bucket, every worker at once, for the ``Retry-After`` Stripe sent (or a growing backoff
when it sent none), and the request is sent again. A fleet of workers therefore keeps to
one rate together and slows down together instead of failing.

The Redis bucket is one hash updated by a Lua script: the refill, the check and the take
are one atomic step, on Redis's clock (workers whose clocks disagree still share one
rate). Without Redis the same bucket lives in this process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import stripe

__all__ = ["Bucket", "LocalBucket", "RateLimitedHTTPClient", "RedisBucket"]

# Both scripts return seconds as a string: Redis truncates a Lua number to an integer.
_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at', 'paused_until')
local paused_until = tonumber(state[3]) or 0
if now < paused_until then
  return tostring(paused_until - now)
end
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(wait)
"""

_PAUSE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local resume = now + tonumber(ARGV[1])
if resume > (tonumber(redis.call('HGET', KEYS[1], 'paused_until')) or 0) then
  redis.call('HSET', KEYS[1], 'paused_until', tostring(resume), 'tokens', '0',
             'at', tostring(resume))
end
redis.call('EXPIRE', KEYS[1], 3600)
return 'ok'
"""


class Bucket(Protocol):
    """Where the tokens live."""

    def take(self) -> float:
        """Take a token and return 0, or return the seconds until one is free."""

    def pause(self, seconds: float) -> None:
        """Hand out no token for ``seconds``: Stripe asked every client to wait."""


class RedisBucket:
    """One bucket in Redis under ``key``, shared by every process that names it."""

    def __init__(self, redis: Any, key: str, rate: float, burst: float) -> None:
        self.key, self.rate, self.burst = key, rate, burst
        self._take = redis.register_script(_TAKE)
        self._pause = redis.register_script(_PAUSE)

    def take(self) -> float:
        return float(self._take(keys=[self.key], args=[self.rate, self.burst]))

    def pause(self, seconds: float) -> None:
        self._pause(keys=[self.key], args=[seconds])


class LocalBucket:
    """The same bucket, for the threads of this process only."""

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._at, self._paused_until = burst, clock(), 0.0
        self._lock = threading.Lock()

    def take(self) -> float:
        with self._lock:
            now = self._clock()
            if now < self._paused_until:
                return self._paused_until - now
            self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate

    def pause(self, seconds: float) -> None:
        with self._lock:
            resume = self._clock() + seconds
            if resume > self._paused_until:
                self._paused_until, self._tokens, self._at = resume, 0.0, resume


class RateLimitedHTTPClient(stripe.HTTPClient):
    """The SDK's transport behind a bucket: a token before each request, 429s absorbed.

    After ``max_429`` rate-limited answers in a row for one request the 429 is passed on
    to the SDK, which raises it; the caller reports that request as failed.
    """

    name = "finconn-rate-limited"

    def __init__(
        self,
        inner: stripe.HTTPClient,
        bucket: Bucket,
        *,
        max_429: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        self.inner, self.bucket, self.max_429 = inner, bucket, max_429
        self._sleep = sleep
        self.absorbed = 0  # 429s answered and retried (progress reports, tests)

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        attempt = 0
        while True:
            while (wait := self.bucket.take()) > 0:
                self._sleep(wait)
            body, status, response_headers = self.inner.request(method, url, headers, post_data)
            if status != 429 or attempt >= self.max_429:
                return body, status, response_headers
            self.absorbed += 1
            self.bucket.pause(retry_after(response_headers, attempt))
            attempt += 1

    def close(self) -> None:
        self.inner.close()  # type: ignore[no-untyped-call]


def retry_after(headers: Mapping[str, str], attempt: int) -> float:
    """The seconds Stripe asked for in ``Retry-After``, at least 0.5 s doubled per attempt
    (capped at 30 s): a 429 without the header still backs off."""
    try:
        asked = float(headers.get("Retry-After") or 0)
    except ValueError:
        asked = 0.0
    backoff: float = min(30.0, 0.5 * 2**attempt)
    return max(asked, backoff)
