"""Screenshots of the sandbox's bank account collection and microdeposit verification page
(docs/screenshots/pay-*.png), each at 1200 and 360 pixels wide.

Serves a small host app on the sandbox from a thread, drives the Stripe.js stand-in's
``collectBankAccountForSetup`` and the hosted verification page in Debian's Chromium.

    .venv/bin/python widget/screenshots_payments.py [output-dir]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from typing import Any

from flask import Flask
from playwright.sync_api import Page, sync_playwright
from werkzeug.serving import make_server

from flask_finconn.testing import create_app, sandbox_of

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme Budget</title>
<script src="/finconn/sandbox/stripe.js"></script>
<style>body{font:16px system-ui;margin:48px;color:#1a1f36}</style></head>
<body><h1>Acme Budget</h1><p>Pay your invoices by bank transfer.</p></body></html>"""

OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "screenshots")
SIZES = {"1200": (1200, 800), "360": (360, 720)}


def main(out: str = OUT) -> None:
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(f"sqlite:///{tmp}/app.sqlite3", FINCONN_MERCHANT_NAME="Acme Budget")
        app.instance_path = tmp
        app.add_url_rule("/", "page", lambda: PAGE)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            shoot(app, f"http://127.0.0.1:{server.server_port}", out)
        finally:
            server.shutdown()


def setup_intent(app: Flask) -> dict[str, Any]:
    sb = sandbox_of(app)
    customer = sb.create_customer({"name": "Jenny Rosen"})["id"]
    return sb.payments.create_setup_intent(
        {"payment_method_types": ["us_bank_account"], "customer": customer}
    )


def shoot(app: Flask, base: str, out: str) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        for size, (width, height) in SIZES.items():
            context = browser.new_context(
                base_url=base,
                viewport={"width": width, "height": height},
                reduced_motion="reduce",
            )
            page = context.new_page()
            walk(app, page, lambda name, p=page, s=size: snap(p, out, f"pay-{name}-{s}"))
            context.close()
        browser.close()


def snap(page: Page, out: str, name: str) -> None:
    page.wait_for_timeout(150)
    page.screenshot(path=os.path.join(out, f"{name}.png"))
    print("wrote", name)


def step(page: Page, name: str) -> None:
    page.locator(f".dialog[data-step='{name}']").wait_for()


def collect(page: Page, app: Flask) -> None:
    page.goto("/")
    # Not awaited: the modal stays open while the steps are shot.
    page.evaluate(
        """secret => { Stripe("pk_test_demo").collectBankAccountForSetup({clientSecret: secret,
        params: {payment_method_type: "us_bank_account",
                 payment_method_data: {billing_details: {name: "Jenny Rosen"}}}}); }""",
        setup_intent(app)["client_secret"],
    )
    step(page, "consent")
    page.get_by_role("button", name="Agree and continue").click()
    step(page, "institutions")
    page.locator("[data-institution]").first.wait_for()


def walk(app: Flask, page: Page, shot: Any) -> None:
    collect(page, app)
    shot("bank-search")
    page.get_by_role("button", name="Enter bank details manually").click()
    step(page, "manual")
    shot("manual-entry")
    page.get_by_label("Routing number").fill("110000001")
    page.get_by_label("Account number", exact=True).fill("000123456789")
    page.get_by_label("Confirm account number").fill("000123456780")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("alert").wait_for()
    shot("manual-errors")
    page.get_by_label("Routing number").fill("110000000")
    page.get_by_label("Confirm account number").fill("000123456789")
    page.get_by_role("button", name="Continue").click()
    step(page, "success")
    shot("manual-saved")
    page.get_by_role("button", name="Done").click()
    page.locator("[data-finconn-sandbox]").wait_for(state="detached")

    collect(page, app)
    page.get_by_role("searchbox").fill("bank_nonoauth")
    page.locator("[data-institution='bank_nonoauth']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("x")
    page.get_by_role("button", name="Log in", exact=True).click()
    step(page, "accounts")
    shot("choose-account")
    page.get_by_role("button", name="Link account").click()
    step(page, "success")
    shot("account-linked")
    page.get_by_role("button", name="Done").click()
    page.locator("[data-finconn-sandbox]").wait_for(state="detached")

    si = setup_intent(app)
    confirmed = page.evaluate(
        """secret => Stripe("pk_test_demo").confirmUsBankAccountSetup(secret, {payment_method: {
        us_bank_account: {routing_number: "110000000", account_number: "000123456789"},
        billing_details: {name: "Jenny Rosen"}}})""",
        si["client_secret"],
    )
    url = confirmed["setupIntent"]["next_action"]["verify_with_microdeposits"][
        "hosted_verification_url"
    ]
    page.goto(url)
    shot("verify")
    page.get_by_label("Code from the deposit description").fill("SM12AB")
    page.get_by_role("button", name="Verify").click()
    page.get_by_role("alert").wait_for()
    shot("verify-wrong")
    page.get_by_role("link", name="I received two deposits instead").click()
    page.get_by_label("First amount (cents)").fill("0")
    page.get_by_role("button", name="Verify").click()
    page.get_by_role("alert").wait_for()
    shot("verify-amounts-errors")
    page.get_by_label("First amount (cents)").fill("32")
    page.get_by_label("Second amount (cents)").fill("45")
    page.get_by_role("button", name="Verify").click()
    page.get_by_role("heading", name="Bank account verified").wait_for()
    shot("verified")


if __name__ == "__main__":
    main(*sys.argv[1:])
