"""The optional ``<finconn-accounts>`` element in Chromium: list, refresh, disconnect, relink."""

from __future__ import annotations

import re

import pytest
from flask import Flask, render_template_string
from playwright.sync_api import Page, Route, expect
from sandbox_support import present

from flask_finconn import Holder
from flask_finconn.testing import link_accounts, sandbox_of

pytestmark = pytest.mark.browser

HOLDER = Holder("h1", email="h1@example.com")
ACCOUNT_EVENTS = [
    "loaded",
    "load",
    "refresh",
    "refreshed",
    "disconnect",
    "disconnected",
    "relink",
    "relinked",
    "changed",
    "change",
    "error",
]


def record(page: Page) -> None:
    """Record the names of the ``finconn-accounts-*`` events from now on, in order."""
    page.evaluate(
        """(names) => {
          window.__accountEvents = [];
          for (const name of names) {
            document.addEventListener('finconn-accounts-' + name, (e) => {
              window.__accountEvents.push(name);
              if (name === 'disconnected') window.__disconnected = e.detail.account;
            });
          }
        }""",
        ACCOUNT_EVENTS,
    )


def recorded(page: Page) -> list[str]:
    return page.evaluate("window.__accountEvents")  # type: ignore[no-any-return]


def test_helper_renders_the_element_and_its_scripts(widget_app: Flask) -> None:
    with widget_app.test_request_context("/"):
        html = render_template_string(
            "{{ finconn.scripts(nonce='n', accounts=True) }}\n{{ finconn.accounts('None yet') }}"
        )
    lines = html.splitlines()
    assert [re.sub(r"\.[0-9a-f]{8}\.", ".*.", line) for line in lines] == [
        '<link rel="stylesheet" href="/finconn/assets/finconn-connect.*.css" nonce="n">',
        '<link rel="stylesheet" href="/finconn/assets/finconn-accounts.*.css" nonce="n">',
        '<script src="/finconn/assets/finconn-connect.*.js" data-endpoint="/finconn" '
        'data-payments="/finconn/assets/finconn-payments.*.js" '
        'data-payments-css="/finconn/assets/finconn-payments.*.css" defer nonce="n"></script>',
        '<script src="/finconn/assets/finconn-accounts.*.js" data-endpoint="/finconn" defer '
        'nonce="n"></script>',
        '<finconn-accounts endpoint="/finconn">None yet</finconn-accounts>',
    ]


def test_lists_accounts_and_reloads_after_linking(widget_page: Page) -> None:
    widget_page.goto("/?accounts=1")
    expect(widget_page.locator(".finconn-accounts__empty")).to_have_text(
        "No bank accounts linked yet."
    )
    widget_page.get_by_role("button", name="Link your bank").click()
    widget_page.get_by_role("button", name="Agree and continue").click()
    widget_page.locator("[data-institution='test_oauth']").click()
    widget_page.get_by_role("button", name="Continue to Test (OAuth)").click()
    widget_page.get_by_role("button", name="Authorize").click()
    widget_page.get_by_role("button", name="Link accounts").click()
    widget_page.get_by_role("button", name="Done").click()

    rows = widget_page.locator(".finconn-accounts__item")
    expect(rows).to_have_count(2)
    expect(widget_page.locator(".finconn-accounts__empty")).to_be_hidden()
    expect(rows.first).to_contain_text("Test OAuth Checking •••• 6789")
    expect(rows.first).to_contain_text("Test (OAuth)")
    expect(
        widget_page.get_by_role("button", name="Refresh Test OAuth Savings •••• 4321")
    ).to_be_visible()


def test_refresh_shows_progress_then_the_new_balance(widget_page: Page, widget_app: Flask) -> None:
    link_accounts(widget_app, HOLDER, institution="test_nonoauth", accounts=["checking"])
    widget_page.goto("/?accounts=1")
    row = widget_page.locator(".finconn-accounts__item")
    expect(row).to_contain_text("No balance yet")
    record(widget_page)
    widget_page.get_by_role("button", name="Refresh Test Checking •••• 6789").click()
    expect(row).to_contain_text("Refreshing…")
    expect(
        widget_page.get_by_role("button", name="Refresh Test Checking •••• 6789")
    ).to_be_disabled()

    sandbox = sandbox_of(widget_app)
    sandbox.finish_refreshes(status="succeeded")
    sandbox.deliver_events()
    expect(row).not_to_contain_text("Refreshing…", timeout=10_000)
    expect(row.locator(".finconn-accounts__balance")).to_have_text(
        re.compile(r"^-?\$[\d,]+\.\d\d$")
    )
    expect(widget_page.get_by_role("status").last).to_have_text("Test Checking is up to date.")
    widget_page.wait_for_function("window.__accountEvents.includes('refreshed')")
    assert recorded(widget_page) == [
        "refresh",
        "changed",
        "change",
        "changed",
        "change",
        "refreshed",
    ]


