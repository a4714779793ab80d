"""``<finconn-verify>`` in Chromium: the two-amounts and the descriptor-code forms, the events
they emit, a mismatch with the attempts left, the checks made before sending, and what
axe-core finds in each state."""

from __future__ import annotations

import re
from typing import Any

import pytest
from axe_support import assert_accessible, axe_violations
from flask import Flask, render_template_string
from playwright.sync_api import Locator, Page, expect

from flask_finconn import Holder
from flask_finconn.models import PaymentMethod
from flask_finconn.state import get_state
from flask_finconn.testing import sandbox_of, save_bank_account

pytestmark = pytest.mark.browser

HOLDER = Holder("h1", email="h1@example.com", name="Jenny Rosen")
VERIFY_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Verify your bank account</title>
{{ finconn.scripts(nonce=nonce) }}
</head>
<body>
<main>
<h1>Verify your bank account</h1>
{{ finconn.verify(method) }}
</main>
</body>
</html>
"""
CSP = "default-src 'self'; script-src 'nonce-n1'; style-src 'self'; object-src 'none'"


@pytest.fixture
def verify_page(widget_app: Flask, widget_page: Page) -> Page:
    """``widget_page`` with ``/verify/<payment method id>`` (a strict CSP) recording every
    ``finconn-verify-*`` event in ``window.__events``."""

    @widget_app.get("/verify/<method>")
    def verify(method: str) -> Any:
        return render_template_string(VERIFY_PAGE, nonce="n1", method=method), {
            "Content-Security-Policy": CSP
        }

    widget_page.add_init_script(
        """
        for (const name of ["loaded", "verify", "verified", "error"]) {
          document.addEventListener("finconn-verify-" + name, (e) =>
            window.__events.push({type: e.type, detail: JSON.parse(JSON.stringify(e.detail))}));
        }
        """
    )
    return widget_page


def unverified(app: Flask, kind: str) -> str:
    """A bank account typed by hand, saved and waiting for microdeposits of ``kind``
    (``amounts`` or ``descriptor_code``); returns its payment method's id."""
    sandbox_of(app).payments.microdeposit_type = kind
    method = save_bank_account(app, HOLDER, verify=False)
    assert method.status == "requires_verification"
    return method.id


def open_verify(page: Page, app: Flask, kind: str) -> tuple[str, Locator]:
    """The page's ``<finconn-verify>`` for a new payment method waiting for ``kind``."""
    method = unverified(app, kind)
    page.goto(f"/verify/{method}")
    return method, page.locator("finconn-verify")


def events(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate("window.__events")
    return found


def kinds(page: Page) -> list[str]:
    return [e["type"].removeprefix("finconn-verify-") for e in events(page)]


def posts(page: Page) -> list[str]:
    """The URLs of the POSTs the page sends from now on."""
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if r.method == "POST" else None)
    return sent


def test_two_amounts_mismatch_attempts_left_then_verified(
    verify_page: Page, widget_app: Flask
) -> None:
    method, verify = open_verify(verify_page, widget_app, "amounts")
    expect(verify).to_contain_text("We sent two small deposits to your")
    expect(verify).to_contain_text("Enter both amounts to verify the account.")
    expect(verify).to_have_attribute("data-status", "requires_verification")
    loaded = events(verify_page)
    assert [e["type"] for e in loaded] == ["finconn-verify-loaded"]
    assert loaded[0]["detail"]["paymentMethod"]["id"] == method
    assert loaded[0]["detail"]["paymentMethod"]["verification"]["type"] == "amounts"
    first = verify_page.get_by_label("First deposit, in cents")
    second = verify_page.get_by_label("Second deposit, in cents")
    expect(verify.locator(".finconn-payments__prefix")).to_have_text(["$0.", "$0."])
    # Before the first try the form says how many tries there are (3 for amounts), as a
    # bound: Stripe's hosted page may have used some.
    expect(verify.locator(".finconn-payments__attempts")).to_have_text("At most 3 attempts left.")
    assert_accessible(verify_page)

    first.fill("10")
    second.fill("99")
    verify.get_by_role("button", name="Verify").click()
    status = verify.get_by_role("status")
    expect(status).to_have_text("Those values do not match the deposits. 2 attempts left.")
    # The sentence says how many attempts are left: the form does not say it twice.
    expect(verify.locator(".finconn-payments__attempts")).to_have_count(0)
    # The form is drawn again, empty, with focus back on its first field.
    expect(first).to_be_focused()
    expect(first).to_have_value("")
    expect(first).to_have_attribute("aria-invalid", "true")
    assert kinds(verify_page) == ["loaded", "verify", "error"]
    sent, error = events(verify_page)[1:]
    assert sent["detail"]["paymentMethod"]["id"] == method
    assert error["detail"] == {
        "error": {"code": "verification_failed", "message": status.text_content()}
    }
    assert_accessible(verify_page)

    first.fill("10")
    second.fill("98")
    second.press("Enter")  # submits the form, as the button does
    expect(status).to_have_text("Those values do not match the deposits. 1 attempt left.")
    # Coming back later, the form itself says how many are left.
    verify_page.reload()
    expect(verify.locator(".finconn-payments__attempts")).to_have_text("At most 1 attempt left.")
    expect(verify.locator(".finconn-payments__status")).to_be_empty()

    first.fill("32")
    second.fill("45")
    verify.get_by_role("button", name="Verify").click()
    expect(status).to_have_text("Bank account verified.")
    # The redrawn form drops the button that held the focus: the sentence saying the account
    # is verified takes it (out of the Tab order), not the page's <body>.
    verified = verify.get_by_text(re.compile("is verified and ready for payments\\.$"))
    expect(verified).to_be_focused()
    expect(verified).to_have_attribute("tabindex", "-1")
    expect(verify).to_have_attribute("data-status", "verified")
    expect(verify.get_by_role("textbox")).to_have_count(0)
    assert kinds(verify_page) == ["loaded", "verify", "verified"]
    done = events(verify_page)[-1]["detail"]["paymentMethod"]
    assert (done["id"], done["status"], done["mandate"]["status"]) == (method, "verified", "active")
    assert_accessible(verify_page)


