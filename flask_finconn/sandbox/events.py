"""Events: the FC event types, and creating, reading and listing events.

Every event is stored with the request that caused it and queued for each webhook
endpoint registered at that moment (delivery itself lives in :mod:`.webhooks`).
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring_ascii
from typing import Any

from . import _data
from ._data import dumps as _dumps
from ._kernel import Kernel
from ._params import not_found
from .webhooks import Webhooks

API_VERSION = "2026-10-28.endive"
ACCOUNT_EVENT_TYPES = (
    "financial_connections.account.created",
    "financial_connections.account.deactivated",
    "financial_connections.account.reactivated",
    "financial_connections.account.disconnected",
    "financial_connections.account.refreshed_balance",
    "financial_connections.account.refreshed_ownership",
    "financial_connections.account.refreshed_transactions",
    "financial_connections.account.account_numbers_updated",
    "financial_connections.account.upcoming_account_number_expiry",
    "financial_connections.account.supported_payment_method_types_updated",
    "financial_connections.account.upcoming_deactivation",
    "financial_connections.account.expected_deactivation_date_updated",
)
AUTHORIZATION_EVENT_TYPES = (
    "financial_connections.authorization.upcoming_deactivation",
    "financial_connections.authorization.expected_deactivation_date_updated",
)
EVENT_TYPES = ACCOUNT_EVENT_TYPES + AUTHORIZATION_EVENT_TYPES


def _string(value: str | None) -> str:
    """A string (or ``None``) as the shared encoder writes it."""
    return "null" if value is None else encode_basestring_ascii(value)


class Events:
    """The event log of one sandbox."""

    def __init__(self, kernel: Kernel, webhooks: Webhooks) -> None:
        self.kernel = kernel
        self.store = kernel.store
        self.webhooks = webhooks

    def emit(
        self, type: str, obj: dict[str, Any], at: int, text: str | None = None
    ) -> dict[str, Any]:
        """Create an event about ``obj`` (its snapshot now), queue its webhooks, return it.

        ``text``: ``obj`` as compact JSON, when the caller has just encoded it (to store the
        object); the event's body is then put together around it instead of encoding the
        object a second time.
        """
        ctx = self.kernel.ctx()
        endpoints = self.webhooks.endpoint_ids()
        event_id = _data.new_id("evt_")
        livemode = obj.get("livemode", False)
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": at,
            "data": {"object": obj},
            "livemode": livemode,
            "pending_webhooks": len(endpoints),
            "request": {"id": ctx.id, "idempotency_key": ctx.idempotency_key},
            "type": type,
        }
        # (``type`` is the event type here: compare classes instead.)
        if text is None or at.__class__ is not int or livemode.__class__ is not bool:
            body = _dumps(event)
        else:  # the same text, key order included, without encoding obj (or dicts) again
            body = (
                f'{{"id":"{event_id}","object":"event","api_version":"{API_VERSION}",'
                f'"created":{at},"data":{{"object":{text}}},'
                f'"livemode":{"true" if livemode else "false"},'
                f'"pending_webhooks":{len(endpoints)},'
                f'"request":{{"id":{_string(ctx.id)},"idempotency_key":'
                f'{_string(ctx.idempotency_key)}}},"type":{_string(type)}}}'
            )
        account = obj["id"] if obj.get("object") == "financial_connections.account" else None
        self.store.execute(
            "INSERT INTO events (id, created, type, account, body) VALUES (?, ?, ?, ?, ?)",
            (event_id, at, type, account, body),
        )
        self.webhooks.enqueue(event_id, endpoints)
        return event

    def get(self, event_id: str) -> dict[str, Any]:
        """The event as the API returns it (raises ``ApiError`` 404 if there is none)."""
        with self.store.tx(write=False):
            row = self.store.one("SELECT body FROM events WHERE id = ?", (event_id,))
            if row is None:
                raise not_found("event", event_id)
            return dict(json.loads(row[0]))

    def all(self, type: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        """Every event so far, oldest first, optionally of one type or for one account."""
        sql, args = "SELECT body FROM events WHERE 1 = 1", []
        if type:
            sql += " AND type = ?"
            args.append(type)
        if account:
            sql += " AND account = ?"
            args.append(account)
        with self.store.tx(write=False):
            return [json.loads(r[0]) for r in self.store.all(sql + " ORDER BY seq", args)]
