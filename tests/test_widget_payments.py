"""The widget's payments half in Chromium: lazy loading, the setup flow with its mandate,
``<finconn-verify>`` and "Use for payments" in ``<finconn-accounts>``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from axe_support import assert_accessible
from flask import Flask, render_template_string
from flask import request as http
from playwright.sync_api import Page, Route, expect

from flask_finconn import Holder
from flask_finconn.testing import link_accounts

pytestmark = pytest.mark.browser

HOLDER = Holder("h1", email="h1@example.com", name="Jenny Rosen")
PAY_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Acme Budget</title>
{{ finconn.scripts(nonce=nonce, accounts=accounts) }}
</head>
<body>
<main>
<h1>Acme Budget</h1>
{% if verify %}{{ finconn.verify(verify) }}
{% elif accounts %}{{ finconn.accounts(mandate_text=mandate) }}
{% else %}{{ finconn.button("Pay by bank", purpose="payments", billing_name="Jenny Rosen") }}
{% endif %}
</main>
</body>
</html>
"""


def js_requests(page: Page) -> list[str]:
    """The URLs of the widget's files the page requests from now on."""
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url) if "/finconn/assets/" in r.url else None)
    return urls


@pytest.fixture
def pay_page(widget_app: Flask, widget_page: Page) -> Iterator[Page]:
    """``widget_page`` with a ``/pay`` page: the payments button (default), ``?verify=<pm>``
    for ``<finconn-verify>``, ``?accounts=1`` for ``<finconn-accounts>``; ``nonce`` sends a
    strict CSP."""

    @widget_app.get("/pay")
    def pay() -> Any:
        nonce = http.args.get("nonce")
        body = render_template_string(
            PAY_PAGE,
            nonce=nonce,
            verify=http.args.get("verify"),
            accounts=bool(http.args.get("accounts")),
            mandate="I authorize Acme Budget to debit this account.",
        )
        headers = {}
        if nonce:
            headers["Content-Security-Policy"] = (
                f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self'; "
                "object-src 'none'; base-uri 'none'"
            )
        return body, 200, headers

    widget_page.add_init_script(
        """
        for (const name of ["authorize", "authorized", "error"]) {
          document.addEventListener("finconn-accounts-" + name, (e) =>
            window.__events.push({type: e.type, detail: JSON.parse(JSON.stringify(e.detail))}));
        }
        for (const name of ["verify", "verified", "error"]) {
          document.addEventListener("finconn-verify-" + name, (e) =>
            window.__events.push({type: e.type, detail: JSON.parse(JSON.stringify(e.detail))}));
        }
        """
    )
    yield widget_page


def outcome(page: Page, prefix: str = "finconn-connect-") -> dict[str, Any]:
    """The first success, exit or error event with this prefix."""
    page.wait_for_function(
        "(p) => window.__events.some("
        "e => e.type.startsWith(p) && /(success|exit|error)$/.test(e.type))",
        arg=prefix,
    )
    events: list[dict[str, Any]] = page.evaluate("window.__events")
    return next(
        e
        for e in events
        if e["type"].startswith(prefix)
        and e["type"].rsplit("-", 1)[1] in ("success", "exit", "error")
    )


def link_in_modal(page: Page) -> None:
    """Through the sandbox modal: the Test (Non-OAuth) bank, one account."""
    page.get_by_role("button", name="Agree and continue").click()
    page.locator("[data-institution='test_nonoauth']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Link account").click()
    page.get_by_role("button", name="Done").click()


def enter_manually(page: Page, account_number: str = "000123456789") -> None:
    page.get_by_role("button", name="Agree and continue").click()
    page.get_by_role("button", name="Enter bank details manually").click()
    page.get_by_label("Routing number").fill("110000000")
    page.get_by_label("Account number", exact=True).fill(account_number)
    page.get_by_label("Confirm account number").fill(account_number)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Done").click()


def mandate_dialog(page: Page) -> Any:
    dialog = page.get_by_role("dialog", name="Authorize debits from your bank account")
    expect(dialog).to_be_visible()
    return dialog


def test_scripts_helper_carries_the_payments_urls(widget_app: Flask) -> None:
    with widget_app.test_request_context("/"):
        lazy = render_template_string("{{ finconn.scripts(stylesheet=False) }}")
        eager = render_template_string("{{ finconn.scripts(payments=True) }}")
        verify = render_template_string("{{ finconn.verify('fcpm_1') }}")
    assert re.fullmatch(
        r'<script src="/finconn/assets/finconn-connect\.\w{8}\.js" data-endpoint="/finconn" '
        r'data-payments="/finconn/assets/finconn-payments\.\w{8}\.js" defer></script>',
        lazy,
    )
    assert [re.sub(r"\.\w{8}\.", ".*.", tag.split(" data-")[0]) for tag in eager.splitlines()] == [
        '<link rel="stylesheet" href="/finconn/assets/finconn-connect.*.css">',
        '<link rel="stylesheet" href="/finconn/assets/finconn-payments.*.css">',
        '<script src="/finconn/assets/finconn-connect.*.js"',
        '<script src="/finconn/assets/finconn-payments.*.js"',
    ]
    assert verify == '<finconn-verify payment-method="fcpm_1" endpoint="/finconn"></finconn-verify>'