def test_descriptor_code_mismatch_then_the_four_characters_after_sm(
    verify_page: Page, widget_app: Flask
) -> None:
    method, verify = open_verify(verify_page, widget_app, "descriptor_code")
    expect(verify).to_contain_text("We sent a deposit of $0.01 to your")
    expect(verify).to_contain_text("6-character code beginning with SM")
    code = verify_page.get_by_label("Code from the deposit (SM and 4 more characters)")
    expect(code).to_have_attribute("maxlength", "6")
    expect(verify.locator(".finconn-payments__prefix")).to_have_count(0)
    assert_accessible(verify_page)

    code.fill("SM99ZZ")
    verify.get_by_role("button", name="Verify").click()
    # A wrong code is told as a code, not as amounts.
    expect(verify.get_by_role("status")).to_have_text(
        "That code does not match the one on the deposit. 9 attempts left."
    )
    expect(code).to_be_focused()
    expect(code).to_have_attribute("aria-invalid", "true")
    assert kinds(verify_page) == ["loaded", "verify", "error"]
    assert events(verify_page)[-1]["detail"]["error"]["code"] == "verification_failed"
    assert_accessible(verify_page)

    # The code's last four characters, in lower case, are enough: SM is added, case ignored.
    code.fill("11aa")
    verify.get_by_role("button", name="Verify").click()
    expect(verify.get_by_role("status")).to_have_text("Bank account verified.")
    assert kinds(verify_page)[-1] == "verified"
    shown = verify_page.request.get(f"/finconn/payment-methods/{method}").json()
    assert shown["status"] == "verified"


def test_codes_tried_on_stripes_own_page_make_the_count_a_bound_until_stripe_answers(
    verify_page: Page, widget_app: Flask, live_server: str
) -> None:
    # Saved outside a request, the intent's page would be at the sandbox's API address.
    payments = sandbox_of(widget_app).payments
    payments.hosted_verification_base = f"{live_server}/finconn/sandbox/microdeposits"
    method = unverified(widget_app, "descriptor_code")
    with widget_app.app_context():
        state = get_state(widget_app)
        found = state.db.session.get(PaymentMethod, method)
        assert found is not None and found.setup_intent_id is not None
        intent = state.stripe.retrieve_setup_intent(found.setup_intent_id).to_dict()
    # The holder tries two wrong codes on the page Stripe's email links to: Stripe counts
    # them, and nothing it sends says so.
    verify_page.goto(intent["next_action"]["verify_with_microdeposits"]["hosted_verification_url"])
    for _ in range(2):
        verify_page.get_by_label("Code from the deposit description").fill("SM12AB")
        verify_page.get_by_role("button", name="Verify").click()
        expect(verify_page.get_by_role("alert")).to_be_visible()
    expect(verify_page.locator("#attempts")).to_have_text("8 verification attempts left.")

    verify_page.goto(f"/verify/{method}")
    verify = verify_page.locator("finconn-verify")
    # The form cannot know: it promises no exact number.
    expect(verify.locator(".finconn-payments__attempts")).to_have_text("At most 10 attempts left.")
    verify_page.get_by_label(re.compile("^Code from the deposit")).fill("SM12AB")
    verify.get_by_role("button", name="Verify").click()
    # Stripe's answer to a wrong code is exact, and it counts the hosted page's tries.
    expect(verify.get_by_role("status")).to_have_text(
        "That code does not match the one on the deposit. 7 attempts left."
    )
    verify_page.reload()
    expect(verify.locator(".finconn-payments__attempts")).to_have_text("At most 7 attempts left.")


