"""Take the README's screenshots of the example app (``docs/screenshots/app-*.png``).

Serves Pocketbook on a fresh sandbox from a thread, walks it in Chromium as a new user (sign
in, link two banks through the sandbox modal, refresh a few balances), then saves one PNG
per page at 1200 and 390 px wide, light and dark (``app-<page>-<width>-<scheme>.png``).
Run it with ``scripts/screenshots [output-dir] [all|accounts|payments]``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import threading
import time

from playwright.sync_api import Page, ViewportSize, expect, sync_playwright
from werkzeug.serving import make_server

from flask_finconn.testing import sandbox_of

from . import create_app

OUT = os.path.join(os.path.dirname(__file__), "..", "docs", "screenshots")
VIEWPORT: ViewportSize = {"width": 1200, "height": 800}


def link_bank(page: Page, institution: str, accounts: int) -> None:
    """Link every account of a sandbox bank through the modal, as a user would."""
    page.get_by_role("button", name="Link a bank account").click()
    page.get_by_role("button", name="Agree and continue").click()
    page.get_by_role("searchbox").fill(institution)
    page.locator(f"[data-institution='{institution}']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Link accounts").click()
    page.get_by_role("button", name="Done").click()
    expect(page.locator(".account-card")).to_have_count(accounts)


def settle(page: Page) -> None:
    """Wait until no balance on the page is still being fetched."""
    expect(page.locator("text=Fetching the balance")).to_have_count(0, timeout=20_000)
    page.wait_for_timeout(300)


def main(out: str = OUT, pages: str = "all") -> None:
    """Photograph every page, or with ``pages="payments"`` only the payments pages."""
    os.makedirs(out, exist_ok=True)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/pocketbook.sqlite3",
                "FINCONN_SANDBOX_DATABASE": f"{tmp}/sandbox.sqlite3",
                "SECRET_KEY": "screenshots",
            },
            instance_path=tmp,
        )
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            base = f"http://127.0.0.1:{server.server_port}"
            if pages in ("all", "accounts"):
                shoot(base, out, app)
            if pages in ("all", "payments"):
                shoot_payments(base, out, app)
        finally:
            server.shutdown()
            sandbox_of(app).stop_background()


# Every page in both colour schemes, on a desktop and on a phone.
VARIANTS = [(1200, 800, "light"), (1200, 800, "dark"), (390, 780, "light"), (390, 780, "dark")]


def shoot(base: str, out: str, app: object) -> None:
    """Link banks and build a balance history as ada, then photograph every page per variant."""
    sandbox = sandbox_of(app)  # type: ignore[arg-type]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=os.environ.get("FINCONN_CHROMIUM") or shutil.which("chromium"),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        context = browser.new_context(base_url=base, viewport=VIEWPORT, reduced_motion="reduce")
        page = context.new_page()
        page.set_default_timeout(15_000)
        sign_in(page, "ada@example.com")
        link_bank(page, "bank_nonoauth", 2)
        link_bank(page, "test_nonoauth", 4)
        settle(page)
        # A day of readings for the chart: the sandbox's clock moves three hours before each
        # refresh (which also clears its 10 s cooldown); each refresh adds a point.
        checking = page.locator(".account-card").first
        for _ in range(8):
            sandbox.advance_time(3 * 3600)
            checking.get_by_role("button", name="Refresh balance").click()
            expect(checking.get_by_text("Balance updated.")).to_be_visible()
        deadline = time.monotonic() + 20
        checking.get_by_role("link").first.click()
        while page.locator(".txn").count() == 0 and time.monotonic() < deadline:
            page.wait_for_timeout(500)
            page.reload()
        context.close()
        for width, height, scheme in VARIANTS:
            context = browser.new_context(
                base_url=base,
                viewport={"width": width, "height": height},
                color_scheme=scheme,  # type: ignore[arg-type]
                reduced_motion="reduce",
                timezone_id="America/New_York",
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            shoot_pages(page, out, f"{width}-{scheme}")
            context.close()
        browser.close()


def sign_in(page: Page, email: str) -> None:
    page.goto("/")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Your accounts")).to_be_visible()


def shoot_pages(page: Page, out: str, variant: str) -> None:
    """One PNG per page, ``app-<page>-<width>-<scheme>.png``."""

    def snap(name: str) -> None:
        page.wait_for_timeout(200)
        path = os.path.join(out, f"app-{name}-{variant}.png")
        page.screenshot(path=path)
        print("wrote", os.path.relpath(path), f"{os.path.getsize(path) // 1024} KB")

    page.goto("/")
    page.get_by_label("Email address").fill(f"new-{variant}@example.com")
    snap("signin")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("No bank accounts yet")).to_be_visible()
    snap("dashboard-empty")
    page.get_by_role("button", name="Link a bank account").click()
    page.locator(".dialog[data-step='consent']").wait_for()
    page.wait_for_timeout(300)
    snap("modal")
    page.keyboard.press("Escape")
    page.locator("[data-finconn-sandbox]").wait_for(state="detached")
    page.context.clear_cookies()

    sign_in(page, "ada@example.com")
    settle(page)
    snap("dashboard")
    checking = page.locator(".account-card").first
    checking.get_by_role("button", name="Disconnect").click()
    confirm = page.get_by_role("dialog").get_by_role("button", name="Disconnect")
    confirm.hover()
    snap("disconnect")
    page.get_by_role("dialog").get_by_role("button", name="Keep it").click()

    checking.get_by_role("link").first.click()
    expect(page.locator(".chart")).to_be_visible()
    snap("account")
    page.evaluate(
        "document.getElementById('transactions-title').closest('section')"
        ".scrollIntoView({block: 'start'}); window.scrollBy(0, -24)"
    )
    snap("transactions")
    page.get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events")).to_be_visible()
    page.wait_for_load_state("load")
    snap("events")


def shoot_payments(base: str, out: str, app: object) -> None:
    """The payments pages (``app-pay-*``, ``app-pay-mandate-*``, ``app-pay-verify-*``) per
    variant: each variant's user links a bank, saves its checking account, pays the plan and
    enters bank details by hand (left waiting for its microdeposits)."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=os.environ.get("FINCONN_CHROMIUM") or shutil.which("chromium"),
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        for width, height, scheme in VARIANTS:
            variant = f"{width}-{scheme}"
            context = browser.new_context(
                base_url=base,
                viewport={"width": width, "height": height},
                color_scheme=scheme,  # type: ignore[arg-type]
                reduced_motion="reduce",
                timezone_id="America/New_York",
            )
            page = context.new_page()
            page.set_default_timeout(15_000)
            sign_in(page, f"pay-{variant}@example.com")
            link_bank(page, "test_nonoauth", 2)
            page.goto("/payments/")
            page.get_by_role("button", name="Use for payments Test Checking").click()
            page.get_by_role("dialog").wait_for()
            snap(page, out, "pay-mandate", variant, full_page=False)
            page.get_by_role("button", name="Accept").click()
            page.get_by_role("radio", name="A transfer to a savings goal").check()
            page.get_by_label("Amount, in dollars").fill("25")
            page.get_by_role("button", name="Pay", exact=True).click()
            expect(page.get_by_text("Payment started.")).to_be_visible()
            sandbox_of(app).advance_time(3600)  # type: ignore[arg-type]
            expect(page.locator(".payment .badge").first).to_have_text("Paid", timeout=20_000)
            page.get_by_role("radio", name="Pocketbook Plus, monthly plan: $4.99").check()
            page.get_by_role("button", name="Pay", exact=True).click()
            expect(page.get_by_text("Payment started.")).to_be_visible()
            snap(page, out, "pay", variant)
            page.get_by_role("button", name="Add a bank account").click()
            page.get_by_role("button", name="Agree and continue").click()
            page.get_by_role("button", name="Enter bank details manually").click()
            page.get_by_label("Routing number").fill("110000000")
            page.get_by_label("Account number", exact=True).fill("000123456789")
            page.get_by_label("Confirm account number").fill("000123456789")
            page.get_by_role("button", name="Continue").click()
            page.get_by_role("button", name="Done").click()
            page.get_by_role("button", name="Accept").click()
            expect(page.get_by_role("button", name="Verify")).to_be_visible()
            snap(page, out, "pay-verify", variant)
            context.close()
        browser.close()


def snap(page: Page, out: str, name: str, variant: str, full_page: bool = True) -> None:
    page.wait_for_timeout(300)
    path = os.path.join(out, f"app-{name}-{variant}.png")
    page.screenshot(path=path, full_page=full_page)
    print("wrote", os.path.relpath(path), f"{os.path.getsize(path) // 1024} KB")


if __name__ == "__main__":
    main(*sys.argv[1:])
