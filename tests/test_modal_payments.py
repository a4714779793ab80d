"""The Stripe.js stand-in's us_bank_account methods, the bank modal's manual entry and the
hosted microdeposit verification page, driven in Chromium."""

from __future__ import annotations

import re
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Page, expect

from flask_finconn.sandbox import Sandbox
from flask_finconn.testing import sandbox_of

pytestmark = pytest.mark.browser

BILLING = {"name": "Jenny Rosen", "email": "jenny@example.com"}
PARAMS = {
    "payment_method_type": "us_bank_account",
    "payment_method_data": {"billing_details": BILLING},
}


def sandbox(app: Flask) -> Sandbox:
    return sandbox_of(app)


def setup_intent(app: Flask) -> dict[str, Any]:
    sb = sandbox(app)
    customer = sb.create_customer({"name": "Jenny Rosen"})["id"]
    return sb.payments.create_setup_intent(
        {"payment_method_types": ["us_bank_account"], "customer": customer}
    )


def payment_intent(app: Flask) -> dict[str, Any]:
    return sandbox(app).payments.create_payment_intent(
        {"amount": "1099", "currency": "usd", "payment_method_types": ["us_bank_account"]}
    )


def load_stripe(page: Page) -> None:
    page.goto("/?button=0")
    page.add_script_tag(url="/finconn/sandbox/stripe.js")
    page.wait_for_function("window.FinConnSandbox")


def start(page: Page, method: str, *args: Any) -> None:
    """Call ``Stripe(pk)[method](...args)``; its outcome lands in ``window.__result``."""
    page.evaluate(
        """([method, args]) => {
          window.__result = null;
          const stripe = window.FinConnSandbox.Stripe("pk_test_sandbox");
          try {
            stripe[method](...args).then(
              (r) => { window.__result = r; },
              (e) => { window.__result = {thrown: e.name, message: e.message}; });
          } catch (e) {
            window.__result = {thrown: e.name, message: e.message};
          }
        }""",
        [method, list(args)],
    )


def result(page: Page) -> dict[str, Any]:
    page.wait_for_function("window.__result !== null", timeout=10_000)
    return page.evaluate("window.__result")  # type: ignore[no-any-return]


def call(page: Page, method: str, *args: Any) -> dict[str, Any]:
    start(page, method, *args)
    return result(page)


def step(page: Page, name: str) -> None:
    expect(page.locator(f".dialog[data-step='{name}']")).to_be_visible()


def to_bank_search(page: Page) -> None:
    step(page, "consent")
    page.get_by_role("button", name="Agree and continue").click()
    step(page, "institutions")


def to_manual_entry(page: Page) -> None:
    to_bank_search(page)
    page.get_by_role("button", name="Enter bank details manually").click()
    step(page, "manual")


def enter(page: Page, routing: str, number: str, again: str | None = None) -> None:
    page.get_by_label("Routing number").fill(routing)
    page.get_by_label("Account number", exact=True).fill(number)
    page.get_by_label("Confirm account number").fill(number if again is None else again)
    page.get_by_role("button", name="Continue").click()


