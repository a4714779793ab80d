"""The in-process transport builds the WSGI environ that ``urlsplit`` gives, for every URL."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import pytest
from requests.structures import CaseInsensitiveDict

from flask_finconn.sandbox.transport import SandboxHTTPClient

URLS = [
    "http://127.0.0.1:12111/v1/payment_intents",
    "http://127.0.0.1:12111/v1/payment_intents/pi_123/confirm",
    "http://127.0.0.1:12111/v1/customers?limit=3&starting_after=cus_1",
    "http://127.0.0.1:12111/v1/a?b=c?d=e",
    "http://127.0.0.1:12111?x=1",
    "http://127.0.0.1:12111",
    "http://127.0.0.1:12111/",
    "http://127.0.0.1:12111/v1/x?",
    "https://API.Example.COM/v1/x",
    "https://api.example.com:443/v1/x",
    "http://localhost/v1/x",
    "http:///v1/x",
    "HTTP://127.0.0.1:12111/v1/x",
    "http://user:pw@127.0.0.1:12111/v1/x",
    "http://[::1]:12111/v1/x?y=z",
    "http://127.0.0.1:12111/v1/x#frag",
    "http://127.0.0.1:12111/v1/x?q=1#frag",
    "http://127.0.0.1:12111/v1/\tx\r\n?q=1",
    " http://127.0.0.1:12111/v1/x",
    "http://127.0.0.1:12111/v1/%2Fx%20y?q=%C3%A9",
    "http://127.0.0.1:12111/v1/\u00e9?q=\u00e9",
    "http://h\u00e9st:8080/v1/x",
    "svn+ssh://host:22/v1/x",
    "//127.0.0.1:12111/v1/x",
    "/v1/x?y=1",
    "v1/x",
]


def _expected(url: str) -> tuple[str, str, str, str, str]:
    parts = urlsplit(url)
    return (
        parts.path,
        parts.query,
        parts.hostname or "localhost",
        str(parts.port or 80),
        parts.scheme or "http",
    )


def _recorder() -> tuple[Callable[..., Iterable[bytes]], list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append(dict(environ))
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Request-Id", "req_1"), ("X-A", "1")],
        )
        return [b"{}"]

    return app, seen


def _seen(environ: dict[str, Any]) -> tuple[str, str, str, str, str]:
    return (
        environ["PATH_INFO"],
        environ["QUERY_STRING"],
        environ["SERVER_NAME"],
        environ["SERVER_PORT"],
        environ["wsgi.url_scheme"],
    )


@pytest.mark.parametrize("url", URLS)
def test_environ_matches_urlsplit(url: str) -> None:
    app, seen = _recorder()
    client = SandboxHTTPClient(app)
    for _ in range(2):  # the second time from what the client kept of the origin
        body, status, headers = client.request("get", url, {"Stripe-Version": "v"})
        assert (body, status) == ("{}", 200)
        assert _seen(seen[-1]) == _expected(url)
        assert isinstance(headers, CaseInsensitiveDict)
        assert headers["request-id"] == "req_1"
        assert list(headers.items()) == [
            ("Content-Type", "application/json"),
            ("Request-Id", "req_1"),
            ("X-A", "1"),
        ]


def test_random_urls_match_urlsplit() -> None:
    app, seen = _recorder()
    client = SandboxHTTPClient(app)
    pieces = ["http", "https", "://", ":", "/", "?", "#", "@", "[", "]", "a", "B", "1", "%20"]
    pieces += [" ", "\t", "\n", "\u00e9", ".", "-", "+", "=", "&", "127.0.0.1:12111", "v1"]
    rng = random.Random(13)
    checked = 0
    for _ in range(3000):
        url = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        try:
            expected = _expected(url)
        except ValueError:
            with pytest.raises(ValueError):
                client.request("get", url, {})
            continue
        client.request("get", url, {})
        assert _seen(seen[-1]) == expected, url
        checked += 1
    assert checked > 1000


def test_bad_port_fails_every_time() -> None:
    app, _ = _recorder()
    client = SandboxHTTPClient(app)
    for _ in range(2):
        with pytest.raises(ValueError):
            client.request("get", "http://127.0.0.1:99999/v1/x", {})


def test_request_headers_become_environ_keys() -> None:
    app, seen = _recorder()
    client = SandboxHTTPClient(app)
    headers = {
        "Authorization": "Bearer sk_test_1",
        "Content-Type": "application/x-www-form-urlencoded",
        "Idempotency-Key": "k1",
        "Stripe-Version": "v",
    }
    for _ in range(2):
        client.request("post", "http://127.0.0.1:1/v1/x", headers, "a=1")
        environ = seen[-1]
        assert environ["HTTP_AUTHORIZATION"] == "Bearer sk_test_1"
        assert environ["CONTENT_TYPE"] == "application/x-www-form-urlencoded"
        assert "HTTP_CONTENT_TYPE" not in environ
        assert environ["HTTP_IDEMPOTENCY_KEY"] == "k1"
        assert environ["HTTP_STRIPE_VERSION"] == "v"
        assert environ["REQUEST_METHOD"] == "POST"
        assert environ["CONTENT_LENGTH"] == "3"
        assert environ["wsgi.input"].read() == b"a=1"
