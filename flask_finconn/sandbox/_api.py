"""The sandbox's HTTP side: a plain WSGI app that speaks Stripe's v1 wire format."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from . import _data
from ._data import dumps as _dumps
from ._params import (
    EXPAND,
    PAGINATION,
    ApiError,
    E,
    H,
    I,
    L,
    M,
    S,
    Spec,
    invalid,
    missing,
    not_found,
    parse_form,
    validate,
)
from .core import API_VERSION, RequestContext, Sandbox
from .payments.routes import ROUTES as PAYMENT_ROUTES

log = logging.getLogger("flask_finconn.sandbox")

FC = "/v1/financial_connections"
HELPERS = "/v1/test_helpers/financial_connections"
MAX_BODY = 1 << 20
_KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[0-9A-Za-z_]+$")
PERMISSIONS = ("balances", "ownership", "payment_method", "transactions")
SUBCATEGORIES = ("checking", "savings", "mortgage", "line_of_credit", "credit_card")
FEATURES = ("balance", "ownership", "transactions")

Handler = Callable[["Api", dict[str, Any], tuple[str, ...]], tuple[int, str]]


class Request:
    """What a handler needs of the HTTP request."""

    def __init__(self, method: str, path: str, params: dict[str, Any]) -> None:
        self.method = method
        self.path = path
        self.params = params


class Api:
    """Routes, auth, faults, idempotency and rendering on top of a :class:`Sandbox`."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sb = sandbox
        self.store = sandbox.store
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        for method, pattern, handler in ROUTES:
            self.routes.append((method, re.compile(f"^{pattern}$"), handler))

    # --- WSGI ---------------------------------------------------------------------------

    def wsgi_app(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request_id = _data.new_id("req_")[:18]
        headers = [
            ("Content-Type", "application/json"),
            ("Request-Id", request_id),
            ("Stripe-Version", environ.get("HTTP_STRIPE_VERSION") or API_VERSION),
            ("Cache-Control", "no-cache, no-store"),
        ]
        try:
            status, body, extra = self._handle(environ, request_id)
        except ApiError as exc:
            status, body, extra = exc.status, _dumps(exc.body()), list(exc.headers.items())
        except Exception:
            log.exception("The sandbox failed to serve a request.")
            error = ApiError(
                500,
                "An unexpected error occurred in the sandbox. It has been logged.",
                type="api_error",
            )
            status, body, extra = 500, _dumps(error.body()), []
        data = body.encode("utf-8")
        headers.extend(extra)
        headers.append(("Content-Length", str(len(data))))
        start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
        return [data]

    def _handle(
        self, environ: dict[str, Any], request_id: str
    ) -> tuple[int, str, list[tuple[str, str]]]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO") or "/"
        handler, args = self._route(method, path)
        api_key = self._authenticate(environ)
        livemode = "_live_" in api_key
        if livemode:
            raise ApiError(
                401,
                "The sandbox only accepts test-mode keys (sk_test_... or rk_test_...).",
            )
        helper = path.startswith("/v1/test_helpers/")
        if not helper:
            self._inject_faults()
        params = self._params(environ, method)
        self.sb.run_due()
        extra: list[tuple[str, str]] = []
        if method == "GET":
            with self.store.tx(write=False), self.sb._request(RequestContext(id=request_id)):
                status, body = handler(self, params, args)
            return status, body, extra
        key = environ.get("HTTP_IDEMPOTENCY_KEY")
        # Test helpers act as the end user or the bank would: their events are automatic.
        ctx = RequestContext() if helper else RequestContext(id=request_id, idempotency_key=key)
        if getattr(handler, "outside_transaction", False):
            # Delivering webhooks calls other apps, which may call back into the sandbox:
            # never hold the lock across that.
            with self.sb._request(ctx):
                status, body = handler(self, params, args)
            return status, body, extra
        with self.store.tx(), self.sb._request(ctx):
            if key:
                extra.append(("Idempotency-Key", key))
                replay = self._idempotent_replay(api_key, key, method, path, params)
                if replay is not None:
                    extra.append(("Idempotent-Replayed", "true"))
                    return replay[0], replay[1], extra
            status, body = handler(self, params, args)
            if key and 200 <= status < 300:
                self.store.execute(
                    "INSERT INTO idempotency (api_key, key, method, path, params, status, body, "
                    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (api_key, key, method, path, _canonical(params), status, body, self.sb.now()),
                )
        return status, body, extra

    def _route(self, method: str, path: str) -> tuple[Handler, tuple[str, ...]]:
        for route_method, pattern, handler in self.routes:
            match = pattern.match(path)
            if match and route_method == method:
                return handler, match.groups()
        raise ApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    def _authenticate(self, environ: dict[str, Any]) -> str:
        header = environ.get("HTTP_AUTHORIZATION", "")
        key = ""
        if header.lower().startswith("bearer "):
            key = header[7:].strip()
        elif header.lower().startswith("basic "):
            import base64
            import binascii

            try:
                key = base64.b64decode(header[6:].strip()).decode().split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError, ValueError):
                key = ""
        if not key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            )
        if not _KEY_RE.match(key):
            shown = key[:8] + "*" * 4 + key[-4:] if len(key) > 12 else key[:3] + "****"
            raise ApiError(401, f"Invalid API Key provided: {shown}")
        return key

    def _inject_faults(self) -> None:
        faults = self.sb.faults
        if faults.latency:
            time.sleep(faults.latency)
        status = faults.next_api_error()
        if status is None:
            return
        if status == 429:
            raise ApiError(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential backoff "
                "of your requests.",
                code="rate_limit",
            )
        raise ApiError(
            status,
            "An error occurred with our connection to Stripe (injected by the sandbox's "
            "faults). The request was not processed; retrying it is safe.",
            type="api_error",
        )

    def _params(self, environ: dict[str, Any], method: str) -> dict[str, Any]:
        query = environ.get("QUERY_STRING", "")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise invalid("The request body is too large (limit: 1 MB).")
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("The request body is not valid UTF-8.") from None
        content_type = environ.get("CONTENT_TYPE", "")
        if text and "json" in content_type:
            raise invalid(
                "Invalid request: the body must be form-encoded "
                "(application/x-www-form-urlencoded), not JSON."
            )
        try:
            params = parse_form(query)
            if text and method == "POST":
                for key, value in parse_form(text).items():
                    params[key] = value
        except UnicodeDecodeError:
            raise invalid("The request parameters are not valid UTF-8.") from None
        return params

    def _idempotent_replay(
        self, api_key: str, key: str, method: str, path: str, params: dict[str, Any]
    ) -> tuple[int, str] | None:
        row = self.store.one(
            "SELECT method, path, params, status, body FROM idempotency "
            "WHERE api_key = ? AND key = ?",
            (api_key, key),
        )
        if row is None:
            return None
        if row[0] != method or row[1] != path or row[2] != _canonical(params):
            raise ApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type="idempotency_error",
            )
        return int(row[3]), str(row[4])

    # --- pagination and expansion -------------------------------------------------------

    def page(
        self,
        params: dict[str, Any],
        *,
        table: str,
        where: str,
        args: tuple[Any, ...],
        url: str,
        key: tuple[str, ...] = ("seq",),
        column: str = "data",
        kind: str,
        render: Callable[[list[str]], list[str]] | None = None,
    ) -> tuple[int, str]:
        limit = params.get("limit", 10)
        if not 1 <= limit <= 100:
            raise invalid(
                f"Invalid limit: must be between 1 and 100, got {limit}.",
                param="limit",
                code="parameter_invalid_integer",
            )
        after, before = params.get("starting_after"), params.get("ending_before")
        if after and before:
            raise invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="ending_before",
            )
        cols = ", ".join(key)
        marks = ", ".join("?" for _ in key)
        desc = ", ".join(f"{k} DESC" for k in key)
        asc = ", ".join(f"{k} ASC" for k in key)
        base = f"SELECT {column} FROM {table} WHERE {where}"
        cursor_id = after or before
        if cursor_id:
            cursor = self.store.one(
                f"SELECT {cols} FROM {table} WHERE id = ? AND {where}",
                (cursor_id, *args),
            )
            if cursor is None:
                raise invalid(
                    f"No such {kind}: '{cursor_id}'",
                    param="starting_after" if after else "ending_before",
                    code="resource_missing",
                )
            op = "<" if after else ">"
            sql = f"{base} AND ({cols}) {op} ({marks}) ORDER BY {desc if after else asc} LIMIT ?"
            rows = self.store.all(sql, (*args, *cursor, limit + 1))
        else:
            rows = self.store.all(f"{base} ORDER BY {desc} LIMIT ?", (*args, limit + 1))
        has_more = len(rows) > limit
        items = [r[0] for r in rows[:limit]]
        if before:
            items.reverse()
        if render is not None:
            items = render(items)
        return 200, (
            '{"object":"list","data":['
            + ",".join(items)
            + '],"has_more":'
            + ("true" if has_more else "false")
            + ',"url":'
            + _dumps(url)
            + "}"
        )

    def expand_account(self, account: dict[str, Any], paths: list[str]) -> dict[str, Any]:
        for path in paths:
            if path == "ownership" and account.get("ownership"):
                account["ownership"] = self.ownership(account["id"], account["ownership"])
            elif path == "account_holder.customer":
                holder = account.get("account_holder") or {}
                if holder.get("customer"):
                    holder["customer"] = self.sb.customer(holder["customer"], status=400)
        return account

    def ownership(self, account_id: str, ownership_id: str) -> dict[str, Any]:
        row = self.store.one("SELECT created FROM ownerships WHERE id = ?", (ownership_id,))
        owners = self.store.all(
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


def _canonical(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def _expand(params: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> list[str]:
    """The expansions asked for, validated against ``allowed`` (``prefix``: ``data.`` for lists)."""
    paths = []
    for i, path in enumerate(params.get("expand") or []):
        if not path.startswith(prefix) or path[len(prefix) :] not in allowed:
            raise invalid(f"This property cannot be expanded ({path}).", param=f"expand[{i}]")
        paths.append(path[len(prefix) :])
    return paths


# --- handlers -----------------------------------------------------------------------------

_CUSTOMER_EXPANDABLE = ("default_source", "invoice_settings.default_payment_method", "test_clock")
_ACCOUNT_EXPANDABLE = ("ownership", "account_holder.customer", "account_holder.account")
_SESSION_EXPANDABLE = (
    "accounts",
    "account_holder.customer",
    "account_holder.account",
    "bank_account_token",
)

CUSTOMER_FIELDS: dict[str, Spec] = {
    "email": S(),
    "name": S(),
    "phone": S(),
    "description": S(),
    "metadata": M(),
    "expand": EXPAND,
}


def create_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, CUSTOMER_FIELDS)
    _expand(p, _CUSTOMER_EXPANDABLE)
    return 200, _dumps(api.sb.create_customer(p))


def update_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, CUSTOMER_FIELDS)
    _expand(p, _CUSTOMER_EXPANDABLE)
    return 200, _dumps(api.sb.update_customer(args[0], p))


def retrieve_customer(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    _expand(p, _CUSTOMER_EXPANDABLE)
    return 200, _dumps(api.sb.customer(args[0]))


def list_customers(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {**PAGINATION, "email": S()})
    _expand(p, _CUSTOMER_EXPANDABLE, "data.")
    where, qargs = ("email = ?", (p["email"],)) if p.get("email") else ("1 = 1", ())
    return api.page(
        p, table="customers", where=where, args=qargs, url="/v1/customers", kind="customer"
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
    paths = _expand(p, _SESSION_EXPANDABLE)
    session = api.sb.create_session(p)
    return 200, _render_session(api, session, paths)


def retrieve_session(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    paths = _expand(p, _SESSION_EXPANDABLE)
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
    paths = _expand(p, _ACCOUNT_EXPANDABLE, "data.")
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
        return [_dumps(api.expand_account(json.loads(i), paths)) for i in items]

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
    paths = _expand(p, _ACCOUNT_EXPANDABLE)
    data, _ = api.sb._account_row(args[0])
    return 200, _dumps(api.expand_account(data, paths))


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
        paths = _expand(p, _ACCOUNT_EXPANDABLE)
        data = action(api.sb, args[0], p.get("features", []))
        return 200, _dumps(api.expand_account(data, paths))

    return handler


def list_owners(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {**PAGINATION, "ownership": S(required=True, prefix="fcaowns_")})
    _expand(p, (), "data.")
    account, _ = api.sb._account_row(args[0])
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
    _expand(p, (), "data.")
    account, _ = api.sb._account_row(p["account"], param="account")
    where, qargs = "account = ?", [p["account"]]
    if account["status"] == "disconnected":
        where += " AND 0"
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
    )


def retrieve_transaction(
    api: Api, params: dict[str, Any], args: tuple[str, ...]
) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    _expand(p, ())
    row = api.store.one(
        "SELECT t.body FROM transactions t JOIN accounts a ON a.id = t.account "
        "WHERE t.id = ? AND json_extract(a.data, '$.status') != 'disconnected'",
        (args[0],),
    )
    if row is None:
        raise not_found("financial connections transaction", args[0])
    return 200, str(row[0])


def list_events(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(
        params,
        {**PAGINATION, "type": S(), "types": L(S()), "created": Spec("int_or_range")},
    )
    _expand(p, (), "data.")
    if p.get("type") and p.get("types"):
        raise invalid("You may only specify one of these parameters: type, types.", param="types")
    where, qargs = "1 = 1", []
    if p.get("type"):
        if p["type"].endswith("*"):
            where += " AND type LIKE ?"
            qargs.append(p["type"][:-1].replace("%", "") + "%")
        else:
            where += " AND type = ?"
            qargs.append(p["type"])
    if p.get("types"):
        where += f" AND type IN ({', '.join('?' for _ in p['types'])})"
        qargs.extend(p["types"])
    created = p.get("created")
    if isinstance(created, int):
        where += " AND created = ?"
        qargs.append(created)
    elif created:
        ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        for name, value in created.items():
            where += f" AND created {ops[name]} ?"
            qargs.append(value)
    return api.page(
        p,
        table="events",
        where=where,
        args=tuple(qargs),
        url="/v1/events",
        column="body",
        kind="event",
    )


def retrieve_event(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"expand": EXPAND})
    _expand(p, ())
    row = api.store.one("SELECT body FROM events WHERE id = ?", (args[0],))
    if row is None:
        raise not_found("event", args[0])
    return 200, str(row[0])


# --- test helpers ---------------------------------------------------------------------------


def helper_complete(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"institution": S(), "accounts": L(S()), "expand": EXPAND})
    session = api.sb.complete_session(
        args[0], institution=p.get("institution") or "bank_nonoauth", accounts=p.get("accounts")
    )
    return 200, _dumps(session)


def helper_cancel(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    validate(params, {"expand": EXPAND})
    return 200, _dumps(api.sb.cancel_session(args[0]))


def helper_expire(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    validate(params, {"expand": EXPAND})
    api.sb.expire_session(args[0])
    return 200, _dumps(api.sb.session(args[0]))


def helper_finish(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"account": S(prefix="fca_"), "status": E("succeeded", "failed")})
    finished = api.sb.finish_refreshes(p.get("account"), p.get("status", "succeeded"))
    return 200, _dumps({"object": "test_helpers.result", "finished": finished})


def _account_helper(name: str) -> Handler:
    def handler(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
        specs: dict[str, Spec] = {"expand": EXPAND}
        if name == "deactivate":
            specs["action"] = E("relink_required", "none")
        p = validate(params, specs)
        if name == "deactivate":
            data = api.sb.deactivate(args[0], action=p.get("action", "relink_required"))
        elif name == "reactivate":
            data = api.sb.reactivate(args[0])
        else:
            data = api.sb.disconnect_by_user(args[0])
        return 200, _dumps(data)

    return handler


def helper_fire_event(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"type": S(required=True)})
    return 200, _dumps(api.sb.fire_event(args[0], p["type"]))


def helper_history(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"size": I(required=True)})
    if not 0 <= p["size"] <= 5_000_000:
        raise invalid(
            "size must be between 0 and 5000000.", param="size", code="parameter_invalid_integer"
        )
    api.sb.set_history_size(args[0], p["size"])
    return 200, _dumps(api.sb._account_row(args[0])[0])


def helper_advance(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"seconds": I(required=True)})
    if p["seconds"] < 0:
        raise invalid(
            "seconds must be zero or more: the sandbox clock only moves forward.",
            param="seconds",
            code="parameter_invalid_integer",
        )
    now = api.sb.advance_time(p["seconds"])
    return 200, _dumps({"object": "test_helpers.clock", "now": now})


def helper_deliver(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"retry_now": Spec("bool")})
    attempts = api.sb.deliver_events(retry_now=p.get("retry_now", False))
    return 200, _dumps({"object": "test_helpers.result", "attempts": attempts})


