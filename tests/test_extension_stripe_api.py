"""stripe_api: Stripe's failures become FinConnErrors that leak nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import stripe
from sandbox_support import present

from flask_finconn import Conflict, FinConnError, NotFound, StripeUnavailable
from flask_finconn.sandbox import Sandbox
from flask_finconn.stripe_api import API_VERSION, StripeAPI


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    sandbox = Sandbox(":memory:")
    yield sandbox
    sandbox.close()


@pytest.fixture
def api(sandbox: Sandbox) -> StripeAPI:
    return StripeAPI.for_sandbox(sandbox)


def test_pins_the_sdk_api_version() -> None:
    assert API_VERSION == "2026-10-28.endive"


def test_unreachable_stripe_is_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk_test_unreachable_4242"
    client = stripe.StripeClient(
        secret, base_addresses={"api": "http://127.0.0.1:9"}, max_network_retries=0
    )
    with caplog.at_level(logging.WARNING), pytest.raises(StripeUnavailable) as info:
        StripeAPI(client, livemode=False).create_customer(
            "ada", installation="fcinst_test", email=None, name=None
        )
    assert info.value.status == 502
    assert info.value.code == "stripe_unavailable"
    assert "create a customer" in info.value.message
    assert secret not in info.value.message + caplog.text


def test_a_refused_key_is_named_but_not_shown(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk_live_notforthesandbox_4242"
    client = stripe.StripeClient(
        secret, base_addresses={"api": sandbox.api_base}, http_client=sandbox.http_client()
    )
    with caplog.at_level(logging.WARNING), pytest.raises(FinConnError) as info:
        StripeAPI(client, livemode=True).retrieve_account("fca_x")
    assert info.value.code == "stripe_authentication_failed"
    assert "FINCONN_STRIPE_SECRET_KEY" in info.value.message
    assert "4242" not in info.value.message + caplog.text


def test_missing_objects_are_not_found(api: StripeAPI) -> None:
    with pytest.raises(NotFound) as info:
        api.retrieve_account("fca_missing")
    assert info.value.code == "account_not_found"
    with pytest.raises(NotFound) as info:
        api.retrieve_session("fcsess_missing")
    assert info.value.code == "session_not_found"


def test_rate_limits_are_unavailable(api: StripeAPI, sandbox: Sandbox) -> None:
    sandbox.faults.fail_next(429)
    with pytest.raises(StripeUnavailable, match="too many requests"):
        api.create_customer("ada", installation="fcinst_test", email=None, name=None)


def test_a_holders_customer_is_created_once(api: StripeAPI) -> None:
    first = api.create_customer(
        "ada", installation="fcinst_test", email="ada@example.com", name="Ada"
    )
    again = api.create_customer(
        "ada", installation="fcinst_test", email="ada@example.com", name="Ada"
    )
    other = api.create_customer("bob", installation="fcinst_test", email=None, name=None)
    assert first.id == again.id != other.id
    assert first.email == "ada@example.com"


def test_session_accounts_are_listed_by_session(api: StripeAPI, sandbox: Sandbox) -> None:
    customer = api.create_customer("ada", installation="fcinst_test", email=None, name=None)
    session = api.create_session(
        customer.id,
        permissions=["balances"],
        prefetch=[],
        country="US",
        account_subcategories=None,
    )
    sandbox.complete_session(session.id, "bank_nonoauth")
    accounts = api.session_accounts(session.id)
    assert sorted(present(a.last4) for a in accounts) == ["1234", "4321", "6789"]
    assert api.retrieve_session(session.id).id == session.id


def test_an_inactive_account_is_a_conflict(api: StripeAPI, sandbox: Sandbox) -> None:
    customer = api.create_customer("ada", installation="fcinst_test", email=None, name=None)
    session = api.create_session(
        customer.id,
        permissions=["balances", "transactions"],
        prefetch=[],
        country="US",
        account_subcategories=None,
    )
    sandbox.complete_session(session.id, "bank_nonoauth", ["checking"])
    account = api.session_accounts(session.id)[0]
    sandbox.deactivate(account.id)
    with pytest.raises(Conflict) as info:
        api.refresh_account(account.id, ["balance"])
    assert info.value.status == 409
    assert info.value.code == "account_inactive"
    assert "link it again" in info.value.message
