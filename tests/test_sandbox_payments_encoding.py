"""Each payments object is encoded once per state and the text reused: the response, the
stored row and the event's ``data.object`` must be the same text, and every event body the
compact encoding of the whole event, key order included."""

from __future__ import annotations

import json
from typing import Any

from sandbox_payments_support import ONLINE, PI_ONLINE
from sandbox_support import present, sb_fixture  # noqa: F401

from flask_finconn.sandbox import Sandbox
from flask_finconn.sandbox._data import dumps

EVENT_KEYS = [
    "id",
    "object",
    "api_version",
    "created",
    "data",
    "livemode",
    "pending_webhooks",
    "request",
    "type",
]


def _post(sb: Sandbox, path: str, form: str, key: str) -> str:
    headers = {
        "Authorization": f"Bearer {sb.api_key}",
        "Content-Type": "application/x-www-form-urlencoded",
        "Idempotency-Key": key,
    }
    body, status, _ = sb.http_client().request("post", f"{sb.api_base}{path}", headers, form)
    assert status == 200, body
    return str(body)


def _row(sb: Sandbox, obj_id: str) -> str:
    return str(sb.store.one("SELECT data FROM pay_objects WHERE id = ?", (obj_id,))[0])


def _text(obj: Any) -> str:
    response = obj.last_response
    assert response is not None
    return str(response.body)


def _events(sb: Sandbox) -> dict[str, dict[str, Any]]:
    bodies = [str(r[0]) for r in sb.store.all("SELECT body FROM events ORDER BY seq")]
    for body in bodies:
        event = json.loads(body)
        assert body == dumps(event)
        assert list(event) == EVENT_KEYS
    return {json.loads(b)["type"]: json.loads(b) for b in bodies}


def test_response_row_and_event_are_one_text(sb: Sandbox) -> None:
    client = sb.stripe_client()
    customer = client.v1.customers.create({"email": "enc@example.com"}).id
    setup = client.v1.setup_intents.create(
        {
            "customer": customer,
            "payment_method": "pm_usBankAccount_success",
            "confirm": True,
            "mandate_data": ONLINE,
        }
    )
    pm = str(setup.payment_method)
    form = (
        f"amount=1234&currency=usd&customer={customer}&payment_method={pm}"
        "&payment_method_types[0]=us_bank_account"
    )

    created = _post(sb, "/v1/payment_intents", form, "enc-create")
    pi_id = json.loads(created)["id"]
    assert json.loads(created)["status"] == "requires_confirmation"
    assert created == _row(sb, pi_id)
    assert _events(sb)["payment_intent.created"]["data"]["object"] == json.loads(created)

    confirmed = _post(sb, f"/v1/payment_intents/{pi_id}/confirm", "off_session=true", "enc-c")
    pi = json.loads(confirmed)
    assert pi["status"] == "processing"
    assert confirmed == _row(sb, pi_id)
    events = _events(sb)
    assert events["payment_intent.processing"]["data"]["object"] == pi
    assert events["payment_intent.processing"]["request"]["idempotency_key"] == "enc-c"
    charge = events["charge.pending"]["data"]["object"]
    assert charge["id"] == pi["latest_charge"]
    assert dumps(charge) == _row(sb, charge["id"])
    assert _text(client.v1.payment_intents.retrieve(pi_id)) == confirmed

    # A replay answers the stored text; an expanded answer is not the stored row.
    assert _post(sb, f"/v1/payment_intents/{pi_id}/confirm", "off_session=true", "enc-c") == (
        confirmed
    )
    expanded = json.loads(_post(sb, "/v1/payment_intents", f"{form}&expand[0]=customer", "e2"))
    assert expanded["customer"]["id"] == customer
    assert json.loads(_row(sb, expanded["id"]))["customer"] == customer


def test_an_event_without_a_stored_object_is_encoded_whole(sb: Sandbox) -> None:
    # A create with confirm=true emits "created" before the intent is first stored.
    client = sb.stripe_client()
    pi = client.v1.payment_intents.create(
        {
            "amount": 4200,
            "currency": "usd",
            "payment_method": "pm_usBankAccount_success",
            "confirm": True,
            "mandate_data": PI_ONLINE,
        }
    )
    events = _events(sb)
    assert events["payment_intent.created"]["data"]["object"]["status"] == ("requires_confirmation")
    assert events["payment_intent.processing"]["data"]["object"] == json.loads(_text(pi))


def test_an_event_body_escapes_the_request_it_stamps(sb: Sandbox) -> None:
    # The event's text is written around the object's; the idempotency key is the client's
    # own string, so quotes, backslashes and control characters must come out escaped.
    client = sb.stripe_client()
    customer = client.v1.customers.create({"email": "esc@example.com"}).id
    key = 'k"\\ \t\u00e9'
    form = f"amount=1234&currency=usd&customer={customer}&payment_method_types[0]=us_bank_account"
    created = json.loads(_post(sb, "/v1/payment_intents", form, key))
    event = _events(sb)["payment_intent.created"]
    assert event["request"]["idempotency_key"] == key
    assert event["data"]["object"] == created
