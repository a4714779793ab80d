"""Route handlers for ``/v1/financial_connections``: sessions, accounts, owners,
transactions."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._data import dumps as _dumps
from ._params import (
    EXPAND,
    PAGINATION,
    E,
    H,
    L,
    S,
    Spec,
    invalid,
    missing,
    not_found,
    validate,
)
from ._wire import Api, Handler, expand_paths

if TYPE_CHECKING:
    from .core import Sandbox

FC = "/v1/financial_connections"
PERMISSIONS = ("balances", "ownership", "payment_method", "transactions")
SUBCATEGORIES = ("checking", "savings", "mortgage", "line_of_credit", "credit_card")
FEATURES = ("balance", "ownership", "transactions")

_ACCOUNT_EXPANDABLE = ("ownership", "account_holder.customer", "account_holder.account")
_SESSION_EXPANDABLE = (
    "accounts",
    "account_holder.customer",
    "account_holder.account",
    "bank_account_token",
)

SESSION_FIELDS: dict[str, Spec] = {
    "account_holder": H(
        required=True,
        type=E("customer", "account", required=True),
        customer=S(prefix="cus_"),
        account=S(prefix="acct_"),
        customer_account=S(prefix="acct_"),
    ),
    "permissions": L(E(*PERMISSIONS), required=True),
    "prefetch": L(E("balances", "ownership", "transactions")),
    "filters": H(
        account_subcategories=L(E(*SUBCATEGORIES)),
        country=S(),
        require_payment_method_support=E("all", "at_least_one", "none"),
    ),
    "limits": H(accounts=Spec("int_or_empty")),
    "manual_entry": H(mode=E("automatic", "disabled")),
    "return_url": S(),
    "expand": EXPAND,
}


def _render_session(api: Api, session: dict[str, Any], paths: list[str]) -> str:
    if "account_holder.customer" in paths:
        holder = session.get("account_holder") or {}
        if holder.get("customer"):
            holder["customer"] = api.sb.customer(holder["customer"], status=400)
    return _dumps(session)


def create_session(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, SESSION_FIELDS)
    paths = expand_paths(p, _SESSION_EXPANDABLE)
    session = api.sb.create_session(p)
    return 200, _render_session(api, session, paths)


def retrieve_session(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    paths = expand_paths(p, _SESSION_EXPANDABLE)
    return 200, _render_session(api, api.sb.session(args[0]), paths)


def list_accounts(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(
        params,
        {
            **PAGINATION,
            "session": S(prefix="fcsess_"),
            "account_holder": H(
                customer=S(prefix="cus_"),
                account=S(prefix="acct_"),
                customer_account=S(prefix="acct_"),
            ),
        },
    )
    paths = expand_paths(p, _ACCOUNT_EXPANDABLE, "data.")
    holder = p.get("account_holder") or {}
    given = [
        (name, column, value)
        for name, column, value in (
            ("account_holder[account]", "holder_account", holder.get("account")),
            ("account_holder[customer]", "customer", holder.get("customer")),
            ("account_holder[customer_account]", "customer", holder.get("customer_account")),
            ("session", "session", p.get("session")),
        )
        if value
    ]
    if len(given) > 1:
        raise invalid(
            "You may only specify one of these parameters: account_holder[account], "
            "account_holder[customer], session.",
            param=given[1][0],
        )
    where, qargs = (f"{given[0][1]} = ?", (given[0][2],)) if given else ("1 = 1", ())

    def render(items: list[str]) -> list[str]:
        if not paths:
            return items
        return [_dumps(expand_account(api, json.loads(i), paths)) for i in items]

    return api.page(
        p,
        table="accounts",
        where=where,
        args=qargs,
        url=f"{FC}/accounts",
        kind="financial connections account",
        render=render,
    )


def retrieve_account(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    paths = expand_paths(p, _ACCOUNT_EXPANDABLE)
    data, _ = api.sb.parts.accounts.row(args[0])
    return 200, _dumps(expand_account(api, data, paths))


def _account_action(
    action: Callable[[Sandbox, str, list[str]], dict[str, Any]],
    features: tuple[str, ...] | None,
) -> Handler:
    def handler(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
        specs: dict[str, Spec] = {"expand": EXPAND}
        if features is not None:
            specs["features"] = L(E(*features), required=True)
        p = validate(params, specs)
        if features is not None and not p["features"]:
            raise missing("features")
        paths = expand_paths(p, _ACCOUNT_EXPANDABLE)
        data = action(api.sb, args[0], p.get("features", []))
        return 200, _dumps(expand_account(api, data, paths))

    return handler


def list_owners(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {**PAGINATION, "ownership": S(required=True, prefix="fcaowns_")})
    expand_paths(p, (), "data.")
    account, _ = api.sb.parts.accounts.row(args[0])
    ownership = p["ownership"]
    row = api.store.one(
        "SELECT 1 FROM ownerships WHERE id = ? AND account = ?", (ownership, args[0])
    )
    if row is None:
        raise not_found("financial connections account ownership", ownership, param="ownership")
    visible = account["status"] != "disconnected"
    return api.page(
        p,
        table="owners",
        where="ownership = ?" + ("" if visible else " AND 0"),
        args=(ownership,),
        url=f"{FC}/accounts/{args[0]}/owners?ownership={ownership}",
        kind="financial connections account owner",
    )


def list_transactions(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(
        params,
        {
            **PAGINATION,
            "account": S(required=True, prefix="fca_"),
            "transacted_at": Spec("int_or_range"),
            "transaction_refresh": H(after=S(required=True, prefix="fctxnref_")),
        },
    )
    expand_paths(p, (), "data.")
    # The account's checks ride along in the page's statement (a disconnected account's
    # transactions are hidden); only an empty page looks the account up to explain itself.
    where = (
        "account = ? AND EXISTS (SELECT 1 FROM accounts WHERE id = ? "
        "AND json_extract(data, '$.status') != 'disconnected')"
    )
    qargs: list[Any] = [p["account"], p["account"]]

    def account_exists() -> None:
        api.sb.parts.accounts.row(p["account"], param="account")

    transacted_at = p.get("transacted_at")
    if isinstance(transacted_at, int):
        where += " AND transacted_at = ?"
        qargs.append(transacted_at)
    elif transacted_at:
        ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        for name, value in transacted_at.items():
            where += f" AND transacted_at {ops[name]} ?"
            qargs.append(value)
    refresh = p.get("transaction_refresh")
    if refresh:
        row = api.store.one(
            "SELECT seq FROM txn_refreshes WHERE id = ? AND account = ?",
            (refresh["after"], p["account"]),
        )
        if row is None:
            account_exists()  # a missing account is the error to report first
            raise not_found(
                "financial connections transaction refresh",
                refresh["after"],
                param="transaction_refresh[after]",
            )
        where += " AND refresh_seq > ?"
        qargs.append(row[0])
    return api.page(
        p,
        table="transactions",
        where=where,
        args=tuple(qargs),
        url=f"{FC}/transactions",
        key=("transacted_at", "id"),
        column="body",
        kind="financial connections transaction",
        when_empty=account_exists,
    )


def retrieve_transaction(
    api: Api, params: dict[str, Any], args: tuple[str, ...]
) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    expand_paths(p, ())
    row = api.store.one(
        "SELECT t.body FROM transactions t JOIN accounts a ON a.id = t.account "
        "WHERE t.id = ? AND json_extract(a.data, '$.status') != 'disconnected'",
        (args[0],),
    )
    if row is None:
        raise not_found("financial connections transaction", args[0])
    return 200, str(row[0])


def _sb_refresh(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.refresh_account(acct, features)


def _sb_subscribe(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.subscribe(acct, features)


def _sb_unsubscribe(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.unsubscribe(acct, features)


def _sb_disconnect(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.disconnect(acct)


def expand_account(api: Api, account: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Expand ``ownership`` and ``account_holder.customer`` in place, as asked."""
    for path in paths:
        if path == "ownership" and account.get("ownership"):
            account["ownership"] = ownership(api, account["id"], account["ownership"])
        elif path == "account_holder.customer":
            holder = account.get("account_holder") or {}
            if holder.get("customer"):
                holder["customer"] = api.sb.customer(holder["customer"], status=400)
    return account


def ownership(api: Api, account_id: str, ownership_id: str) -> dict[str, Any]:
    """The expanded ``financial_connections.account_ownership`` (its first 10 owners)."""
    row = api.store.one("SELECT created FROM ownerships WHERE id = ?", (ownership_id,))
    owners = api.store.all(
        "SELECT data FROM owners WHERE ownership = ? ORDER BY seq DESC LIMIT 11",
        (ownership_id,),
    )
    return {
        "id": ownership_id,
        "object": "financial_connections.account_ownership",
        "created": row[0] if row else None,
        "owners": {
            "object": "list",
            "data": [json.loads(o[0]) for o in owners[:10]],
            "has_more": len(owners) > 10,
            "url": f"{FC}/accounts/{account_id}/owners?ownership={ownership_id}",
        },
    }


refresh_account = _account_action(_sb_refresh, FEATURES)
subscribe = _account_action(_sb_subscribe, ("transactions",))
unsubscribe = _account_action(_sb_unsubscribe, ("transactions",))
disconnect_account = _account_action(_sb_disconnect, None)
