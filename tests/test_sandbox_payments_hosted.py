"""Where ``hosted_verification_url`` points and who serves the page there.

The standalone server (``python -m flask_finconn.sandbox``, a real process on loopback)
serves the page itself, at the address the API request came to, and a browser verifies
microdeposits on it. In a host app the URL follows the request that made the API call, with
no hook on the app's own requests.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import stripe
from flask import Flask
from playwright.sync_api import Browser, Page, expect
from sandbox_payments_support import AGENT, IP, confirmed_setup, debit, manual_data
from sandbox_support import free_port, server_factory_fixture  # noqa: F401
from werkzeug.test import Client as WsgiClient

from flask_finconn.sandbox.server import make_app
from flask_finconn.testing import create_app, sandbox_of

Client = stripe.StripeClient


@pytest.fixture(name="server")
def server_fixture(server_factory: Any, tmp_path: Any) -> str:
    """The standalone server's base address."""
    url: str = server_factory(str(tmp_path / "standalone.sqlite3"), free_port())
    return url


@pytest.fixture(name="sdk")
def sdk_fixture(server: str) -> Client:
    return stripe.StripeClient("sk_test_standalone", base_addresses={"api": server})


@pytest.fixture(name="page")
def page_fixture(chromium: Browser) -> Iterator[Page]:
    """A fresh browser page; page errors fail the test."""
    context = chromium.new_context()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert not errors, errors


def hosted_url(intent: Any) -> str:
    url: str = intent.next_action.verify_with_microdeposits.hosted_verification_url
    return url


def pending_setup(sdk: Client) -> Any:
    """A SetupIntent for a manually entered account, waiting for microdeposits."""
    intent = sdk.v1.setup_intents.create(confirmed_setup(manual_data()))
    assert intent.status == "requires_action"
    return intent


# A confirmed SetupIntent for a manually entered account, as the API's form body.
MANUAL_SETUP_FORM = {
    "payment_method_data[type]": "us_bank_account",
    "payment_method_data[us_bank_account][routing_number]": "110000000",
    "payment_method_data[us_bank_account][account_number]": "000123456789",
    "payment_method_data[billing_details][name]": "Jenny Rosen",
    "mandate_data[customer_acceptance][type]": "online",
    "mandate_data[customer_acceptance][online][ip_address]": IP,
    "mandate_data[customer_acceptance][online][user_agent]": AGENT,
    "confirm": "true",
}


