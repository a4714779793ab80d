"""The example app end to end in Chromium: a real server, the sandbox modal, two users."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast
from urllib.parse import urlsplit

import pytest
from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, Response, expect

from flask_finconn.testing import sandbox_of

if TYPE_CHECKING:
    from playwright._impl._api_structures import SetCookieParam

pytestmark = pytest.mark.browser

CARD = ".account-card"


@pytest.fixture
def new_user(
    chromium: Browser, pocketbook_server: tuple[Flask, str]
) -> Iterator[Callable[..., Page]]:
    """Open a fresh browser context per call; page errors, CSP refusals and 5xx fail the test."""
    _, base = pocketbook_server
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_page(width: int = 1200) -> Page:
        # A viewer far from UTC: the app must show their local time, not the server's UTC.
        context = chromium.new_context(
            base_url=base, viewport={"width": width, "height": 800}, timezone_id="Asia/Tokyo"
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        # The page's strict CSP must never have to refuse anything the app itself loads.
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        # Refused requests (a 404, a refresh too early) are part of the story; a 5xx never.
        page.on(
            "response",
            lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 500 else None,
        )
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], f"Errors in the browser: {errors}"


def sign_in(page: Page, email: str) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/signin\?next=/$"))
    expect(page.get_by_text("No password: this is a demo.")).to_be_visible()
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Your accounts")).to_be_visible()
    expect(page.get_by_text(email)).to_be_visible()


def link_test_bank(page: Page) -> None:
    """Link both accounts of the sandbox's Test (Non-OAuth) bank through the modal."""
    page.get_by_role("button", name="Link a bank account").click()
    expect(page.get_by_role("dialog")).to_contain_text("Pocketbook uses Stripe")
    page.get_by_role("button", name="Agree and continue").click()
    page.locator("[data-institution='test_nonoauth']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("any password")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Link accounts").click()
    finish_linking(page)


def finish_linking(page: Page) -> None:
    """Press Done in the modal and wait until the page fetched the list the linking changed.

    Done sends the widget's completion, which stores the accounts (with the server's own calls
    to Stripe); only once it is answered does the page fetch the list again and draw it. Under
    load that chain outlasts one assertion's wait, so wait for the list fetched after the
    completion was answered; what the page drew from it is then there to check.
    """
    completed: list[Response] = []

    def list_after_completion(response: Response) -> bool:
        if re.search(r"/finconn/sessions/[^/]+/complete$", response.url):
            completed.append(response)
            return False
        return bool(completed) and urlsplit(response.url).path == "/accounts/list"

    with page.expect_response(list_after_completion):
        page.get_by_role("button", name="Done").click()
    assert completed[0].ok


