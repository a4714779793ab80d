"""The sandbox against Stripe's published OpenAPI spec (the cut in ``tests/data/openapi``,
with the 2026-10-28.endive changes for Financial Connections applied).

- Every customer, Financial Connections and event response of a full flow through the
  SDK, error bodies included, validates against the operation's response schema.
- Every parameter the spec lists for those operations is accepted (never
  ``parameter_unknown``), and anything else is ``parameter_unknown``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

import pytest
import stripe
from openapi_support import OpenAPI, Recorder, form, sample
from sandbox_support import sb_fixture  # noqa: F401
from stripe.financial_connections import AccountOwnership
from stripe.params import CustomerCreateParams
from werkzeug.test import Client

from flask_finconn.sandbox import Sandbox

AUTH = {"Authorization": "Bearer sk_test_conformance"}
FORM = "application/x-www-form-urlencoded"
FC = "/v1/financial_connections"

# The operations of the spec the sandbox serves, besides payments.
OPERATIONS = [
    ("/v1/customers", "post"),
    ("/v1/customers", "get"),
    ("/v1/customers/{customer}", "get"),
    (f"{FC}/sessions", "post"),
    (f"{FC}/sessions/{{session}}", "get"),
    (f"{FC}/accounts", "get"),
    (f"{FC}/accounts/{{account}}", "get"),
    (f"{FC}/accounts/{{account}}/refresh", "post"),
    (f"{FC}/accounts/{{account}}/subscribe", "post"),
    (f"{FC}/accounts/{{account}}/unsubscribe", "post"),
    (f"{FC}/accounts/{{account}}/disconnect", "post"),
    (f"{FC}/accounts/{{account}}/owners", "get"),
    (f"{FC}/transactions", "get"),
    (f"{FC}/transactions/{{transaction}}", "get"),
    ("/v1/events", "get"),
    ("/v1/events/{id}", "get"),
]


@pytest.fixture(scope="module")
def api() -> OpenAPI:
    return OpenAPI(endive=True)


@pytest.fixture
def recorded(sb: Sandbox) -> Iterator[tuple[stripe.StripeClient, Recorder]]:
    recorder = Recorder(sb.http_client())
    yield sb.stripe_client(http_client=recorder), recorder


def _invalid(call: Callable[[], Any]) -> stripe.InvalidRequestError:
    with pytest.raises(stripe.InvalidRequestError) as info:
        call()
    return info.value


def test_every_response_of_a_full_flow_matches_the_spec(
    sb: Sandbox, api: OpenAPI, recorded: tuple[stripe.StripeClient, Recorder]
) -> None:
    client, recorder = recorded
    fc = client.v1.financial_connections
    customer = client.v1.customers.create(
        {
            "email": "jenny.rosen@example.com",
            "address": {"line1": "1 Main St", "country": "US"},
            "shipping": {"name": "Jenny", "address": {"city": "Oakland"}},
            "preferred_locales": ["en", "fr"],
            "invoice_settings": {"custom_fields": [{"name": "VAT", "value": "1"}]},
            "tax_exempt": "exempt",
            "business_name": "Rosen LLC",
        }
    )
    client.v1.customers.retrieve(customer.id)
    client.v1.customers.update(customer.id, {"name": "Jenny Rosen", "address": ""})
    client.v1.customers.list({"limit": 3, "created": {"gte": 0}})
    session = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances", "ownership", "transactions", "payment_method"],
            "filters": {"country": "US"},
        }
    )
    fc.sessions.retrieve(session.id)
    sb.complete_session(session.id, institution="bank_nonoauth")
    fc.sessions.retrieve(session.id)
    accounts = fc.accounts.list({"session": session.id}).data
    account = accounts[0].id
    fc.accounts.refresh(account, {"features": ["balance"]})
    fc.accounts.refresh(account, {"features": ["ownership"]})
    fc.accounts.subscribe(account, {"features": ["transactions"]})
    sb.finish_refreshes()
    found = fc.accounts.retrieve(account, {"expand": ["ownership"]})
    fc.accounts.list({"account_holder": {"customer": customer.id}, "limit": 2})
    ownership = cast(AccountOwnership, found.ownership)  # expanded above
    fc.accounts.owners.list(account, {"ownership": ownership.id})
    transactions = fc.transactions.list({"account": account, "limit": 5}).data
    fc.transactions.retrieve(transactions[0].id)
    fc.accounts.unsubscribe(account, {"features": ["transactions"]})
    fc.accounts.disconnect(account)
    fc.accounts.retrieve(account)
    # Accounts with status details: one that will expire, one the bank cut off.
    eventual = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances"],
        }
    )
    sb.complete_session(eventual.id, institution="reauth_eventual")
    sb.advance_time(31 * 86400)
    fc.accounts.list({"session": eventual.id})
    events = client.v1.events.list({"limit": 100}).data
    client.v1.events.retrieve(events[0].id)
    client.v1.events.list({"delivery_success": False, "types": ["customer.created"]})
    # Errors: unknown ids, unknown and malformed parameters, a refused refresh.
    _invalid(lambda: client.v1.customers.retrieve("cus_missing"))
    _invalid(
        lambda: client.v1.customers.create(cast(CustomerCreateParams, {"nope": "1"}))
    )  # deliberately malformed
    _invalid(lambda: fc.accounts.list({"limit": 1000}))
    _invalid(lambda: fc.accounts.refresh(account, {"features": ["balance"]}))
    _invalid(lambda: client.v1.events.retrieve("evt_missing"))

    problems = []
    seen = set()
    for method, path, status, body in recorder.seen:
        template = api.template(path)
        assert template is not None, f"the spec has no {method.upper()} {path}"
        if method not in api.spec["paths"][template]:
            # The cut has no POST /v1/customers/{customer}; Stripe's answers a customer.
            assert template == "/v1/customers/{customer}" and method == "post"
            errors = api.schema_errors("customer" if status == 200 else "error", body)
        else:
            errors = api.errors(template, method, body, status)
        seen.add((template, method, status >= 400))
        problems += [f"{method.upper()} {path} ({status}): {e}" for e in errors]
    assert not problems, "\n".join(problems)
    assert {(t, m) for t, m, _ in seen} >= set(OPERATIONS)
    assert any(error for _, _, error in seen)


# --- parameters -----------------------------------------------------------------------------


@pytest.fixture
def ids(sb: Sandbox) -> dict[str, str]:
    """A customer, a session, a linked account (every permission), one of its transactions,
    and an event, to fill the paths with."""
    client = sb.stripe_client()
    fc = client.v1.financial_connections
    customer = client.v1.customers.create({"email": "a@example.com"})
    session = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances", "ownership", "transactions"],
        }
    )
    sb.complete_session(session.id, institution="bank_nonoauth", accounts=["checking"])
    account = fc.accounts.list({"session": session.id}).data[0]
    fc.accounts.refresh(account.id, {"features": ["ownership", "transactions"]})
    sb.finish_refreshes()
    return {
        "customer": customer.id,
        "session": session.id,
        "account": account.id,
        "transaction": fc.transactions.list({"account": account.id}).data[0].id,
        "id": sb.events()[0]["id"],
    }


def _base(template: str, method: str, ids: Mapping[str, str]) -> dict[str, Any]:
    """The parameters an operation needs for any other parameter to be looked at."""
    if template.endswith("/sessions") and method == "post":
        return {
            "account_holder": {"type": "customer", "customer": ids["customer"]},
            "permissions": ["balances"],
        }
    if template.endswith(("/refresh", "/subscribe", "/unsubscribe")):
        return {"features": ["transactions"]}
    if template.endswith("/transactions") or template.endswith("/owners"):
        return {"account": ids["account"]} if template.endswith("/transactions") else {}
    return {}


def _send(http: Client, template: str, method: str, ids: Mapping[str, str], params: Any) -> Any:
    path = template
    for name, value in ids.items():
        path = path.replace(f"{{{name}}}", value)
    encoded = form(params)
    if method == "get":
        return http.get(f"{path}?{encoded}", headers=AUTH)
    return http.post(path, data=encoded, headers=AUTH, content_type=FORM)


def _error(response: Any) -> dict[str, Any]:
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code == 200:
        return {}
    return dict(json.loads(response.get_data(as_text=True))["error"])


@pytest.mark.parametrize(("template", "method"), OPERATIONS)
def test_every_spec_parameter_is_accepted(
    sb: Sandbox, api: OpenAPI, ids: dict[str, str], template: str, method: str
) -> None:
    http = Client(sb.wsgi_app)
    params = api.params(template, method)
    assert params, f"the spec lists no parameters for {method.upper()} {template}"
    refused = {}
    for name, schema in params.items():
        value = sample(api, schema)
        if name == "expand":
            value = []  # what may be expanded is checked elsewhere; an empty list is valid
        error = _error(
            _send(http, template, method, ids, {**_base(template, method, ids), name: value})
        )
        if error.get("code") == "parameter_unknown":
            refused[name] = error["param"]
    assert not refused, f"{method.upper()} {template} refuses spec parameters: {refused}"


@pytest.mark.parametrize(("template", "method"), OPERATIONS)
def test_anything_else_is_parameter_unknown(
    sb: Sandbox, api: OpenAPI, ids: dict[str, str], template: str, method: str
) -> None:
    http = Client(sb.wsgi_app)
    base = _base(template, method, ids)
    error = _error(_send(http, template, method, ids, {**base, "not_a_stripe_param": "1"}))
    assert error["code"] == "parameter_unknown"
    assert error["param"] == "not_a_stripe_param"
    # One level down too, inside each hash parameter the spec spells out.
    for name, schema in api.params(template, method).items():
        resolved = api.resolve(schema)
        branches = [api.resolve(b) for b in resolved.get("anyOf", [resolved])]
        if not any(b.get("type") == "object" and b.get("properties") for b in branches):
            continue
        value = sample(api, schema)
        if not isinstance(value, dict):
            continue
        error = _error(
            _send(http, template, method, ids, {**base, name: {**value, "not_a_stripe_param": "1"}})
        )
        assert error.get("code") == "parameter_unknown", (name, error)
        assert error["param"] == f"{name}[not_a_stripe_param]"


# --- what the sandbox does with the customer parameters it accepts --------------------------


def test_customer_parameters_are_stored_and_shown(sb: Sandbox) -> None:
    client = sb.stripe_client()
    created = client.v1.customers.create(
        {
            "address": {"line1": "1 Main St", "country": "US"},
            "shipping": {"name": "Jenny", "address": {"city": "Oakland"}, "phone": "555"},
            "preferred_locales": ["en", "fr"],
            "invoice_settings": {
                "custom_fields": [{"name": "VAT", "value": "1"}],
                "footer": "Thanks",
                "rendering_options": {"amount_tax_display": "exclude_tax"},
            },
            "tax_exempt": "reverse",
            "balance": -500,
            "invoice_prefix": "JENNY",
            "next_invoice_sequence": 7,
            "business_name": "Rosen LLC",
            "tax": {"validate_location": "deferred"},
            "tax_id_data": [{"type": "us_ein", "value": "12-3456789"}],
            "cash_balance": {"settings": {"reconciliation_mode": "manual"}},
        }
    )
    found = client.v1.customers.retrieve(created.id).to_dict()
    assert found["address"] == {
        "city": None,
        "country": "US",
        "line1": "1 Main St",
        "line2": None,
        "postal_code": None,
        "state": None,
    }
    assert found["shipping"]["name"] == "Jenny" and found["shipping"]["address"]["city"] == (
        "Oakland"
    )
    assert found["preferred_locales"] == ["en", "fr"]
    assert found["invoice_settings"]["custom_fields"] == [{"name": "VAT", "value": "1"}]
    assert found["invoice_settings"]["footer"] == "Thanks"
    assert found["invoice_settings"]["rendering_options"]["amount_tax_display"] == "exclude_tax"
    assert (found["tax_exempt"], found["balance"], found["invoice_prefix"]) == (
        "reverse",
        -500,
        "JENNY",
    )
    assert found["next_invoice_sequence"] == 7 and found["business_name"] == "Rosen LLC"
    # Blank strings unset.
    updated = client.v1.customers.update(
        created.id, {"address": "", "shipping": "", "tax_exempt": "", "business_name": ""}
    ).to_dict()
    assert updated["address"] is None and updated["shipping"] is None
    assert updated["tax_exempt"] == "none" and "business_name" not in updated
    # The list's created filter.
    listed = client.v1.customers.list({"created": {"gte": found["created"]}}).data
    assert [c.id for c in listed] == [created.id]
    assert client.v1.customers.list({"created": {"lt": found["created"]}}).data == []


@pytest.mark.parametrize(
    ("params", "param", "message"),
    [
        ({"test_clock": "clock_123"}, "test_clock", "No such test_clock: 'clock_123'"),
        ({"payment_method": "pm_123"}, "payment_method", "No such PaymentMethod: 'pm_123'"),
        ({"source": "tok_123"}, "source", "No such source: 'tok_123'"),
        (
            {"invoice_settings": {"default_payment_method": "pm_9"}},
            "invoice_settings[default_payment_method]",
            "No such PaymentMethod: 'pm_9'",
        ),
    ],
)
def test_ids_of_objects_the_sandbox_lacks_are_unknown_ids(
    sb: Sandbox, params: dict[str, Any], param: str, message: str
) -> None:
    client = sb.stripe_client()
    error = _invalid(lambda: client.v1.customers.create(params))  # type: ignore[arg-type]
    assert (error.http_status, error.code, error.param) == (400, "resource_missing", param)
    assert error.user_message == message
    listed = _invalid(lambda: client.v1.customers.list({"test_clock": "clock_1"}))
    assert (listed.code, listed.param) == ("resource_missing", "test_clock")


def test_status_details_is_absent_without_details(sb: Sandbox) -> None:
    client = sb.stripe_client()
    customer = client.v1.customers.create()
    session = client.v1.financial_connections.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances"],
        }
    )
    sb.complete_session(session.id, institution="bank_nonoauth", accounts=["checking"])
    account = client.v1.financial_connections.accounts.list({"session": session.id}).data[0]
    assert "status_details" not in account.to_dict()
    sb.deactivate(account.id)
    inactive = client.v1.financial_connections.accounts.retrieve(account.id).to_dict()
    assert inactive["status_details"]["inactive"]["action"] == "relink_required"
    sb.reactivate(account.id)
    assert (
        "status_details"
        not in client.v1.financial_connections.accounts.retrieve(account.id).to_dict()
    )
    sb.disconnect_by_user(account.id)
    assert (
        "status_details"
        not in client.v1.financial_connections.accounts.retrieve(account.id).to_dict()
    )


def test_error_bodies_have_no_null_request_log_url(sb: Sandbox) -> None:
    response = Client(sb.wsgi_app).get("/v1/customers/cus_missing", headers=AUTH)
    assert response.status_code == 404
    assert "request_log_url" not in json.loads(response.get_data(as_text=True))["error"]


def test_events_filter_by_delivery_success(sb: Sandbox) -> None:
    """``false``: some endpoint still waits for the event or gave up; ``true``: the others."""
    answer = ["200 OK"]

    def endpoint(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response(answer[0], [("Content-Type", "text/plain")])
        return [b""]

    sb.add_webhook_endpoint(wsgi_app=endpoint)
    client = sb.stripe_client()
    customer = client.v1.customers.create()
    session = client.v1.financial_connections.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["balances"],
        }
    )
    sb.complete_session(session.id, institution="bank_nonoauth", accounts=["checking"])
    sb.deliver_events()
    delivered = {e["id"] for e in sb.events()}
    assert delivered
    answer[0] = "500 Internal Server Error"
    account = client.v1.financial_connections.accounts.list({"session": session.id}).data[0]
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    sb.finish_refreshes()
    sb.deliver_events()
    failed = {e["id"] for e in sb.events()} - delivered
    assert failed

    def listed(success: bool) -> set[str]:
        page = client.v1.events.list({"delivery_success": success, "limit": 100})
        return {e.id for e in page.data}

    assert listed(True) == delivered
    assert listed(False) == failed