def test_collect_for_setup_links_one_checking_or_savings_account(
    widget_page: Page, widget_app: Flask
) -> None:
    si = setup_intent(widget_app)
    load_stripe(widget_page)
    start(
        widget_page,
        "collectBankAccountForSetup",
        {"clientSecret": si["client_secret"], "params": PARAMS},
    )
    to_bank_search(widget_page)
    widget_page.get_by_role("searchbox").fill("bank_nonoauth")
    widget_page.locator("[data-institution='bank_nonoauth']").click()
    widget_page.get_by_label("Username").fill("jenny")
    widget_page.get_by_label("Password").fill("x")
    widget_page.get_by_role("button", name="Log in", exact=True).click()
    step(widget_page, "accounts")
    expect(widget_page.get_by_role("radio", name="Sample Credit Card")).to_be_disabled()
    expect(widget_page.get_by_role("radio", name="Sample Checking Account")).to_be_checked()
    widget_page.get_by_role("radio", name="Sample Savings Account").check()
    widget_page.get_by_role("button", name="Link account").click()
    step(widget_page, "success")
    expect(widget_page.get_by_role("dialog")).to_contain_text("Sample Savings Account")
    widget_page.get_by_role("button", name="Done").click()

    collected = result(widget_page)
    assert list(collected) == ["setupIntent"]
    intent = collected["setupIntent"]
    assert (intent["id"], intent["status"]) == (si["id"], "requires_confirmation")
    pm = sandbox(widget_app).payments.payment_method(intent["payment_method"])
    assert pm["us_bank_account"]["account_type"] == "savings"
    assert pm["us_bank_account"]["financial_connections_account"].startswith("fca_")
    assert pm["billing_details"]["name"] == "Jenny Rosen"

    confirmed = call(widget_page, "confirmUsBankAccountSetup", si["client_secret"])
    assert confirmed["setupIntent"]["status"] == "succeeded"
    assert confirmed["setupIntent"]["mandate"].startswith("mandate_")
    mandate = sandbox(widget_app).payments.mandate(confirmed["setupIntent"]["mandate"])
    assert mandate["customer_acceptance"]["online"]["user_agent"].startswith("Mozilla/")


@pytest.mark.parametrize(
    ("where", "how"), [("consent", "Close"), ("institutions", "Escape"), ("manual", "Close")]
)
def test_closing_the_modal_resolves_the_intent_unchanged(
    widget_page: Page, widget_app: Flask, where: str, how: str
) -> None:
    pi = payment_intent(widget_app)
    load_stripe(widget_page)
    start(
        widget_page,
        "collectBankAccountForPayment",
        {"clientSecret": pi["client_secret"], "params": PARAMS},
    )
    if where == "institutions":
        to_bank_search(widget_page)
    elif where == "manual":
        to_manual_entry(widget_page)
    else:
        step(widget_page, "consent")
    if how == "Escape":
        widget_page.keyboard.press("Escape")
    else:
        widget_page.get_by_role("button", name="Close").click()

    collected = result(widget_page)
    assert list(collected) == ["paymentIntent"]
    assert collected["paymentIntent"]["status"] == "requires_payment_method"
    assert collected["paymentIntent"]["payment_method"] is None
    expect(widget_page.locator("[data-finconn-sandbox]")).to_have_count(0)


@pytest.mark.parametrize(
    ("routing", "number", "again", "errors"),
    [
        (
            "",
            "",
            "",
            [
                "Enter the routing number.",
                "Enter the account number.",
                "Enter the account number again.",
            ],
        ),
        ("11000000", "000123456789", None, ["A routing number has 9 digits."]),
        ("110000001", "000123456789", None, ["This routing number is not valid."]),
        ("110000000", "123", None, ["An account number has 4 to 17 digits."]),
        ("110000000", "000123456789", "000123456788", ["The account numbers don't match."]),
    ],
)
def test_manual_entry_explains_what_is_wrong(
    widget_page: Page,
    widget_app: Flask,
    routing: str,
    number: str,
    again: str | None,
    errors: list[str],
) -> None:
    pi = payment_intent(widget_app)
    load_stripe(widget_page)
    start(
        widget_page,
        "collectBankAccountForPayment",
        {"clientSecret": pi["client_secret"], "params": PARAMS},
    )
    to_manual_entry(widget_page)
    enter(widget_page, routing, number, again)

    shown = widget_page.locator(".field-error:not([hidden])")
    expect(shown).to_have_count(len(errors))
    for locator, text in zip(shown.all(), errors, strict=True):
        expect(locator).to_contain_text(text)
    summary = f"Check the {len(errors)} highlighted fields" if len(errors) > 1 else errors[0]
    expect(widget_page.get_by_role("alert")).to_contain_text(summary)
    invalid = widget_page.locator("input[aria-invalid='true']")
    expect(invalid).to_have_count(len(errors))
    # The first wrong field has the focus and its message as its description.
    expect(invalid.first).to_be_focused()
    expect(invalid.first).to_have_accessible_description(re.compile(re.escape(errors[0])))
    assert widget_page.evaluate("window.__result") is None
    assert (
        sandbox(widget_app).payments.payment_intent(pi["id"])["status"] == "requires_payment_method"
    )


