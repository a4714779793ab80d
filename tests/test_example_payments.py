"""Pocketbook's payments: the pay form over HTTP, and each way to pay end to end in Chromium."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, cast

import pytest
import sqlalchemy as sa
from axe_support import assert_accessible
from flask import Flask
from flask.testing import FlaskClient
from playwright.sync_api import BrowserContext, Page, expect

from example_app.formatting import event_label
from example_app.models import User, db
from flask_finconn import Holder, get_state
from flask_finconn.models import Account, Payment, PaymentMethod
from flask_finconn.services.payment_methods import save_account
from flask_finconn.testing import link_accounts, sandbox_of, save_bank_account

if TYPE_CHECKING:
    from playwright._impl._api_structures import FloatRect

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
KEY = re.compile(r'name="idempotency_key" value="([^"]+)"')


def sign_in(client: FlaskClient, email: str) -> str:
    """Sign in through the form; returns the user's holder id."""
    token = CSRF.search(client.get("/signin").get_data(as_text=True))
    assert token is not None
    response = client.post("/signin", data={"email": email, "csrf_token": token.group(1)})
    assert response.status_code == 302
    with client.application.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.email == email))
    return str(user_id)


def saved_checking(app: Flask, holder_id: str) -> str:
    """Link the Test (Non-OAuth) bank for the holder and save its checking account for
    payments, with fresh balances; returns the payment method's id."""
    accounts = link_accounts(
        app,
        Holder(holder_id),
        institution="test_nonoauth",
        permissions=["balances", "payment_method", "transactions"],
    )
    sandbox = sandbox_of(app)
    sandbox.finish_refreshes(status="succeeded")
    sandbox.deliver_events(retry_now=True)
    checking = next(a for a in accounts if a.subcategory == "checking")
    with app.app_context():
        method = save_account(
            get_state(app), Holder(holder_id), checking.id, ip_address="127.0.0.1", user_agent="t"
        )
        return method.id


def pay_form(client: FlaskClient) -> dict[str, str]:
    html = client.get("/payments/").get_data(as_text=True)
    csrf, key = CSRF.search(html), KEY.search(html)
    assert csrf is not None and key is not None
    return {"csrf_token": csrf.group(1), "idempotency_key": key.group(1)}


def test_a_double_submit_of_one_form_charges_once(make_pocketbook: Callable[..., Flask]) -> None:
    app = make_pocketbook()
    client = app.test_client()
    holder_id = sign_in(client, "ada@example.com")
    method_id = saved_checking(app, holder_id)
    form = {**pay_form(client), "what": "plan", "payment_method": method_id}
    first = client.post("/payments/pay", data=form)
    second = client.post("/payments/pay", data=form)
    assert first.status_code == second.status_code == 302
    assert first.headers["Location"] == second.headers["Location"]
    with app.app_context():
        rows = db.session.scalars(sa.select(Payment)).all()
    assert [(p.amount, p.description, p.status) for p in rows] == [
        (499, "Pocketbook Plus, monthly plan", "processing")
    ]
    # Each render is a new key: paying again on purpose is a second payment.
    again = {**form, **pay_form(client)}
    assert again["idempotency_key"] != form["idempotency_key"]
    assert client.post("/payments/pay", data=again).status_code == 302
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 2


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ({"what": "goal", "goal": "Holiday", "amount": "abc"}, "Enter the amount to transfer"),
        ({"what": "goal", "goal": "Holiday", "amount": "0.50"}, "Enter an amount from $1.00"),
        ({"what": "goal", "goal": "Yacht", "amount": "5"}, "Choose the savings goal"),
        ({"what": "goal", "goal": "Holiday", "amount": "99999999"}, "Enter an amount from $1.00"),
    ],
)
def test_the_pay_form_says_what_to_fix(
    make_pocketbook: Callable[..., Flask], fields: dict[str, str], sentence: str
) -> None:
    app = make_pocketbook()
    client = app.test_client()
    holder_id = sign_in(client, "ada@example.com")
    method_id = saved_checking(app, holder_id)
    form = {**pay_form(client), "payment_method": method_id, **fields}
    response = client.post("/payments/pay", data=form)
    html = response.get_data(as_text=True)
    assert response.status_code in (400, 409)
    assert sentence in html
    # The same key comes back, so a corrected submit is still one payment.
    assert f'value="{form["idempotency_key"]}"' in html
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 0


