"""Hostile input to the sandbox: odd parameter names, deep nesting, huge numbers, clock
jumps and oversized or deeply nested modal bodies all get a clear 4xx in Stripe's error
shape, and none hangs the server or answers 500."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest
from flask import Flask
from sandbox_support import link, present, sb_fixture  # noqa: F401
from werkzeug.test import Client, EnvironBuilder

from flask_finconn.sandbox import Sandbox, browser
from flask_finconn.sandbox._params import _pairs

AUTH = {"Authorization": "Bearer sk_test_sandbox"}
FORM = "application/x-www-form-urlencoded"
FC = "/v1/financial_connections"
TH = "/v1/test_helpers/financial_connections"
MAX_CLOCK = 253_402_300_799  # 9999-12-31T23:59:59Z


@pytest.fixture
def http(sb: Sandbox) -> Client:
    return Client(sb.wsgi_app)


def _stripe_error(response: Any, status: int = 400) -> dict[str, Any]:
    """The error of a response that must be Stripe's 4xx body with a param and a sentence."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.headers["Content-Type"] == "application/json"
    error = json.loads(response.get_data(as_text=True))["error"]
    assert error["type"] == "invalid_request_error"
    assert " " in error["message"]
    return dict(error)


# --- the form parser ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "param"),
    [
        # Percent-encoded UTF-8, as a client sends them.
        ("expand[%D9%A3]=data", "expand"),  # ARABIC-INDIC DIGIT THREE: not a list index
        ("expand[%EF%BC%91]=data", "expand"),  # FULLWIDTH DIGIT ONE
        ("expand[%C2%B2]=data", "expand"),  # SUPERSCRIPT TWO: isdigit(), yet int() refuses it
        ("expand[0]=x&expand[%C2%B2]=y", "expand"),
        ("limit=%EF%BC%91%EF%BC%90", "limit"),  # fullwidth "10" is not an integer on the wire
        ("limit=%D9%A1", "limit"),
        ("expand[%00]=data", "expand[?]"),
        ("expand[a%00b]=data", "expand[a?b]"),
        ("expand%00=data", "expand?"),
        ("limit=99999999999999999999999999999", "limit"),
        ("limit=-99999999999999999999", "limit"),
        ("limit[]=1", "limit"),
        ("limit[a]=1", "limit"),
        ("created[gt][x]=1", "created[gt]"),
        ("created[gt]=1e400", "created[gt]"),
        ("expand[99999999999]=data", "expand"),
    ],
)
def test_odd_parameters_are_a_400_with_a_param(http: Client, query: str, param: str) -> None:
    error = _stripe_error(http.get(f"/v1/customers?{query}", headers=AUTH))
    assert error["param"] == param