def test_manual_entry_then_confirm_needs_microdeposits(
    widget_page: Page, widget_app: Flask
) -> None:
    pi = payment_intent(widget_app)
    secret = pi["client_secret"]
    load_stripe(widget_page)
    start(
        widget_page,
        "collectBankAccountForPayment",
        {"clientSecret": secret, "params": PARAMS, "expand": ["payment_method"]},
    )
    to_manual_entry(widget_page)
    widget_page.get_by_role("radio", name="Company").check()
    enter(widget_page, "110 000 000", "000123456789")
    step(widget_page, "success")
    expect(widget_page.get_by_role("dialog").get_by_role("heading")).to_have_text(
        "Bank details saved"
    )
    expect(widget_page.get_by_role("dialog")).to_contain_text("•••• 6789")
    widget_page.get_by_role("button", name="Done").click()

    intent = result(widget_page)["paymentIntent"]
    assert intent["status"] == "requires_confirmation"
    bank = intent["payment_method"]["us_bank_account"]
    assert bank["financial_connections_account"] is None
    assert (bank["routing_number"], bank["last4"], bank["account_holder_type"]) == (
        "110000000",
        "6789",
        "company",
    )

    confirmed = call(widget_page, "confirmUsBankAccountPayment", secret)["paymentIntent"]
    assert confirmed["status"] == "requires_action"
    assert confirmed["next_action"]["type"] == "verify_with_microdeposits"

    wrong = call(widget_page, "verifyMicrodepositsForPayment", secret, {"amounts": [1, 2]})
    assert list(wrong) == ["error"]
    assert wrong["error"]["code"] == "payment_method_microdeposit_verification_amounts_mismatch"
    assert "2 verification attempts remaining" in wrong["error"]["message"]
    assert wrong["error"]["payment_intent"]["status"] == "requires_action"

    right = call(
        widget_page, "verifyMicrodepositsForPayment", secret, {"descriptor_code": "SM11AA"}
    )
    assert right["paymentIntent"]["status"] == "processing"


def test_confirm_setup_with_typed_bank_details_and_verify(
    widget_page: Page, widget_app: Flask
) -> None:
    si = setup_intent(widget_app)
    secret = si["client_secret"]
    load_stripe(widget_page)
    data = {
        "payment_method": {
            "us_bank_account": {
                "routing_number": "110000000",
                "account_number": "000123456789",
                "account_holder_type": "individual",
            },
            "billing_details": BILLING,
        }
    }
    confirmed = call(widget_page, "confirmUsBankAccountSetup", secret, data)["setupIntent"]
    assert confirmed["status"] == "requires_action"
    verified = call(widget_page, "verifyMicrodepositsForSetup", secret, {"amounts": [32, 45]})
    assert verified["setupIntent"]["status"] == "succeeded"
    again = call(widget_page, "verifyMicrodepositsForSetup", secret, {"amounts": [32, 45]})
    assert again["error"]["code"] == "setup_intent_unexpected_state"


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        (
            "collectBankAccountForSetup",
            ["pi"],
            "clientSecret should be the client_secret of a SetupIntent",
        ),
        ("collectBankAccountForPayment", [{"params": PARAMS}], "clientSecret should be"),
        (
            "collectBankAccountForPayment",
            ["pi", {"payment_method_type": "card"}],
            'should be "us_bank_account"',
        ),
        (
            "collectBankAccountForPayment",
            ["pi", {"payment_method_type": "us_bank_account"}],
            "billing_details.name",
        ),
        (
            "collectBankAccountForPayment",
            ["pi", PARAMS, "clientsecret"],
            "unrecognized key clientsecret",
        ),
        (
            "verifyMicrodepositsForPayment",
            ["pi", {"amounts": [32, 45], "descriptor_code": "SM11AA"}],
            "exactly one",
        ),
        ("verifyMicrodepositsForPayment", ["pi", {"amounts": [32]}], "two integers"),
        ("confirmUsBankAccountPayment", ["seti"], "client_secret of a PaymentIntent"),
    ],
)
def test_wrong_arguments_throw_an_integration_error(
    widget_page: Page, widget_app: Flask, method: str, args: list[Any], message: str
) -> None:
    secrets = {
        "pi": payment_intent(widget_app)["client_secret"],
        "seti": setup_intent(widget_app)["client_secret"],
    }
    load_stripe(widget_page)
    if method.startswith("collect") and args and isinstance(args[0], str):
        options: dict[str, Any] = {"clientSecret": secrets[args[0]]}
        if len(args) > 1:
            options["params"] = args[1]
        if len(args) > 2:
            options[args[2]] = True
        args = [options]
    elif args and isinstance(args[0], str):
        args = [secrets[args[0]], *args[1:]]
    outcome = call(widget_page, method, *args)
    assert outcome["thrown"] == "IntegrationError"
    assert message in outcome["message"]
    expect(widget_page.locator("[data-finconn-sandbox]")).to_have_count(0)


