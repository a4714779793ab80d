"""The example app over HTTP: configuration, the demo login, its pages and the CLI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from example_app import database_url
from example_app.formatting import balance_chart
from example_app.models import User, db
from flask_finconn import ConfigurationError, Holder
from flask_finconn.testing import link_accounts, sandbox_of

ROOT = Path(__file__).resolve().parent.parent
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(client: FlaskClient, email: str) -> str:
    """Sign in through the form; returns the user's holder id."""
    token = CSRF.search(client.get("/signin").get_data(as_text=True))
    assert token is not None
    response = client.post("/signin", data={"email": email, "csrf_token": token.group(1)})
    assert response.status_code == 302
    with client.application.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.email == email))
    return str(user_id)


def link_and_sync(app: Flask, holder_id: str, institution: str = "test_nonoauth") -> list[str]:
    """Link a sandbox bank for the holder and let the prefetched data arrive by webhook."""
    accounts = link_accounts(app, Holder(holder_id), institution=institution)
    sandbox = sandbox_of(app)
    sandbox.finish_refreshes(status="succeeded")
    sandbox.deliver_events(retry_now=True)
    return [account.id for account in accounts]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://u:p@db:5432/pb", "postgresql+psycopg://u:p@db:5432/pb"),
        ("postgresql://u@db/pb?sslmode=require", "postgresql+psycopg://u@db/pb?sslmode=require"),
        ("postgresql+psycopg://u@db/pb", "postgresql+psycopg://u@db/pb"),
        ("sqlite:////srv/pb.sqlite3", "sqlite:////srv/pb.sqlite3"),
        (None, "sqlite:////srv/instance/pocketbook.sqlite3"),
        ("", "sqlite:////srv/instance/pocketbook.sqlite3"),
    ],
)
def test_database_url_reads_heroku_style_postgres_urls(url: str | None, expected: str) -> None:
    assert database_url(url, "/srv/instance") == expected


def test_pages_need_a_signed_in_user(make_pocketbook: Callable[..., Flask]) -> None:
    client = make_pocketbook().test_client()
    for path in ("/", "/events", "/accounts/fcacct_x"):
        response = client.get(path)
        assert response.status_code == 302
        assert response.location.startswith("/signin?next=")
    assert client.get("/finconn/accounts").status_code == 401


def test_sign_in_form_is_protected_by_its_csrf_token(make_pocketbook: Callable[..., Flask]) -> None:
    client = make_pocketbook().test_client()
    page = client.get("/signin").get_data(as_text=True)
    assert "No password: this is a demo." in page
    refused = client.post("/signin", data={"email": "ada@example.com", "csrf_token": "forged"})
    assert refused.status_code == 400
    assert client.get("/").status_code == 302
    token = CSRF.search(page)
    assert token is not None
    invalid = client.post("/signin", data={"email": "not an email", "csrf_token": token.group(1)})
    assert invalid.status_code == 422
    assert "Enter an email address" in invalid.get_data(as_text=True)
    ok = client.post(
        "/signin",
        data={"email": " Ada@Example.com ", "csrf_token": token.group(1), "next": "//evil.test/x"},
    )
    assert ok.status_code == 302
    assert ok.location == "/"  # never off-site
    cookie = client.get_cookie("example_session")
    assert cookie is not None and cookie.http_only and cookie.same_site == "Lax"
    assert "ada@example.com" in client.get("/").get_data(as_text=True)


def test_sign_out_ends_the_session_on_the_server(make_pocketbook: Callable[..., Flask]) -> None:
    client = make_pocketbook().test_client()
    sign_in(client, "ada@example.com")
    stolen = client.get_cookie("example_session")
    assert stolen is not None
    page = client.get("/").get_data(as_text=True)
    token = CSRF.search(page)
    assert token is not None
    assert client.post("/signout", data={}).status_code == 400
    response = client.post("/signout", data={"csrf_token": token.group(1)})
    assert response.location == "/signin?signed_out=1"
    client.set_cookie("example_session", stolen.value)
    assert client.get("/").status_code == 302


