"""The payments endpoints: ``(method, pattern, handler)`` rows for the sandbox's router.

A handler takes ``(api, params, args)`` and returns ``(status, body)``, like every sandbox
route; it uses only ``api.sb.parts.payments`` (a :class:`Payments`), so it does not
depend on how the router is built. The router runs POSTs in one transaction and replays them by
``Idempotency-Key``. An error that must keep its state change (a wrong microdeposit
attempt, a blocked account) is returned as a response rather than raised, so the
transaction commits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from .._data import dumps
from .._params import ApiError, S, invalid, page_limit, validate
from . import _intents, _specs
from ._host import Committed, PaymentsError
from .engine import Payments

Handler = Callable[[Any, dict[str, Any], tuple[str, ...]], tuple[int, str]]
_ID = r"([A-Za-z0-9_]+)"
HELPERS = "/v1/test_helpers/payment_intents"
_SI_EXPANDABLE = (
    "customer",
    "payment_method",
    "mandate",
    "latest_attempt",
    "on_behalf_of",
    "single_use_mandate",
    "application",
)
_PI_EXPANDABLE = (
    "customer",
    "payment_method",
    "latest_charge",
    "on_behalf_of",
    "review",
    "application",
)
_PM_EXPANDABLE = ("customer",)
_CHARGE_EXPANDABLE = ("customer", "payment_intent", "payment_method")


def _expand(params: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> list[str]:
    paths = []
    for i, path in enumerate(params.get("expand") or []):
        if (
            not isinstance(path, str)
            or not path.startswith(prefix)
            or (path[len(prefix) :] not in allowed)
        ):
            raise invalid(f"This property cannot be expanded ({path}).", param=f"expand[{i}]")
        paths.append(path[len(prefix) :])
    return paths


def _conformant(handler: Handler) -> Handler:
    """Errors with Stripe's body; a :class:`Committed` one is answered, so its change stays."""

    @functools.wraps(handler)
    def wrapped(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
        try:
            return handler(api, params, args)
        except Committed as exc:
            return exc.status, dumps(exc.body())
        except PaymentsError:
            raise
        except ApiError as exc:
            raise PaymentsError.wrap(exc) from None

    return wrapped


def _pay(api: Any) -> Payments:
    payments: Payments = api.sb.parts.payments
    return payments


def _intent_op(kind: str, op: str) -> Handler:
    """create/update/confirm/cancel/verify for SetupIntents (``seti``) or PaymentIntents."""
    allowed = _SI_EXPANDABLE if kind == "seti" else _PI_EXPANDABLE
    noun = "setup_intent" if kind == "seti" else "payment_intent"

    @_conformant
    def handler(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
        pay = _pay(api)
        paths = _expand(params, allowed)
        if op == "verify":
            data = pay.verify_microdeposits(args[0], params)
        elif op == "create":
            data = getattr(pay, f"create_{noun}")(params)
        else:
            data = getattr(pay, f"{op}_{noun}")(args[0], params)
        if paths:
            return 200, dumps(_intents.render(pay, data, paths))
        # Every operation ends by storing the intent it returns (or leaves it as loaded),
        # so unexpanded it is the text just stored.
        return 200, pay.objects.text(data)

    return handler


def _retrieve_intent(kind: str) -> Handler:
    allowed = _SI_EXPANDABLE if kind == "seti" else _PI_EXPANDABLE

    @_conformant
    def handler(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
        pay = _pay(api)
        p = _specs.check(params, _specs.RETRIEVE_INTENT)
        paths = _expand(p, allowed)
        if kind == "seti":
            data = pay.setup_intent(args[0], p.get("client_secret"))
        else:
            data = pay.payment_intent(args[0], p.get("client_secret"))
        return 200, dumps(_intents.render(pay, data, paths))

    return handler


def _render_pm(pay: Payments, data: dict[str, Any], paths: list[str]) -> str:
    if "customer" in paths and data.get("customer"):
        data["customer"] = pay.host.customer(data["customer"], status=400)
    return dumps(data)


@_conformant
def create_pm(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    pay = _pay(api)
    paths = _expand(params, _PM_EXPANDABLE)
    return 200, _render_pm(pay, pay.create_payment_method(params), paths)


@_conformant
def retrieve_pm(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    pay = _pay(api)
    paths = _expand(_specs.check(params, _specs.RETRIEVE), _PM_EXPANDABLE)
    return 200, _render_pm(pay, pay.payment_method(args[0]), paths)


@_conformant
def attach_pm(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    pay = _pay(api)
    paths = _expand(params, _PM_EXPANDABLE)
    return 200, _render_pm(pay, pay.attach_payment_method(args[0], params), paths)


@_conformant
def detach_pm(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    pay = _pay(api)
    paths = _expand(params, _PM_EXPANDABLE)
    return 200, _render_pm(pay, pay.detach_payment_method(args[0], params), paths)


@_conformant
def list_pms(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = _specs.check(params, _specs.PM_LIST)
    return _page(_pay(api), p, p.get("customer"), "/v1/payment_methods")


@_conformant
def list_customer_pms(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = _specs.check(params, _specs.CUSTOMER_PM_LIST)
    pay = _pay(api)
    pay.host.check_customer(args[0], param="customer")
    return _page(pay, p, args[0], f"/v1/customers/{args[0]}/payment_methods")


def _page(pay: Payments, p: dict[str, Any], customer: str | None, url: str) -> tuple[int, str]:
    """One page of PaymentMethods, newest first (Stripe's cursor pagination)."""
    paths = _expand(p, _PM_EXPANDABLE, "data.")
    where, args = "kind = 'pm'", []
    if customer:
        where += " AND owner = ?"
        args.append(customer)
    if p.get("type") and p["type"] != "us_bank_account":
        where += " AND 0"
    if p.get("allow_redisplay"):
        where += " AND json_extract(data, '$.allow_redisplay') = ?"
        args.append(p["allow_redisplay"])
    items, more = _listing(pay, p, where, args, "payment method")
    return _list_body([_render_pm(pay, item, paths) for item in items], more, url)


@_conformant
def list_pis(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    """One page of PaymentIntents, newest first, of one customer or of all."""
    pay = _pay(api)
    p = _specs.check(params, _specs.PI_LIST)
    paths = _expand(p, _PI_EXPANDABLE, "data.")
    where, where_args = "kind = 'pi'", []
    if p.get("customer"):
        where += " AND owner = ?"
        where_args.append(p["customer"])
    items, more = _listing(pay, p, where, where_args, "payment intent")
    rendered = [dumps(_intents.render(pay, item, paths)) for item in items]
    return _list_body(rendered, more, "/v1/payment_intents")


def _listing(
    pay: Payments, p: dict[str, Any], where: str, args: list[Any], noun: str
) -> tuple[list[dict[str, Any]], bool]:
    """The objects of one page, newest first, and whether more follow (cursor pagination)."""
    limit = page_limit(p)
    cursor = p.get("starting_after") or p.get("ending_before")
    order = "DESC"
    if cursor:
        row = pay.host.store.one(
            f"SELECT seq FROM pay_objects WHERE id = ? AND {where}", (cursor, *args)
        )
        if row is None:
            raise invalid(
                f"No such {noun}: '{cursor}'",
                param="starting_after" if p.get("starting_after") else "ending_before",
                code="resource_missing",
            )
        where += " AND seq < ?" if p.get("starting_after") else " AND seq > ?"
        order = "DESC" if p.get("starting_after") else "ASC"
        args = [*args, row[0]]
    rows = pay.host.store.all(
        f"SELECT data FROM pay_objects WHERE {where} ORDER BY seq {order} LIMIT ?",
        (*args, limit + 1),
    )
    items = [pay.objects.decode(r[0]) for r in rows[:limit]]
    if order == "ASC":
        items.reverse()
    return items, len(rows) > limit


def _list_body(rendered: list[str], has_more: bool, url: str) -> tuple[int, str]:
    return 200, (
        '{"object":"list","data":['
        + ",".join(rendered)
        + '],"has_more":'
        + ("true" if has_more else "false")
        + ',"url":'
        + dumps(url)
        + "}"
    )


@_conformant
def retrieve_mandate(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    _expand(_specs.check(params, _specs.RETRIEVE), ())
    return 200, dumps(_pay(api).mandate(args[0]))


@_conformant
def retrieve_charge(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    pay = _pay(api)
    paths = _expand(_specs.check(params, _specs.RETRIEVE), _CHARGE_EXPANDABLE)
    data = pay.charge(args[0])
    for path in paths:
        if path == "customer" and data["customer"]:
            data["customer"] = pay.host.customer(data["customer"], status=400)
        elif path == "payment_intent":
            data["payment_intent"] = pay.payment_intent(data["payment_intent"])
        elif path == "payment_method":
            data["payment_method"] = pay.payment_method(data["payment_method"])
    return 200, dumps(data)


def _helper(name: str) -> Handler:
    @_conformant
    def handler(api: Any, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
        pay = _pay(api)
        if name == "fail":
            p = validate(params, {"failure_code": S()})
            return 200, dumps(pay.fail(args[0], p.get("failure_code") or "insufficient_funds"))
        if name == "dispute":
            p = validate(params, {"reason": S()})
            pay.dispute(args[0], p.get("reason") or "debit_not_authorized")
            return 200, dumps(pay.payment_intent(args[0]))
        validate(params, {})
        if name == "settle":
            return 200, dumps(pay.settle(args[0]))
        return 200, dumps(pay.process(args[0]))

    return handler


ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/setup_intents", _intent_op("seti", "create")),
    ("GET", f"/v1/setup_intents/{_ID}", _retrieve_intent("seti")),
    ("POST", f"/v1/setup_intents/{_ID}", _intent_op("seti", "update")),
    ("POST", f"/v1/setup_intents/{_ID}/confirm", _intent_op("seti", "confirm")),
    ("POST", f"/v1/setup_intents/{_ID}/cancel", _intent_op("seti", "cancel")),
    ("POST", f"/v1/setup_intents/{_ID}/verify_microdeposits", _intent_op("seti", "verify")),
    ("POST", "/v1/payment_intents", _intent_op("pi", "create")),
    ("GET", "/v1/payment_intents", list_pis),
    ("GET", f"/v1/payment_intents/{_ID}", _retrieve_intent("pi")),
    ("POST", f"/v1/payment_intents/{_ID}", _intent_op("pi", "update")),
    ("POST", f"/v1/payment_intents/{_ID}/confirm", _intent_op("pi", "confirm")),
    ("POST", f"/v1/payment_intents/{_ID}/cancel", _intent_op("pi", "cancel")),
    ("POST", f"/v1/payment_intents/{_ID}/verify_microdeposits", _intent_op("pi", "verify")),
    ("POST", "/v1/payment_methods", create_pm),
    ("GET", "/v1/payment_methods", list_pms),
    ("GET", f"/v1/payment_methods/{_ID}", retrieve_pm),
    ("POST", f"/v1/payment_methods/{_ID}/attach", attach_pm),
    ("POST", f"/v1/payment_methods/{_ID}/detach", detach_pm),
    ("GET", f"/v1/customers/{_ID}/payment_methods", list_customer_pms),
    ("GET", f"/v1/mandates/{_ID}", retrieve_mandate),
    ("GET", f"/v1/charges/{_ID}", retrieve_charge),
    ("POST", f"{HELPERS}/{_ID}/settle", _helper("settle")),
    ("POST", f"{HELPERS}/{_ID}/process", _helper("process")),
    ("POST", f"{HELPERS}/{_ID}/fail", _helper("fail")),
    ("POST", f"{HELPERS}/{_ID}/dispute", _helper("dispute")),
]

__all__ = ["ROUTES"]
