"""flask_finconn.testing: what a host app's own tests use to link accounts headlessly."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from flask_finconn import FinConn, Holder, account_linked, get_state
from flask_finconn.models import Account
from flask_finconn.testing import (
    HOLDER_HEADER,
    cancel_link,
    captured_signals,
    deactivate,
    deliver_webhooks,
    finish_refreshes,
    link_accounts,
    reactivate,
    sandbox_of,
    save_bank_account,
)

ADA = Holder("ada", email="ada@example.com")


def test_link_accounts_outside_a_context_returns_readable_rows(finconn_app: Flask) -> None:
    with captured_signals(account_linked, finconn_app) as linked:
        accounts = link_accounts(finconn_app, ADA, accounts=["checking", "credit_card"])
    assert [(a.display_name, a.category) for a in accounts] == [
        ("Sample Checking Account", "cash"),
        ("Sample Credit Card", "credit"),
    ]
    assert all(a.holder_id == "ada" and a.latest_balance is None for a in accounts)
    assert len(linked) == 2


def test_link_accounts_inside_a_context_returns_live_rows(finconn_app: Flask) -> None:
    with finconn_app.app_context():
        accounts = link_accounts(finconn_app, ADA, institution="test_oauth")
        db = get_state(finconn_app).db
        assert all(account in db.session for account in accounts)
        assert db.session.get(Account, accounts[0].id) is accounts[0]
        assert accounts[0].institution_name == "Test (OAuth)"


def test_linked_accounts_show_up_over_http(finconn_app: Flask) -> None:
    accounts = link_accounts(finconn_app, ADA, accounts=["savings"])
    body = finconn_app.test_client().get("/finconn/accounts", headers={HOLDER_HEADER: "ada"}).json
    assert body is not None
    assert [a["id"] for a in body["data"]] == [accounts[0].id]


def test_cancel_link_links_nothing(finconn_app: Flask) -> None:
    with captured_signals(account_linked, finconn_app) as linked:
        result = cancel_link(finconn_app, ADA)
    assert (result.accounts, result.cancelled) == ([], True)
    assert linked == []


def test_captured_signals_stops_listening_after_the_block(finconn_app: Flask) -> None:
    with captured_signals(account_linked, finconn_app) as linked:
        pass
    link_accounts(finconn_app, ADA, accounts=["checking"])
    assert linked == []


def test_signals_of_another_app_are_not_captured(
    make_finconn_app: Callable[..., Flask],
) -> None:
    first, second = make_finconn_app(), make_finconn_app()
    with captured_signals(account_linked, first) as linked:
        link_accounts(second, ADA, accounts=["checking"])
    assert linked == []


def test_each_app_has_its_own_sandbox(make_finconn_app: Callable[..., Flask]) -> None:
    first, second = make_finconn_app(), make_finconn_app()
    assert sandbox_of(first) is not sandbox_of(second)


def test_sandbox_of_refuses_real_keys() -> None:
    app = Flask("host")
    app.config.update(
        SQLALCHEMY_DATABASE_URI="sqlite://",
        FINCONN_STRIPE_SECRET_KEY="sk_test_real",
        FINCONN_STRIPE_PUBLISHABLE_KEY="pk_test_real",
        FINCONN_WEBHOOK_SECRET="whsec_real",
        FINCONN_MERCHANT_NAME="Real shop",
    )
    db = SQLAlchemy(app)
    FinConn(app, db=db)
    with pytest.raises(RuntimeError, match="sandbox"):
        sandbox_of(app)


def test_finish_refreshes_brings_balances_through_the_webhook(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(FINCONN_PREFETCH=["balances"], FINCONN_SANDBOX_REFRESH_DELAY=3600.0)
    accounts = link_accounts(app, ADA, accounts=["checking"])
    client = app.test_client()
    before = client.get("/finconn/accounts", headers={HOLDER_HEADER: "ada"}).json
    assert before is not None and before["data"][0]["balance"] is None
    assert finish_refreshes(app) >= 1
    after = client.get(f"/finconn/accounts/{accounts[0].id}", headers={HOLDER_HEADER: "ada"})
    body = after.json
    assert body is not None
    assert body["balance"]["currency"] == "usd"
    assert isinstance(body["balance"]["current"], int)
    assert body["refresh"]["balance"]["status"] == "succeeded"


def test_deactivate_and_reactivate_show_in_the_account(finconn_app: Flask) -> None:
    accounts = link_accounts(finconn_app, ADA, accounts=["checking"])
    client = finconn_app.test_client()
    url = f"/finconn/accounts/{accounts[0].id}"
    deactivate(finconn_app, accounts[0])
    inactive = client.get(url, headers={HOLDER_HEADER: "ada"}).json
    assert inactive is not None
    assert (inactive["status"], inactive["action"]) == ("inactive", "relink_required")
    reactivate(finconn_app, accounts[0])
    active = client.get(url, headers={HOLDER_HEADER: "ada"}).json
    assert active is not None
    assert (active["status"], active["action"]) == ("active", "none")


def test_deliver_webhooks_with_nothing_pending_is_zero(finconn_app: Flask) -> None:
    assert deliver_webhooks(finconn_app) == 0


def test_save_bank_account_for_a_holder_without_an_email(finconn_app: Flask) -> None:
    method = save_bank_account(finconn_app, Holder("bob"))
    assert (method.holder_id, method.last4, method.status) == ("bob", "6789", "verified")
