"""Refresh, disconnect, transactions and owners routes, and the status changes behind them."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import pytest
from flask import Flask, has_app_context
from flask.testing import FlaskClient

from flask_finconn import Holder, get_state, signals
from flask_finconn.services import sync
from flask_finconn.testing import HOLDER_HEADER, captured_signals, link_accounts, sandbox_of

ADA = Holder("ada", email="ada@example.com")
PREFIX = "/finconn/accounts"


def call(
    client: FlaskClient, method: str, url: str, body: Any = None, holder: str | None = "ada"
) -> Any:
    headers = {HOLDER_HEADER: holder} if holder else {}
    if method == "GET":
        return client.get(url, headers=headers, query_string=body)
    return client.post(url, headers=headers, json=body if body is not None else {})


def nudge(app: Flask, stripe_id: str) -> sync.Applied:
    """What a webhook about the account does: re-read it from Stripe and apply it."""
    with nullcontext() if has_app_context() else app.app_context():
        applied = sync.sync_account_from_stripe(get_state(app), stripe_id)
        assert applied is not None
        return applied


@pytest.fixture
def linked(data_app: Flask) -> list[Any]:
    """Ada's three sandbox accounts (checking, savings, credit card), transactions synced."""
    accounts = link_accounts(data_app, ADA)
    for account in accounts:  # a short history keeps these tests quick
        sandbox_of(data_app).set_history_size(account.stripe_id, 150)
    sandbox_of(data_app).finish_refreshes()
    for account in accounts:
        nudge(data_app, account.stripe_id)
    return accounts


def test_refresh_balance_and_owners_end_to_end(data_app: Flask, linked: list[Any]) -> None:
    client = data_app.test_client()
    checking = linked[0]
    assert call(client, "GET", f"{PREFIX}/{checking.id}/owners").json == {"data": []}
    response = call(
        client, "POST", f"{PREFIX}/{checking.id}/refresh", {"features": ["balance", "ownership"]}
    )
    assert response.status_code == 202
    assert response.json["refresh"]["balance"]["status"] == "pending"
    assert response.json["refresh"]["ownership"]["status"] == "pending"
    assert response.json["balance"] is None

    sandbox_of(data_app).finish_refreshes(checking.stripe_id)
    with (
        data_app.app_context(),
        captured_signals(signals.balance_refreshed, data_app) as balances,
        captured_signals(signals.ownership_refreshed, data_app) as ownerships,
    ):
        nudge(data_app, checking.stripe_id)
        snapshot_current = balances[0]["snapshot"].current
        owner_ids = [o.id for o in ownerships[0]["owners"]]
    account = call(client, "GET", f"{PREFIX}/{checking.id}").json
    assert account["refresh"]["balance"]["status"] == "succeeded"
    balance = account["balance"]
    assert balance["currency"] == "usd" and balance["current"] > 0
    assert balance["available"] is not None and balance["as_of"].endswith("Z")
    assert [b["status"] for b in balances] == ["succeeded"]
    assert snapshot_current == balance["current"]
    owners = call(client, "GET", f"{PREFIX}/{checking.id}/owners").json["data"]
    assert owners and {"id", "name", "email", "phone", "address", "refreshed_at"} == set(owners[0])
    assert sorted(owner_ids) == sorted(o["id"] for o in owners)


def test_credit_balances_are_negative_and_available_falls_back(
    data_app: Flask, linked: list[Any]
) -> None:
    client = data_app.test_client()
    card = linked[2]
    assert card.category == "credit"
    call(client, "POST", f"{PREFIX}/{card.id}/refresh", {"features": ["balance"]})
    sandbox_of(data_app).finish_refreshes(card.stripe_id)
    nudge(data_app, card.stripe_id)
    balance = call(client, "GET", f"{PREFIX}/{card.id}").json["balance"]
    assert balance["current"] < 0  # owed by the holder
    assert balance["available"] == balance["current"]


def test_each_balance_refresh_keeps_a_snapshot(data_app: Flask, linked: list[Any]) -> None:
    from flask_finconn.models import BalanceSnapshot

    client = data_app.test_client()
    sandbox = sandbox_of(data_app)
    checking = linked[0]
    for _ in range(3):
        assert (
            call(
                client, "POST", f"{PREFIX}/{checking.id}/refresh", {"features": ["balance"]}
            ).status_code
            == 202
        )
        sandbox.finish_refreshes(checking.stripe_id)
        nudge(data_app, checking.stripe_id)
        sandbox.advance_time(3600)
    with data_app.app_context():
        db = get_state(data_app).db
        history = db.session.scalars(
            db.select(BalanceSnapshot).where(BalanceSnapshot.account_id == checking.id)
        ).all()
    assert len(history) == 3
    latest = max(history, key=lambda snap: snap.as_of)
    assert call(client, "GET", f"{PREFIX}/{checking.id}").json["balance"]["current"] == (
        latest.current
    )