def test_collect_on_a_finished_intent_resolves_an_error(
    widget_page: Page, widget_app: Flask
) -> None:
    si = setup_intent(widget_app)
    sandbox(widget_app).payments.cancel_setup_intent(si["id"], {})
    load_stripe(widget_page)
    outcome = call(
        widget_page,
        "collectBankAccountForSetup",
        {"clientSecret": si["client_secret"], "params": PARAMS},
    )
    assert outcome["error"]["code"] == "setup_intent_unexpected_state"


def test_manual_entry_by_keyboard_only(widget_page: Page, widget_app: Flask) -> None:
    si = setup_intent(widget_app)
    load_stripe(widget_page)
    start(
        widget_page,
        "collectBankAccountForSetup",
        {"clientSecret": si["client_secret"], "params": PARAMS},
    )
    keys = widget_page.keyboard
    step(widget_page, "consent")
    keys.press("Enter")  # "Agree and continue" has the focus
    step(widget_page, "institutions")
    expect(widget_page.get_by_role("searchbox")).to_be_focused()
    manual = widget_page.get_by_role("button", name="Enter bank details manually")
    for _ in range(12):
        if manual.evaluate("b => b.getRootNode().activeElement === b"):
            break
        keys.press("Tab")
    expect(manual).to_be_focused()
    keys.press("Enter")
    step(widget_page, "manual")
    expect(widget_page.get_by_label("Routing number")).to_be_focused()
    keys.type("110000000")
    keys.press("Tab")
    keys.type("000123456789")
    keys.press("Tab")
    keys.type("000123456789")
    keys.press("Enter")
    step(widget_page, "success")
    expect(widget_page.get_by_role("button", name="Done")).to_be_focused()
    keys.press("Enter")
    assert result(widget_page)["setupIntent"]["status"] == "requires_confirmation"


def verification_url(page: Page, app: Flask) -> str:
    """A SetupIntent waiting for microdeposits, confirmed from the page; its hosted URL."""
    si = setup_intent(app)
    load_stripe(page)
    data = {
        "payment_method": {
            "us_bank_account": {"routing_number": "110000000", "account_number": "000123456789"},
            "billing_details": BILLING,
        }
    }
    intent = call(page, "confirmUsBankAccountSetup", si["client_secret"], data)["setupIntent"]
    url: str = intent["next_action"]["verify_with_microdeposits"]["hosted_verification_url"]
    return url