def test_payments_script_loads_on_the_first_payments_click_only(pay_page: Page) -> None:
    urls = js_requests(pay_page)
    pay_page.goto("/pay?nonce=n1")
    expect(pay_page.get_by_role("button", name="Pay by bank")).to_be_visible()
    assert not [u for u in urls if "finconn-payments" in u]
    assert pay_page.evaluate("window.FinConn.payments") is None
    pay_page.get_by_role("button", name="Pay by bank").click()
    expect(pay_page.get_by_role("button", name="Agree and continue")).to_be_visible()
    assert len([u for u in urls if "finconn-payments" in u and u.endswith(".js")]) == 1
    assert len([u for u in urls if "finconn-payments" in u and u.endswith(".css")]) == 1


def test_linked_account_mandate_accepted_saves_a_verified_payment_method(pay_page: Page) -> None:
    pay_page.goto("/pay?nonce=n1")
    pay_page.get_by_role("button", name="Pay by bank").click()
    link_in_modal(pay_page)
    dialog = mandate_dialog(pay_page)
    # US English, as the dialog's title: "authorize", never "authorise".
    expect(dialog).to_contain_text("you authorize Acme Budget to debit the account")
    expect(dialog).not_to_contain_text(re.compile("authoris", re.I))
    # Focus is on the text: Enter alone agrees to nothing.
    expect(dialog.locator(".finconn-payments__mandate")).to_be_focused()
    assert_accessible(pay_page)
    dialog.get_by_role("button", name="Accept").click()
    event = outcome(pay_page)
    assert event["type"] == "finconn-connect-success"
    method = event["detail"]["paymentMethod"]
    assert method["status"] == "verified"
    assert method["mandate"]["status"] == "active"
    assert [a["id"] for a in event["detail"]["accounts"]] == [method["account"]]
    expect(pay_page.locator("finconn-connect [role=status]")).to_have_text("Bank account saved.")
    saved = pay_page.request.get("/finconn/payment-methods").json()["data"]
    assert [m["id"] for m in saved] == [method["id"]]


def test_cancel_at_the_mandate_is_an_exit_and_saves_nothing(pay_page: Page) -> None:
    pay_page.goto("/pay")
    pay_page.get_by_role("button", name="Pay by bank").click()
    link_in_modal(pay_page)
    mandate_dialog(pay_page).get_by_role("button", name="Cancel").click()
    event = outcome(pay_page)
    assert event == {"type": "finconn-connect-exit", "detail": {"reason": "mandate_declined"}}
    expect(pay_page.get_by_role("dialog")).to_have_count(0)
    assert pay_page.request.get("/finconn/payment-methods").json()["data"] == []
    # The button works again.
    expect(pay_page.locator("finconn-connect")).to_have_attribute("aria-busy", "false")


def test_escape_at_the_mandate_declines_it(pay_page: Page) -> None:
    pay_page.goto("/pay")
    pay_page.get_by_role("button", name="Pay by bank").click()
    link_in_modal(pay_page)
    mandate_dialog(pay_page)
    pay_page.keyboard.press("Enter")  # focus is on the text: Enter accepts nothing
    pay_page.keyboard.press("Escape")
    event = outcome(pay_page)
    assert event == {"type": "finconn-connect-exit", "detail": {"reason": "mandate_declined"}}
    assert pay_page.request.get("/finconn/payment-methods").json()["data"] == []


def test_the_mandate_dialog_by_keyboard_alone(pay_page: Page) -> None:
    pay_page.goto("/pay?nonce=n1")
    pay_page.get_by_role("button", name="Pay by bank").click()
    link_in_modal(pay_page)
    dialog = mandate_dialog(pay_page)
    text = dialog.locator(".finconn-payments__mandate")
    cancel = dialog.get_by_role("button", name="Cancel")
    accept = dialog.get_by_role("button", name="Accept")
    expect(text).to_be_focused()
    # Tab goes round the dialog (the text too: a long one scrolls with the arrow keys) and
    # never leaves it, neither for the page behind nor for the browser.
    for key, focused in [
        ("Tab", cancel),
        ("Tab", accept),
        ("Tab", text),
        ("Shift+Tab", accept),
        ("Shift+Tab", cancel),
        ("Shift+Tab", text),
        ("Shift+Tab", accept),
    ]:
        pay_page.keyboard.press(key)
        expect(focused).to_be_focused()
    pay_page.keyboard.press("Enter")
    event = outcome(pay_page)
    assert event["type"] == "finconn-connect-success"
    assert event["detail"]["paymentMethod"]["status"] == "verified"
    expect(pay_page.get_by_role("dialog")).to_have_count(0)


