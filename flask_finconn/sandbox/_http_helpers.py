"""Route handlers for ``/v1/test_helpers/financial_connections``: what the end user, the
bank or the passing of time would do, on demand."""

from __future__ import annotations

from typing import Any

from ._data import dumps as _dumps
from ._params import EXPAND, E, I, L, S, Spec, invalid, validate
from ._wire import Api, Handler

HELPERS = "/v1/test_helpers/financial_connections"


def complete_session(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"institution": S(), "accounts": L(S()), "expand": EXPAND})
    session = api.sb.complete_session(
        args[0], institution=p.get("institution") or "bank_nonoauth", accounts=p.get("accounts")
    )
    return 200, _dumps(session)


def cancel_session(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    validate(params, {"expand": EXPAND})
    return 200, _dumps(api.sb.cancel_session(args[0]))


def expire_session(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    validate(params, {"expand": EXPAND})
    api.sb.expire_session(args[0])
    return 200, _dumps(api.sb.session(args[0]))


def finish_refreshes(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
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


def fire_event(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"type": S(required=True)})
    return 200, _dumps(api.sb.fire_event(args[0], p["type"]))


def set_history(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"size": I(required=True)})
    if not 0 <= p["size"] <= 5_000_000:
        raise invalid(
            "size must be between 0 and 5000000.", param="size", code="parameter_invalid_integer"
        )
    api.sb.set_history_size(args[0], p["size"])
    return 200, _dumps(api.sb.parts.accounts.row(args[0])[0])


def advance_time(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"seconds": I(required=True)})
    refusal = api.sb.kernel.refuse_advance(p["seconds"])
    if refusal is not None:
        raise invalid(refusal, param="seconds", code="parameter_invalid_integer")
    now = api.sb.advance_time(p["seconds"])
    return 200, _dumps({"object": "test_helpers.clock", "now": now})


def deliver_events(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"retry_now": Spec("bool")})
    attempts = api.sb.deliver_events(retry_now=p.get("retry_now", False))
    return 200, _dumps({"object": "test_helpers.result", "attempts": attempts})


deliver_events.outside_transaction = True  # type: ignore[attr-defined]


def list_institutions(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(params, {"query": S()})
    data = api.sb.institutions(p.get("query"))
    return 200, _dumps(
        {"object": "list", "data": data, "has_more": False, "url": f"{HELPERS}/institutions"}
    )


deactivate = _account_helper("deactivate")
reactivate = _account_helper("reactivate")
disconnect = _account_helper("disconnect")
