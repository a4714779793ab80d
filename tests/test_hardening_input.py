"""Bad input is a clear 4xx in JSON: never a 500, never the host's HTML page.

Also Stripe-signed events of odd shapes: acknowledged, recorded ignored with a reason,
and never retried for ever.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import stripe_event
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Customer, WebhookEvent
from flask_finconn.services import events
from flask_finconn.testing import HOLDER_HEADER, link_accounts

HEADERS = {HOLDER_HEADER: "ada"}
DEACTIVATED = "financial_connections.account.deactivated"
# Every route of the blueprint, with the methods it takes.
ROUTES = {
    "/finconn/sessions": {"POST"},
    "/finconn/sessions/fcsess_x/complete": {"POST"},
    "/finconn/accounts": {"GET", "HEAD"},
    "/finconn/accounts/fcacct_x": {"GET", "HEAD"},
    "/finconn/webhook": {"POST"},
    "/finconn/accounts/fcacct_x/refresh": {"POST"},
    "/finconn/accounts/fcacct_x/disconnect": {"POST"},
    "/finconn/accounts/fcacct_x/transactions": {"GET", "HEAD"},
    "/finconn/accounts/fcacct_x/owners": {"GET", "HEAD"},
    "/finconn/setup-intents": {"POST"},
    "/finconn/setup-intents/seti_x/complete": {"POST"},
    "/finconn/mandate": {"GET", "HEAD"},
    "/finconn/accounts/fcacct_x/payment-method": {"POST"},
    "/finconn/payment-methods": {"GET", "HEAD"},
    "/finconn/payment-methods/fcpm_x": {"GET", "HEAD"},
    "/finconn/payment-methods/fcpm_x/verify": {"POST"},
    "/finconn/payment-methods/fcpm_x/detach": {"POST"},
    "/finconn/payments": {"GET", "HEAD"},
    "/finconn/payments/fcpay_x": {"GET", "HEAD"},
}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def test_the_route_list_is_complete(finconn_app: Flask) -> None:
    rules = {
        r.rule
        for r in finconn_app.url_map.iter_rules()
        if r.endpoint.startswith("finconn.") and r.endpoint != "finconn.wrong_method"
    }
    assert len(rules) == len(ROUTES)


@pytest.mark.parametrize("path", sorted(ROUTES))
def test_a_wrong_method_is_a_json_405_with_allow(finconn_app: Flask, path: str) -> None:
    client = finconn_app.test_client()
    for method in METHODS:
        if method in ROUTES[path]:
            continue
        response = client.open(path, method=method, headers=HEADERS, json={})
        assert response.status_code == 405, (method, path)
        allowed = {m.strip() for m in response.headers["Allow"].split(",")}
        assert allowed == ROUTES[path] | {"OPTIONS"}
        if method != "HEAD":
            assert response.mimetype == "application/json"
            assert response.json is not None
            assert response.json["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("path", [p for p, m in sorted(ROUTES.items()) if "POST" in m])
def test_deeply_nested_json_is_a_400(finconn_app: Flask, path: str) -> None:
    body = "[" * 1000 + "]" * 1000
    client = finconn_app.test_client()
    response = client.post(path, data=body, content_type="application/json", headers=HEADERS)
    assert response.status_code == 400
    assert response.json is not None
    # The webhook refuses it before reading the body: it is not signed.
    assert response.json["error"]["code"] in ("invalid_json", "missing_signature")


def test_a_signed_deeply_nested_webhook_body_is_a_400(
    finconn_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    response = post_webhook(finconn_app, b"[" * 1000 + b"]" * 1000)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_event"


@pytest.mark.parametrize(
    "param",
    [
        {"since": "0001-01-01T00:00:00+05:00"},
        {"until": "9999-12-31T23:59:59-05:00"},
        {"since": "0001-01-01T00:00:00+05:00", "until": "9999-12-31T23:59:59-05:00"},
    ],
)
def test_dates_at_the_edge_of_the_calendar_are_field_errors(
    finconn_app: Flask, param: dict[str, str]
) -> None:
    [account] = link_accounts(finconn_app, Holder("ada"), accounts=["checking"])
    client = finconn_app.test_client()
    response = client.get(
        f"/finconn/accounts/{account.id}/transactions", query_string=param, headers=HEADERS
    )
    assert response.status_code == 400
    assert set(response.get_json()["error"]["fields"]) == set(param)


def test_dates_at_the_edge_without_an_offset_still_work(finconn_app: Flask) -> None:
    [account] = link_accounts(finconn_app, Holder("ada"), accounts=["checking"])
    response = finconn_app.test_client().get(
        f"/finconn/accounts/{account.id}/transactions",
        query_string={"since": "0001-01-01", "until": "9999-12-31T23:59:59Z"},
        headers=HEADERS,
    )
    assert response.status_code == 200


def _account(**fields: Any) -> dict[str, Any]:
    return {"object": "financial_connections.account", **fields}


def odd_events(customer: str) -> dict[str, dict[str, Any]]:
    return {
        "id_is_a_hash": stripe_event(DEACTIVATED, _account(id={"fca": "x"})),
        "id_is_a_list": stripe_event(DEACTIVATED, _account(id=["fca_1", "fca_2"])),
        "id_is_too_long": stripe_event(DEACTIVATED, _account(id="fca_" + "x" * 300)),
        "created_far_future": stripe_event(DEACTIVATED, _account(id="fca_a"), created=10**20),
        "created_far_past": stripe_event(DEACTIVATED, _account(id="fca_b"), created=-(10**15)),
        "holder_not_a_hash": stripe_event(
            DEACTIVATED, _account(id="fca_c", account_holder="cus_" + customer)
        ),
        "holder_is_a_list": stripe_event(DEACTIVATED, _account(id="fca_d", account_holder=[1])),
        # Ours by its customer, but Stripe no longer knows the account.
        "account_unknown_to_stripe": stripe_event(
            DEACTIVATED,
            _account(id="fca_gone", account_holder={"type": "customer", "customer": customer}),
        ),
    }


def test_odd_signed_events_are_acknowledged_and_ignored_for_good(
    finconn_app: Flask, post_webhook: Callable[..., Any]
) -> None:
    link_accounts(finconn_app, Holder("ada"), accounts=["checking"])
    state = get_state(finconn_app)
    with finconn_app.app_context():
        customer = state.db.session.scalars(sa.select(Customer.stripe_id)).one()
    sent = odd_events(customer)
    for name, event in sent.items():
        for _delivery in range(2):  # Stripe's retry answers the same
            response = post_webhook(finconn_app, event)
            assert response.status_code == 200, (name, response.json)
    with finconn_app.app_context():
        session = state.db.session
        for name, event in sent.items():
            row = session.get(WebhookEvent, event["id"])
            assert row is not None, name
            assert row.status == "ignored", (name, row.status, row.last_error)
            assert row.last_error, name
        assert not set(events.sweep(state)) & {e["id"] for e in sent.values()}