def test_a_debit_above_the_balance_is_refused_with_the_balance(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook()
    client = app.test_client()
    method_id = saved_checking(app, sign_in(client, "ada@example.com"))
    with app.app_context():
        method = db.session.get(PaymentMethod, method_id)
        assert method is not None
        account = db.session.get(Account, method.account_id)
        assert account is not None
        balance = account.latest_balance
        assert balance is not None
        available = balance.current if balance.available is None else balance.available
    over = available + 100
    form = {**pay_form(client), "payment_method": method_id, "what": "goal", "goal": "Holiday"}
    form["amount"] = f"{over // 100}.{over % 100:02d}"
    response = client.post("/payments/pay", data=form)
    assert response.status_code == 409
    assert re.search(
        r"Your available balance \(\$[\d,]+\.\d\d\) is less than \$[\d,]+\.\d\d, so nothing "
        r"was charged\.",
        response.get_data(as_text=True),
    )
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 0


def test_an_account_the_bank_closed_is_no_longer_offered(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook()
    client = app.test_client()
    holder_id = sign_in(client, "ada@example.com")
    linked = saved_checking(app, holder_id)
    closed = save_bank_account(app, Holder(holder_id), "000111111113")
    form = {**pay_form(client), "what": "plan", "payment_method": closed.id}
    assert client.post("/payments/pay", data=form).status_code == 302
    sandbox = sandbox_of(app)
    sandbox.advance_time(3600)
    sandbox.deliver_events(retry_now=True)

    html = client.get("/payments/").get_data(as_text=True)
    row = re.search(rf'<li class="method" data-method="{closed.id}">.*?</li>', html, re.S)
    assert row is not None
    assert "Can't be used" in row.group(0) and "Ready" not in row.group(0)
    options = re.findall(r'<option value="(fcpm_[^"]+)"', html)
    assert options == [linked]
    # The linked account goes by its own name, not the bank's name in capitals.
    assert re.search(r"Test Checking\s*<span[^>]*>•••• 6789</span>", html)
    assert "Payment started." not in html  # the payment has settled (failed)
    refused = client.post("/payments/pay", data={**pay_form(client), **form})
    assert refused.status_code == 400
    assert "Choose the bank account to pay from." in refused.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Payment)) == 1


