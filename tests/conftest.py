"""Shared fixtures. Database tests run on SQLite and, when scripts/test started it, PostgreSQL."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

import pluggy
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import expect

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
POSTGRES_URL = os.environ.get("FINCONN_TEST_POSTGRES_URL")
REDIS_URL = os.environ.get("FINCONN_TEST_REDIS_URL")


def require_postgres() -> str:
    """The test PostgreSQL server's URL, which ``scripts/test`` starts; without one the test
    is skipped, and under CI=true a skip is a failure (see ``pytest_runtest_makereport``)."""
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL is not running; run the suite with scripts/test.")
    return POSTGRES_URL


def require_redis() -> str:
    """The test Redis's URL, as :func:`require_postgres` for PostgreSQL."""
    if not REDIS_URL:
        pytest.skip("Redis is not running; run the suite with scripts/test.")
    return REDIS_URL


# A loaded CI box (2 cores, browser and databases together) can take seconds for a link
# to round-trip; expectations wait as long as page actions do before they fail.
expect.set_options(timeout=15_000)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    """Under CI=true a skipped test is a failure: CI must run everything."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"Skipped under CI=true, which counts as a failure: {report.longrepr}"


@sa.event.listens_for(sa.Engine, "connect")
def _sqlite_without_fsync(dbapi_connection: Any, connection_record: Any) -> None:
    """Host databases on SQLite keep their rollback journal in memory and never fsync.

    Durability across a power cut is not under test, and with a journal file and an fsync
    per statement building one app's tables costs most of a second on a busy disk. Locking
    and rollback work as before; the sandbox's own store (plain ``sqlite3``) is untouched.
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        dbapi_connection.execute("PRAGMA journal_mode=MEMORY")
        dbapi_connection.execute("PRAGMA synchronous=OFF")


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    """A PostgreSQL database holding the extension's tables (as ``create_app`` makes them),
    made once per session for ``database_url`` to copy; yields its name."""
    from flask_finconn.testing import create_app, throwaway_database

    assert POSTGRES_URL is not None
    with throwaway_database(POSTGRES_URL) as url:
        app = create_app(url)
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()
        yield str(sa.make_url(url).database)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[str]:
    """A fresh database: a SQLite file, or a new PostgreSQL database.

    It is empty, except that a PostgreSQL database for a test that builds apps with
    ``make_finconn_app`` starts as a copy of ``postgres_template``: the tables
    ``create_app`` would make are there already, so their DDL runs once per session
    rather than once per test.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/app.sqlite3"
        return
    server = require_postgres()
    from flask_finconn.testing import throwaway_database

    if "make_finconn_app" in request.fixturenames:
        with throwaway_database(
            server, template=request.getfixturevalue("postgres_template")
        ) as url:
            yield url
        return
    with throwaway_database(server) as url:
        yield url


@pytest.fixture
def make_finconn_app(database_url: str) -> Iterator[Callable[..., Flask]]:
    """Build host apps (``flask_finconn.testing.create_app``) on the fresh database."""
    from flask_finconn.testing import create_app

    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        app = create_app(database_url, **config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture
def finconn_app(make_finconn_app: Callable[..., Flask]) -> Flask:
    """A host app on the sandbox with default settings; the holder comes from a header."""
    return make_finconn_app()


@pytest.fixture
def finconn_client(finconn_app: Flask) -> FlaskClient:
    """A test client of ``finconn_app``."""
    return finconn_app.test_client()


WIDGET_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
{% if csrf %}<meta name="csrf-token" content="{{ csrf }}">{% endif %}
<title>Acme Budget</title>
{{ finconn.scripts(nonce=nonce, accounts=accounts) }}
{% if twice %}{{ finconn.scripts(nonce=nonce, accounts=accounts) }}{% endif %}
</head>
<body>
<h1>Acme Budget</h1>
{% if button %}{{ finconn.button("Link your bank", permissions=permissions) }}{% endif %}
{% if accounts %}{{ finconn.accounts() }}{% endif %}
<p><a href="#elsewhere">Something else on the page</a></p>
</body>
</html>
"""


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """One headless Debian Chromium (Playwright) for the whole test session."""
    import shutil

    from playwright.sync_api import sync_playwright

    # scripts/test sets FINCONN_CHROMIUM to Playwright's Chromium where the system's cannot
    # run headless (Ubuntu's snap shim).
    executable = os.environ.get("FINCONN_CHROMIUM") or shutil.which("chromium")
    if executable is None:
        pytest.skip("No chromium is installed; run the suite with scripts/test.")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        browser.close()


