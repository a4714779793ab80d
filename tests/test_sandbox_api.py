"""Conformance: the sandbox driven only through the real stripe SDK, in-process and on loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import pytest
import stripe
from sandbox_support import client_fixture, link, one_account, present, sb_fixture  # noqa: F401
from stripe.params.financial_connections import (
    AccountListParams,
    AccountOwnerListParams,
    AccountRefreshParams,
    SessionCreateParams,
    SessionCreateParamsAccountHolder,
    TransactionListParams,
)

from flask_finconn.sandbox import ApiError, Sandbox
from flask_finconn.sandbox.institutions import INSTITUTIONS

Client = stripe.StripeClient


# --- customers --------------------------------------------------------------------------


def test_customers_create_retrieve_update_and_list(client: Client) -> None:
    created = client.v1.customers.create(
        {"email": "ada@example.com", "name": "Ada", "metadata": {"user": "7"}}
    )
    assert isinstance(created, stripe.Customer)
    assert created.id.startswith("cus_") and len(created.id) == 28
    assert present(created.metadata)["user"] == "7"
    assert present(present(created.last_response).request_id).startswith("req_")

    updated = client.v1.customers.update(created.id, {"name": "Ada Lovelace"})
    assert updated.name == "Ada Lovelace" and updated.email == "ada@example.com"
    assert client.v1.customers.retrieve(created.id).name == "Ada Lovelace"

    for i in range(4):
        client.v1.customers.create({"email": f"c{i}@example.com"})
    page = client.v1.customers.list({"limit": 2})
    assert page["object"] == "list" and page.url == "/v1/customers" and page.has_more
    assert [c.email for c in page.data] == ["c3@example.com", "c2@example.com"]
    everything = [c.email for c in client.v1.customers.list({"limit": 2}).auto_paging_iter()]
    assert everything == [f"c{i}@example.com" for i in (3, 2, 1, 0)] + ["ada@example.com"]
    assert [c.id for c in client.v1.customers.list({"email": "ada@example.com"}).data] == [
        created.id
    ]


def test_unknown_customer_is_a_404_resource_missing(client: Client) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.customers.retrieve("cus_doesnotexist")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing"
    assert "cus_doesnotexist" in str(info.value)
    assert info.value.request_id and info.value.request_id.startswith("req_")


def test_deleting_a_customer_answers_stripes_deleted_stub(client: Client) -> None:
    customer = client.v1.customers.create({"email": "ada@example.com"})
    deleted = client.v1.customers.delete(customer.id)
    assert present(deleted.last_response).data == {
        "id": customer.id,
        "object": "customer",
        "deleted": True,
    }
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.customers.retrieve(customer.id)
    assert (gone.value.http_status, gone.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as again:
        client.v1.customers.delete(customer.id)
    assert (again.value.http_status, again.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as linking:
        client.v1.financial_connections.sessions.create(
            {
                "account_holder": {"type": "customer", "customer": customer.id},
                "permissions": ["balances"],
            }
        )
    assert "No such customer" in str(linking.value)
    other = client.v1.customers.create()
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.customers.delete(other.id, {"expand": ["x"]})  # type: ignore[arg-type]
    assert unknown.value.code == "parameter_unknown"
    assert client.v1.customers.retrieve(other.id).id == other.id


# --- sessions ---------------------------------------------------------------------------


def test_session_create_matches_the_reference_shape(client: Client) -> None:
    customer = client.v1.customers.create()
    session = client.v1.financial_connections.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances", "payment_method"],
            "prefetch": ["balances"],
            "filters": {"country": "US", "account_subcategories": ["checking", "savings"]},
            "limits": {"accounts": 2},
        }
    )
    assert isinstance(session, stripe.financial_connections.Session)
    assert session.id.startswith("fcsess_")
    assert present(session.client_secret).startswith("fcsess_client_secret_")
    assert len(present(session.client_secret)) == len("fcsess_client_secret_") + 24
    assert present(session.account_holder).to_dict() == {
        "type": "customer",
        "customer": customer.id,
    }
    assert session.accounts.data == [] and session.accounts.url == (
        "/v1/financial_connections/accounts"
    )
    assert present(session.filters).country == "US"
    assert present(session.filters).account_subcategories == ["checking", "savings"]
    assert session.permissions == ["balances", "payment_method"]
    assert session.prefetch == ["balances"]
    assert present(session.limits).accounts == 2
    assert session.livemode is False
    again = client.v1.financial_connections.sessions.retrieve(
        session.id, {"expand": ["account_holder.customer"]}
    )
    expanded = present(again.account_holder).customer
    assert isinstance(expanded, stripe.Customer) and expanded.id == customer.id


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({"permissions": ["balances"]}, "parameter_missing", "account_holder"),
        ({"account_holder": {"type": "customer"}}, "parameter_missing", "permissions"),
        (
            {"account_holder": {"type": "customer"}, "permissions": ["balances"]},
            "parameter_missing",
            "account_holder[customer]",
        ),
        (
            {"account_holder": {"type": "robot"}, "permissions": ["balances"]},
            "parameter_invalid_string",
            "account_holder[type]",
        ),
        (
            {"account_holder": {"type": "customer", "customer": "CUS"}, "permissions": ["x"]},
            "parameter_invalid_string",
            "account_holder[customer]",
        ),
        (
            {
                "account_holder": {"type": "customer", "customer": "cus_missing"},
                "permissions": ["balances"],
            },
            "resource_missing",
            "account_holder[customer]",
        ),
        (
            {"account_holder": {"type": "account"}, "permissions": ["balances"]},
            "parameter_missing",
            "account_holder[account]",
        ),
        (
            {
                "account_holder": {"type": "account", "account": "acct_1"},
                "permissions": ["balances", "money"],
            },
            "parameter_invalid_string",
            "permissions[1]",
        ),
        (
            {
                "account_holder": {"type": "account", "account": "acct_1"},
                "permissions": ["balances"],
                "filters": {"countries": ["US"]},
            },
            "parameter_unknown",
            "filters[countries]",
        ),
        (
            {
                "account_holder": {"type": "account", "account": "acct_1"},
                "permissions": ["balances"],
                "colour": "blue",
            },
            "parameter_unknown",
            "colour",
        ),
        (
            {
                "account_holder": {"type": "account", "account": "acct_1"},
                "permissions": ["balances"],
                "limits": {"accounts": "many"},
            },
            "parameter_invalid_integer",
            "limits[accounts]",
        ),
    ],
)
def test_session_create_rejects_bad_params(
    client: Client, params: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.sessions.create(
            cast("SessionCreateParams", params)
        )  # deliberately malformed
    assert info.value.http_status == 400
    assert (info.value.code, info.value.param) == (code, param)


def test_complete_and_cancel_sessions(sb: Sandbox, client: Client) -> None:
    accounts = link(sb, client, "bank_oauth")
    assert [a.subcategory for a in accounts] == ["checking", "savings", "credit_card"]
    assert all(a.institution_name == "Bank (OAuth)" for a in accounts)
    assert all(a.status == "active" and a.id.startswith("fca_") for a in accounts)
    cash, credit = accounts[0], accounts[2]
    assert cash.supported_payment_method_types == ["link", "us_bank_account"]
    assert credit.supported_payment_method_types == []
    assert cash.balance is None and cash.balance_refresh is None
    assert cash.transaction_refresh is None and cash.subscriptions == []

    customer = client.v1.customers.create()
    session = client.v1.financial_connections.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances"],
        }
    )
    sb.cancel_session(session.id)
    assert client.v1.financial_connections.sessions.retrieve(session.id).accounts.data == []
    with pytest.raises(ApiError, match="already cancelled"):
        sb.complete_session(session.id)


def test_session_filters_limit_what_can_be_linked(sb: Sandbox, client: Client) -> None:
    accounts = link(
        sb,
        client,
        "bank_nonoauth",
        permissions=("balances", "payment_method"),
        filters={"account_subcategories": ["checking", "credit_card"]},
    )
    # payment_method needs ACH: the credit card is offered but not selectable; savings is filtered.
    assert [a.subcategory for a in accounts] == ["checking"]
    assert link(sb, client, "invalid_payment", permissions=("payment_method",)) == []


def test_complete_session_with_unknown_or_disabled_accounts_fails(
    sb: Sandbox, client: Client
) -> None:
    customer = client.v1.customers.create()
    session = client.v1.financial_connections.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["payment_method"],
            "limits": {"accounts": 1},
        }
    )
    with pytest.raises(ApiError, match="no account 'brokerage'"):
        sb.complete_session(session.id, "bank_oauth", ["brokerage"])
    with pytest.raises(ApiError, match="ACH"):
        sb.complete_session(session.id, "bank_oauth", ["credit_card"])
    with pytest.raises(ApiError, match="at most 1"):
        sb.complete_session(session.id, "bank_oauth", ["checking", "savings"])
    with pytest.raises(ApiError, match="unavailable"):
        sb.complete_session(session.id, "down_scheduled")
    sb.complete_session(session.id, "bank_oauth", ["savings"])


# --- accounts ---------------------------------------------------------------------------


def test_accounts_list_filters_and_pagination(sb: Sandbox, client: Client) -> None:
    first = link(sb, client, "bank_oauth")
    second = link(sb, client, "test_oauth")
    fc = client.v1.financial_connections
    everything = [a.id for a in fc.accounts.list({"limit": 2}).auto_paging_iter()]
    assert everything == [a.id for a in reversed(first + second)]

    holder = present(first[0].account_holder).customer
    assert isinstance(holder, str)
    by_holder = fc.accounts.list({"account_holder": {"customer": holder}})
    assert [a.id for a in by_holder.data] == [a.id for a in reversed(first)]

    page = fc.accounts.list({"limit": 2, "starting_after": everything[1]})
    assert [a.id for a in page.data] == everything[2:4] and page.has_more
    back = fc.accounts.list({"limit": 2, "ending_before": everything[3]})
    assert [a.id for a in back.data] == everything[1:3] and back.has_more
    backwards = list(
        fc.accounts.list({"limit": 2, "ending_before": everything[4]}).auto_paging_iter()
    )
    assert [a.id for a in backwards] == list(reversed(everything[:4]))


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({"limit": 0}, "parameter_invalid_integer", "limit"),
        ({"limit": 101}, "parameter_invalid_integer", "limit"),
        ({"limit": "ten"}, "parameter_invalid_integer", "limit"),
        ({"starting_after": "fca_nope"}, "resource_missing", "starting_after"),
        (
            {"session": "fcsess_1", "account_holder": {"customer": "cus_1"}},
            None,
            "session",
        ),
        ({"account_holder": {"customer": "cus_1", "account": "acct_1"}}, None, None),
        ({"ending_before": "fca_a", "starting_after": "fca_b"}, None, "ending_before"),
    ],
)
def test_accounts_list_rejects_bad_params(
    client: Client, params: dict[str, Any], code: str | None, param: str | None
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.accounts.list(
            cast("AccountListParams", params)
        )  # deliberately malformed
    assert info.value.http_status == 400
    assert info.value.code == code
    if param:
        assert info.value.param == param
    if code is None:
        assert "only specify one" in str(info.value)


def test_unknown_account_is_a_404(client: Client) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.accounts.retrieve("fca_unknown")
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.accounts.refresh("fca_unknown", {"features": ["balance"]})
    assert info.value.http_status == 404


def test_refresh_state_machine(sb: Sandbox, client: Client) -> None:
    sb.refresh_delay = 3600  # pending until finish_refreshes, however slow the box is
    account = one_account(sb, client)
    fc = client.v1.financial_connections
    pending = fc.accounts.refresh(account.id, {"features": ["balance", "ownership"]})
    assert present(pending.balance_refresh).status == "pending"
    assert present(pending.balance_refresh).next_refresh_available_at is None
    assert present(pending.ownership_refresh).status == "pending"
    assert pending.balance is None and pending.ownership is None

    # While pending, a second refresh starts nothing and returns the account unchanged.
    again = fc.accounts.refresh(account.id, {"features": ["balance"]})
    assert present(again.balance_refresh).to_dict() == present(pending.balance_refresh).to_dict()

    assert sb.finish_refreshes(account.id) == 2
    done = fc.accounts.retrieve(account.id)
    assert present(done.balance_refresh).status == "succeeded"
    done_refresh = present(done.balance_refresh)
    assert present(done_refresh.next_refresh_available_at) >= done_refresh.last_attempted_at
    assert present(done.balance).type == "cash" and present(done.balance).current["usd"] > 0
    assert isinstance(done.ownership, str) and done.ownership.startswith("fcaowns_")
    types = [e["type"] for e in sb.events(account=account.id)]
    assert types[-2:] == [
        "financial_connections.account.refreshed_balance",
        "financial_connections.account.refreshed_ownership",
    ]

    # Before next_refresh_available_at nothing starts; after it, a new refresh does.
    assert present(
        fc.accounts.refresh(account.id, {"features": ["balance"]}).balance_refresh
    ).status == ("succeeded")
    sb.advance_time(sb.refresh_cooldown)
    assert present(
        fc.accounts.refresh(account.id, {"features": ["balance"]}).balance_refresh
    ).status == ("pending")
    sb.finish_refreshes(account.id, status="failed")
    failed = fc.accounts.retrieve(account.id)
    assert present(failed.balance_refresh).status == "failed"
    assert failed.balance == done.balance
    event = sb.events(type="financial_connections.account.refreshed_balance")[-1]
    assert event["data"]["object"]["balance_refresh"]["status"] == "failed"


def test_refresh_finishes_by_itself_after_the_delay(sb: Sandbox, client: Client) -> None:
    account = one_account(sb, client)
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    sb.advance_time(sb.refresh_delay)
    # No helper call: the next API request runs what became due first.
    done = client.v1.financial_connections.accounts.retrieve(account.id)
    assert present(done.balance_refresh).status == "succeeded"


def test_a_balance_reading_is_as_of_the_refresh_that_read_it(sb: Sandbox, client: Client) -> None:
    account = one_account(sb, client)
    fc = client.v1.financial_connections
    fc.accounts.refresh(account.id, {"features": ["balance"]})
    sb.advance_time(3600)
    # The refresh completed on its own an hour ago (sandbox clock), at its due time.
    first = fc.accounts.retrieve(account.id)
    first_refresh = present(first.balance_refresh)
    finished = present(first_refresh.next_refresh_available_at) - sb.refresh_cooldown
    assert finished == present(first_refresh.last_attempted_at) + int(sb.refresh_delay)
    assert present(first.balance).as_of == finished

    fc.accounts.refresh(account.id, {"features": ["balance"]})
    before = sb.now()
    sb.finish_refreshes(account.id)
    second = fc.accounts.retrieve(account.id)
    assert before <= present(second.balance).as_of <= sb.now()
    assert present(second.balance).as_of == (
        present(present(second.balance_refresh).next_refresh_available_at) - sb.refresh_cooldown
    )


def test_credit_balances_are_negative(sb: Sandbox, client: Client) -> None:
    card = one_account(sb, client, "credit_card")
    client.v1.financial_connections.accounts.refresh(card.id, {"features": ["balance"]})
    sb.finish_refreshes()
    balance = client.v1.financial_connections.accounts.retrieve(card.id).balance
    assert balance is not None
    assert balance.type == "credit"
    assert balance.current["usd"] < 0
    assert present(present(balance.credit).used)["usd"] == balance.current["usd"]
    assert "cash" not in balance


@pytest.mark.parametrize(
    ("params", "code", "param"),
    [
        ({}, "parameter_missing", "features"),
        ({"features": []}, "parameter_missing", "features"),
        ({"features": ["balances"]}, "parameter_invalid_string", "features[0]"),
        ({"features": ["balance", "weather"]}, "parameter_invalid_string", "features[1]"),
    ],
)
def test_refresh_rejects_bad_features(
    sb: Sandbox, client: Client, params: dict[str, Any], code: str, param: str
) -> None:
    account = one_account(sb, client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.accounts.refresh(
            account.id, cast("AccountRefreshParams", params)
        )  # deliberately malformed
    assert (info.value.code, info.value.param) == (code, param)


def test_refresh_needs_the_matching_permission(sb: Sandbox, client: Client) -> None:
    account = one_account(sb, client, permissions=("balances",))
    with pytest.raises(stripe.InvalidRequestError, match="'transactions' permission") as info:
        client.v1.financial_connections.accounts.refresh(account.id, {"features": ["transactions"]})
    assert info.value.param == "features[0]"
    with pytest.raises(stripe.InvalidRequestError, match="'transactions' permission"):
        client.v1.financial_connections.accounts.subscribe(
            account.id, {"features": ["transactions"]}
        )


def test_inactive_and_disconnected_accounts_refuse_refresh(sb: Sandbox, client: Client) -> None:
    fc = client.v1.financial_connections
    account = one_account(sb, client)
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    inactive = sb.deactivate(account.id)
    assert inactive["status"] == "inactive"
    assert inactive["balance_refresh"]["status"] == "failed"
    assert inactive["balance_refresh"]["next_refresh_available_at"] is None
    assert inactive["status_details"]["inactive"]["action"] == "relink_required"
    calls: list[Callable[[], object]] = [
        lambda: fc.accounts.refresh(account.id, {"features": ["balance"]}),
        lambda: fc.accounts.subscribe(account.id, {"features": ["transactions"]}),
    ]
    for call in calls:
        with pytest.raises(stripe.InvalidRequestError) as info:
            call()
        assert info.value.http_status == 400
        assert info.value.code == "financial_connections_account_inactive"

    active = sb.reactivate(account.id)
    assert active["status"] == "active" and "status_details" not in active
    assert present(
        fc.accounts.refresh(account.id, {"features": ["balance"]}).balance_refresh
    ).status == ("pending")
    disconnected = fc.accounts.disconnect(account.id)
    assert disconnected.status == "disconnected" and disconnected.balance is None
    assert fc.accounts.disconnect(account.id).status == "disconnected"
    with pytest.raises(stripe.InvalidRequestError) as info:
        fc.accounts.refresh(account.id, {"features": ["balance"]})
    assert info.value.code == "financial_connections_account_inactive"
    types = [e["type"] for e in sb.events(account=account.id)]
    assert types.count("financial_connections.account.disconnected") == 1
    assert "financial_connections.account.deactivated" in types
    assert "financial_connections.account.reactivated" in types


def test_subscribe_starts_a_refresh_and_days_bring_more(sb: Sandbox, client: Client) -> None:
    fc = client.v1.financial_connections
    account = one_account(sb, client)
    subscribed = fc.accounts.subscribe(account.id, {"features": ["transactions"]})
    assert subscribed.subscriptions == ["transactions"]
    assert present(subscribed.transaction_refresh).status == "pending"
    assert present(subscribed.transaction_refresh).id.startswith("fctxnref_")
    sb.finish_refreshes()
    first = present(fc.accounts.retrieve(account.id).transaction_refresh)
    assert first.status == "succeeded"

    sb.advance_time(86400 + 5)
    second = present(fc.accounts.retrieve(account.id).transaction_refresh)
    assert second.id != first.id and second.status == "succeeded"
    refreshed = sb.events(type="financial_connections.account.refreshed_transactions")
    assert [e["data"]["object"]["transaction_refresh"]["id"] for e in refreshed] == [
        first.id,
        second.id,
    ]
    assert refreshed[-1]["request"] == {"id": None, "idempotency_key": None}

    unsubscribed = fc.accounts.unsubscribe(account.id, {"features": ["transactions"]})
    assert (
        unsubscribed.subscriptions == []
        and present(unsubscribed.transaction_refresh).id == second.id
    )
    sb.advance_time(86400 + 5)
    assert present(fc.accounts.retrieve(account.id).transaction_refresh).id == second.id


# --- owners -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "names"),
    [
        ("single_owner", ["Jenny Rosen"]),
        ("joint", ["Jenny Rosen", "Rocket Rosen"]),
        ("business", ["Rocket Rides Inc.", "Jenny Rosen"]),
        ("partial", ["Jenny Rosen"]),
        ("no_owners", []),
    ],
)
def test_ownership_accounts_have_owner_variants(
    sb: Sandbox, client: Client, key: str, names: list[str]
) -> None:
    account = one_account(sb, client, key, institution="ownership")
    fc = client.v1.financial_connections
    fc.accounts.refresh(account.id, {"features": ["ownership"]})
    sb.finish_refreshes()
    expanded = fc.accounts.retrieve(account.id, {"expand": ["ownership"]}).ownership
    assert isinstance(expanded, stripe.financial_connections.AccountOwnership)
    assert expanded.id.startswith("fcaowns_")
    owners = fc.accounts.owners.list(account.id, {"ownership": expanded.id, "limit": 1})
    assert owners.url == (
        f"/v1/financial_connections/accounts/{account.id}/owners?ownership={expanded.id}"
    )
    listed = list(owners.auto_paging_iter())
    assert sorted(o.name for o in listed) == sorted(names)
    assert all(isinstance(o, stripe.financial_connections.AccountOwner) for o in listed)
    assert all(o.id.startswith("fcaown_") and o.ownership == expanded.id for o in listed)
    if key == "partial":
        assert (listed[0].email, listed[0].phone, listed[0].raw_address) == (None, None, None)


def test_owners_list_needs_an_ownership(sb: Sandbox, client: Client) -> None:
    account = one_account(sb, client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.accounts.owners.list(
            account.id, cast("AccountOwnerListParams", {})
        )  # deliberately malformed
    assert (info.value.code, info.value.param) == ("parameter_missing", "ownership")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.accounts.owners.list(
            account.id, {"ownership": "fcaowns_nope"}
        )
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")


# --- transactions -----------------------------------------------------------------------


def _synced(sb: Sandbox, client: Client) -> Any:
    account = one_account(sb, client)
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["transactions"]})
    sb.finish_refreshes()
    return client.v1.financial_connections.accounts.retrieve(account.id)


def test_transactions_list_shape_order_and_pagination(sb: Sandbox, client: Client) -> None:
    account = _synced(sb, client)
    fc = client.v1.financial_connections
    page = fc.transactions.list({"account": account.id, "limit": 100})
    assert page.url == "/v1/financial_connections/transactions" and page.has_more
    everything = list(
        fc.transactions.list({"account": account.id, "limit": 100}).auto_paging_iter()
    )
    assert 300 <= len(everything) <= 400
    assert len({t.id for t in everything}) == len(everything)
    times = [t.transacted_at for t in everything]
    assert times == sorted(times, reverse=True)
    assert times[0] - times[-1] > 170 * 86400
    first = everything[0]
    assert isinstance(first, stripe.financial_connections.Transaction)
    assert first.id.startswith("fctxn_") and first.currency == "usd"
    assert first.transaction_refresh == account.transaction_refresh.id
    assert {t.status for t in everything} == {"posted", "pending"}
    assert any(t.amount < 0 for t in everything) and any(t.amount > 0 for t in everything)
    assert all(t.status_transitions.posted_at for t in everything if t.status == "posted")
    assert fc.transactions.retrieve(first.id).to_dict() == first.to_dict()


def test_transactions_pagination_breaks_ties_by_id(sb: Sandbox, client: Client) -> None:
    account = _synced(sb, client)
    # Give most rows one of three times, so pages start and end inside runs of equal
    # transacted_at and only the id orders them.
    with sb.store.tx():
        sb.store.execute(
            "UPDATE transactions SET transacted_at = 1700000000 + (abs(random()) % 3) "
            "WHERE account = ? AND id > 'fctxn_8'",
            (account.id,),
        )
    expected = [
        row[0]
        for row in sb.store.all(
            "SELECT id FROM transactions WHERE account = ? ORDER BY transacted_at DESC, id DESC",
            (account.id,),
        )
    ]
    fc = client.v1.financial_connections
    forward, after = [], None
    while True:
        params: TransactionListParams = {"account": account.id, "limit": 7}
        if after:
            params["starting_after"] = after
        page = fc.transactions.list(params)
        forward += [t.id for t in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert forward == expected
    backward: list[str] = []
    before = expected[-1]
    while True:
        page = fc.transactions.list({"account": account.id, "limit": 7, "ending_before": before})
        backward = [t.id for t in page.data] + backward
        if not page.has_more:
            break
        before = page.data[0].id
    assert backward == expected[:-1]


def test_transactions_filters(sb: Sandbox, client: Client) -> None:
    account = _synced(sb, client)
    fc = client.v1.financial_connections
    everything = list(
        fc.transactions.list({"account": account.id, "limit": 100}).auto_paging_iter()
    )
    middle = everything[len(everything) // 2].transacted_at
    newer = list(
        fc.transactions.list(
            {"account": account.id, "transacted_at": {"gt": middle}, "limit": 100}
        ).auto_paging_iter()
    )
    assert [t.id for t in newer] == [t.id for t in everything if t.transacted_at > middle]
    exact = fc.transactions.list({"account": account.id, "transacted_at": middle})
    assert {t.transacted_at for t in exact.data} == {middle}
    window = fc.transactions.list(
        {"account": account.id, "transacted_at": {"gte": middle, "lte": middle}, "limit": 100}
    )
    assert [t.id for t in window.data] == [t.id for t in exact.data]


def test_transaction_refresh_after_returns_only_later_changes(sb: Sandbox, client: Client) -> None:
    account = _synced(sb, client)
    fc = client.v1.financial_connections
    cursor = account.transaction_refresh.id
    before = {
        t.id: t
        for t in fc.transactions.list({"account": account.id, "limit": 100}).auto_paging_iter()
    }
    assert (
        fc.transactions.list({"account": account.id, "transaction_refresh": {"after": cursor}}).data
        == []
    )
    pending = [t for t in before.values() if t.status == "pending"]
    assert pending

    sb.advance_time(3 * 86400)
    fc.accounts.refresh(account.id, {"features": ["transactions"]})
    sb.finish_refreshes()
    latest = present(fc.accounts.retrieve(account.id).transaction_refresh).id
    changed = list(
        fc.transactions.list(
            {"account": account.id, "transaction_refresh": {"after": cursor}, "limit": 100}
        ).auto_paging_iter()
    )
    assert changed and all(t.transaction_refresh == latest for t in changed)
    updated = {t.id: t for t in changed if t.id in before}
    # Every pending row settled in place: same id, posted or void, new refresh, later updated.
    assert set(updated) == {t.id for t in pending}
    for txn_id, row in updated.items():
        assert row.status in ("posted", "void")
        assert row.updated > before[txn_id].updated
        assert row.amount == before[txn_id].amount
        settled = row.status_transitions.posted_at or row.status_transitions.void_at
        assert settled is not None
    assert any(t.id not in before for t in changed), "three days bring new transactions"
    assert (
        fc.transactions.list({"account": account.id, "transaction_refresh": {"after": latest}}).data
        == []
    )


@pytest.mark.parametrize(
    ("params", "code", "param", "status"),
    [
        ({}, "parameter_missing", "account", 400),
        ({"account": "fca_missing"}, "resource_missing", "account", 404),
        ({"account": "ACCOUNT"}, "parameter_invalid_string", "account", 400),
        ({"account": "fca_x", "transacted_at": {"after": 5}}, "parameter_unknown", None, 400),
        ({"account": "fca_x", "transacted_at": "soon"}, "parameter_invalid_integer", None, 400),
        (
            {"account": "fca_x", "transaction_refresh": {"before": "x"}},
            "parameter_unknown",
            None,
            400,
        ),
        (
            {"account": "fca_x", "transaction_refresh": {"after": ""}},
            "parameter_invalid_empty",
            None,
            400,
        ),
    ],
)
def test_transactions_list_rejects_bad_params(
    client: Client, params: dict[str, Any], code: str, param: str | None, status: int
) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.financial_connections.transactions.list(
            cast("TransactionListParams", params)
        )  # deliberately malformed
    assert (info.value.http_status, info.value.code) == (status, code)
    if param:
        assert info.value.param == param


def test_disconnect_hides_earlier_data(sb: Sandbox, client: Client) -> None:
    account = _synced(sb, client)
    fc = client.v1.financial_connections
    some = fc.transactions.list({"account": account.id}).data[0]
    fc.accounts.disconnect(account.id)
    assert fc.transactions.list({"account": account.id}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        fc.transactions.retrieve(some.id)


# --- expand, idempotency, errors --------------------------------------------------------


def test_expand(sb: Sandbox, client: Client) -> None:
    fc = client.v1.financial_connections
    account = one_account(sb, client)
    fc.accounts.refresh(account.id, {"features": ["ownership"]})
    sb.finish_refreshes()
    listed = fc.accounts.list(
        {"expand": ["data.ownership", "data.account_holder.customer"], "limit": 1}
    ).data[0]
    assert isinstance(listed.ownership, stripe.financial_connections.AccountOwnership)
    assert listed.ownership.owners.data[0].name == "Jenny Rosen"
    assert isinstance(present(listed.account_holder).customer, stripe.Customer)
    with pytest.raises(stripe.InvalidRequestError, match=r"cannot be expanded \(balance\)"):
        fc.accounts.retrieve(account.id, {"expand": ["balance"]})
    with pytest.raises(stripe.InvalidRequestError, match="cannot be expanded"):
        fc.accounts.list({"expand": ["ownership"]})


def test_idempotent_replay_and_mismatch(client: Client) -> None:
    options: Any = {"idempotency_key": "create-ada"}
    first = client.v1.customers.create({"email": "ada@example.com"}, options)
    again = client.v1.customers.create({"email": "ada@example.com"}, options)
    assert again.id == first.id
    assert present(again.last_response).headers["Idempotent-Replayed"] == "true"
    assert len(client.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError) as info:
        client.v1.customers.create({"email": "bob@example.com"}, options)
    assert info.value.http_status == 400


def test_authentication_errors(sb: Sandbox, client: Client) -> None:
    base = client._requestor.base_addresses["api"]
    transport: dict[str, Any] = {"base_addresses": {"api": base}}
    if base == sb.api_base:
        transport["http_client"] = sb.http_client()
    for key in ("sk_test_", "pk_test_sandbox", "nonsense", "sk_live_realkey"):
        bad = stripe.StripeClient(key, **transport)
        with pytest.raises(stripe.AuthenticationError) as info:
            bad.v1.customers.list()
        assert info.value.http_status == 401
    rk = stripe.StripeClient("rk_test_restricted", **transport)
    assert rk.v1.customers.list().data == []


def test_injected_faults_map_to_sdk_errors(sb: Sandbox, client: Client) -> None:
    sb.faults.fail_next(429)
    with pytest.raises(stripe.RateLimitError):
        client.v1.customers.list()
    sb.faults.fail_next(500)
    with pytest.raises(stripe.APIError) as info:
        client.v1.customers.create({"email": "x@example.com"})
    assert info.value.http_status == 500
    assert client.v1.customers.list().data == [], "a failed request changes nothing"


def test_sdk_retries_ride_out_500s_without_duplicates(sb: Sandbox) -> None:
    client = sb.stripe_client(max_network_retries=2)
    sb.faults.fail_next(500, 503)
    customer = client.v1.customers.create({"email": "x@example.com"})
    assert [c.id for c in client.v1.customers.list().data] == [customer.id]


def test_latency_and_error_rate(sb: Sandbox) -> None:
    import time

    client = sb.stripe_client()
    sb.faults.latency = 0.05
    started = time.perf_counter()
    client.v1.customers.list()
    assert time.perf_counter() - started >= 0.05
    sb.faults.reset()
    sb.faults.api_error_rate = 1.0
    with pytest.raises(stripe.APIError):
        client.v1.customers.list()
    sb.faults.api_error_rate = 0.0
    assert client.v1.customers.list().data == []


# --- events -----------------------------------------------------------------------------


def test_events_list_and_retrieve(sb: Sandbox, client: Client) -> None:
    accounts = link(sb, client, "test_nonoauth")
    created = client.v1.events.list({"type": "financial_connections.account.created"})
    assert {e.data.object.id for e in created.data} == {a.id for a in accounts}
    event = created.data[0]
    assert isinstance(event, stripe.Event) and event.id.startswith("evt_")
    assert isinstance(event.data.object, stripe.financial_connections.Account)
    assert event.api_version == "2026-10-28.endive"
    assert client.v1.events.retrieve(event.id).id == event.id

    disconnected = client.v1.financial_connections.accounts.disconnect(
        accounts[0].id, options={"idempotency_key": "bye"}
    )
    assert disconnected.status == "disconnected"
    last = client.v1.events.list({"limit": 1}).data[0]
    assert last.type == "financial_connections.account.disconnected"
    request = present(last.request)
    assert present(request.id).startswith("req_") and request.idempotency_key == "bye"
    wildcard = client.v1.events.list({"type": "financial_connections.account.*", "limit": 100})
    assert len(wildcard.data) == 3
    some = client.v1.events.list(
        {"types": ["financial_connections.account.disconnected"], "limit": 100}
    )
    assert [e.id for e in some.data] == [last.id]
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.events.retrieve("evt_missing")
    assert info.value.http_status == 404


# --- test helpers over HTTP -------------------------------------------------------------


def test_test_helpers_over_http(sb: Sandbox, client: Client) -> None:
    sb.refresh_delay = 3600  # the refresh stays pending until finish_refreshes ends it
    fc = client.v1.financial_connections
    customer = client.v1.customers.create()
    session = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances", "transactions"],
        }
    )
    helpers = "/v1/test_helpers/financial_connections"

    def post(path: str, **params: Any) -> Any:
        response = client.raw_request("post", helpers + path, **params)
        return client.deserialize(response, api_mode="V1")

    completed = post(
        f"/sessions/{session.id}/complete", institution="bank_oauth", accounts=["savings"]
    )
    assert [a.subcategory for a in completed.accounts.data] == ["savings"]
    account = completed.accounts.data[0].id
    fc.accounts.refresh(account, {"features": ["balance"]})
    assert post("/finish_refreshes", account=account, status="failed").finished == 1
    assert present(fc.accounts.retrieve(account).balance_refresh).status == "failed"
    assert post(f"/accounts/{account}/deactivate").status == "inactive"
    deactivated = client.v1.events.list({"type": "financial_connections.account.deactivated"})
    assert present(deactivated.data[0].request).id is None, "test helpers act as the bank would"
    assert post(f"/accounts/{account}/reactivate").status == "active"
    event = post(
        f"/accounts/{account}/fire_event",
        type="financial_connections.account.upcoming_deactivation",
    )
    assert event.type == "financial_connections.account.upcoming_deactivation"
    assert event.data.object.id == account
    now = sb.now()
    assert post("/advance_time", seconds=3600).now >= now + 3600
    assert post(f"/accounts/{account}/disconnect").status == "disconnected"
    assert post("/deliver_events").attempts == 0

    other = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances"],
        }
    )
    assert post(f"/sessions/{other.id}/cancel").accounts.data == []
    with pytest.raises(stripe.InvalidRequestError) as info:
        post(f"/sessions/{other.id}/complete")
    assert info.value.code == "session_already_used"
    with pytest.raises(stripe.InvalidRequestError) as info:
        post(f"/accounts/{account}/fire_event", type="financial_connections.account.exploded")
    assert info.value.param == "type"
    institutions = client.deserialize(
        client.raw_request("get", helpers + "/institutions", query="oauth"), api_mode="V1"
    )
    ids = [i["id"] for i in institutions["data"]]
    assert ids == ["bank_oauth", "bank_nonoauth", "test_oauth", "test_nonoauth"]
    assert all(i["featured"] for i in institutions["data"])


def test_async_methods_work_in_process(sb: Sandbox) -> None:
    import asyncio
    import concurrent.futures

    client = sb.stripe_client()

    async def scenario() -> tuple[str, list[str]]:
        customer = await client.v1.customers.create_async({"email": "a@example.com"})
        listed = await client.v1.customers.list_async()
        return customer.id, [c.id for c in listed.data]

    # A thread of its own: Playwright's sync API may hold an event loop on the main thread.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        created, listed = pool.submit(asyncio.run, scenario()).result()
    assert listed == [created]


def test_accounts_of_a_connected_account_or_customer_account(sb: Sandbox, client: Client) -> None:
    fc = client.v1.financial_connections
    holders: list[SessionCreateParamsAccountHolder] = [
        {"type": "account", "account": "acct_1"},
        {"type": "customer", "customer_account": "acct_2"},
    ]
    for holder in holders:
        session = fc.sessions.create({"account_holder": holder, "permissions": ["balances"]})
        assert present(session.account_holder).to_dict() == holder
        sb.complete_session(session.id, "test_oauth", ["checking"])
    by_account = fc.accounts.list({"account_holder": {"account": "acct_1"}}).data
    by_customer_account = fc.accounts.list({"account_holder": {"customer_account": "acct_2"}}).data
    assert len(by_account) == len(by_customer_account) == 1
    assert present(by_account[0].account_holder).account == "acct_1"


def test_two_test_banks_never_offer_accounts_of_the_same_name(sb: Sandbox, client: Client) -> None:
    # A host that links two test banks tells their accounts apart by name.
    names: dict[str, str] = {}
    for institution in INSTITUTIONS:
        for template in institution.accounts:
            assert template.display_name not in names, (
                f"{institution.id} and {names.get(template.display_name)} both offer "
                f"{template.display_name!r}"
            )
            names[template.display_name] = institution.id
    first = link(sb, client, "test_nonoauth", accounts=["checking"])
    second = link(sb, client, "test_oauth", accounts=["checking"])
    assert [a.display_name for a in (*first, *second)] == ["Test Checking", "Test OAuth Checking"]