def test_a_failed_refresh_is_reported(data_app: Flask, linked: list[Any]) -> None:
    client = data_app.test_client()
    checking = linked[0]
    call(client, "POST", f"{PREFIX}/{checking.id}/refresh", {"features": ["balance"]})
    sandbox_of(data_app).finish_refreshes(checking.stripe_id, status="failed")
    with captured_signals(signals.balance_refreshed, data_app) as balances:
        nudge(data_app, checking.stripe_id)
    assert balances == [{"account": balances[0]["account"], "snapshot": None, "status": "failed"}]
    account = call(client, "GET", f"{PREFIX}/{checking.id}").json
    assert account["refresh"]["balance"]["status"] == "failed"
    assert account["balance"] is None


def test_refresh_too_early_says_when(data_app: Flask, linked: list[Any]) -> None:
    client = data_app.test_client()
    checking = linked[0]
    url = f"{PREFIX}/{checking.id}/refresh"
    assert call(client, "POST", url, {"features": ["balance"]}).status_code == 202
    running = call(client, "POST", url, {"features": ["balance"]})
    assert running.status_code == 409
    assert running.json["error"]["code"] == "refresh_in_progress"

    sandbox_of(data_app).finish_refreshes(checking.stripe_id)
    early = call(client, "POST", url, {"features": ["balance", "transactions"]})
    assert early.status_code == 409
    error = early.json["error"]
    assert error["code"] == "refresh_too_early"
    assert error["next_refresh_available_at"] in error["message"]
    assert set(error["features"]) == {"balance", "transactions"}

    sandbox_of(data_app).advance_time(sandbox_of(data_app).refresh_cooldown + 1)
    assert call(client, "POST", url, {"features": ["balance"]}).status_code == 202


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"features": ["ownership"]}, 400, "permission_missing"),
        ({"features": ["balances"]}, 400, "invalid_request"),
        ({"features": []}, 400, "invalid_request"),
        ({}, 400, "invalid_request"),
        ({"features": ["balance"], "extra": 1}, 400, "invalid_request"),
    ],
)
def test_refresh_refuses_what_cannot_be_refreshed(
    make_finconn_app: Callable[..., Flask], body: dict[str, Any], status: int, code: str
) -> None:
    app = make_finconn_app()  # asks for balances and transactions only
    checking = link_accounts(app, ADA)[0]
    response = call(app.test_client(), "POST", f"{PREFIX}/{checking.id}/refresh", body)
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    if code == "permission_missing":
        assert "'ownership'" in response.json["error"]["message"]


def test_an_inactive_account_asks_for_a_relink_and_keeps_its_data(
    data_app: Flask, linked: list[Any]
) -> None:
    client = data_app.test_client()
    checking = linked[0]
    before = call(client, "GET", f"{PREFIX}/{checking.id}/transactions", {"limit": 100}).json
    sandbox_of(data_app).deactivate(checking.stripe_id)
    with captured_signals(signals.account_deactivated, data_app) as deactivated:
        nudge(data_app, checking.stripe_id)
    assert len(deactivated) == 1
    account = call(client, "GET", f"{PREFIX}/{checking.id}").json
    assert (account["status"], account["action"]) == ("inactive", "relink_required")
    refused = call(client, "POST", f"{PREFIX}/{checking.id}/refresh", {"features": ["balance"]})
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "account_inactive"
    assert refused.json["error"]["action"] == "relink_required"
    after = call(client, "GET", f"{PREFIX}/{checking.id}/transactions", {"limit": 100}).json
    assert after == before

    sandbox_of(data_app).reactivate(checking.stripe_id)
    with captured_signals(signals.account_reactivated, data_app) as reactivated:
        nudge(data_app, checking.stripe_id)
    assert len(reactivated) == 1
    account = call(client, "GET", f"{PREFIX}/{checking.id}").json
    assert (account["status"], account["action"]) == ("active", "none")


def test_refresh_finds_out_about_a_deactivation_it_was_not_told_of(
    data_app: Flask, linked: list[Any]
) -> None:
    client = data_app.test_client()
    checking = linked[0]
    sandbox_of(data_app).deactivate(checking.stripe_id)  # its webhook has not arrived
    with captured_signals(signals.account_deactivated, data_app) as deactivated:
        refused = call(client, "POST", f"{PREFIX}/{checking.id}/refresh", {"features": ["balance"]})
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "account_inactive"
    assert len(deactivated) == 1
    assert call(client, "GET", f"{PREFIX}/{checking.id}").json["status"] == "inactive"


def test_disconnect(data_app: Flask, linked: list[Any]) -> None:
    client = data_app.test_client()
    checking = linked[0]
    assert checking.subscriptions == ["transactions"]
    with captured_signals(signals.account_disconnected, data_app) as disconnected:
        response = call(client, "POST", f"{PREFIX}/{checking.id}/disconnect")
    assert response.status_code == 200
    assert response.json["status"] == "disconnected"
    assert response.json["subscriptions"] == []
    assert len(disconnected) == 1
    at_stripe = sandbox_of(data_app).account(checking.stripe_id)
    assert (at_stripe["status"], at_stripe["subscriptions"]) == ("disconnected", [])
    again = call(client, "POST", f"{PREFIX}/{checking.id}/disconnect")
    assert (again.status_code, again.json["status"]) == (200, "disconnected")
    refused = call(client, "POST", f"{PREFIX}/{checking.id}/refresh", {"features": ["balance"]})
    assert refused.status_code == 409
    assert refused.json["error"]["code"] == "account_disconnected"
    listed = call(client, "GET", f"{PREFIX}/{checking.id}/transactions").json
    assert listed["data"]  # what was synced stays readable