@pytest.fixture
def widget_app(request: pytest.FixtureRequest, tmp_path: os.PathLike[str]) -> Iterator[Flask]:
    """A sandbox host app with a page at ``/`` showing the widget.

    Query options of the page: ``nonce`` (also sends a strict CSP with it), ``csrf`` (a
    ``<meta name="csrf-token">``), ``twice`` (include the scripts twice), ``button=0`` (no
    element), ``accounts`` (add ``<finconn-accounts>``), ``permissions`` (default: all
    configured but ``payment_method``). The holder comes from the ``X-Finconn-Holder`` header.
    Parametrize it indirectly with a dict to change the app's config.
    """
    from flask import Response, render_template_string
    from flask import request as http

    from flask_finconn.testing import create_app

    app = create_app(
        f"sqlite:///{tmp_path}/widget.sqlite3",
        FINCONN_MERCHANT_NAME="Acme Budget",
        FINCONN_PERMISSIONS=["balances", "ownership", "payment_method", "transactions"],
        **getattr(request, "param", {}),
    )
    app.instance_path = str(tmp_path)

    @app.get("/")
    def widget_page() -> str:
        args = http.args
        return render_template_string(
            WIDGET_PAGE,
            nonce=args.get("nonce"),
            csrf=args.get("csrf"),
            twice=bool(args.get("twice")),
            button=args.get("button", "1") == "1",
            permissions=args.get("permissions", "balances ownership transactions"),
            accounts=bool(args.get("accounts")),
        )

    @app.after_request
    def strict_csp(response: Response) -> Response:
        nonce = http.args.get("nonce")
        if nonce and http.path == "/":
            response.headers["Content-Security-Policy"] = (
                f"default-src 'self'; script-src 'nonce-{nonce}'; "
                f"style-src 'self' 'nonce-{nonce}'; object-src 'none'; base-uri 'none'"
            )
        return response

    yield app
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture
def live_server(widget_app: Flask) -> Iterator[str]:
    """``widget_app`` served by werkzeug on 127.0.0.1 from a thread; yields its base URL."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, widget_app, threaded=True)
    # A short poll interval makes shutdown() return at once instead of after up to 0.5 s.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def widget_page(chromium: Browser, live_server: str) -> Iterator[Page]:
    """A fresh browser page signed in as holder ``h1``; page errors fail the test."""
    context = chromium.new_context(
        base_url=live_server,
        extra_http_headers={"X-Finconn-Holder": "h1"},
        reduced_motion="reduce",  # no entry animation to wait for before each click
    )
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # Record every widget event's detail, in order, as the page saw it.
    page.add_init_script(
        """
        window.__events = [];
        for (const name of ["start", "success", "exit", "error"]) {
          document.addEventListener("finconn-connect-" + name, (e) =>
            window.__events.push({type: e.type, detail: JSON.parse(JSON.stringify(e.detail))}));
        }
        """
    )
    page.set_default_timeout(10_000)
    yield page
    context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


def stripe_event(type: str, obj: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """A snapshot event as Stripe POSTs it (``data.object`` is the object then), with a fresh
    ``evt_`` id."""
    import time

    event = {
        "id": "evt_" + uuid.uuid4().hex[:24],
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type,
    }
    event.update(fields)
    return event


@pytest.fixture
def post_webhook() -> Callable[..., Any]:
    """POST a body to an app's ``/finconn/webhook``, signed with the app's first secret.

    ``post(app, event_or_bytes, secret=..., timestamp=..., header=...)``: a dict is sent
    as compact JSON; ``header`` replaces the computed ``Stripe-Signature`` (None: none).
    """
    import json

    from flask_finconn import get_state
    from flask_finconn.webhooks import sign

    unset: Any = object()

    def post(
        app: Flask,
        body: dict[str, Any] | bytes,
        *,
        secret: str | None = None,
        timestamp: int | None = None,
        header: Any = unset,
        client: FlaskClient | None = None,
    ) -> Any:
        raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        if header is unset:
            header = sign(raw, secret or get_state(app).settings.webhook_secrets[0], timestamp)
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if header is not None:
            headers["Stripe-Signature"] = header
        return (client or app.test_client()).post("/finconn/webhook", data=raw, headers=headers)

    return post


@pytest.fixture
def webhook_app(make_finconn_app: Callable[..., Flask]) -> Flask:
    """``finconn_app`` whose sandbox refreshes never finish on their own: no event appears
    unless the test makes it (``sandbox_of(app).finish_refreshes()``)."""
    return make_finconn_app(FINCONN_SANDBOX_REFRESH_DELAY=3600.0)


@pytest.fixture
def make_pocketbook(
    database_url: str, tmp_path: os.PathLike[str]
) -> Iterator[Callable[..., Flask]]:
    """Build the example app on the fresh database, its sandbox in memory, instance in tmp.

    ``TESTING`` is on, so no background thread runs: tests finish refreshes and deliver
    webhooks themselves through the sandbox.
    """
    from example_app import create_app

    apps: list[Flask] = []

    def make(**config: Any) -> Flask:
        settings = {
            "TESTING": True,
            "SQLALCHEMY_DATABASE_URI": database_url,
            "FINCONN_SANDBOX_DATABASE": ":memory:",
            "SECRET_KEY": "test",
            **config,
        }
        app = create_app(settings, instance_path=str(tmp_path))
        apps.append(app)
        return app

    yield make
    for app in apps:
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


@pytest.fixture(scope="module")
def pocketbook_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Flask, str]]:
    """The example app on fresh SQLite and sandbox files, served from a thread, as in dev.

    Yields the app and its base URL. The sandbox's background thread finishes refreshes
    and delivers signed webhooks to the app, as with ``./scripts/example``.
    """
    import threading

    from werkzeug.serving import make_server

    from example_app import create_app
    from flask_finconn.testing import sandbox_of

    tmp = tmp_path_factory.mktemp("pocketbook")
    app = create_app(
        {
            "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/pocketbook.sqlite3",
            "FINCONN_SANDBOX_DATABASE": f"{tmp}/sandbox.sqlite3",
            "SECRET_KEY": "test",
        },
        instance_path=str(tmp),
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield app, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()
    sandbox_of(app).stop_background()
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


DATA_PERMISSIONS = ["balances", "ownership", "transactions"]


@pytest.fixture
def data_app(make_finconn_app: Callable[..., Flask]) -> Flask:
    """A sandbox host app asking for balances, ownership and transactions (the data tests).

    Its refreshes stay pending until the test finishes them (or moves the clock an hour).
    """
    return make_finconn_app(
        FINCONN_PERMISSIONS=DATA_PERMISSIONS, FINCONN_SANDBOX_REFRESH_DELAY=3600
    )