def get(url: str) -> tuple[int, str, str]:
    """Status, Content-Type and body of a GET."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


def test_standalone_server_serves_the_page_at_its_own_address(server: str, sdk: Client) -> None:
    url = hosted_url(pending_setup(sdk))
    assert url.startswith(f"{server}/sandbox/microdeposits/sacs_test_")
    status, kind, body = get(url)
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert "Verify your bank account" in body and "ending in 6789" in body
    assert get(urllib.parse.urljoin(url, "../static/finconn-verify.css"))[:2] == (
        200,
        "text/css; charset=utf-8",
    )
    assert get(f"{server}/sandbox/microdeposits/sacs_test_nothing")[0] == 404
    # Only the page: the Stripe.js stand-in and the modal need an app with the extension.
    assert get(f"{server}/sandbox/stripe.js")[0] == 404


def test_standalone_url_follows_the_address_the_api_was_called_at(server: str) -> None:
    port = server.rsplit(":", 1)[1]
    body = urllib.parse.urlencode(MANUAL_SETUP_FORM).encode()
    request = urllib.request.Request(
        f"{server}/v1/setup_intents",
        data=body,
        headers={"Authorization": "Bearer sk_test_x", "Host": f"sandbox.test:{port}"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        action = json.load(response)["next_action"]["verify_with_microdeposits"]
    assert action["hosted_verification_url"].startswith(
        f"http://sandbox.test:{port}/sandbox/microdeposits/sacs_test_"
    )


def test_standalone_page_verifies_amounts_in_chromium(page: Page, sdk: Client) -> None:
    intent = pending_setup(sdk)
    page.goto(hosted_url(intent))
    expect(page.get_by_role("heading", level=1)).to_have_text("Verify your bank account")
    # The stylesheet the page links is served with it.
    assert page.evaluate("document.styleSheets[0].cssRules.length") > 0
    page.get_by_role("link", name="I received two deposits instead").click()
    expect(page.locator("#attempts")).to_have_text("3 verification attempts left.")
    page.get_by_label("First amount (cents)").fill("32")
    page.get_by_label("Second amount (cents)").fill("45")
    page.get_by_role("button", name="Verify").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Bank account verified")
    done = sdk.v1.setup_intents.retrieve(intent.id)
    assert done.status == "succeeded" and done.next_action is None
    assert sdk.v1.mandates.retrieve(str(done.mandate)).status == "active"


def test_standalone_page_verifies_a_descriptor_code_in_chromium(page: Page, sdk: Client) -> None:
    intent = debit(sdk, data=manual_data())
    assert intent.status == "requires_action"
    page.goto(hosted_url(intent))
    page.get_by_label("Code from the deposit description").fill("SM11AA")
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_have_text("Bank account verified")
    expect(page.get_by_text("The payment is on its way.")).to_be_visible()
    assert sdk.v1.payment_intents.retrieve(intent.id).status == "processing"


def test_in_an_app_the_url_follows_the_request_that_made_it() -> None:
    app: Flask = create_app()
    sb = sandbox_of(app)
    sdk = sb.stripe_client()
    # Before the app has served a request, nothing says where it is.
    assert hosted_url(pending_setup(sdk)).startswith(f"{sb.api_base}/sandbox/microdeposits/")
    with app.test_request_context(base_url="http://shop.example:8000/"):
        url = hosted_url(pending_setup(sdk))
    assert url.startswith("http://shop.example:8000/finconn/sandbox/microdeposits/sacs_test_")
    # Outside a request (a task, the CLI): the API's address, not the last request's.
    assert hosted_url(pending_setup(sdk)).startswith(f"{sb.api_base}/sandbox/microdeposits/")
    # The page is served there.
    path = urllib.parse.urlsplit(url).path
    assert app.test_client().get(path, base_url="http://shop.example:8000").status_code == 200
    # A base set on the sandbox wins.
    sb.payments.hosted_verification_base = "https://pay.example/verify"
    with app.test_request_context(base_url="http://shop.example:8000/"):
        assert hosted_url(pending_setup(sdk)).startswith("https://pay.example/verify/sacs_test_")
    # It takes no hook on the app's requests to learn the address.
    hooks = [f for funcs in app.before_request_funcs.values() for f in funcs]
    assert not [f for f in hooks if f.__module__ == "flask_finconn.sandbox.browser_payments"]


def test_a_request_host_does_not_carry_over_to_other_calls() -> None:
    """The address comes from the caller's Host header; a link made for anyone else must
    not point there."""
    app: Flask = create_app()
    sb = sandbox_of(app)
    sdk = sb.stripe_client()
    with app.test_request_context(base_url="http://evil.example/"):
        assert hosted_url(pending_setup(sdk)).startswith("http://evil.example/finconn/")
    # A later call outside any request: the API's own address.
    assert hosted_url(pending_setup(sdk)).startswith(f"{sb.api_base}/sandbox/microdeposits/")
    # A later call in a request of another app serving the same sandbox (the standalone
    # server's): that request's address, not the one the first app was last reached at.
    server = WsgiClient(make_app(sb))
    response = server.post(
        "/v1/setup_intents",
        data=MANUAL_SETUP_FORM,
        headers={"Authorization": "Bearer sk_test_x"},
        base_url="http://sandbox.test:9000",
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    url = response.get_json()["next_action"]["verify_with_microdeposits"]["hosted_verification_url"]
    assert url.startswith("http://sandbox.test:9000/sandbox/microdeposits/sacs_test_")
