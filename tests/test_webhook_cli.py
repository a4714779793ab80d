"""``flask finconn events``, ``webhook-secret`` and ``sandbox deliver``."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Account
from flask_finconn.testing import link_accounts, sandbox_of
from flask_finconn.webhooks import sign

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

DEACTIVATED = "financial_connections.account.deactivated"
CREATED = "financial_connections.account.created"


def run(app: Flask, *args: str) -> Any:
    return app.test_cli_runner().invoke(args=["finconn", *args])


def test_sandbox_deliver_flushes_pending_events(webhook_app: Flask) -> None:
    account = link_accounts(webhook_app, Holder("ada"), accounts=["checking"])[0]
    sandbox_of(webhook_app).deactivate(account.stripe_id)
    result = run(webhook_app, "sandbox", "deliver")
    assert result.exit_code == 0, result.output
    assert "Made 2 delivery attempt(s); 0 delivery(ies) still pending." in result.output
    with webhook_app.app_context():
        stored = get_state(webhook_app).db.session.get(Account, account.id)
        assert stored is not None and stored.status == "inactive"
    assert "serve" in run(webhook_app, "sandbox", "--help").output  # the sandbox's own stay


def test_events_lists_and_filters(webhook_app: Flask) -> None:
    assert "No webhook events stored." in run(webhook_app, "events").output
    account = link_accounts(webhook_app, Holder("ada"), accounts=["checking"])[0]
    sb = sandbox_of(webhook_app)
    sb.deactivate(account.stripe_id)
    sb.faults.fail_next(429)  # the created event fails; the deactivated one is fine
    sb.deliver_events()
    listed = run(webhook_app, "events").output.splitlines()
    assert DEACTIVATED in listed[0] and "processed" in listed[0]  # newest first
    assert CREATED in listed[1] and "failed  attempts 1" in listed[1]
    assert listed[2].startswith("    error: StripeUnavailable")
    failed = run(webhook_app, "events", "--status", "failed").output
    assert CREATED in failed and DEACTIVATED not in failed
    by_type = run(webhook_app, "events", "--type", DEACTIVATED).output
    assert DEACTIVATED in by_type and CREATED not in by_type
    assert "No webhook events match." in run(webhook_app, "events", "--type", "x").output
    assert run(webhook_app, "events", "--status", "bogus").exit_code == 2


def test_webhook_secret_names_the_secret_that_signed_a_delivery(
    make_finconn_app: Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_finconn_app(FINCONN_WEBHOOK_SECRET="whsec_old_secret_1111,whsec_new_secret_2222")
    listing = run(app, "webhook-secret")
    assert listing.exit_code == 0
    assert "3 webhook secret(s), tolerance 300 s:" in listing.output  # plus the sandbox's
    assert "whsec_...1111" in listing.output and "whsec_...2222" in listing.output
    assert "old_secret" not in listing.output  # never printed in full
    body = tmp_path / "delivery.json"
    body.write_bytes(b'{"id": "evt_1"}')
    signed = sign(body.read_bytes(), "whsec_new_secret_2222", int(time.time()) - 3600)
    found = run(app, "webhook-secret", "--payload", str(body), "--header", signed)
    assert found.exit_code == 0, found.output
    assert "whsec_...1111 does not verify the delivery" in found.output
    assert "whsec_...2222 verifies the delivery." in found.output
    assert "the route refuses it now as stale" in found.output
    stranger = sign(body.read_bytes(), "whsec_unknown")
    missing = run(app, "webhook-secret", "--payload", str(body), "--header", stranger)
    assert missing.exit_code == 1
    assert "No configured secret verifies that delivery." in missing.output
    half = run(app, "webhook-secret", "--payload", str(body))
    assert half.exit_code == 2


def test_events_sweep_processes_what_is_due(webhook_app: Flask) -> None:
    assert "Nothing to sweep." in run(webhook_app, "events", "sweep").output
    account = link_accounts(webhook_app, Holder("ada"), accounts=["checking"])[0]
    sb = sandbox_of(webhook_app)
    sb.faults.fail_next(429)
    sb.deliver_events()
    with webhook_app.app_context():
        session = get_state(webhook_app).db.session
        session.execute(
            sa.text("UPDATE finconn_webhook_event SET claimed_at = '2000-01-01 00:00:00'")
        )
        session.commit()
    result = run(webhook_app, "events", "sweep")
    assert "Queued 1 event(s) again." in result.output
    assert "processed" in run(webhook_app, "events").output.splitlines()[0]
    assert account.stripe_id in run(webhook_app, "events").output
