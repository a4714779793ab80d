"""The payments pages: bank accounts saved for payments, paying, and the payments list.

A person sets up a checking or savings account for payments (a linked account's "Use for
payments", or routing and account numbers entered in the sandbox's window, verified with
microdeposits), then pays the Pocketbook Plus plan or moves money to a savings goal. The
pay form posts here; this server calls ``finconn.debit(...)`` with the idempotency key the
form was rendered with, so a double submit or a retry never charges twice. The list's
statuses move from processing to succeeded or failed as the bank settles the debits (the
page script re-reads the list while any is processing).
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue

from flask_finconn.errors import FinConnError, InsufficientBalance
from flask_finconn.models import Account, Payment, PaymentMethod

from .auth import check_csrf, current_user
from .formatting import money
from .models import User, db, finconn
from .pages import login_required

bp = Blueprint("payments", __name__, url_prefix="/payments")

PLAN_AMOUNT = 499
PLAN_DESCRIPTION = "Pocketbook Plus, monthly plan"
GOAL_DESCRIPTION = "Transfer to savings goal: {goal}"
GOALS = ("Emergency fund", "Holiday", "New laptop")
MAX_TRANSFER = 5_000_000  # $50,000.00, in cents
# What a failed debit means for the person paying, by Stripe's failure code.
FAILURES = {
    "insufficient_funds": "Your bank returned this payment because the account did not have "
    "enough money. Add funds or pay from another account, then try again.",
    "account_closed": "Your bank returned this payment because the account is closed. Set up "
    "another account for payments.",
    "no_account": "Your bank could not find this account. Check the account number, or set "
    "up another account for payments.",
    "debit_not_authorized": "Your bank refused this debit because it was not authorized. Ask "
    "your bank to allow debits from Pocketbook, or use another account.",
    "bank_account_unusable": "This bank account can no longer be used for payments. Set up "
    "another account for payments.",
    "payment_method_bank_account_blocked": "This bank account can no longer be used for "
    "payments. Set up another account for payments.",
}
STATUS_LABELS = {
    "requires_verification": "Waiting for verification",
    "processing": "Processing",
    "succeeded": "Paid",
    "failed": "Failed",
    "canceled": "Canceled",
    "disputed": "Disputed",
}


def _holder_id() -> str:
    user: User | None = current_user()
    assert user is not None
    return str(user.id)


def failure_sentence(payment: Payment) -> str:
    """Why a payment failed, as a sentence the person paying can act on."""
    if payment.failure_code in FAILURES:
        return FAILURES[payment.failure_code]
    if payment.failure_message:
        return payment.failure_message
    return "Your bank returned this payment. Try again, or pay from another account."


def payment_methods() -> list[PaymentMethod]:
    """The signed-in user's saved bank accounts, detached ones left out, oldest first."""
    return list(
        db.session.scalars(
            sa.select(PaymentMethod)
            .where(PaymentMethod.holder_id == _holder_id(), PaymentMethod.status != "detached")
            .order_by(PaymentMethod.created_at, PaymentMethod.id)
        )
    )


def payments() -> list[Payment]:
    """The signed-in user's payments, newest first."""
    return list(
        db.session.scalars(
            sa.select(Payment)
            .where(Payment.holder_id == _holder_id())
            .order_by(Payment.created_at.desc(), Payment.id.desc())
            .limit(50)
        )
    )


def usable_accounts(methods: list[PaymentMethod]) -> list[Account]:
    """Linked accounts that can be set up for payments and are not yet."""
    saved = {method.account_id for method in methods}
    query = (
        sa.select(Account)
        .where(
            Account.holder_id == _holder_id(),
            Account.status == "active",
            Account.category == "cash",
            Account.subcategory.in_(("checking", "savings")),
        )
        .order_by(Account.linked_at, Account.id)
    )
    return [
        account
        for account in db.session.scalars(query)
        if "payment_method" in account.permissions and account.id not in saved
    ]


def method_names(methods: list[PaymentMethod]) -> dict[str, str]:
    """What to call each saved bank account: a linked account's own name ("Test Checking"),
    else the bank's name as Stripe gives it (often in capitals), else "Bank account"."""
    linked = {method.account_id for method in methods if method.account_id}
    accounts = {
        account.id: account
        for account in db.session.scalars(sa.select(Account).where(Account.id.in_(linked)))
    }
    names = {}
    for method in methods:
        account = accounts.get(method.account_id or "")
        name = account.display_name if account is not None else None
        names[method.id] = name or method.bank_name or "Bank account"
    return names


def method_labels(methods: list[PaymentMethod]) -> dict[str, str]:
    """Each saved bank account's name with its last four digits, as the payments list says
    where a payment came from."""
    names = method_names(methods)
    return {
        method.id: f"{names[method.id]} •••• {method.last4}" if method.last4 else names[method.id]
        for method in methods
    }