def test_escape_returns_focus_to_the_payments_button(pay_page: Page) -> None:
    pay_page.goto("/pay")
    button = pay_page.get_by_role("button", name="Pay by bank")
    button.click()
    link_in_modal(pay_page)
    mandate_dialog(pay_page)
    pay_page.keyboard.press("Escape")
    assert outcome(pay_page)["detail"] == {"reason": "mandate_declined"}
    expect(button).to_be_focused()


def payments_script_answers(page: Page, answer: Any) -> None:
    """Answer every request for the payments script with ``answer(route)``."""
    page.route(re.compile(r"/finconn-payments\.\w+\.js$"), answer)


@pytest.mark.parametrize(
    ("answer", "code", "sentence"),
    [
        (
            lambda route: route.fulfill(status=404, body="Not found"),
            "payments_js_load_failed",
            r"^The payments script could not be loaded from \S+/finconn-payments\.\w+\.js\.$",
        ),
        (
            # A truncated or broken bundle: it runs, yet defines nothing.
            lambda route: route.fulfill(content_type="text/javascript", body="/* cut short */"),
            "payments_js_unavailable",
            r"^\S+/finconn-payments\.\w+\.js loaded but did not define FinConn\.payments\.$",
        ),
    ],
    ids=["404", "defines-nothing"],
)
def test_a_payments_script_that_fails_is_a_sentence_and_an_error_event(
    pay_page: Page, answer: Any, code: str, sentence: str
) -> None:
    failing = [answer]
    payments_script_answers(
        pay_page, lambda route: failing[0](route) if failing else route.continue_()
    )
    pay_page.goto("/pay?nonce=n1")
    element = pay_page.locator("finconn-connect")
    pay_page.get_by_role("button", name="Pay by bank").click()
    event = outcome(pay_page)
    assert event["type"] == "finconn-connect-error"
    assert event["detail"]["error"]["code"] == code
    assert re.match(sentence, event["detail"]["error"]["message"])
    expect(element.get_by_role("status")).to_have_text(event["detail"]["error"]["message"])
    expect(element.get_by_role("status")).to_be_visible()
    expect(element).to_have_attribute("aria-busy", "false")
    # Once the script can be had, the next click loads it and goes on.
    failing.clear()
    pay_page.get_by_role("button", name="Pay by bank").click()
    expect(pay_page.get_by_role("button", name="Agree and continue")).to_be_visible()


def test_a_payments_script_that_never_answers_times_out(pay_page: Page) -> None:
    held: list[Route] = []
    payments_script_answers(pay_page, lambda route: held.append(route))
    pay_page.goto("/pay")
    pay_page.evaluate("window.FinConn.stripeTimeout = 300")
    pay_page.get_by_role("button", name="Pay by bank").click()
    event = outcome(pay_page)
    assert event["detail"]["error"]["code"] == "payments_js_load_failed"
    assert re.match(
        r"^The payments script did not load from \S+ in time\. Try again\.$",
        event["detail"]["error"]["message"],
    )
    expect(pay_page.locator("finconn-connect")).to_have_attribute("aria-busy", "false")
    assert len(held) == 1
    for route in held:
        route.abort()


def test_closing_the_bank_window_is_an_exit(pay_page: Page) -> None:
    pay_page.goto("/pay")
    pay_page.get_by_role("button", name="Pay by bank").click()
    expect(pay_page.get_by_role("button", name="Agree and continue")).to_be_visible()
    pay_page.get_by_role("button", name="Close").first.click()
    assert outcome(pay_page) == {"type": "finconn-connect-exit", "detail": {"reason": "cancelled"}}


