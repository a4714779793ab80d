"""What the server hands the widget's payments half, in Chromium: the holder's billing
details for Stripe.js, and the mandate text for "Use for payments", with no page attributes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask import request as http
from playwright.sync_api import Page, expect

from flask_finconn import Holder, get_state
from flask_finconn.models import PaymentMethod
from flask_finconn.testing import link_accounts, sandbox_of

pytestmark = pytest.mark.browser

JENNY = Holder("h1", email="h1@example.com", name="Jenny Rosen")
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Acme Budget</title>
{{ finconn.scripts(accounts=True) }}
</head>
<body>
{{ finconn.button("Pay by bank", purpose="payments", billing_name=override) }}
{{ finconn.accounts() }}
</body>
</html>
"""


@pytest.fixture
def page(widget_app: Flask, widget_page: Page) -> Iterator[Page]:
    """``/bare``: a payments button and ``<finconn-accounts>`` without billing or mandate
    attributes (``?name=`` sets the billing-name override); the holder is Jenny Rosen."""
    get_state(widget_app).extension.holder_loader(lambda: JENNY)

    @widget_app.get("/bare")
    def bare() -> Any:
        return render_template_string(PAGE, override=http.args.get("name", ""))

    widget_page.add_init_script(
        """
        document.addEventListener("finconn-accounts-authorized", (e) =>
          window.__events.push({type: e.type, detail: JSON.parse(JSON.stringify(e.detail))}));
        """
    )
    yield widget_page


def save_typed_account(page: Page) -> dict[str, Any]:
    """The payments flow with routing and account numbers typed in the sandbox's window."""
    page.get_by_role("button", name="Pay by bank").click()
    page.get_by_role("button", name="Agree and continue").click()
    page.get_by_role("button", name="Enter bank details manually").click()
    page.get_by_label("Routing number").fill("110000000")
    page.get_by_label("Account number", exact=True).fill("000123456789")
    page.get_by_label("Confirm account number").fill("000123456789")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Done").click()
    dialog = page.get_by_role("dialog", name="Authorize debits from your bank account")
    dialog.get_by_role("button", name="Accept").click()
    page.wait_for_function("window.__events.some(e => e.type === 'finconn-connect-success')")
    events: list[dict[str, Any]] = page.evaluate("window.__events")
    success = next(e for e in events if e["type"] == "finconn-connect-success")
    method: dict[str, Any] = success["detail"]["paymentMethod"]
    return method


@pytest.mark.parametrize(("override", "name"), [("", "Jenny Rosen"), ("J. Rosen", "J. Rosen")])
def test_stripe_js_gets_the_holders_billing_details(
    page: Page, widget_app: Flask, override: str, name: str
) -> None:
    page.goto(f"/bare?name={override}")
    method = save_typed_account(page)
    with widget_app.app_context():
        saved = get_state(widget_app).db.session.get(PaymentMethod, method["id"])
        assert saved is not None
        stripe_id = saved.stripe_id
    billing = sandbox_of(widget_app).payments.payment_method(stripe_id)["billing_details"]
    assert (billing["name"], billing["email"]) == (name, "h1@example.com")


def test_use_for_payments_shows_the_servers_mandate_text(page: Page, widget_app: Flask) -> None:
    link_accounts(widget_app, JENNY, permissions=["balances", "payment_method"])
    page.goto("/bare")
    checking = page.locator(".finconn-accounts__item").filter(has_text="Checking")
    checking.get_by_role("button", name=re.compile("^Use for payments")).click()
    dialog = page.get_by_role("dialog", name="Authorize debits from your bank account")
    expect(dialog).to_contain_text("you authorize Acme Budget to debit the account")
    dialog.get_by_role("button", name="Accept").click()
    expect(checking).to_contain_text("Used for payments")
    events: list[dict[str, Any]] = page.evaluate("window.__events")
    assert [e["type"] for e in events if e["type"].startswith("finconn-accounts")] == [
        "finconn-accounts-authorized"
    ]
