"""Take a screenshot of each sandbox modal step for the README (docs/screenshots/*.png).

Serves a small host app on the sandbox from a thread, walks the modal in Debian's Chromium
and saves one PNG per step, cropped to the dialog.

    .venv/bin/python widget/screenshots.py [output-dir]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable

from flask import render_template_string
from playwright.sync_api import Page, sync_playwright
from werkzeug.serving import make_server

from flask_finconn.testing import create_app

PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>Acme Budget</title>
{{ finconn.scripts() }}
<style>body{font:16px system-ui;margin:48px;color:#1a1f36}</style></head>
<body><h1>Acme Budget</h1><p>See all your money in one place.</p>
{{ finconn.button("Link your bank", permissions=request.args.get("p", "balances transactions")) }}
</body></html>"""

OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "screenshots")


def main(out: str = OUT) -> None:
    os.makedirs(out, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            f"sqlite:///{tmp}/app.sqlite3",
            FINCONN_MERCHANT_NAME="Acme Budget",
            FINCONN_PERMISSIONS=["balances", "ownership", "payment_method", "transactions"],
        )
        app.instance_path = tmp
        app.add_url_rule("/", "page", lambda: render_template_string(PAGE))
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            shoot(f"http://127.0.0.1:{server.server_port}", out)
        finally:
            server.shutdown()


def shoot(base: str, out: str) -> None:
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        context = browser.new_context(
            base_url=base,
            viewport={"width": 720, "height": 760},
            extra_http_headers={"X-Finconn-Holder": "demo"},
            reduced_motion="reduce",
        )
        page = context.new_page()

        def snap(name: str) -> None:
            page.locator(".dialog").screenshot(path=os.path.join(out, f"{name}.png"))
            print("wrote", name)

        def run(query: str, steps: Callable[[Page], None]) -> None:
            page.goto("/" + query)
            page.get_by_role("button", name="Link your bank").click()
            page.locator(".dialog[data-step='consent']").wait_for()
            page.wait_for_timeout(300)
            steps(page)
            page.keyboard.press("Escape")
            page.locator("[data-finconn-sandbox]").wait_for(state="detached")

        def step(name: str) -> None:
            page.locator(f".dialog[data-step='{name}']").wait_for()
            page.wait_for_timeout(150)

        def to_bank(institution: str, search: str = "") -> None:
            page.get_by_role("button", name="Agree and continue").click()
            step("institutions")
            if search:
                page.get_by_role("searchbox").fill(search)
                page.locator(f"[data-institution='{institution}']").wait_for()
                page.wait_for_timeout(150)
            page.locator(f"[data-institution='{institution}']").click()

        def log_in(password: str) -> None:
            step("login")
            page.get_by_label("Username").fill("jenny")
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Log in", exact=True).click()

        def credentials(p: Page) -> None:
            snap("1-consent")
            p.get_by_role("button", name="Agree and continue").click()
            step("institutions")
            snap("2-choose-bank")
            p.get_by_role("searchbox").fill("down")
            p.locator("[data-institution='down_error']").wait_for()
            snap("2b-search")
            p.get_by_role("searchbox").fill("")
            p.locator("[data-institution='bank_nonoauth']").click()
            step("login")
            p.get_by_role("button", name="Log in", exact=True).click()
            p.get_by_role("alert").wait_for()
            snap("3f-login-empty")
            p.get_by_label("Username").fill("jenny")
            p.get_by_label("Password").fill("mfa")
            snap("3-login-credentials")
            p.get_by_role("button", name="Log in", exact=True).click()
            step("mfa")
            snap("3b-mfa")
            p.get_by_role("textbox", name="Verification code").fill("123456")
            p.get_by_role("button", name="Continue").click()
            step("accounts")
            snap("4-choose-accounts")
            p.get_by_role("button", name="Link accounts").click()
            step("success")
            snap("5-success")

        def oauth(p: Page) -> None:
            to_bank("bank_oauth")
            step("oauth")
            snap("3c-oauth")
            p.get_by_role("button", name="Continue to Bank (OAuth)").click()
            step("bank")
            snap("3d-at-the-bank")

        def disabled_rows(p: Page) -> None:
            to_bank("invalid_payment", "invalid")
            log_in("pw")
            step("accounts")
            snap("4b-unsupported-accounts")

        def down(p: Page) -> None:
            to_bank("down_scheduled", "down")
            step("down")
            snap("6-down-bank")

        def options(p: Page) -> None:
            to_bank("bank_nonoauth")
            log_in("options")
            step("options")
            snap("3e-options")

        def failed(p: Page) -> None:
            to_bank("bank_nonoauth")
            log_in("error")
            step("failed")
            snap("7-login-error")

        run("", credentials)
        run("", oauth)
        run("?p=balances+payment_method", disabled_rows)
        run("", down)
        run("", options)
        run("", failed)

        page.set_viewport_size({"width": 360, "height": 720})
        page.goto("/")
        page.get_by_role("button", name="Link your bank").click()
        step("consent")
        page.screenshot(path=os.path.join(out, "8-mobile-360px.png"))
        print("wrote 8-mobile-360px")

        # Every permission on a laptop screen: the consent step must be whole.
        page.set_viewport_size({"width": 1200, "height": 800})
        page.keyboard.press("Escape")
        page.locator("[data-finconn-sandbox]").wait_for(state="detached")
        page.goto("/?p=balances+ownership+payment_method+transactions")
        page.get_by_role("button", name="Link your bank").click()
        step("consent")
        page.screenshot(path=os.path.join(out, "9-consent-1200x800.png"))
        print("wrote 9-consent-1200x800")

        # The success step on a phone: the accounts in the bank's order.
        page.keyboard.press("Escape")
        page.locator("[data-finconn-sandbox]").wait_for(state="detached")
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto("/")
        page.get_by_role("button", name="Link your bank").click()
        step("consent")
        to_bank("bank_nonoauth")
        log_in("pw")
        step("accounts")
        page.get_by_role("button", name="Link accounts").click()
        step("success")
        page.screenshot(path=os.path.join(out, "10-success-390px.png"))
        print("wrote 10-success-390px")
        browser.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