def test_manual_entry_then_microdeposits_in_finconn_verify(pay_page: Page) -> None:
    pay_page.goto("/pay?nonce=n1")
    pay_page.get_by_role("button", name="Pay by bank").click()
    enter_manually(pay_page)
    mandate_dialog(pay_page).get_by_role("button", name="Accept").click()
    event = outcome(pay_page)
    method = event["detail"]["paymentMethod"]
    assert method["status"] == "requires_verification"
    assert method["account"] is None
    expect(pay_page.locator("finconn-connect [role=status]")).to_have_text(
        "Bank account saved; it needs verifying."
    )

    pay_page.goto(f"/pay?nonce=n1&verify={method['id']}")
    verify = pay_page.locator("finconn-verify")
    kind = method["verification"]["type"]
    expect(verify.get_by_role("button", name="Verify")).to_be_visible()
    if kind == "amounts":
        pay_page.get_by_label("First deposit, in cents").fill("10")
        pay_page.get_by_label("Second deposit, in cents").fill("99")
    else:
        pay_page.get_by_label(re.compile("^Code from the deposit")).fill("SM99ZZ")
    verify.get_by_role("button", name="Verify").click()
    # The server's sentence says how many attempts are left.
    mismatch = {
        "amounts": "Those values do not match the deposits",
        "descriptor_code": "That code does not match the one on the deposit",
    }[kind]
    expect(verify.get_by_role("status")).to_have_text(
        re.compile(rf"^{mismatch}\. [1-9]\d* attempts? left\.$")
    )
    # The form is drawn again once the server has counted the attempt: type after that.
    expect(verify).to_have_attribute("aria-busy", "false")
    if kind == "amounts":
        pay_page.get_by_label("First deposit, in cents").fill("32")
        pay_page.get_by_label("Second deposit, in cents").fill("45")
    else:
        pay_page.get_by_label(re.compile("^Code from the deposit")).fill("11AA")
    verify.get_by_role("button", name="Verify").click()
    expect(verify.get_by_role("status")).to_have_text("Bank account verified.")
    expect(verify).to_contain_text("is verified and ready for payments.")
    verified = pay_page.request.get(f"/finconn/payment-methods/{method['id']}").json()
    assert verified["status"] == "verified"


def test_verify_checks_what_was_typed_before_sending(pay_page: Page) -> None:
    pay_page.goto("/pay")
    pay_page.get_by_role("button", name="Pay by bank").click()
    enter_manually(pay_page)
    mandate_dialog(pay_page).get_by_role("button", name="Accept").click()
    method = outcome(pay_page)["detail"]["paymentMethod"]
    posts: list[str] = []
    pay_page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    pay_page.goto(f"/pay?verify={method['id']}")
    verify = pay_page.locator("finconn-verify")
    verify.get_by_role("button", name="Verify").click()
    expect(verify.get_by_role("status")).to_have_text(
        re.compile(r"^Enter (both deposits in cents|the 6-character code)")
    )
    assert posts == []


def test_accounts_offer_use_for_payments(pay_page: Page, widget_app: Flask) -> None:
    link_accounts(widget_app, HOLDER, permissions=["balances", "payment_method"])
    pay_page.goto("/pay?accounts=1&nonce=n1")
    rows = pay_page.locator(".finconn-accounts__item")
    expect(rows).to_have_count(2)
    checking = rows.filter(has_text="Checking")
    assert_accessible(pay_page)
    use = checking.get_by_role("button", name=re.compile("^Use for payments"))
    use.click()
    dialog = mandate_dialog(pay_page)
    expect(dialog).to_contain_text("I authorize Acme Budget to debit this account.")
    assert_accessible(pay_page)
    # Escape declines; focus goes back to the button that opened the dialog.
    pay_page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(use).to_be_focused()
    expect(checking).not_to_contain_text("Used for payments")
    pay_page.keyboard.press("Enter")
    mandate_dialog(pay_page).get_by_role("button", name="Accept").click()
    expect(checking).to_contain_text("Used for payments")
    expect(checking.get_by_role("button", name=re.compile("^Use for payments"))).to_have_count(0)
    events: list[dict[str, Any]] = pay_page.evaluate("window.__events")
    done = [e for e in events if e["type"] == "finconn-accounts-authorized"]
    assert len(done) == 1
    assert done[0]["detail"]["paymentMethod"]["status"] == "verified"
    assert done[0]["detail"]["account"]["id"] == checking.get_attribute("data-account")


def test_verify_private_state_is_not_api(pay_page: Page) -> None:
    pay_page.goto("/pay?verify=fcpm_none")
    expect(pay_page.locator("finconn-verify").get_by_role("status")).not_to_be_empty()
    own = pay_page.evaluate(
        """() => {
          const el = document.querySelector('finconn-verify');
          const proto = Object.getPrototypeOf(el);
          return [...Object.keys(el), ...Object.getOwnPropertyNames(proto)].sort();
        }"""
    )
    assert own == sorted(
        [
            "connectedCallback",
            "constructor",
            "endpoint",
            "load",
            "paymentMethod",
            "paymentMethodId",
            "verify",
        ]
    )
    # An unknown id is the server's 404 sentence, shown and announced.
    events: list[dict[str, Any]] = pay_page.evaluate("window.__events")
    assert [e["detail"]["error"]["code"] for e in events] == ["payment_method_not_found"]