def test_link_refresh_read_and_disconnect(
    new_user: Callable[..., Page], pocketbook_server: tuple[Flask, str]
) -> None:
    app, _ = pocketbook_server
    page = new_user()
    sign_in(page, "ada@example.com")
    expect(page.get_by_role("note").filter(has_text="simulated")).to_contain_text("Sandbox")
    expect(page.get_by_text("No bank accounts yet")).to_be_visible()

    link_test_bank(page)
    cards = page.locator(CARD)
    expect(cards).to_have_count(2)
    checking = cards.filter(has_text="Test Checking")
    expect(checking).to_contain_text("Test (Non-OAuth)")
    expect(checking).to_contain_text("•••• 6789")
    expect(checking.locator("[data-field='status']")).to_have_text("Active")
    # The balances were prefetched on link and arrive by webhook: no click, no reload.
    for card in (checking, cards.filter(has_text="Test Savings")):
        expect(card.locator("[data-field='balance']")).to_have_text(re.compile(r"^\$[\d,]+\.\d\d$"))
        expect(card).to_contain_text(re.compile(r"as of \w{3} \d+, \d{4}, \d+:\d\d [AP]M GMT\+9"))
        # Nobody clicked Refresh: the prefetched balance arrives without a message.
        expect(card.locator("[data-field='message']")).to_have_text("")
    expect(page.locator(".total__amount")).to_have_text(re.compile(r"^\$[\d,]+\.\d\d$"))

    # Refresh: the new balance replaces the old one in place, without a page load.
    account_id = checking.get_attribute("data-account")
    before = page.request.get(f"/finconn/accounts/{account_id}").json()["balance"]
    page.evaluate("window.__samePage = true")
    sandbox_of(app).advance_time(11)  # past the sandbox's cooldown after the prefetch
    checking.get_by_role("button", name="Refresh balance").click()
    expect(checking.get_by_text("Balance updated.")).to_be_visible()
    after = page.request.get(f"/finconn/accounts/{account_id}").json()["balance"]
    assert after["as_of"] != before["as_of"] or after["current"] != before["current"]
    shown = page.evaluate(
        "(c) => new Intl.NumberFormat('en-US', {style: 'currency', currency: 'USD'})"
        ".format(c / 100)",
        after["current"],
    )
    expect(checking.locator("[data-field='balance']")).to_have_text(shown)
    assert page.evaluate("window.__samePage") is True
    # Refreshing again at once is refused with the reason and how long to wait.
    checking.get_by_role("button", name="Refresh balance").click()
    expect(checking.locator("[data-field='message']")).to_have_text(
        re.compile(r"^Balance was just refreshed; you can refresh again in \d+ seconds?\.$")
    )
    expect(checking.locator("[data-field='message']")).not_to_have_class(re.compile("field-error"))

    # The account page: chart, transactions (pending marked, searchable, paginated), owners.
    checking.get_by_role("link", name="Test Checking", exact=True).click()
    expect(page.get_by_role("heading", name="Test Checking", level=1)).to_be_visible()
    expect(page.get_by_role("img", name="Balance history of Test Checking")).to_be_visible()
    # Its labels, point titles and caption are in the viewer's zone too.
    expect(page.locator("figcaption")).to_contain_text("GMT+9")
    labels = page.locator(".chart__svg--wide text[data-datetime], .chart__svg--wide title")
    assert labels.count() >= 4
    assert not [t for t in labels.all_text_contents() if "UTC" in t]
    rows = page.locator("tr.txn")
    expect(rows.first).to_be_visible()
    expect(page.locator("tr.txn--pending").first.get_by_text("Pending")).to_be_visible()
    expect(page.locator("#transactions-count")).to_contain_text(re.compile(r"^1\u2013\d+ of \d+"))
    first = rows.first.locator("td").nth(1).inner_text()
    word = first.split()[0]
    page.get_by_label("Search transactions").fill(word)
    page.get_by_role("button", name="Search").click()
    expect(rows.first).to_be_visible()
    for text in rows.locator("td:nth-child(2)").all_inner_texts():
        assert word.lower() in text.lower()
    page.get_by_label("Search transactions").fill("no such merchant anywhere")
    page.get_by_role("button", name="Search").click()
    expect(page.get_by_text("No transactions match")).to_be_visible()
    expect(page.locator(".owner__name").first).to_have_text(re.compile(r"\w+ \w+"))
    page.get_by_role("button", name="Refresh owners").click()
    toolbar = page.get_by_role("group", name="Refresh from the bank")
    expect(toolbar.get_by_text("Owners updated.")).to_be_visible()
    expect(page.locator(".owner__name").first).to_have_text(re.compile(r"\w+ \w+"))

    # Events: what the webhook received, with its processing status.
    page.get_by_role("link", name="Events").click()
    refreshed = page.locator("tr", has_text="refreshed_balance").first
    expect(refreshed).to_contain_text("Processed")
    expect(refreshed).to_contain_text("Test Checking")

    # Disconnect after a confirmation; the card says so and offers no more refreshes.
    page.get_by_role("link", name="Accounts").click()
    savings = page.locator(CARD).filter(has_text="Test Savings")
    savings.get_by_role("button", name="Disconnect").click()
    dialog = page.get_by_role("dialog", name="Disconnect this account?")
    expect(dialog).to_contain_text("Test Savings")
    dialog.get_by_role("button", name="Disconnect").click()
    expect(savings.locator("[data-field='status']")).to_have_text("Disconnected")
    expect(savings.get_by_role("button", name="Refresh balance")).to_have_count(0)
    page.reload()
    expect(page.locator(CARD).filter(has_text="Test Savings")).to_contain_text("Disconnected")


def test_a_second_user_sees_none_of_the_first_users_accounts(
    new_user: Callable[..., Page], pocketbook_server: tuple[Flask, str]
) -> None:
    first = new_user()
    sign_in(first, "grace@example.com")
    link_test_bank(first)
    expect(first.locator(CARD)).to_have_count(2)
    ids = [card.get_attribute("data-account") for card in first.locator(CARD).all()]

    second = new_user()
    sign_in(second, "linus@example.com")
    expect(second.get_by_text("No bank accounts yet")).to_be_visible()
    assert second.request.get("/finconn/accounts").json() == {"data": []}
    for account_id in ids:
        response = second.goto(f"/accounts/{account_id}")
        assert response is not None and response.status == 404
        expect(second.get_by_role("heading", name="Not Found")).to_be_visible()
        api = second.request.get(f"/finconn/accounts/{account_id}")
        assert api.status == 404
        assert api.json()["error"]["code"] == "account_not_found"
        refresh = second.request.post(
            f"/finconn/accounts/{account_id}/refresh", data={"features": ["balance"]}
        )
        assert refresh.status == 404
    second.get_by_role("link", name="Events").click()
    expect(second.get_by_text("No events")).to_be_visible()

    # Signing out ends the session on the server, not only in this browser.
    cookies = second.context.cookies()
    second.get_by_role("button", name="Sign out").click()
    expect(second.get_by_text("You are signed out.")).to_be_visible()
    # Playwright types what cookies() returns apart from what add_cookies() takes (the latter
    # with optional values); the documented round trip passes them back as they are.
    second.context.add_cookies(cast("list[SetCookieParam]", cookies))
    second.goto("/")
    expect(second).to_have_url(re.compile(r"/signin"))


