"""GET /accounts and GET /accounts/<id>: the holder's accounts, nobody else's."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from flask_finconn import Holder, get_state
from flask_finconn.services.accounts import record_balance
from flask_finconn.testing import HOLDER_HEADER, count_statements, link_accounts

ADA = Holder("ada", email="ada@example.com")


def get(client: FlaskClient, url: str, holder: str | None = "ada") -> Any:
    return client.get(url, headers={HOLDER_HEADER: holder} if holder else {})


def give_balances(app: Flask, account_ids: list[str], amount: int = 12_345) -> None:
    """Store a balance reading for each account, as a finished refresh would."""
    from flask_finconn.models import Account

    with app.app_context():
        state = get_state(app)
        for account_id in account_ids:
            account = state.db.session.get(Account, account_id)
            assert account is not None
            snapshot = record_balance(
                state,
                account,
                {
                    "as_of": 1_790_000_000,
                    "type": "cash",
                    "current": {"usd": amount},
                    "cash": {"available": {"usd": amount - 45}},
                },
            )
            account.latest_balance = snapshot
        state.db.session.commit()


def test_no_accounts_yet(finconn_client: FlaskClient) -> None:
    response = get(finconn_client, "/finconn/accounts")
    assert response.status_code == 200
    assert response.json == {"data": []}


def test_lists_the_holders_accounts_with_balances(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    linked = link_accounts(finconn_app, ADA)
    give_balances(finconn_app, [linked[0].id])
    data = get(finconn_client, "/finconn/accounts").json["data"]
    assert [a["id"] for a in data] == [a.id for a in linked]
    assert [a["display_name"] for a in data] == [
        "Sample Checking Account",
        "Sample Savings Account",
        "Sample Credit Card",
    ]
    assert data[0]["balance"] == {
        "current": 12_345,
        "available": 12_300,
        "currency": "usd",
        "as_of": "2026-09-21T14:13:20Z",
    }
    assert data[1]["balance"] is None
    assert data[2]["category"] == "credit"


def test_one_account(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    linked = link_accounts(finconn_app, ADA, accounts=["savings"])
    listed = get(finconn_client, "/finconn/accounts").json["data"][0]
    response = get(finconn_client, f"/finconn/accounts/{linked[0].id}")
    assert response.status_code == 200
    assert response.json == listed
    assert response.json["last4"] == "4321"


@pytest.mark.parametrize("holder", ["bob", None])
def test_other_holders_see_nothing(
    finconn_app: Flask, finconn_client: FlaskClient, holder: str | None
) -> None:
    linked = link_accounts(finconn_app, ADA, accounts=["checking"])
    listing = get(finconn_client, "/finconn/accounts", holder)
    one = get(finconn_client, f"/finconn/accounts/{linked[0].id}", holder)
    if holder is None:
        assert (listing.status_code, one.status_code) == (401, 401)
    else:
        assert listing.json == {"data": []}
        assert one.status_code == 404
        assert one.json["error"]["code"] == "account_not_found"


def test_unknown_and_stripe_ids_are_404(finconn_app: Flask, finconn_client: FlaskClient) -> None:
    linked = link_accounts(finconn_app, ADA, accounts=["checking"])
    for account_id in ("fcacct_nope", linked[0].stripe_id):
        response = get(finconn_client, f"/finconn/accounts/{account_id}")
        assert response.status_code == 404
        assert response.json == {
            "error": {
                "code": "account_not_found",
                "message": "There is no such bank account for this user.",
            }
        }


def test_listing_takes_a_fixed_number_of_queries(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    counts = []
    for _ in range(3):
        linked = link_accounts(finconn_app, ADA)
        give_balances(finconn_app, [a.id for a in linked])
        with count_statements(finconn_app) as statements:
            data = get(finconn_client, "/finconn/accounts").json["data"]
        assert all(a["balance"] is not None for a in data)
        counts.append(len(statements))
    assert len(data) == 3  # relinks of the same bank accounts keep one row each
    assert counts[0] == counts[-1] <= 3


def test_listing_many_accounts_stays_one_query(
    finconn_app: Flask, finconn_client: FlaskClient
) -> None:
    counts = {}
    for size in (1, 12):
        with finconn_app.app_context():
            _add_accounts(finconn_app, "many", size)
        with count_statements(finconn_app) as statements:
            data = get(finconn_client, "/finconn/accounts", "many").json["data"]
        assert len(data) == size
        counts[size] = len(statements)
        with finconn_app.app_context():
            _clear(finconn_app, "many")
    assert counts[1] == counts[12] <= 3


def _add_accounts(app: Flask, holder_id: str, count: int) -> None:
    from flask_finconn.models import Account, BalanceSnapshot, Customer

    db = get_state(app).db
    customer = Customer(holder_id=holder_id, stripe_id=f"cus_{holder_id}")
    db.session.add(customer)
    db.session.flush()
    for n in range(count):
        account = Account(
            stripe_id=f"fca_{holder_id}{n}",
            holder_id=holder_id,
            customer_id=customer.id,
            institution_name="Bank",
            display_name=f"Account {n}",
            last4=f"{n:04d}",
            category="cash",
            subcategory="checking",
            status="active",
            permissions=["balances"],
            raw={"id": f"fca_{holder_id}{n}"},
        )
        db.session.add(account)
        db.session.flush()
        account.latest_balance = BalanceSnapshot(
            account_id=account.id,
            as_of=datetime(2026, 11, 1, tzinfo=UTC),
            type="cash",
            currency="usd",
            current=100 * n,
            available=100 * n,
        )
    db.session.commit()


def _clear(app: Flask, holder_id: str) -> None:
    from flask_finconn.models import Account, BalanceSnapshot, Customer

    db = get_state(app).db
    ids = sa.select(Account.id).where(Account.holder_id == holder_id)
    db.session.execute(sa.update(Account).values(latest_balance_id=None))
    db.session.execute(sa.delete(BalanceSnapshot).where(BalanceSnapshot.account_id.in_(ids)))
    db.session.execute(sa.delete(Account).where(Account.holder_id == holder_id))
    db.session.execute(sa.delete(Customer).where(Customer.holder_id == holder_id))
    db.session.commit()


def test_every_rendering_of_the_account_list_agrees(finconn_app: Flask) -> None:
    """The SQL-rendered listing and AccountSchema write the same JSON, nulls included."""
    from flask_finconn.models import Account
    from flask_finconn.schemas import AccountSchema
    from flask_finconn.services import accounts as service
    from flask_finconn.services import listing

    linked = link_accounts(finconn_app, ADA)
    give_balances(finconn_app, [linked[0].id])
    with finconn_app.app_context():
        db = get_state(finconn_app).db
        credit = db.session.get(Account, linked[2].id)
        assert credit is not None
        credit.display_name = None
        credit.last4 = None
        plain = db.session.get(Account, linked[1].id)
        assert plain is not None and plain.latest_balance_id is None
        plain.balance_refresh = None
        credit.balance_refresh = {
            "status": "succeeded",
            "last_attempted_at": 1_790_000_000,
            "next_refresh_available_at": None,
        }
        credit.ownership_refresh = {"status": "failed", "last_attempted_at": 1_790_000_500}
        credit.latest_balance = record_balance(
            get_state(finconn_app),
            credit,
            {
                "as_of": 1_790_000_100,
                "type": "credit",
                "current": {"usd": -2_000},
                "credit": {"used": {"usd": 2_000}},
            },
        )
        db.session.commit()

    over_http = get(finconn_app.test_client(), "/finconn/accounts").json["data"]
    with finconn_app.app_context():
        state = get_state(finconn_app)
        by_schema = AccountSchema(many=True).dump(service.list_accounts(state, "ada"))
        by_sql = listing.list_account_json(state, "ada")
    assert by_sql is not None and len(by_sql) == 3
    assert over_http == by_schema == [json.loads(text) for text in by_sql]
    no_balance = over_http[1]
    assert no_balance["balance"] is None and no_balance["refresh"]["balance"] is None
    credit_json = over_http[2]
    assert credit_json["balance"] == {
        "current": -2_000,
        "available": -2_000,  # no available balance: current stands in, as Stripe advises
        "currency": "usd",
        "as_of": "2026-09-21T14:15:00Z",
    }
    assert credit_json["refresh"]["balance"] == {
        "status": "succeeded",
        "last_attempted_at": "2026-09-21T14:13:20Z",
        "next_refresh_available_at": None,
    }
    assert credit_json["refresh"]["ownership"]["next_refresh_available_at"] is None
    assert (credit_json["display_name"], credit_json["last4"]) == (None, None)