def test_pages_show_the_users_accounts_and_nobody_elses(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook()
    ada = app.test_client()
    ada_id = sign_in(ada, "ada@example.com")
    checking, _ = link_and_sync(app, ada_id)

    dashboard = ada.get("/").get_data(as_text=True)
    assert "Test Checking" in dashboard and "Test Savings" in dashboard
    assert "•••• 6789" in dashboard
    assert re.search(r'data-field="balance">\$[\d,]+\.\d\d<', dashboard)
    assert "Net balance of active accounts" in dashboard

    account = ada.get(f"/accounts/{checking}").get_data(as_text=True)
    assert '<h2 id="history-title">Balance history</h2>' in account
    # One reading is a sentence, not a near-empty chart.
    assert "One reading so far:" in account and 'class="chart__line"' not in account
    assert re.search(r'<tr class="txn txn--pending">', account)
    assert re.search(r"1\u2013\d+ of \d+ transactions", account)
    assert 'class="owner__name"' in account

    grace = app.test_client()
    sign_in(grace, "grace@example.com")
    assert "No bank accounts yet" in grace.get("/").get_data(as_text=True)
    assert grace.get(f"/accounts/{checking}").status_code == 404
    assert grace.get(f"/finconn/accounts/{checking}").status_code == 404
    assert "No events" in grace.get("/events").get_data(as_text=True)
    assert "refreshed_balance" in ada.get("/events").get_data(as_text=True)


def test_an_account_the_bank_cut_off_asks_to_be_reconnected(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook()
    client = app.test_client()
    holder_id = sign_in(client, "ada@example.com")
    checking, savings = link_accounts(app, Holder(holder_id), institution="test_nonoauth")
    sandbox = sandbox_of(app)
    sandbox.finish_refreshes(status="succeeded")
    sandbox.deactivate(checking.stripe_id)
    sandbox.deliver_events(retry_now=True)

    dashboard = client.get("/").get_data(as_text=True)
    cards = dict(re.findall(r'data-account="(fcacct_\w+)"(.*?)</li>', dashboard, re.S))
    assert "Reconnect needed" in cards[checking.id]
    assert "<finconn-connect" in cards[checking.id]  # the widget opens a new session
    assert "Inactive" in cards[checking.id]
    assert 'data-action="refresh"' not in cards[checking.id]
    assert "Reconnect needed" not in cards[savings.id]
    assert 'data-action="refresh"' in cards[savings.id]
    account = client.get(f"/accounts/{checking.id}").get_data(as_text=True)
    assert "Reconnect needed" in account
    assert "Refresh balance" not in account
    events = client.get("/events", query_string={"status": "processed"}).get_data(as_text=True)
    assert "Account deactivated" in events
    assert "Account deactivated" not in client.get(
        "/events", query_string={"status": "failed"}
    ).get_data(as_text=True)


def test_real_stripe_keys_from_the_environment_turn_the_sandbox_off(
    make_pocketbook: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_test_" + "x" * 24)
    monkeypatch.setenv("STRIPE_PUBLISHABLE_KEY", "pk_test_" + "x" * 24)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_" + "x" * 24)
    app = make_pocketbook(FINCONN_SANDBOX_DATABASE=None)
    assert app.extensions["finconn"].sandbox is None
    client = app.test_client()
    sign_in(client, "ada@example.com")
    response = client.get("/")
    assert "Sandbox" not in response.get_data(as_text=True)
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'nonce-" in policy and "https://js.stripe.com" in policy
    assert "frame-src https://js.stripe.com" in policy


def test_transactions_are_searchable_filterable_and_paginated(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook(POCKETBOOK_PAGE_SIZE=5)
    client = app.test_client()
    checking, _ = link_and_sync(app, sign_in(client, "ada@example.com"))
    url = f"/accounts/{checking}"

    first = client.get(url).get_data(as_text=True)
    total = int(re.search(r"1\u20135 of (\d+) transactions", first).group(1))  # type: ignore[union-attr]
    assert total > 5
    assert 'rel="next"' in first and 'rel="prev"' not in first
    second = client.get(url, query_string={"page": 2}).get_data(as_text=True)
    assert "6\u201310 of" in second and 'rel="prev"' in second

    pending = client.get(url, query_string={"status": "pending"}).get_data(as_text=True)
    rows = re.findall(r'<tr class="txn txn--(\w+)">', pending)
    assert rows and set(rows) == {"pending"}

    cell = r'<td data-label="Description">([^<]+)</td>'
    description = re.search(cell, first).group(1)  # type: ignore[union-attr]
    word = description.split()[0]
    found = client.get(url, query_string={"q": word.lower()}).get_data(as_text=True)
    descriptions = re.findall(cell, found)
    assert descriptions and all(word.lower() in d.lower() for d in descriptions)
    # LIKE wildcards are searched for literally.
    assert "No transactions match" in client.get(url, query_string={"q": "%"}).get_data(
        as_text=True
    )
    none = client.get(url, query_string={"q": "%", "status": "void"}).get_data(as_text=True)
    assert "No void transactions match “%”." in none


def test_pages_carry_a_csp_whose_nonce_is_on_every_script(
    make_pocketbook: Callable[..., Flask],
) -> None:
    client = make_pocketbook().test_client()
    sign_in(client, "ada@example.com")
    response = client.get("/")
    policy = response.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy).group(1)  # type: ignore[union-attr]
    html = response.get_data(as_text=True)
    scripts = re.findall(r"<script[^>]*>", html)
    assert len(scripts) == 2  # the widget and the page script
    assert all(f'nonce="{nonce}"' in tag for tag in scripts)
    assert "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy
    assert client.get("/").headers["Content-Security-Policy"] != policy  # fresh per response


def test_unknown_pages_are_html_and_the_extensions_errors_stay_json(
    make_pocketbook: Callable[..., Flask],
) -> None:
    client = make_pocketbook().test_client()
    sign_in(client, "ada@example.com")
    page = client.get("/accounts/fcacct_missing")
    assert page.status_code == 404 and page.mimetype == "text/html"
    assert "Back to your accounts" in page.get_data(as_text=True)
    api = client.get("/finconn/accounts/fcacct_missing")
    assert api.status_code == 404
    assert api.get_json()["error"]["code"] == "account_not_found"


def test_the_flask_cli_runs_the_extensions_commands(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/pb.sqlite3",
        "FLASK_FINCONN_SANDBOX_DATABASE": str(tmp_path / "sandbox.sqlite3"),
        "FLASK_SECRET_KEY": "cli",
    }
    flask = [sys.executable, "-m", "flask", "--app", "example_app", "finconn"]
    info = subprocess.run(
        [*flask, "info"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stderr
    assert "mode: sandbox" in info.stdout
    accounts = subprocess.run(
        [*flask, "accounts", "1"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert accounts.returncode == 0, accounts.stderr
    assert (tmp_path / "pb.sqlite3").exists()  # created on first start


def test_a_generated_secret_key_is_kept_across_restarts(
    make_pocketbook: Callable[..., Flask],
) -> None:
    first = make_pocketbook(SECRET_KEY=None)
    again = make_pocketbook(SECRET_KEY=None)
    assert first.secret_key and first.secret_key == again.secret_key
    key_file = Path(first.instance_path) / "secret_key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in key_file.parent.iterdir() if "secret" in p.name) == ["secret_key"]


def test_the_balance_chart_reads_well_with_one_reading_or_many() -> None:
    day = datetime(2026, 11, 25, 9, 54, tzinfo=UTC)
    one = balance_chart([(day, 2_393_367)], "usd")
    assert one is not None
    assert one.summary == "One balance reading so far: $23,933.67 on Nov 25, 2026, 9:54 AM UTC."
    assert [tick["label"] for tick in one.ticks] == ["$23,934"]
    assert (one.first, one.first_anchor, one.last) == ("Nov 25, 2026", "middle", "")

    same_day = balance_chart([(day, -5_000), (day + timedelta(hours=3), -4_250)], "usd")
    assert same_day is not None
    assert (same_day.first, same_day.last) == ("Nov 25, 9:54 AM", "12:54 PM UTC")
    assert same_day.summary.startswith("2 balance readings, from -$50.00")
    highest, lowest = same_day.dots[1], same_day.dots[0]
    assert highest["y"] < lowest["y"]  # up is more money
    assert balance_chart([], "usd") is None


def test_the_events_page_shows_a_failed_event_with_its_error(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook()
    client = app.test_client()
    holder = Holder(sign_in(client, "ada@example.com"))
    checking, _ = link_accounts(app, holder, institution="test_nonoauth")
    sandbox = sandbox_of(app)
    sandbox.finish_refreshes(status="succeeded")
    sandbox.deliver_events(retry_now=True)
    sandbox.faults.api_error_rate = 1.0  # re-reading the account from Stripe fails
    try:
        sandbox.fire_event(checking.stripe_id, "financial_connections.account.reactivated")
        sandbox.deliver_events(retry_now=True)
    finally:
        sandbox.faults.reset()

    failed = client.get("/events", query_string={"status": "failed"}).get_data(as_text=True)
    rows = re.findall(r"<tr>(.*?)</tr>", failed.split("<tbody>")[1], re.S)
    assert len(rows) == 1
    assert "Account reactivated" in rows[0]
    assert 'class="badge badge--failed">Failed<' in rows[0]
    assert 'class="small field-error"' in rows[0]  # the error, in words
    assert "flask finconn events replay evt_" in rows[0]
    everything = client.get("/events").get_data(as_text=True)
    assert everything.count("badge--processed") >= 6


def test_without_a_stripe_key_the_example_asks_for_the_sandbox_explicitly(
    make_pocketbook: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Outside debug and testing mode the extension starts the sandbox only when
    # FINCONN_SANDBOX is set explicitly: the example sets it when it has no key.
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    app = make_pocketbook(TESTING=False)
    try:
        assert not app.testing and not app.debug
        assert app.config["FINCONN_SANDBOX"] is True
        assert sandbox_of(app) is not None
    finally:
        sandbox_of(app).stop_background()
    # An explicit choice is left alone: turning the sandbox off without a key is refused.
    with pytest.raises(ConfigurationError):
        make_pocketbook(FINCONN_SANDBOX=False)