def test_an_account_the_bank_cut_off_is_reconnected_through_the_modal(
    new_user: Callable[..., Page],
) -> None:
    page = new_user()
    sign_in(page, "edsger@example.com")
    page.get_by_role("button", name="Link a bank account").click()
    page.get_by_role("button", name="Agree and continue").click()
    page.get_by_role("searchbox").fill("inactive")
    page.locator("[data-institution='inactive']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Link accounts").click()
    finish_linking(page)
    cards = page.locator(CARD)
    expect(cards).to_have_count(2)
    ids = [card.get_attribute("data-account") for card in cards.all()]

    # This test bank cuts the accounts off at their first refresh (the prefetch right after
    # linking): the page, following that refresh, redraws the cards with a reconnect prompt.
    first = page.locator(CARD).first
    expect(first.locator("[data-field='status']")).to_have_text("Inactive")
    expect(first).to_contain_text("Reconnect needed")
    first.get_by_role("button", name="Reconnect Inactive Accounts").click()
    page.get_by_role("button", name="Agree and continue").click()
    page.get_by_role("searchbox").fill("inactive")
    page.locator("[data-institution='inactive']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Link accounts").click()
    finish_linking(page)

    # The same rows come back to life (same ids, history kept), not two new accounts.
    expect(page.locator(CARD).locator("[data-field='status']")).to_have_text(["Active", "Active"])
    expect(page.get_by_text("Reconnect needed")).to_have_count(0)
    relinked = [card.get_attribute("data-account") for card in page.locator(CARD).all()]
    assert set(relinked) == set(ids)


def test_on_a_phone_every_column_is_readable_and_buttons_keep_their_colours(
    new_user: Callable[..., Page],
) -> None:
    page = new_user(width=360)
    page.goto("/")
    expect(page.locator(".brand__name")).to_be_visible()  # the sign-in header names the app
    page.get_by_label("Email address").fill("barbara@example.com")
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Your accounts")).to_be_visible()
    link_test_bank(page)
    checking = page.locator(CARD).filter(has_text="Test Checking")
    expect(checking.locator("[data-field='balance']")).to_have_text(re.compile(r"^\$"))

    # Hovering Disconnect in the dialog keeps light text on the danger colour.
    checking.get_by_role("button", name="Disconnect").click()
    confirm = page.get_by_role("dialog").get_by_role("button", name="Disconnect")
    confirm.hover()
    colours = confirm.evaluate(
        "(b) => { const s = getComputedStyle(b); return [s.color, s.backgroundColor]; }"
    )
    assert colours[0] != colours[1], colours
    page.get_by_role("dialog").get_by_role("button", name="Keep it").click()

    # A transaction takes two lines: description and amount, then date and status. Events
    # stack into one card per row. Nothing is cut off at 360 px.
    checking.get_by_role("link", name="Test Checking", exact=True).click()
    row = page.locator("tr.txn").first
    amount = row.locator("td[data-label='Amount']")
    expect(amount).to_be_visible()
    boxes = {}
    for label in ("Description", "Amount", "Date", "Status"):
        box = row.locator(f"td[data-label='{label}']").bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 360, (label, box)
        boxes[label] = box
    line = boxes["Date"]["height"]
    assert abs(boxes["Description"]["y"] - boxes["Amount"]["y"]) < line / 2, boxes
    assert abs(boxes["Date"]["y"] - boxes["Status"]["y"]) < line / 2, boxes
    assert boxes["Date"]["y"] > boxes["Description"]["y"], boxes
    assert boxes["Amount"]["x"] > boxes["Description"]["x"], boxes
    row_box = row.bounding_box()
    two_lines = boxes["Description"]["height"] + line + 24  # with the row's padding
    assert row_box is not None and row_box["height"] <= two_lines, (row_box, boxes)
    page.get_by_role("link", name="Events").click()
    attempts = page.locator("td[data-label='Attempts']").first
    expect(attempts).to_be_visible()
    box = attempts.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 360, box
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    # An event: what happened beside its status, what it is about, then when (and attempts).
    event = page.locator("tbody tr").first
    cells = {}
    for label in ("Event", "Status", "About", "Received", "Attempts"):
        cell = event.locator(f"td[data-label='{label}']").bounding_box()
        assert cell is not None and cell["x"] + cell["width"] <= 360, (label, cell)
        cells[label] = cell
    assert abs(cells["Event"]["y"] - cells["Status"]["y"]) < 8, cells
    assert abs(cells["Received"]["y"] - cells["Attempts"]["y"]) < 8, cells
    assert cells["Event"]["y"] < cells["About"]["y"] < cells["Received"]["y"], cells
    label = event.locator("td[data-label='Attempts']").evaluate(
        "c => getComputedStyle(c, '::before').content"
    )
    assert "Attempts" in label, label
