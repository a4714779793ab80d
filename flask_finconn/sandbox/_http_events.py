"""Route handlers for ``/v1/events``."""

from __future__ import annotations

from typing import Any

from ._params import EXPAND, PAGINATION, L, S, Spec, invalid, not_found, validate
from ._wire import Api, created_filter, expand_paths


def list_events(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
    p = validate(
        params,
        {
            **PAGINATION,
            "type": S(),
            "types": L(S()),
            "created": Spec("int_or_range"),
            "delivery_success": Spec("bool"),
        },
    )
    expand_paths(p, (), "data.")
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
    where, qargs = created_filter(p.get("created"), where, qargs)
    if "delivery_success" in p:
        # false: some webhook endpoint still waits for the event or gave up on it.
        undelivered = (
            "EXISTS (SELECT 1 FROM deliveries d WHERE d.event = events.id "
            "AND d.state IN ('pending', 'failed'))"
        )
        where += f" AND {'NOT ' if p['delivery_success'] else ''}{undelivered}"
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
    expand_paths(p, ())
    row = api.store.one("SELECT body FROM events WHERE id = ?", (args[0],))
    if row is None:
        raise not_found("event", args[0])
    return 200, str(row[0])