def test_one_poller_per_account(widget_page: Page, widget_app: Flask) -> None:
    link_accounts(widget_app, HOLDER, institution="test_nonoauth", accounts=["checking", "savings"])
    polls: dict[str, list[Route]] = {}

    def hold(route: Route) -> None:
        # Held unanswered: each poller then asks exactly once, and never again.
        polls.setdefault(route.request.url.rsplit("/", 1)[-1], []).append(route)

    widget_page.route(re.compile(r".*/finconn/accounts/fcacct_\w+$"), hold)
    widget_page.goto("/?accounts=1&button=0")
    rows = widget_page.locator(".finconn-accounts__item")
    expect(rows).to_have_count(2)
    checking, savings = (present(rows.nth(i).get_attribute("data-account")) for i in range(2))
    widget_page.get_by_role("button", name="Refresh Test Checking •••• 6789").click()
    expect(rows.first).to_contain_text("Refreshing…")
    # Reloading finds the refresh pending and would start pollers of its own.
    widget_page.evaluate(
        "(async (el) => { await el.load(); await el.load(); })"
        "(document.querySelector('finconn-accounts'))"
    )
    # Pollers wait the same interval, so when the savings poller (started last) asks, every
    # checking poller started before it has asked already.
    with widget_page.expect_request(lambda request: request.url.endswith(f"/{savings}")):
        widget_page.get_by_role("button", name="Refresh Test Savings •••• 4321").click()
    assert len(polls[checking]) == 1


def test_disconnect_asks_the_page_first(widget_page: Page, widget_app: Flask) -> None:
    link_accounts(widget_app, HOLDER, institution="test_nonoauth", accounts=["checking"])
    widget_page.goto("/?accounts=1&button=0")
    row = widget_page.locator(".finconn-accounts__item")
    # goto returns at the page's load event, which may come before the element's first list
    # arrives. The element draws its rows and sends loaded/load in one task: once the row is
    # drawn, that first load is over, and from then on only this test's own events are recorded.
    expect(row).to_have_attribute("data-status", "active")
    record(widget_page)
    widget_page.evaluate(
        "document.addEventListener('finconn-accounts-disconnect', (e) => {"
        " if (!window.__allow) e.preventDefault(); })"
    )
    # disconnect() is what the button runs; it settles at once when the page says no, and only
    # after the server answered otherwise.
    widget_page.evaluate(
        "(el => el.disconnect(el.accounts[0]))(document.querySelector('finconn-accounts'))"
    )
    assert recorded(widget_page) == ["disconnect"]
    expect(row).to_have_attribute("data-status", "active")

    widget_page.evaluate("window.__allow = true")
    widget_page.get_by_role("button", name="Disconnect Test Checking •••• 6789").click()
    expect(row).to_have_attribute("data-status", "disconnected")
    expect(row).to_contain_text("Disconnected")
    expect(row.get_by_role("button")).to_have_count(0)
    widget_page.wait_for_function("window.__accountEvents.includes('disconnected')")
    assert recorded(widget_page) == [
        "disconnect",
        "disconnect",
        "changed",
        "change",
        "disconnected",
    ]
    detail = widget_page.evaluate("window.__disconnected")
    assert detail["status"] == "disconnected"


def test_relink_needed_offers_a_relink_flow(widget_page: Page, widget_app: Flask) -> None:
    (account,) = link_accounts(widget_app, HOLDER, institution="test_oauth", accounts=["checking"])
    sandbox = sandbox_of(widget_app)
    sandbox.deactivate(account.stripe_id)
    sandbox.deliver_events()
    widget_page.goto("/?accounts=1&button=0")
    row = widget_page.locator(".finconn-accounts__item")
    expect(row).to_have_attribute("data-action", "relink_required")
    expect(row).to_contain_text("Relink needed")
    expect(
        widget_page.get_by_role("button", name="Refresh Test OAuth Checking •••• 6789")
    ).to_have_count(0)

    widget_page.get_by_role("button", name="Relink Test OAuth Checking •••• 6789").click()
    widget_page.get_by_role("button", name="Agree and continue").click()
    widget_page.locator("[data-institution='test_oauth']").click()
    widget_page.get_by_role("button", name="Continue to Test (OAuth)").click()
    widget_page.get_by_role("button", name="Authorize").click()
    widget_page.get_by_role("checkbox", name="Test OAuth Savings").uncheck()
    widget_page.get_by_role("button", name="Link accounts").click()
    widget_page.get_by_role("button", name="Done").click()
    expect(row).to_have_attribute("data-action", "none")
    expect(row).not_to_contain_text("Relink needed")
