"""Fixtures and helpers shared by the sandbox's tests.

Test modules import the fixture functions (``sb_fixture``, ``client_fixture``) to register
the ``sb`` and ``client`` fixtures.

``client`` is a real ``stripe.StripeClient`` talking to a fresh sandbox either in-process
(no socket) or over HTTP on loopback (the WSGI app behind a real server thread), so the
conformance tests run once per transport.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest
import stripe
from stripe.params.financial_connections import SessionCreateParams, SessionCreateParamsFilters
from werkzeug.serving import make_server

from flask_finconn.sandbox import Sandbox

T = TypeVar("T")


def present(value: T | None) -> T:
    """``value``, failing the test when the API left it null (the SDK types most fields as
    optional)."""
    assert value is not None, "The sandbox returned null where the test expects a value."
    return value


class Served:
    """A sandbox WSGI app served over HTTP on 127.0.0.1 by a background thread."""

    def __init__(self, app: Any) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture(name="sb")
def sb_fixture() -> Iterator[Sandbox]:
    """A fresh in-memory sandbox."""
    sandbox = Sandbox(":memory:")
    yield sandbox
    sandbox.close()


@pytest.fixture(name="client", params=["in_process", "loopback"])
def client_fixture(request: pytest.FixtureRequest, sb: Sandbox) -> Iterator[stripe.StripeClient]:
    """A StripeClient on ``sb``: in-process, or over HTTP on loopback."""
    if request.param == "in_process":
        yield sb.stripe_client()
        return
    served = Served(sb.wsgi_app)
    try:
        yield stripe.StripeClient(sb.api_key, base_addresses={"api": served.url})
    finally:
        served.close()


def link(
    sb: Sandbox,
    client: stripe.StripeClient,
    institution: str = "bank_nonoauth",
    accounts: list[str] | None = None,
    permissions: tuple[str, ...] = ("balances", "ownership", "transactions"),
    filters: SessionCreateParamsFilters | None = None,
) -> list[stripe.financial_connections.Account]:
    """Create a customer and a session, complete it, and return the linked accounts in order."""
    customer = client.v1.customers.create({"email": "jenny.rosen@example.com"})
    params: SessionCreateParams = {
        "account_holder": {"type": "customer", "customer": customer.id},
        "permissions": list(permissions),
    }
    if filters is not None:
        params["filters"] = filters
    session = client.v1.financial_connections.sessions.create(params)
    sb.complete_session(session.id, institution=institution, accounts=accounts)
    listed = client.v1.financial_connections.accounts.list({"session": session.id, "limit": 100})
    return list(reversed(listed.data))


def one_account(
    sb: Sandbox, client: stripe.StripeClient, key: str = "checking", **kwargs: Any
) -> stripe.financial_connections.Account:
    return link(sb, client, accounts=[key], **kwargs)[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="server_factory")
def server_factory_fixture() -> Iterator[Any]:
    """Start the standalone server (``python -m flask_finconn.sandbox``) as a process:
    ``server_factory(database, port, *options)`` returns its base address once it accepts
    connections; ``server_factory.stop()`` stops every one started (so does the teardown)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(database: str, port: int, *options: str) -> str:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flask_finconn.sandbox",
                "--port",
                str(port),
                "--database",
                database,
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
        )
        processes.append(process)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return f"http://127.0.0.1:{port}"
            except OSError:
                if process.poll() is not None:
                    output = process.stdout.read().decode() if process.stdout else ""
                    raise RuntimeError(output) from None
                time.sleep(0.05)
        raise RuntimeError("the sandbox server did not start")

    def stop() -> None:
        for process in processes:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
            if process.stdout:
                process.stdout.close()

    start.stop = stop  # type: ignore[attr-defined]
    yield start
    stop()
