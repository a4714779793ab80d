"""The sandbox's Stripe.js stand-in and linking modal, driven in Chromium through the widget."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from flask_finconn.testing import sandbox_of

pytestmark = pytest.mark.browser


def events(page: Page) -> list[dict[str, Any]]:
    return page.evaluate("window.__events")  # type: ignore[no-any-return]


def wait_for_outcome(page: Page) -> dict[str, Any]:
    """The first success, exit or error event the widget fired."""
    page.wait_for_function("window.__events.some(e => !e.type.endsWith('-start'))", timeout=10_000)
    return next(e for e in events(page) if not e["type"].endswith("-start"))


def step(page: Page, name: str) -> None:
    expect(page.locator(f".dialog[data-step='{name}']")).to_be_visible()


def open_modal(page: Page, query: str = "") -> None:
    page.goto("/" + query)
    page.get_by_role("button", name="Link your bank").click()
    step(page, "consent")


def choose_bank(page: Page, institution: str) -> None:
    page.get_by_role("button", name="Agree and continue").click()
    step(page, "institutions")
    page.get_by_role("searchbox", name="Search for your bank").fill(institution)
    page.locator(f"[data-institution='{institution}']").click()


def log_in(page: Page, password: str = "hunter2") -> None:
    step(page, "login")
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in", exact=True).click()


def stored_accounts(app: Flask) -> list[str]:
    client = app.test_client()
    body = client.get("/finconn/accounts", headers={"X-Finconn-Holder": "h1"}).get_json()
    return sorted(a["display_name"] for a in body["data"])


def test_credentials_bank_links_the_chosen_accounts(widget_page: Page, widget_app: Flask) -> None:
    open_modal(widget_page)
    expect(widget_page.get_by_role("dialog")).to_contain_text("Acme Budget uses Stripe")
    expect(widget_page.locator("[data-permission]")).to_have_count(3)
    choose_bank(widget_page, "bank_nonoauth")
    log_in(widget_page)
    step(widget_page, "accounts")
    widget_page.get_by_role("checkbox", name="Sample Savings Account").uncheck()
    widget_page.get_by_role("button", name="Link accounts").click()
    step(widget_page, "success")
    expect(widget_page.get_by_role("dialog")).to_contain_text("Sample Checking Account")
    widget_page.get_by_role("button", name="Done").click()

    outcome = wait_for_outcome(widget_page)
    assert outcome["type"] == "finconn-connect-success"
    names = sorted(a["display_name"] for a in outcome["detail"]["accounts"])
    assert names == ["Sample Checking Account", "Sample Credit Card"]
    assert stored_accounts(widget_app) == names
    expect(widget_page.locator("[data-finconn-sandbox]")).to_have_count(0)


def test_oauth_bank_links_after_authorizing_at_the_bank(
    widget_page: Page, widget_app: Flask
) -> None:
    open_modal(widget_page)
    choose_bank(widget_page, "bank_oauth")
    step(widget_page, "oauth")
    widget_page.get_by_role("button", name="Continue to Bank (OAuth)").click()
    step(widget_page, "bank")
    widget_page.get_by_role("button", name="Authorize").click()
    step(widget_page, "accounts")
    widget_page.get_by_role("button", name="Link accounts").click()
    step(widget_page, "success")
    widget_page.get_by_role("button", name="Done").click()

    outcome = wait_for_outcome(widget_page)
    assert outcome["type"] == "finconn-connect-success"
    assert len(outcome["detail"]["accounts"]) == 3
    assert all(a["institution_name"] == "Bank (OAuth)" for a in outcome["detail"]["accounts"])
    assert len(stored_accounts(widget_app)) == 3


def reach(page: Page, target: str) -> None:
    """Walk the modal to ``target`` by the shortest path."""
    open_modal(page)
    if target == "consent":
        return
    if target == "institutions":
        page.get_by_role("button", name="Agree and continue").click()
    elif target == "down":
        choose_bank(page, "down_error")
    elif target in ("oauth", "bank"):
        choose_bank(page, "bank_oauth")
        if target == "bank":
            page.get_by_role("button", name="Continue to Bank (OAuth)").click()
    elif target in ("login", "mfa", "accounts", "failed"):
        choose_bank(page, "bank_nonoauth")
        if target != "login":
            log_in(page, {"mfa": "mfa", "accounts": "x", "failed": "error"}[target])
    step(page, target)


@pytest.mark.parametrize(
    "target",
    ["consent", "institutions", "down", "oauth", "bank", "login", "mfa", "accounts", "failed"],
)
@pytest.mark.parametrize("how", ["close button", "Escape"])
def test_closing_at_any_step_exits_with_no_accounts(
    widget_page: Page, widget_app: Flask, target: str, how: str
) -> None:
    reach(widget_page, target)
    if how == "Escape":
        widget_page.keyboard.press("Escape")
    else:
        widget_page.get_by_role("button", name="Close").first.click()

    outcome = wait_for_outcome(widget_page)
    assert outcome == {"type": "finconn-connect-exit", "detail": {"reason": "cancelled"}}
    assert stored_accounts(widget_app) == []
    expect(widget_page.locator("[data-finconn-sandbox]")).to_have_count(0)
    # The page is usable again: scrolling, clicks, and focus back on the button that opened it.
    assert widget_page.evaluate("document.documentElement.style.overflow") == ""
    expect(widget_page.get_by_role("button", name="Link your bank")).to_be_focused()


@pytest.mark.parametrize(
    ("target", "previous"),
    [
        ("institutions", "consent"),
        ("down", "institutions"),
        ("login", "institutions"),
        ("bank", "oauth"),
        ("mfa", "login"),
        ("accounts", "login"),
    ],
)
def test_back_returns_to_the_previous_step(widget_page: Page, target: str, previous: str) -> None:
    reach(widget_page, target)
    widget_page.get_by_role("button", name="Back").click()
    step(widget_page, previous)


@pytest.mark.parametrize(
    ("password", "prompt"),
    [
        ("mfa", "Verification code"),
        ("security_question", "What was the name of your first pet?"),
    ],
)
def test_magic_words_ask_a_further_question(widget_page: Page, password: str, prompt: str) -> None:
    reach(widget_page, "login")
    log_in(widget_page, password)
    widget_page.get_by_role("textbox", name=prompt).fill("42")
    widget_page.get_by_role("button", name="Continue").click()
    step(widget_page, "accounts")


def test_magic_word_options_picks_where_the_code_goes(widget_page: Page) -> None:
    reach(widget_page, "login")
    log_in(widget_page, "options")
    step(widget_page, "options")
    widget_page.get_by_role("radio", name="Email to j***@example.com").check()
    widget_page.get_by_role("button", name="Send code").click()
    step(widget_page, "mfa")
    expect(widget_page.get_by_role("dialog")).to_contain_text("Email to j***@example.com")
    widget_page.get_by_role("textbox", name="Verification code").fill("123456")
    widget_page.get_by_role("button", name="Continue").click()
    step(widget_page, "accounts")


def test_magic_word_incorrect_lets_the_user_try_again(widget_page: Page) -> None:
    reach(widget_page, "login")
    log_in(widget_page, "incorrect")
    expect(widget_page.get_by_role("alert")).to_contain_text("incorrect")
    step(widget_page, "login")
    log_in(widget_page, "right-this-time")
    step(widget_page, "accounts")


def test_magic_word_error_fails_the_login(widget_page: Page, widget_app: Flask) -> None:
    reach(widget_page, "failed")
    expect(widget_page.get_by_role("dialog")).to_contain_text("could not log you in")
    expect(widget_page.get_by_role("button", name="Back")).to_be_hidden()
    widget_page.get_by_role("button", name="Select another bank").click()
    step(widget_page, "institutions")
    widget_page.get_by_role("button", name="Back").click()
    step(widget_page, "consent")


def test_closing_after_a_failed_login_exits(widget_page: Page) -> None:
    reach(widget_page, "failed")
    widget_page.get_by_role("dialog").get_by_role("button", name="Close").last.click()
    assert wait_for_outcome(widget_page)["detail"] == {"reason": "cancelled"}


@pytest.mark.parametrize(
    ("institution", "headline"),
    [
        ("down_scheduled", "under scheduled maintenance"),
        ("down_unscheduled", "unavailable right now"),
        ("down_error", "could not be reached"),
    ],
)
def test_down_banks_show_why_and_offer_another_bank(
    widget_page: Page, institution: str, headline: str
) -> None:
    open_modal(widget_page)
    choose_bank(widget_page, institution)
    step(widget_page, "down")
    expect(widget_page.locator(".title")).to_contain_text(headline)
    widget_page.get_by_role("button", name="Select another bank").click()
    step(widget_page, "institutions")


def test_unsupported_accounts_are_shown_disabled(widget_page: Page) -> None:
    open_modal(widget_page, "?permissions=balances+payment_method")
    choose_bank(widget_page, "bank_nonoauth")
    log_in(widget_page)
    step(widget_page, "accounts")
    card = widget_page.get_by_role("checkbox", name="Sample Credit Card")
    expect(card).to_be_disabled()
    expect(card).not_to_be_checked()
    expect(widget_page.locator("[data-account='credit_card']")).to_contain_text("ACH")
    for name in ("Sample Checking Account", "Sample Savings Account"):
        widget_page.get_by_role("checkbox", name=name).uncheck()
    expect(widget_page.get_by_role("button", name="Link accounts")).to_be_disabled()


def test_search_covers_every_sandbox_bank(widget_page: Page, widget_app: Flask) -> None:
    reach(widget_page, "institutions")
    featured = widget_page.locator(".institutions--grid [data-institution]")
    expect(featured).to_have_count(4)
    total = len(sandbox_of(widget_app).institutions())
    expect(widget_page.get_by_role("searchbox")).to_have_attribute(
        "placeholder", f"Search all {total} sandbox banks"
    )
    banks = widget_page.locator("[data-institution]:visible")
    widget_page.get_by_role("searchbox").fill("a")
    expect(banks).to_have_count(len(sandbox_of(widget_app).institutions("a")))
    expect(widget_page.get_by_role("heading", name="Test institutions")).to_be_hidden()
    widget_page.get_by_role("searchbox").fill("reauth")
    expect(banks).to_have_count(2)
    widget_page.get_by_role("searchbox").fill("no such bank")
    expect(widget_page.get_by_role("dialog")).to_contain_text("No sandbox bank matches")


def test_the_failure_banks_are_listed_without_a_search(
    widget_page: Page, widget_app: Flask
) -> None:
    reach(widget_page, "institutions")
    expect(widget_page.get_by_role("heading", name="Test institutions")).to_be_visible()
    group = widget_page.get_by_role("list", name="Test institutions")
    others = [i for i in sandbox_of(widget_app).institutions() if not i["featured"]]
    expect(group.get_by_role("listitem")).to_have_count(len(others))
    # Each says what it simulates, read out as the button's description, not its name.
    down = group.get_by_role("button", name="Down (Error)", exact=True)
    expect(down).to_have_accessible_description("Login fails: unknown error at the bank")
    expect(group.get_by_role("button", name="Inactive Accounts", exact=True)).to_be_visible()
    down.click()
    step(widget_page, "down")
    expect(widget_page.get_by_role("dialog")).to_contain_text("could not be reached")


def test_focus_stays_inside_the_modal(widget_page: Page) -> None:
    reach(widget_page, "consent")
    assert widget_page.evaluate("document.documentElement.style.overflow") == "hidden"
    dialog = widget_page.get_by_role("dialog")
    # A native modal dialog: the page behind it takes no clicks or focus.
    assert dialog.evaluate("d => d.localName === 'dialog' && d.matches(':modal')")
    heading = widget_page.get_by_role("heading", name="Acme Budget", exact=True)
    assert heading.evaluate(
        """h => { const r = h.getBoundingClientRect();
          return document.elementFromPoint(r.x + 4, r.y + 4) !== h; }"""
    )
    expect(dialog.locator(".badge")).to_have_text("Sandbox")
    for _ in range(6):
        widget_page.keyboard.press("Tab")
        inside = widget_page.evaluate("document.activeElement.matches('[data-finconn-sandbox]')")
        assert inside, "Tab moved focus out of the modal"
    for _ in range(6):
        widget_page.keyboard.press("Shift+Tab")
        assert widget_page.evaluate("document.activeElement.matches('[data-finconn-sandbox]')")


def test_keyboard_only_linking(widget_page: Page, widget_app: Flask) -> None:
    widget_page.goto("/")
    keys = widget_page.keyboard
    keys.press("Tab")
    expect(widget_page.get_by_role("button", name="Link your bank")).to_be_focused()
    keys.press("Enter")
    step(widget_page, "consent")
    keys.press("Enter")  # "Agree and continue" has focus
    step(widget_page, "institutions")
    keys.type("Non-OAuth")  # the search box has focus
    expect(widget_page.locator("[data-institution]")).to_have_count(2)
    keys.press("Tab")
    keys.press("Enter")  # the first match: Bank (Non-OAuth)
    step(widget_page, "login")
    keys.type("jenny")
    keys.press("Tab")
    keys.type("secret")
    keys.press("Enter")
    step(widget_page, "accounts")
    keys.press("Space")  # untick the first account, which has focus
    while not widget_page.evaluate(
        "(() => { const a = document.querySelector('[data-finconn-sandbox]').shadowRoot"
        ".activeElement; return a && a.textContent === 'Link accounts'; })()"
    ):
        keys.press("Tab")
    keys.press("Enter")
    step(widget_page, "success")
    keys.press("Enter")  # "Done"
    outcome = wait_for_outcome(widget_page)
    assert outcome["type"] == "finconn-connect-success"
    assert len(outcome["detail"]["accounts"]) == 2
    assert stored_accounts(widget_app) == ["Sample Credit Card", "Sample Savings Account"]


def test_modal_fills_a_360px_screen(widget_page: Page) -> None:
    widget_page.set_viewport_size({"width": 360, "height": 740})
    reach(widget_page, "accounts")
    box = widget_page.locator(".dialog").bounding_box()
    assert box is not None
    assert box["width"] == 360
    assert box["height"] == 740
    overflow = widget_page.locator(".content").evaluate("el => el.scrollWidth > el.clientWidth")
    assert not overflow
    expect(widget_page.get_by_role("button", name="Link accounts")).to_be_in_viewport()


STAND_IN = """async (secret) => {
  const stripe = Stripe("pk_test_sandbox");
  window.__result = stripe.collectFinancialConnectionsAccounts({clientSecret: secret});
  return true;
}"""


def new_session(app: Flask) -> dict[str, Any]:
    client = app.test_client()
    response = client.post("/finconn/sessions", json={}, headers={"X-Finconn-Holder": "h1"})
    assert response.status_code == 201
    return response.get_json()  # type: ignore[no-any-return]


def test_stand_in_resolves_like_stripe_js(widget_page: Page, widget_app: Flask) -> None:
    session = new_session(widget_app)
    widget_page.goto("/?button=0")
    widget_page.add_script_tag(url=session["stripe_js_url"])
    widget_page.evaluate(STAND_IN, session["client_secret"])
    choose_bank(widget_page, "test_nonoauth")
    log_in(widget_page)
    widget_page.get_by_role("button", name="Link accounts").click()
    widget_page.get_by_role("button", name="Done").click()
    result = widget_page.evaluate("window.__result")

    assert set(result) == {"financialConnectionsSession"}
    linked = result["financialConnectionsSession"]
    assert linked["id"] == session["id"]
    assert isinstance(linked["accounts"], list)
    assert [a["object"] for a in linked["accounts"]] == ["financial_connections.account"] * 2
    assert {a["id"][:4] for a in linked["accounts"]} == {"fca_"}


def test_stand_in_resolves_an_empty_list_when_closed(widget_page: Page, widget_app: Flask) -> None:
    session = new_session(widget_app)
    widget_page.goto("/?button=0")
    widget_page.add_script_tag(url=session["stripe_js_url"])
    widget_page.evaluate(STAND_IN, session["client_secret"])
    widget_page.get_by_role("button", name="Close").click()
    result = widget_page.evaluate("window.__result")
    assert result == {"financialConnectionsSession": {"id": session["id"], "accounts": []}}


@pytest.mark.parametrize(
    ("spoil", "code"),
    [("expire_session", "session_expired"), ("complete_session", "session_used")],
)
def test_stand_in_returns_an_error_for_unusable_sessions(
    widget_page: Page, widget_app: Flask, spoil: str, code: str
) -> None:
    session = new_session(widget_app)
    getattr(sandbox_of(widget_app), spoil)(session["id"])
    widget_page.goto("/?button=0")
    widget_page.add_script_tag(url=session["stripe_js_url"])
    widget_page.evaluate(STAND_IN, session["client_secret"])
    result = widget_page.evaluate("window.__result")
    assert set(result) == {"error"}
    assert result["error"]["type"] == "invalid_request_error"
    assert result["error"]["code"] == code
    assert "Start a new one" in result["error"]["message"]
    expect(widget_page.locator("[data-finconn-sandbox]")).to_have_count(0)


def test_escape_closes_when_no_account_can_be_linked(widget_page: Page) -> None:
    open_modal(widget_page, "?permissions=payment_method")
    choose_bank(widget_page, "invalid_payment")
    log_in(widget_page)
    step(widget_page, "accounts")
    expect(widget_page.get_by_role("checkbox", disabled=True)).to_have_count(4)
    expect(widget_page.get_by_role("button", name="Link accounts")).to_be_disabled()
    widget_page.keyboard.press("Escape")
    assert wait_for_outcome(widget_page)["detail"] == {"reason": "cancelled"}


def test_modal_routes_are_authorised_by_the_client_secret_only(widget_app: Flask) -> None:
    session = new_session(widget_app)
    secret = session["client_secret"]
    client = widget_app.test_client()  # no holder header, no cookie: the secret is enough

    found = client.get("/finconn/sandbox/api/session", query_string={"client_secret": secret})
    assert found.status_code == 200
    assert found.get_json() == {
        "id": session["id"],
        "livemode": False,
        "merchant_name": "Acme Budget",
        "permissions": ["balances", "ownership", "payment_method", "transactions"],
    }
    missing = client.get("/finconn/sandbox/api/institutions")
    assert missing.status_code == 400
    assert missing.get_json()["error"]["code"] == "parameter_missing"
    unknown = client.post(
        "/finconn/sandbox/api/complete",
        json={"client_secret": "fcsess_client_secret_nope", "institution": "test_oauth"},
    )
    assert unknown.status_code == 404
    assert unknown.get_json()["error"] == {
        "type": "invalid_request_error",
        "code": "session_unknown",
        "message": "This link session does not exist. Start a new one.",
        "doc_url": "https://stripe.com/docs/error-codes/session-unknown",
    }
    bad = client.post(
        "/finconn/sandbox/api/complete",
        json={"client_secret": secret, "institution": "test_oauth", "accounts": "all"},
    )
    assert bad.status_code == 400
    assert bad.get_json()["error"]["param"] == "accounts"
    assert (
        client.post("/finconn/sandbox/api/cancel", json={"client_secret": secret}).status_code
        == 200
    )
    used = client.post("/finconn/sandbox/api/cancel", json={"client_secret": secret})
    assert used.status_code == 400
    assert used.get_json()["error"]["code"] == "session_used"


def test_stand_in_script_is_served_fresh(widget_app: Flask) -> None:
    with widget_app.test_client().get("/finconn/sandbox/stripe.js") as response:
        assert response.status_code == 200
        assert response.mimetype == "text/javascript"
        assert "no-cache" in response.headers["Cache-Control"]  # revalidated on every load
        assert "collectFinancialConnectionsAccounts" in response.get_data(as_text=True)


def test_empty_login_fields_get_the_modals_own_error(widget_page: Page) -> None:
    reach(widget_page, "login")
    form = widget_page.locator("form")
    assert form.evaluate("f => f.noValidate")  # no browser tooltip: the modal says it itself
    widget_page.get_by_label("Password").fill("pw")
    widget_page.get_by_role("button", name="Log in", exact=True).click()
    expect(widget_page.get_by_role("alert")).to_have_text("Enter your username and password.")
    username = widget_page.get_by_label("Username")
    expect(username).to_be_focused()
    expect(username).to_have_attribute("aria-invalid", "true")
    expect(username).to_have_accessible_description("Enter your username and password.")
    expect(widget_page.get_by_label("Password")).not_to_have_attribute("aria-invalid", "true")
    step(widget_page, "login")

    username.fill("jenny")
    widget_page.get_by_role("button", name="Log in", exact=True).click()
    step(widget_page, "accounts")


def test_success_lists_the_accounts_in_the_banks_order(widget_page: Page) -> None:
    reach(widget_page, "accounts")
    names = widget_page.locator(".account .name").all_text_contents()
    metas = widget_page.locator(".account .meta").all_text_contents()
    widget_page.get_by_role("button", name="Link accounts").click()
    step(widget_page, "success")
    linked = widget_page.locator(".linked li")
    assert linked.locator(".name").all_text_contents() == names
    # The last four digits read the same as on the accounts step: "•••• 6789".
    assert [meta.rsplit(" · ", 1)[-1] for meta in metas] == linked.locator(
        ".meta"
    ).all_text_contents()
    assert all(m.startswith("•••• ") for m in linked.locator(".meta").all_text_contents())


@pytest.mark.parametrize("size", [(1200, 800), (390, 844)])
def test_the_whole_consent_fits_on_a_laptop_and_a_phone(
    widget_page: Page, size: tuple[int, int]
) -> None:
    widget_page.set_viewport_size({"width": size[0], "height": size[1]})
    open_modal(widget_page, "?permissions=balances+ownership+payment_method+transactions")
    note = widget_page.locator(".dialog .fine")
    content = widget_page.locator(".content")
    expect(note).to_be_in_viewport(ratio=1)
    # Fully inside the content area without scrolling: not under the footer, not cut off.
    inside = content.evaluate(
        """c => { const n = c.querySelector('.fine').getBoundingClientRect();
          const r = c.getBoundingClientRect();
          return n.top >= r.top && n.bottom <= r.bottom; }"""
    )
    assert inside