helper_deliver.outside_transaction = True  # type: ignore[attr-defined]


def helper_institutions(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"query": S()})
    data = api.sb.institutions(p.get("query"))
    return 200, _dumps(
        {"object": "list", "data": data, "has_more": False, "url": f"{HELPERS}/institutions"}
    )


def _sb_refresh(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.refresh_account(acct, features)


def _sb_subscribe(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.subscribe(acct, features)


def _sb_unsubscribe(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.unsubscribe(acct, features)


def _sb_disconnect(sb: Sandbox, acct: str, features: list[str]) -> dict[str, Any]:
    return sb.disconnect(acct)


_ID = r"([A-Za-z0-9_]+)"
ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/customers", create_customer),
    ("GET", "/v1/customers", list_customers),
    ("GET", f"/v1/customers/{_ID}", retrieve_customer),
    ("POST", f"/v1/customers/{_ID}", update_customer),
    ("POST", f"{FC}/sessions", create_session),
    ("GET", f"{FC}/sessions/{_ID}", retrieve_session),
    ("GET", f"{FC}/accounts", list_accounts),
    ("GET", f"{FC}/accounts/{_ID}", retrieve_account),
    ("POST", f"{FC}/accounts/{_ID}/refresh", _account_action(_sb_refresh, FEATURES)),
    ("POST", f"{FC}/accounts/{_ID}/subscribe", _account_action(_sb_subscribe, ("transactions",))),
    (
        "POST",
        f"{FC}/accounts/{_ID}/unsubscribe",
        _account_action(_sb_unsubscribe, ("transactions",)),
    ),
    ("POST", f"{FC}/accounts/{_ID}/disconnect", _account_action(_sb_disconnect, None)),
    ("GET", f"{FC}/accounts/{_ID}/owners", list_owners),
    ("GET", f"{FC}/transactions", list_transactions),
    ("GET", f"{FC}/transactions/{_ID}", retrieve_transaction),
    ("GET", "/v1/events", list_events),
    ("GET", f"/v1/events/{_ID}", retrieve_event),
    ("POST", f"{HELPERS}/sessions/{_ID}/complete", helper_complete),
    ("POST", f"{HELPERS}/sessions/{_ID}/cancel", helper_cancel),
    ("POST", f"{HELPERS}/sessions/{_ID}/expire", helper_expire),
    ("POST", f"{HELPERS}/finish_refreshes", helper_finish),
    ("POST", f"{HELPERS}/accounts/{_ID}/deactivate", _account_helper("deactivate")),
    ("POST", f"{HELPERS}/accounts/{_ID}/reactivate", _account_helper("reactivate")),
    ("POST", f"{HELPERS}/accounts/{_ID}/disconnect", _account_helper("disconnect")),
    ("POST", f"{HELPERS}/accounts/{_ID}/fire_event", helper_fire_event),
    ("POST", f"{HELPERS}/accounts/{_ID}/history", helper_history),
    ("POST", f"{HELPERS}/advance_time", helper_advance),
    ("POST", f"{HELPERS}/deliver_events", helper_deliver),
    ("GET", f"{HELPERS}/institutions", helper_institutions),
]
ROUTES.extend(PAYMENT_ROUTES)  # payments hook: flask_finconn.sandbox.payments.routes

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Request Failed",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