def usable(method: PaymentMethod) -> bool:
    """Whether a saved bank account can be debited now: verified, and not blocked by Stripe
    after the bank returned a debit (a closed account, for example)."""
    return method.status == "verified" and not method.blocked


def _page(
    form: dict[str, Any] | None = None, error: str = "", status: int = 200
) -> tuple[str, int]:
    methods = payment_methods()
    verified = [method for method in methods if usable(method)]
    form = form or {}
    # A new key per render: the same rendered form submitted twice is one charge.
    form.setdefault("idempotency_key", str(uuid.uuid4()))
    body = render_template(
        "payments.html",
        methods=methods,
        names=method_names(methods),
        sources=method_labels(methods),
        verified=verified,
        accounts=usable_accounts(methods),
        payments=payments(),
        form=form,
        error=error,
        plan={"amount": PLAN_AMOUNT, "description": PLAN_DESCRIPTION},
        goals=GOALS,
        paid=request.args.get("paid", ""),
    )
    return body, status


@bp.app_context_processor
def payment_globals() -> dict[str, Any]:
    return {
        "failure_sentence": failure_sentence,
        "payment_status": lambda status: STATUS_LABELS.get(status, status.capitalize()),
    }


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    """Saved bank accounts, the pay form and the payments so far; ``?pay_from=<id>`` picks
    the account the pay form starts on (the verify page links here that way)."""
    return _page({"payment_method": request.args.get("pay_from", "")})


@bp.get("/list")
@login_required
def payment_list() -> ResponseReturnValue:
    """The payments list alone, for the page script to swap in while payments settle."""
    return render_template(
        "_payments.html", payments=payments(), sources=method_labels(payment_methods())
    )


def _amount(form: dict[str, str]) -> tuple[int, str] | str:
    """(cents, description) from the pay form, or a sentence saying what to fix."""
    if form.get("what") == "plan":
        return PLAN_AMOUNT, PLAN_DESCRIPTION
    if form.get("what") != "goal":
        return "Choose what to pay: the monthly plan or a transfer to a savings goal."
    goal = form.get("goal", "")
    if goal not in GOALS:
        return "Choose the savings goal to transfer to."
    text = form.get("amount", "").strip().replace(",", "").removeprefix("$")
    try:
        dollars, _, cents = text.partition(".")
        if not dollars.isdigit() or (cents and not (cents.isdigit() and len(cents) <= 2)):
            raise ValueError(text)
        amount = int(dollars) * 100 + int(cents.ljust(2, "0") or 0)
    except ValueError:
        return "Enter the amount to transfer in dollars and cents, such as 25.00."
    if not 100 <= amount <= MAX_TRANSFER:
        return "Enter an amount from $1.00 to $50,000.00."
    return amount, GOAL_DESCRIPTION.format(goal=goal)


@bp.post("/pay")
@login_required
def pay() -> ResponseReturnValue:
    """Debit a saved bank account; a repeated form (same key) is the same payment."""
    check_csrf()
    form = {key: request.form.get(key, "") for key in request.form}
    key = form.get("idempotency_key", "")
    try:
        uuid.UUID(key)
    except ValueError:
        abort(400, "The form is out of date. Reload the page and pay again.")
    methods = {method.id: method for method in payment_methods()}
    method = methods.get(form.get("payment_method", ""))
    if method is None or not usable(method):
        return _page(form, "Choose the bank account to pay from.", 400)
    amount = _amount(form)
    if isinstance(amount, str):
        return _page(form, amount, 400)
    cents, description = amount
    try:
        payment = finconn.debit(
            _holder_id(),
            method.id,
            cents,
            description=description,
            idempotency_key=f"pocketbook-{key}",
            # Only a linked account has a balance to check; typed-in numbers have none.
            check_balance=method.account_id is not None,
            metadata={"what": form.get("what", "")},
        )
    except InsufficientBalance as error:
        available = money(int(error.extra.get("available", 0)), "usd")
        sentence = (
            f"Your available balance ({available}) is less than {money(cents, 'usd')}, so "
            "nothing was charged. Pay a smaller amount or from another account."
        )
        return _page(form, sentence, 409)
    except FinConnError as error:
        # The same key again: what failed before the charge can be retried without a double.
        return _page(form, error.message, error.status if error.status < 500 else 502)
    return redirect(url_for("payments.index", paid=payment.id) + "#payments")


@bp.get("/methods/<method_id>/verify")
@login_required
def verify(method_id: str) -> ResponseReturnValue:
    """The microdeposit form for one saved bank account of the signed-in user."""
    method = db.session.scalars(
        sa.select(PaymentMethod).where(
            PaymentMethod.id == method_id, PaymentMethod.holder_id == _holder_id()
        )
    ).first()
    if method is None:
        abort(404, "There is no such bank account.")
    return render_template("verify.html", method=method)
