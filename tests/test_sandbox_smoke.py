"""The first slice of the sandbox, end to end through the real stripe SDK, in-process."""

from __future__ import annotations

import stripe
from sandbox_support import present

from flask_finconn.sandbox import Sandbox


def test_link_refresh_and_list_through_the_sdk() -> None:
    sb = Sandbox(database=":memory:")
    client = sb.stripe_client()
    fc = client.v1.financial_connections

    customer = client.v1.customers.create({"email": "jenny.rosen@example.com"})
    assert customer.id.startswith("cus_")
    assert client.v1.customers.retrieve(customer.id).email == "jenny.rosen@example.com"

    session = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances", "transactions"],
            "filters": {"country": "US"},
        }
    )
    assert present(session.client_secret).startswith("fcsess_client_secret_")
    assert session.accounts.data == []

    sb.complete_session(session.id, institution="bank_nonoauth")
    linked = fc.sessions.retrieve(session.id).accounts.data
    assert {a.subcategory for a in linked} == {"checking", "savings", "credit_card"}

    listed = fc.accounts.list({"session": session.id, "limit": 2})
    ids = [a.id for a in listed.auto_paging_iter()]
    assert sorted(ids) == sorted(a.id for a in linked)
    by_customer = fc.accounts.list({"account_holder": {"customer": customer.id}})
    assert {a.id for a in by_customer.data} == set(ids)

    checking = next(a for a in linked if a.subcategory == "checking")
    pending = fc.accounts.refresh(checking.id, {"features": ["balance"]})
    assert present(pending.balance_refresh).status == "pending"
    assert present(pending.balance_refresh).next_refresh_available_at is None
    assert pending.balance is None

    assert sb.finish_refreshes() == 1
    account = fc.accounts.retrieve(checking.id)
    assert present(account.balance_refresh).status == "succeeded"
    balance = present(account.balance)
    assert balance.current["usd"] > 0
    assert present(present(balance.cash).available)["usd"] <= balance.current["usd"]

    assert fc.accounts.disconnect(checking.id).status == "disconnected"
    try:
        fc.accounts.refresh(checking.id, {"features": ["balance"]})
    except stripe.InvalidRequestError as exc:
        assert exc.code == "financial_connections_account_inactive"
    else:
        raise AssertionError("refreshing a disconnected account must fail")


def test_cancelled_session_has_no_accounts() -> None:
    sb = Sandbox()
    fc = sb.stripe_client().v1.financial_connections
    session = fc.sessions.create(
        {
            "account_holder": {
                "type": "customer",
                "customer": sb.stripe_client().v1.customers.create().id,
            },
            "permissions": ["balances"],
        }
    )
    sb.cancel_session(session.id)
    assert fc.sessions.retrieve(session.id).accounts.data == []
    assert fc.accounts.list({"session": session.id}).data == []