def test_another_users_payment_method_cannot_be_charged(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook()
    ada, bob = app.test_client(), app.test_client()
    method_id = saved_checking(app, sign_in(ada, "ada@example.com"))
    saved_checking(app, sign_in(bob, "bob@example.com"))
    form = {**pay_form(bob), "what": "plan", "payment_method": method_id}
    response = bob.post("/payments/pay", data=form)
    assert response.status_code == 400
    assert "Choose the bank account to pay from." in response.get_data(as_text=True)
    assert bob.get(f"/payments/methods/{method_id}/verify").status_code == 404


def event_rows(client: FlaskClient) -> list[str]:
    """The Events page's rows, each as its cells' text joined by " | "."""
    html = client.get("/events").get_data(as_text=True)
    if "<tbody>" not in html:
        return []
    rows = re.findall(r"<tr>(.*?)</tr>", html.split("<tbody>")[1], re.S)
    return [
        " | ".join(
            " ".join(re.sub(r"<[^>]+>", " ", cell.replace("<wbr>", "")).split())
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        )
        for row in rows
    ]


def test_the_events_page_shows_payment_events_with_what_they_are_about(
    make_pocketbook: Callable[..., Flask],
) -> None:
    app = make_pocketbook()
    ada, bob = app.test_client(), app.test_client()
    method_id = saved_checking(app, sign_in(ada, "ada@example.com"))
    form = {**pay_form(ada), "what": "plan", "payment_method": method_id}
    assert ada.post("/payments/pay", data=form).status_code == 302
    sandbox = sandbox_of(app)
    sandbox.advance_time(3600)  # the bank settles the debit
    sandbox.deliver_events(retry_now=True)

    rows = event_rows(ada)
    plan = "Pocketbook Plus, monthly plan $4.99"
    # What happened, to what, when: each kind of payment event in words, not only its type.
    for label, about in [
        ("Bank account saved", "Test Checking •••• 6789"),
        ("Bank account set up for payments", "Test Checking •••• 6789"),
        ("Payment processing", plan),
        ("Debit settled", plan),
        ("Payment succeeded", plan),
    ]:
        found = [row for row in rows if f"| {label} " in row and f"| {about} |" in row]
        assert found, f"No {label!r} row about {about!r} in {rows}"
        assert re.match(r"\w{3} \d+, \d{4}, \d+:\d\d:\d\d [AP]M UTC \|", found[0]), found[0]
        assert "Processed" in found[0]
    assert any("| Account linked " in row for row in rows)  # account events are still there
    succeeded = next(row for row in rows if "| Payment succeeded " in row)
    assert "payment_intent.succeeded" in succeeded

    # Another user's payments are not theirs to see.
    sign_in(bob, "bob@example.com")
    assert event_rows(bob) == []


def test_the_events_page_of_a_user_with_many_payments_loads_only_the_ones_it_shows(
    make_pocketbook: Callable[..., Flask],
) -> None:
    """The page matches payment events to the user's payments inside the database, not
    through a list of every id they have: with more debits than one statement takes
    parameters it still lists the user's events, and nobody else's."""
    app = make_pocketbook()
    ada, bob = app.test_client(), app.test_client()
    holder_id = sign_in(ada, "ada@example.com")
    method_id = saved_checking(app, holder_id)
    form = {**pay_form(ada), "what": "plan", "payment_method": method_id}
    assert ada.post("/payments/pay", data=form).status_code == 302
    sandbox_of(app).deliver_events(retry_now=True)
    with app.app_context():
        old = [
            {
                "holder_id": holder_id,
                "payment_method_id": method_id,
                "stripe_id": f"pi_earlier{n}",
                "amount": 100,
                "currency": "usd",
                "description": "An earlier debit",
                "status": "succeeded",
                "idempotency_key": f"earlier-{n}",
            }
            for n in range(40_000)
        ]
        db.session.execute(sa.insert(Payment), old)
        db.session.commit()

    rows = event_rows(ada)
    plan = "Pocketbook Plus, monthly plan $4.99"
    assert any("| Payment processing " in row and f"| {plan} |" in row for row in rows), rows
    sign_in(bob, "bob@example.com")
    assert event_rows(bob) == []


def test_a_mandate_event_says_what_the_debit_authorization_became() -> None:
    def mandate(status: str) -> dict[str, Any]:
        return {"data": {"object": {"object": "mandate", "status": status}}}

    assert event_label("mandate.updated", mandate("inactive")) == "Debit authorization ended"
    assert event_label("mandate.updated", mandate("active")) == "Debit authorization active"
    assert event_label("mandate.updated") == "Debit authorization updated"  # payload erased


# -- in Chromium ------------------------------------------------------------------------------


@pytest.fixture
def new_user(chromium: Any, pocketbook_server: tuple[Flask, str]) -> Iterator[Any]:
    """Fresh browser contexts; page errors, CSP refusals and 5xx answers fail the test."""
    _, base = pocketbook_server
    contexts: list[BrowserContext] = []
    errors: list[str] = []

    def open_page(width: int = 1200) -> Page:
        context = chromium.new_context(base_url=base, viewport={"width": width, "height": 800})
        contexts.append(context)
        page: Page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on(
            "console",
            lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
        )
        page.on(
            "response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 500 else None
        )
        return page

    yield open_page
    for context in contexts:
        context.close()
    assert errors == [], f"Errors in the browser: {errors}"


def browser_sign_in(page: Page, email: str) -> None:
    page.goto("/signin")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Your accounts")).to_be_visible()


def accept_mandate(page: Page, account: str = "your bank account") -> None:
    dialog = page.get_by_role("dialog", name=f"Authorize debits from {account}")
    expect(dialog).to_contain_text("Pocketbook")
    dialog.get_by_role("button", name="Accept").click()


def settle(app: Flask) -> None:
    """Let the sandbox's bank settle every pending debit now."""
    sandbox_of(app).advance_time(3600)


def pay_plan(page: Page) -> Any:
    page.get_by_role("radio", name=re.compile("Pocketbook Plus")).check()
    # The goal and amount belong to a transfer only.
    expect(page.get_by_label("Amount, in dollars")).to_be_hidden()
    page.get_by_role("button", name="Pay", exact=True).click()
    expect(page.get_by_text("Payment started.")).to_be_visible()
    row = page.locator("#payment-list .payment").first
    expect(row).to_contain_text("Pocketbook Plus, monthly plan")
    return row


def test_link_use_for_payments_pay_and_settle(
    new_user: Any, pocketbook_server: tuple[Flask, str]
) -> None:
    app, _ = pocketbook_server
    page = new_user()
    browser_sign_in(page, "pay-linked@example.com")
    page.get_by_role("button", name="Link a bank account").click()
    page.get_by_role("button", name="Agree and continue").click()
    page.locator("[data-institution='test_nonoauth']").click()
    page.get_by_label("Username").fill("jenny")
    page.get_by_label("Password").fill("pw")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("button", name="Link accounts").click()
    page.get_by_role("button", name="Done").click()
    expect(page.locator(".account-card")).to_have_count(2)

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Payments").click()
    expect(page.get_by_role("heading", name="Payments", exact=True)).to_be_visible()
    expect(page.get_by_text("No bank account is set up for payments yet.")).to_be_visible()
    page.get_by_role("button", name="Use for payments Test Checking").click()
    accept_mandate(page, "Test Checking •••• 6789")
    method = page.locator(".methods .method[data-method]")
    expect(method).to_contain_text("Ready")
    # The balance read at link time finishes now, not after a delay a loaded box can outrun
    # (the pay form checks the balance and asks to retry while it is still being refreshed).
    sandbox = sandbox_of(app)
    sandbox.finish_refreshes(status="succeeded")
    sandbox.deliver_events(retry_now=True)

    row = pay_plan(page)
    expect(row.locator(".badge")).to_have_text("Processing")
    expect(row).to_contain_text("from Test Checking •••• 6789")
    settle(app)
    expect(row.locator(".badge")).to_have_text("Paid", timeout=20_000)
    expect(page.locator("#announcer")).to_have_text("Pocketbook Plus, monthly plan: Paid.")
    expect(page.get_by_text("Payment started.")).to_have_count(0)


def test_manual_entry_microdeposits_then_pay(
    new_user: Any, pocketbook_server: tuple[Flask, str]
) -> None:
    app, _ = pocketbook_server
    page = new_user(390)
    browser_sign_in(page, "pay-manual@example.com")
    page.goto("/payments/")
    page.get_by_role("button", name="Add a bank account").click()
    page.get_by_role("button", name="Agree and continue").click()
    page.get_by_role("button", name="Enter bank details manually").click()
    page.get_by_label("Routing number").fill("110000000")
    page.get_by_label("Account number", exact=True).fill("000123456789")
    page.get_by_label("Confirm account number").fill("000123456789")
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Done").click()
    accept_mandate(page)

    expect(page.get_by_role("heading", name="Verify your bank account")).to_be_visible()
    method_id = page.url.split("/methods/")[1].split("/")[0]
    verify = page.locator("finconn-verify")
    if page.get_by_label("First deposit, in cents").count():
        page.get_by_label("First deposit, in cents").fill("32")
        page.get_by_label("Second deposit, in cents").fill("45")
    else:
        page.get_by_label(re.compile("^Code from the deposit")).fill("SM11AA")
    verify.get_by_role("button", name="Verify").click()
    expect(verify.get_by_role("status")).to_have_text("Bank account verified.")
    expect(page.get_by_text("In the sandbox,")).to_have_count(0)
    onward = page.get_by_role("link", name="Pay from this account")
    expect(onward).to_be_focused()

    onward.click()
    expect(page.locator(".methods .method[data-method]")).to_contain_text("Ready")
    expect(page.get_by_label("Pay from")).to_have_value(method_id)
    page.get_by_role("radio", name="A transfer to a savings goal").check()
    page.get_by_label("Amount, in dollars").fill("25")
    page.get_by_role("button", name="Pay", exact=True).click()
    row = page.locator("#payment-list .payment").first
    expect(row).to_contain_text("Transfer to savings goal: Emergency fund")
    expect(row).to_contain_text("$25.00")
    settle(app)
    expect(row.locator(".badge")).to_have_text("Paid", timeout=20_000)
    # On a phone a payment reads as two lines: what and how much, then when and its status.
    boxes = {
        label: row.locator(f"td[data-label='{label}']").bounding_box()
        for label in ("Description", "Amount", "Date", "Status")
    }
    assert all(box is not None for box in boxes.values()), boxes
    described, amount, date, status = (cast("FloatRect", boxes[k]) for k in boxes)
    assert abs(described["y"] - amount["y"]) < date["height"] / 2, boxes
    assert abs(date["y"] - status["y"]) < date["height"] / 2, boxes
    assert amount["x"] + amount["width"] <= 390 and status["x"] + status["width"] <= 390, boxes


@pytest.mark.parametrize(
    ("number", "sentence"),
    [
        (
            "000222222227",
            "Your bank returned this payment because the account did not have enough money. "
            "Add funds or pay from another account, then try again.",
        ),
        (
            "000111111113",
            "Your bank returned this payment because the account is closed. Set up another "
            "account for payments.",
        ),
    ],
)
def test_a_failing_account_shows_why_in_a_sentence(
    new_user: Any, pocketbook_server: tuple[Flask, str], number: str, sentence: str
) -> None:
    app, _ = pocketbook_server
    page = new_user()
    browser_sign_in(page, f"pay-{number}@example.com")
    page.goto("/payments/")
    page.get_by_role("button", name="Add a bank account").click()
    page.get_by_role("button", name="Agree and continue").click()
    page.get_by_role("button", name="Enter bank details manually").click()
    page.get_by_label("Routing number").fill("110000000")
    page.get_by_label("Account number", exact=True).fill(number)
    page.get_by_label("Confirm account number").fill(number)
    page.get_by_role("button", name="Continue").click()
    page.get_by_role("button", name="Done").click()
    accept_mandate(page)
    verify = page.locator("finconn-verify")
    expect(verify.get_by_role("button", name="Verify")).to_be_visible()
    if page.get_by_label("First deposit, in cents").count():
        page.get_by_label("First deposit, in cents").fill("32")
        page.get_by_label("Second deposit, in cents").fill("45")
    else:
        page.get_by_label(re.compile("^Code from the deposit")).fill("SM11AA")
    verify.get_by_role("button", name="Verify").click()
    expect(verify.get_by_role("status")).to_have_text("Bank account verified.")
    page.goto("/payments/")
    row = pay_plan(page)
    settle(app)
    expect(row.locator(".badge")).to_have_text("Failed", timeout=20_000)
    expect(row.locator("[data-field='failure']")).to_have_text(sentence)
    expect(page.locator("#announcer")).to_have_text(
        f"Pocketbook Plus, monthly plan: Failed. {sentence}"
    )
    page.reload()
    method = page.locator(".methods .method[data-method]")
    expect(method).to_contain_text("Can't be used" if number == "000111111113" else "Ready")


@pytest.mark.parametrize(("width", "scheme"), [(1200, "light"), (390, "dark")])
def test_the_payments_pages_pass_axe_in_each_state(
    new_user: Any, pocketbook_server: tuple[Flask, str], width: int, scheme: str
) -> None:
    app, _ = pocketbook_server
    page = new_user(width)
    page.emulate_media(color_scheme=scheme)
    email = f"pay-axe-{scheme}@example.com"
    browser_sign_in(page, email)
    with app.app_context():
        user_id = db.session.scalar(sa.select(User.id).where(User.email == email))
    holder = Holder(str(user_id), email=email, name="Ada Lovelace")
    link_accounts(app, holder, institution="test_nonoauth", permissions=["payment_method"])
    save_bank_account(app, holder, "000222222227")
    waiting = save_bank_account(app, holder, verify=False)
    page.goto("/payments/")
    expect(page.get_by_role("button", name="Pay", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=re.compile("^Verify deposits"))).to_be_visible()
    assert_accessible(page)

    use = page.get_by_role("button", name="Use for payments Test Checking")
    use.click()
    dialog = page.get_by_role("dialog", name="Authorize debits from Test Checking •••• 6789")
    expect(dialog).to_be_visible()
    assert_accessible(page)
    page.keyboard.press("Escape")
    expect(dialog).to_have_count(0)
    expect(use).to_be_focused()

    page.goto(f"/payments/methods/{waiting.id}/verify")
    verify = page.locator("finconn-verify")
    expect(verify.get_by_role("button", name="Verify")).to_be_visible()
    assert_accessible(page)
    verify.get_by_role("button", name="Verify").click()  # nothing typed: said, not sent
    expect(verify.get_by_role("status")).not_to_be_empty()
    assert_accessible(page)
    # The sandbox's default is the descriptor code.
    page.get_by_label(re.compile("^Code from the deposit")).fill("SM99ZZ")
    verify.get_by_role("button", name="Verify").click()
    expect(verify.get_by_role("status")).to_have_text(
        "That code does not match the one on the deposit. 9 attempts left."
    )
    assert_accessible(page)