@pytest.mark.parametrize(
    ("kind", "typed", "code", "sentence"),
    [
        ("amounts", ["32", ""], "invalid_amounts", "Enter both deposits in cents"),
        ("amounts", ["0", "45"], "invalid_amounts", "Enter both deposits in cents"),
        ("descriptor_code", ["SM1"], "invalid_code", "Enter the 6-character code"),
    ],
)
def test_what_cannot_match_is_refused_before_sending(
    verify_page: Page, widget_app: Flask, kind: str, typed: list[str], code: str, sentence: str
) -> None:
    _, verify = open_verify(verify_page, widget_app, kind)
    expect(verify.get_by_role("button", name="Verify")).to_be_visible()
    sent = posts(verify_page)
    for field, value in zip(verify.get_by_role("textbox").all(), typed, strict=True):
        field.fill(value)
    verify.get_by_role("button", name="Verify").click()
    expect(verify.get_by_role("status")).to_contain_text(sentence)
    assert kinds(verify_page) == ["loaded", "error"]
    assert events(verify_page)[-1]["detail"]["error"]["code"] == code
    expect(verify.get_by_role("textbox").first).to_be_focused()
    assert sent == []
    assert_accessible(verify_page)
    # Typing again clears the error's mark on the fields.
    verify.get_by_role("textbox").first.fill("1")
    expect(verify.get_by_role("textbox").first).not_to_have_attribute("aria-invalid", "true")


def test_a_cancelled_verify_event_sends_nothing(verify_page: Page, widget_app: Flask) -> None:
    _, verify = open_verify(verify_page, widget_app, "descriptor_code")
    verify_page.evaluate(
        """document.addEventListener("finconn-verify-verify", (e) => e.preventDefault())"""
    )
    sent = posts(verify_page)
    verify_page.get_by_label(re.compile("^Code from the deposit")).fill("SM11AA")
    verify.get_by_role("button", name="Verify").click()
    verify_page.wait_for_function("window.__events.length === 2")
    assert kinds(verify_page) == ["loaded", "verify"]
    assert sent == []
    expect(verify).to_have_attribute("aria-busy", "false")


def test_the_last_wrong_amounts_fail_the_account_for_good(
    verify_page: Page, widget_app: Flask
) -> None:
    _, verify = open_verify(verify_page, widget_app, "amounts")
    for attempt in range(3):
        verify_page.get_by_label("First deposit, in cents").fill("10")
        verify_page.get_by_label("Second deposit, in cents").fill(str(90 + attempt))
        verify.get_by_role("button", name="Verify").click()
        if attempt < 2:
            expect(verify.get_by_role("status")).to_have_text(
                f"Those values do not match the deposits. "
                f"{2 - attempt} attempt{'s' if attempt == 0 else ''} left."
            )
            expect(verify).to_have_attribute("aria-busy", "false")
    expect(verify).to_have_attribute("data-status", "verification_failed")
    expect(verify).to_contain_text("could not be verified. Set it up again")
    expect(verify.get_by_role("textbox")).to_have_count(0)
    # No field is left to take the focus back: the sentence saying where things stand does.
    expect(verify.get_by_text(re.compile("could not be verified"))).to_be_focused()
    expect(verify.get_by_role("status")).to_have_text(
        "Too many wrong attempts; save the bank account again."
    )
    assert kinds(verify_page)[-1] == "error"
    assert_accessible(verify_page)


def test_axe_finds_a_field_with_no_name(verify_page: Page, widget_app: Flask) -> None:
    """The check above can fail: a field with neither label nor placeholder is found."""
    _, verify = open_verify(verify_page, widget_app, "descriptor_code")
    expect(verify.get_by_role("textbox")).to_have_count(1)
    assert axe_violations(verify_page, "finconn-verify") == []
    verify.locator("label").evaluate("(label) => label.remove()")
    verify.get_by_role("textbox").evaluate("(input) => input.removeAttribute('placeholder')")
    assert [v.split(" ")[0] for v in axe_violations(verify_page, "finconn-verify")] == ["label"]