def test_an_end_user_disconnect_is_noticed(data_app: Flask, linked: list[Any]) -> None:
    savings = linked[1]
    sandbox_of(data_app).disconnect_by_user(savings.stripe_id)
    with captured_signals(signals.account_disconnected, data_app) as disconnected:
        nudge(data_app, savings.stripe_id)
        nudge(data_app, savings.stripe_id)  # a duplicate event changes nothing more
    assert len(disconnected) == 1
    account = call(data_app.test_client(), "GET", f"{PREFIX}/{savings.id}").json
    assert account["status"] == "disconnected"


def test_transactions_page_newest_first_without_gaps(data_app: Flask, linked: list[Any]) -> None:
    client = data_app.test_client()
    checking = linked[0]
    seen: list[dict[str, Any]] = []
    cursor = None
    while True:
        query: dict[str, Any] = {"limit": 37}
        if cursor:
            query["cursor"] = cursor
        page = call(client, "GET", f"{PREFIX}/{checking.id}/transactions", query).json
        seen.extend(page["data"])
        cursor = page["next_cursor"]
        assert page["has_more"] == (cursor is not None)
        if cursor is None:
            break
    ids = [txn["id"] for txn in seen]
    assert len(ids) == len(set(ids)) == 150  # the whole history, each row once
    order = [(txn["transacted_at"], txn["id"]) for txn in seen]
    assert order == sorted(order, reverse=True)
    first = seen[0]
    assert set(first) == {
        "id",
        "account",
        "amount",
        "currency",
        "description",
        "status",
        "transacted_at",
        "posted_at",
        "void_at",
    }
    assert first["account"] == checking.id


def test_transaction_filters(data_app: Flask, linked: list[Any]) -> None:
    client = data_app.test_client()
    url = f"{PREFIX}/{linked[0].id}/transactions"
    everything = call(client, "GET", url, {"limit": 100}).json["data"]
    pending = call(client, "GET", url, {"status": "pending"}).json["data"]
    assert pending and all(txn["status"] == "pending" for txn in pending)
    assert len(pending) == sum(txn["status"] == "pending" for txn in everything)
    since, until = everything[60]["transacted_at"], everything[10]["transacted_at"]
    window = call(client, "GET", url, {"since": since, "until": until, "limit": 100}).json
    assert window["data"] == [t for t in everything if since <= t["transacted_at"] < until]


@pytest.mark.parametrize(
    "query",
    [{"limit": 0}, {"limit": 101}, {"status": "cleared"}, {"cursor": "nope"}, {"since": "x"}],
)
def test_transaction_listing_rejects_bad_queries(
    data_app: Flask, linked: list[Any], query: dict[str, Any]
) -> None:
    response = call(data_app.test_client(), "GET", f"{PREFIX}/{linked[0].id}/transactions", query)
    assert response.status_code == 400
    assert "fields" in response.json["error"]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "transactions", None),
        ("GET", "owners", None),
        ("POST", "refresh", {"features": ["balance"]}),
        ("POST", "disconnect", None),
    ],
)
def test_another_holders_account_is_not_found(
    data_app: Flask, linked: list[Any], method: str, path: str, body: Any
) -> None:
    client = data_app.test_client()
    url = f"{PREFIX}/{linked[0].id}/{path}"
    response = call(client, method, url, body, holder="bob")
    assert response.status_code == 404
    assert response.json["error"]["code"] == "account_not_found"
    assert call(client, method, url, body, holder=None).status_code == 401
    assert call(client, "GET", f"{PREFIX}/{linked[0].id}").json["status"] == "active"


def test_owners_show_the_latest_snapshot_and_keep_the_earlier(
    data_app: Flask, linked: list[Any]
) -> None:
    from flask_finconn.models import Owner

    client = data_app.test_client()
    sandbox = sandbox_of(data_app)
    checking = linked[0]
    listed = []
    for _ in range(2):
        with captured_signals(signals.account_updated, data_app) as updated:
            started = call(
                client, "POST", f"{PREFIX}/{checking.id}/refresh", {"features": ["ownership"]}
            )
        assert started.status_code == 202
        assert len(updated) == 1  # the refresh state it stores changed
        sandbox.finish_refreshes(checking.stripe_id)
        nudge(data_app, checking.stripe_id)
        listed.append(call(client, "GET", f"{PREFIX}/{checking.id}/owners").json["data"])
        sandbox.advance_time(sandbox.refresh_cooldown + 1)
    assert listed[0] and listed[1]
    assert {o["id"] for o in listed[0]}.isdisjoint(o["id"] for o in listed[1])
    with data_app.app_context():
        db = get_state(data_app).db
        kept = db.session.scalars(db.select(Owner.id).where(Owner.account_id == checking.id))
        assert set(kept) == {o["id"] for snapshot in listed for o in snapshot}