def test_hosted_page_verifies_the_descriptor_code(
    widget_page: Page, widget_app: Flask, live_server: str
) -> None:
    url = verification_url(widget_page, widget_app)
    assert url.startswith(f"{live_server}/finconn/sandbox/microdeposits/sacs_test_")
    widget_page.goto(url)
    expect(widget_page.get_by_role("heading", level=1)).to_have_text("Verify your bank account")
    expect(widget_page.locator("#attempts")).to_have_text("10 verification attempts left.")
    code = widget_page.get_by_label("Code from the deposit description")
    code.fill("SM12AB")
    widget_page.get_by_role("button", name="Verify").click()
    expect(widget_page.get_by_role("alert")).to_contain_text("9 verification attempts remaining")
    expect(widget_page.locator("#attempts")).to_have_text("9 verification attempts left.")
    # The field takes the focus and is described by the result, so a screen reader reads it.
    code = widget_page.get_by_label("Code from the deposit description")
    expect(code).to_be_focused()
    expect(code).to_have_accessible_description(re.compile("9 verification attempts remaining"))

    code = widget_page.get_by_label("Code from the deposit description")
    code.fill("nope")
    widget_page.get_by_role("button", name="Verify").click()
    expect(code).to_have_attribute("aria-invalid", "true")
    expect(code).to_be_focused()
    expect(widget_page.locator("#attempts")).to_have_text("9 verification attempts left.")

    code.fill("sm11aa")
    widget_page.get_by_role("button", name="Verify").click()
    expect(widget_page.get_by_role("heading", level=1)).to_have_text("Bank account verified")
    token = url.rsplit("/", 1)[-1]
    assert sandbox(widget_app).payments.intent_for_verification(token)["status"] == "succeeded"


def test_hosted_page_takes_amounts_and_counts_attempts(
    widget_page: Page, widget_app: Flask
) -> None:
    url = verification_url(widget_page, widget_app)
    widget_page.goto(url)
    widget_page.get_by_role("link", name="I received two deposits instead").click()
    expect(widget_page.locator("#attempts")).to_have_text("3 verification attempts left.")
    widget_page.get_by_label("First amount (cents)").fill("12")
    widget_page.get_by_label("Second amount (cents)").fill("34")
    widget_page.keyboard.press("Enter")
    expect(widget_page.get_by_role("alert")).to_contain_text("2 verification attempts remaining")
    expect(widget_page.locator("#attempts")).to_have_text("2 verification attempts left.")
    widget_page.get_by_label("First amount (cents)").fill("10")
    widget_page.get_by_label("Second amount (cents)").fill("11")
    widget_page.get_by_role("button", name="Verify").click()
    expect(widget_page.get_by_role("heading", level=1)).to_have_text("Verification unavailable")
    expect(widget_page.get_by_role("alert")).to_contain_text(
        "exceeded the number of allowed verification attempts"
    )


def test_hosted_page_with_an_unknown_token(widget_page: Page) -> None:
    response = widget_page.goto("/finconn/sandbox/microdeposits/sacs_test_nothing")
    assert response is not None and response.status == 404
    expect(widget_page.get_by_role("heading", level=1)).to_have_text("This link is not valid")


def test_attach_takes_only_an_account_linked_for_the_intents_customer(widget_app: Flask) -> None:
    client = widget_app.test_client()
    sb = sandbox(widget_app)
    mine, theirs = setup_intent(widget_app), setup_intent(widget_app)
    session = client.post(
        "/finconn/sandbox/api/intent/collect", json={"client_secret": theirs["client_secret"]}
    ).get_json()
    sb.login(session["client_secret"], "bank_nonoauth", username="jenny", password="x")
    done = sb.complete_session_with(session["client_secret"], "bank_nonoauth", ["checking"])
    account = done["accounts"]["data"][0]["id"]

    def attach(intent: dict[str, Any]) -> Any:
        body = {
            "client_secret": intent["client_secret"],
            "session": session["id"],
            "account": account,
            "billing_details": BILLING,
        }
        return client.post("/finconn/sandbox/api/intent/attach", json=body)

    refused = attach(mine)
    assert refused.status_code == 400
    assert "not linked in this session" in refused.get_json()["error"]["message"]
    assert sb.payments.setup_intent(mine["id"])["status"] == "requires_payment_method"
    assert attach(theirs).get_json()["status"] == "requires_confirmation"