@pytest.mark.parametrize(
    "text",
    [
        "a=1&b=2",
        "a=x+y&b=%2B%26%3D&c=%C3%A9",
        "a&&b=&=c&d==e&",
        "a+b%5B0%5D=1&a%2Bb=2",
        "%e2%82=1",
        "a=%ff",
        "%",
        "a=%zz&b=%2",
    ],
)
def test_form_fields_split_as_parse_qsl_splits_them(text: str) -> None:
    """The sandbox splits bodies itself (decoding only fields with ``%`` or ``+``): the
    pairs, and the errors, must be the standard library's."""
    expected: object
    try:
        expected = parse_qsl(text, keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        expected = UnicodeDecodeError
    try:
        got: object = _pairs(text)
    except UnicodeDecodeError:
        got = UnicodeDecodeError
    assert got == expected


def test_encoded_values_round_trip_through_a_form_body(http: Client) -> None:
    body = "email=a%2Bb%40example.com&metadata[k+1]=x+y%26z%3D&metadata[%C3%A9]=%25"
    response = http.post("/v1/customers", data=body, headers=AUTH, content_type=FORM)
    assert response.status_code == 200, response.get_data(as_text=True)
    customer = json.loads(response.get_data(as_text=True))
    assert customer["email"] == "a+b@example.com"
    assert customer["metadata"] == {"k 1": "x y&z=", "\u00e9": "%"}


@pytest.mark.parametrize("depth", [17, 300, 5000])
def test_deep_nesting_is_a_400(http: Client, depth: int) -> None:
    key = "metadata" + "[a]" * depth
    for response in (
        http.get(f"/v1/customers?{key}=1", headers=AUTH),
        http.post("/v1/customers", data=f"{key}=1", headers=AUTH, content_type=FORM),
    ):
        error = _stripe_error(response)
        assert error["param"] == "metadata"
        assert "nested" in error["message"]


def test_nesting_within_the_limit_is_validated_as_usual(http: Client) -> None:
    key = "metadata" + "[a]" * 15
    error = _stripe_error(
        http.post("/v1/customers", data=f"{key}=1", headers=AUTH, content_type=FORM)
    )
    assert error["param"] == "metadata"
    assert "hash of strings" in error["message"]


def test_huge_and_wrong_typed_integers_are_400s(sb: Sandbox, http: Client) -> None:
    client = sb.stripe_client()
    account = link(sb, client, accounts=["checking"])[0]
    for path in (
        f"{FC}/transactions?account={account.id}&transacted_at[gte]=123456789012345678901",
        f"{FC}/transactions?account={account.id}&transacted_at=[1]",
        f"/v1/events?created={'9' * 40}",
        "/v1/events?created[lt][]=1",
        "/v1/customers?limit=999999999999999999",
    ):
        _stripe_error(http.get(path, headers=AUTH))
    size = http.post(
        f"{TH}/accounts/{account.id}/history", data="size=1e9", headers=AUTH, content_type=FORM
    )
    assert _stripe_error(size)["code"] == "parameter_invalid_integer"


# --- advance_time ----------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [math.inf, -math.inf, math.nan, -1, 1e12, 10**30, "60", True])
def test_advance_time_refuses_what_it_cannot_do(sb: Sandbox, seconds: Any) -> None:
    before = sb.now()
    with pytest.raises(ValueError, match=r"seconds must be .*\.$"):
        sb.advance_time(seconds)
    assert sb.now() - before < 3600, "a refused advance leaves the clock alone"


@pytest.mark.parametrize(
    "seconds", ["1000000000000", "-1", "999999999999999999", "nan", "inf", "1e12", "1.5"]
)
def test_advance_time_route_refuses_what_it_cannot_do(http: Client, seconds: str) -> None:
    response = http.post(
        f"{TH}/advance_time", data=f"seconds={seconds}", headers=AUTH, content_type=FORM
    )
    error = _stripe_error(response)
    assert error["param"] == "seconds"
    assert error["code"] == "parameter_invalid_integer"


def test_advance_time_stops_at_the_last_representable_second(sb: Sandbox) -> None:
    with pytest.raises(ValueError, match="9999-12-31"):
        sb.advance_time(MAX_CLOCK - sb.now() + 5)
    assert sb.advance_time(MAX_CLOCK - sb.now() - 5) <= MAX_CLOCK


def test_a_huge_jump_runs_missed_daily_refreshes_once(sb: Sandbox) -> None:
    """A subscription's daily refresh does not replay every day a jump skipped: two
    centuries of sandbox time cost one catch-up refresh (and a bounded history), where
    replaying them would run 73,000 refreshes and never answer in a test's lifetime."""
    client = sb.stripe_client()
    account = link(sb, client, accounts=["checking"])[0]
    fc = client.v1.financial_connections
    fc.accounts.subscribe(account.id, {"features": ["transactions"]})
    sb.finish_refreshes()

    def refreshed() -> int:
        return sum(1 for e in sb.events() if e["type"].endswith("account.refreshed_transactions"))

    def transactions() -> int:
        listed = fc.transactions.list({"account": account.id, "limit": 100})
        return sum(1 for _ in listed.auto_paging_iter())

    before, rows = refreshed(), transactions()
    sb.advance_time(200 * 365 * 86400)
    assert refreshed() - before <= 2
    # The catch-up reads at most the bank's history window (180 days at ~2 a day).
    assert transactions() - rows <= 2 * 180 * 2
    # And the subscription goes on from there, one refresh a day.
    sb.advance_time(86400 + 5)
    assert refreshed() - before <= 3
    assert present(fc.accounts.retrieve(account.id).transaction_refresh).status == "succeeded"


def test_a_few_days_still_refresh_every_day(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, accounts=["checking"])[0]
    client.v1.financial_connections.accounts.subscribe(account.id, {"features": ["transactions"]})
    sb.finish_refreshes()

    def refreshed() -> int:
        return sum(1 for e in sb.events() if e["type"].endswith("account.refreshed_transactions"))

    before = refreshed()
    for _ in range(3):
        sb.advance_time(86400 + 5)
    assert refreshed() - before == 3


# --- the modal's routes --------------------------------------------------------------------


@pytest.fixture
def modal(sb: Sandbox) -> Iterator[tuple[Any, str]]:
    """A Flask test client on the modal's routes at ``/sb``, and a fresh session's secret."""
    app = Flask(__name__)
    app.register_blueprint(browser.make_blueprint(sb), url_prefix="/sb")
    client = sb.stripe_client()
    customer = client.v1.customers.create()
    session = client.v1.financial_connections.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances"],
        }
    )
    yield app.test_client(), present(session.client_secret)


def _modal_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]
    return dict(error)


@pytest.mark.parametrize("route", ["login", "authorize", "complete", "cancel"])
def test_modal_bodies_over_the_limit_are_a_413(modal: tuple[Any, str], route: str) -> None:
    client, secret = modal
    body = json.dumps({"client_secret": secret, "pad": "x" * browser.MAX_BODY})
    response = client.post(f"/sb/api/{route}", data=body, content_type="application/json")
    assert _modal_error(response, 413)["code"] == "payload_too_large"
    # A chunked body announces no length (the server marks the stream terminated and
    # sends no CONTENT_LENGTH): it is cut off at the limit, still a 413.
    environ = EnvironBuilder(
        f"/sb/api/{route}", method="POST", data=body, content_type="application/json"
    ).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    assert _modal_error(client.open(environ), 413)["code"] == "payload_too_large"


@pytest.mark.parametrize("depth", [1000, 20000])
@pytest.mark.parametrize("route", ["login", "authorize", "complete", "cancel"])
def test_deeply_nested_modal_json_is_a_400(modal: tuple[Any, str], route: str, depth: int) -> None:
    client, secret = modal
    nested = "[" * depth + "]" * depth
    body = f'{{"client_secret": "{secret}", "accounts": {nested}}}'
    response = client.post(f"/sb/api/{route}", data=body, content_type="application/json")
    _modal_error(response, 400)


def test_a_modal_body_within_the_limit_still_works(modal: tuple[Any, str]) -> None:
    client, secret = modal
    response = client.post("/sb/api/cancel", json={"client_secret": secret, "pad": "x" * 1000})
    assert response.status_code == 200
    assert response.get_json()["accounts"] == []
