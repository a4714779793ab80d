"""The pages: dashboard, one account (balance chart, transactions, owners) and events.

Pages read the extension's models straight from the app's ``db.session``, always scoped
to the signed-in user's holder id, so another user's account id is a plain 404. Changes
(refresh, disconnect, linking) go through the extension's JSON routes from the page script.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from sqlalchemy.orm import joinedload

from flask_finconn import get_state
from flask_finconn.models import Account, BalanceSnapshot, Owner, Transaction, WebhookEvent

from . import history
from .auth import current_user
from .formatting import balance_chart
from .models import User, db

bp = Blueprint("pages", __name__)
F = TypeVar("F", bound=Callable[..., Any])

STATUSES = ("pending", "posted", "void")
# What a permission lets the user refresh, in the refresh route's words.
FEATURES = {"balances": "balance", "ownership": "ownership", "transactions": "transactions"}


def login_required(view: F) -> F:
    """Send visitors who are not signed in to the sign-in page, and back afterwards."""

    @functools.wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if current_user() is None:
            return redirect(url_for("auth.sign_in", next=request.full_path.rstrip("?")))
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def _user() -> User:
    user = current_user()
    assert user is not None
    return user


def user_accounts() -> list[Account]:
    """The signed-in user's accounts with their latest balances, in the order they linked."""
    query = (
        sa.select(Account)
        .where(Account.holder_id == str(_user().id))
        .options(joinedload(Account.latest_balance))
        .order_by(Account.linked_at, Account.id)
    )
    return list(db.session.scalars(query))


def user_account(account_id: str) -> Account:
    """One of the signed-in user's accounts; anybody else's is a 404, like a missing one."""
    query = (
        sa.select(Account)
        .where(Account.id == account_id, Account.holder_id == str(_user().id))
        .options(joinedload(Account.latest_balance))
    )
    account = db.session.scalars(query).first()
    if account is None:
        abort(404, "There is no such bank account.")
    return account


def refreshable(account: Account) -> list[str]:
    """The features the user may refresh on this account (none once it is not active)."""
    if account.status != "active" or not has_route("finconn.refresh_account"):
        return []
    return [FEATURES[p] for p in account.permissions if p in FEATURES]


def has_route(endpoint: str) -> bool:
    """Whether the extension offers a route, so the page never shows a button that 404s."""
    return endpoint in current_app.view_functions


def totals(accounts: list[Account]) -> list[tuple[str, int]]:
    """The sum of the active accounts' current balances, per currency."""
    sums: dict[str, int] = {}
    for account in accounts:
        balance = account.latest_balance
        if account.status == "active" and balance is not None:
            sums[balance.currency] = sums.get(balance.currency, 0) + balance.current
    return sorted(sums.items())


@bp.app_context_processor
def page_globals() -> dict[str, Any]:
    state = get_state()
    return {
        "current_user": current_user(),
        "sandbox": state.sandbox is not None,
        "refreshable": refreshable,
        "has_route": has_route,
    }


@bp.get("/")
@login_required
def dashboard() -> ResponseReturnValue:
    """Linked accounts with their balances, and the button that links more."""
    accounts = user_accounts()
    return render_template("dashboard.html", accounts=accounts, totals=totals(accounts))


@bp.get("/accounts/list")
@login_required
def account_list() -> ResponseReturnValue:
    """The dashboard's account list alone, for the page script to swap in after linking."""
    accounts = user_accounts()
    return render_template("_accounts.html", accounts=accounts, totals=totals(accounts))


@bp.get("/accounts/<account_id>")
@login_required
def account(account_id: str) -> ResponseReturnValue:
    """One account: balance history, searchable transactions and its owners."""
    found = user_account(account_id)
    query = request.args.get("q", "").strip()[:100]
    status = request.args.get("status", "")
    status = status if status in STATUSES else ""
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    size = current_app.config["POCKETBOOK_PAGE_SIZE"]

    conditions: list[sa.ColumnElement[bool]] = [Transaction.account_id == found.id]
    if query:
        pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        conditions.append(Transaction.description.ilike(pattern, escape="\\"))
    if status:
        conditions.append(Transaction.status == status)
    total = db.session.scalar(sa.select(sa.func.count()).where(*conditions)) or 0
    pages = max(math.ceil(total / size), 1)
    page = min(page, pages)
    transactions = db.session.scalars(
        sa.select(Transaction)
        .where(*conditions)
        .order_by(Transaction.transacted_at.desc(), Transaction.id.desc())
        .limit(size)
        .offset((page - 1) * size)
    ).all()

    currency = found.latest_balance.currency if found.latest_balance else "usd"
    history = db.session.execute(
        sa.select(BalanceSnapshot.as_of, BalanceSnapshot.current)
        .where(BalanceSnapshot.account_id == found.id, BalanceSnapshot.currency == currency)
        .order_by(BalanceSnapshot.as_of.desc())
        .limit(90)
    ).all()
    points = [(row.as_of, row.current) for row in reversed(history)]
    chart = balance_chart(points, currency)
    # A phone shrinks the 960-unit chart to a third: its own, narrower drawing keeps the
    # labels legible.
    chart_narrow = balance_chart(points, currency, width=480, height=260)

    owners: Sequence[Owner] = []
    if found.ownership_id:
        owners = db.session.scalars(
            sa.select(Owner)
            .where(Owner.account_id == found.id, Owner.ownership_id == found.ownership_id)
            .order_by(Owner.name)
        ).all()
    return render_template(
        "account.html",
        account=found,
        chart=chart,
        chart_narrow=chart_narrow,
        history=history,
        currency=currency,
        transactions=transactions,
        owners=owners,
        query=query,
        status=status,
        page=page,
        pages=pages,
        total=total,
        size=size,
    )


@bp.get("/events")
@login_required
def events() -> ResponseReturnValue:
    """Webhook events about the user's accounts and payments, newest first, with how
    processing went."""
    user = history.mine(str(_user().id), user_accounts())
    status = request.args.get("status", "")
    conditions = [user.condition()]
    if status:
        conditions.append(WebhookEvent.status == status)
    rows = db.session.scalars(
        sa.select(WebhookEvent)
        .where(*conditions)
        .order_by(WebhookEvent.received_at.desc(), WebhookEvent.id.desc())
        .limit(100)
    ).all()
    statuses = db.session.scalars(
        sa.select(WebhookEvent.status)
        .where(user.condition())
        .distinct()
        .order_by(WebhookEvent.status)
    ).all()
    subjects = history.subjects(rows, user)
    return render_template(
        "events.html", events=rows, subjects=subjects, status=status, statuses=statuses
    )
