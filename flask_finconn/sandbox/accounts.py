"""Financial Connections accounts: storage and the status machine.

An account is ``active``, ``inactive`` (the bank cut access off; ``status_details`` says
what to do) or ``disconnected`` (for good). The deactivation banks schedule a
``deactivate`` task on the sandbox clock; a relink or :meth:`Accounts.reactivate` makes an
inactive account active again.
"""

from __future__ import annotations

import json
from typing import Any

from . import _data, institutions
from ._context import RequestContext
from ._data import dumps as _dumps
from ._kernel import Kernel
from ._params import invalid, not_found
from .events import AUTHORIZATION_EVENT_TYPES, EVENT_TYPES, Events

DAY = _data.DAY
# The account field holding each refreshable feature's state, and the permission it needs.
FEATURE_STATE = {
    "balance": "balance_refresh",
    "ownership": "ownership_refresh",
    "transactions": "transaction_refresh",
}
FEATURE_PERMISSION = {
    "balance": "balances",
    "ownership": "ownership",
    "transactions": "transactions",
}
REAUTH_EVENTUAL_DAYS = 30
INACTIVE_AFTER = 60


class Accounts:
    """The linked accounts of one sandbox and their status."""

    def __init__(self, kernel: Kernel, events: Events) -> None:
        self.kernel = kernel
        self.store = kernel.store
        self.events = events
        kernel.on_task("deactivate", self._run_deactivate)

    # --- storage ------------------------------------------------------------------------

    def row(
        self, acct_id: str, *, param: str = "account", status: int = 404
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The account as the API shows it and its internal state (raises ``ApiError``)."""
        row = self.store.one("SELECT data, internal FROM accounts WHERE id = ?", (acct_id,))
        if row is None:
            raise not_found("financial connections account", acct_id, param=param, status=status)
        return json.loads(row[0]), json.loads(row[1])

    def get(self, acct_id: str) -> dict[str, Any]:
        """The account as the API returns it (no expansions)."""
        with self.store.tx(write=False):
            return self.row(acct_id)[0]

    def save(self, data: dict[str, Any], internal: dict[str, Any]) -> None:
        """Write back an account read with :meth:`row`."""
        self.store.execute(
            "UPDATE accounts SET data = ?, internal = ? WHERE id = ?",
            (_dumps(data), _dumps(internal), data["id"]),
        )

    def require_active(self, data: dict[str, Any], verb: str) -> None:
        """Raise the API's 400 unless the account is active (``verb``: what was refused)."""
        if data["status"] != "active":
            raise invalid(
                f"The account {data['id']} is {data['status']} and cannot be {verb}. "
                + (
                    "Ask the account holder to link it again."
                    if data["status"] == "disconnected"
                    else "Ask the account holder to relink it (status_details shows the action)."
                ),
                code="financial_connections_account_inactive",
                param="account",
            )

    # --- the status machine -------------------------------------------------------------

    def mark_inactive(
        self,
        data: dict[str, Any],
        internal: dict[str, Any],
        at: int,
        *,
        action: str = "relink_required",
    ) -> None:
        """Make the account inactive: pending refreshes fail, none may start, and the
        ``deactivated`` event is sent."""
        data["status"] = "inactive"
        data["status_details"] = {
            "inactive": {
                "action": action,
                "cause": "access_expired" if action == "relink_required" else "unspecified",
            }
        }
        for key in FEATURE_STATE.values():
            state = data.get(key)
            if state:
                if state["status"] == "pending":
                    state["status"] = "failed"
                state["next_refresh_available_at"] = None
        self.kernel.cancel(data["id"], "refresh", "deactivate")
        self.save(data, internal)
        self.events.emit("financial_connections.account.deactivated", data, at)

    def expect_deactivation(
        self, data: dict[str, Any], internal: dict[str, Any], when: int, at: int
    ) -> None:
        """Announce that access ends at ``when`` (and schedule it), with the events Stripe
        sends for a first announcement or a changed date."""
        previous = (data.get("status_details") or {}).get("active")
        data["status_details"] = {
            "active": {
                "action": "relink_required",
                "cause": "access_expired",
                "expected_deactivation_date": when,
            }
        }
        self.kernel.cancel(data["id"], "deactivate")
        self.kernel.schedule(when, "deactivate", data["id"])
        self.save(data, internal)
        if previous:
            self.events.emit(
                "financial_connections.account.expected_deactivation_date_updated", data, at
            )
        else:
            self.events.emit("financial_connections.account.upcoming_deactivation", data, at)
            self.events.emit(
                "financial_connections.authorization.upcoming_deactivation",
                self.authorization(data, internal),
                at,
            )

    def schedule_cutoff(
        self, data: dict[str, Any], internal: dict[str, Any], now: int, *, relinked: bool
    ) -> None:
        """Start the deactivation bank's clock on a newly linked account: an ``inactive`` or
        ``reauth_immediate`` bank cuts it off after a minute (unless it was a relink); a
        ``reauth_eventual`` bank announces a deactivation in 30 days."""
        inst = institutions.get(internal["institution"])
        deactivation = inst.deactivation if inst is not None else None
        if deactivation in ("inactive", "reauth_immediate") and not relinked:
            self.kernel.schedule(now + INACTIVE_AFTER, "deactivate", data["id"])
        elif deactivation == "reauth_eventual":
            self.expect_deactivation(data, internal, now + REAUTH_EVENTUAL_DAYS * DAY, now)
            self.save(data, internal)

    def authorization(self, data: dict[str, Any], internal: dict[str, Any]) -> dict[str, Any]:
        """The ``financial_connections.authorization`` object behind the account."""
        active = (data.get("status_details") or {}).get("active")
        details: dict[str, Any]
        if data["status"] == "active":
            details = {
                "active": {
                    "action": active["action"] if active else "none",
                    "expected_deactivation_date": active["expected_deactivation_date"]
                    if active
                    else None,
                }
            }
        else:
            details = {"inactive": {"action": "relink_required"}}
        return {
            "id": internal["authorization"],
            "object": "financial_connections.authorization",
            "institution_name": data["institution_name"],
            "livemode": data["livemode"],
            "status": "active" if data["status"] == "active" else "inactive",
            "status_details": details,
        }

    def _run_deactivate(self, acct_id: str, extra: dict[str, Any], at: int) -> None:
        row = self.store.one("SELECT data, internal FROM accounts WHERE id = ?", (acct_id,))
        if row is None:
            return
        data, internal = json.loads(row[0]), json.loads(row[1])
        if data["status"] == "active":
            self.mark_inactive(data, internal, at)

    def deactivate(self, account: str, *, action: str = "relink_required") -> dict[str, Any]:
        """Make an active account inactive (``action``: ``relink_required`` or ``none``)."""
        if action not in ("relink_required", "none"):
            raise ValueError("action must be 'relink_required' or 'none'.")
        with self.store.tx():
            self.kernel.run_due()
            data, internal = self.row(account)
            if data["status"] != "active":
                raise invalid(
                    f"The account {account} is {data['status']}; only active accounts can be "
                    "deactivated.",
                    param="account",
                )
            self.mark_inactive(data, internal, self.kernel.now(), action=action)
            return data

    def reactivate(self, account: str) -> dict[str, Any]:
        """Make an inactive account active again, as a successful relink does."""
        with self.store.tx():
            self.kernel.run_due()
            data, internal = self.row(account)
            if data["status"] != "inactive":
                raise invalid(
                    f"The account {account} is {data['status']}; only inactive accounts can be "
                    "reactivated.",
                    param="account",
                )
            now = self.kernel.now()
            data["status"] = "active"
            data.pop("status_details", None)
            internal["relinked"] = True
            for key in FEATURE_STATE.values():
                state = data.get(key)
                if state:
                    state["next_refresh_available_at"] = now
            self.save(data, internal)
            self.events.emit("financial_connections.account.reactivated", data, now)
            inst = institutions.get(internal["institution"])
            if inst is not None and inst.deactivation == "reauth_immediate":
                self.expect_deactivation(data, internal, now + DAY, now)
            elif inst is not None and inst.deactivation == "reauth_eventual":
                self.expect_deactivation(data, internal, now + REAUTH_EVENTUAL_DAYS * DAY, now)
            return data

    def disconnect(self, acct_id: str) -> dict[str, Any]:
        """``POST .../accounts/{id}/disconnect``: disconnect for good (idempotent)."""
        data, internal = self.row(acct_id)
        if data["status"] != "disconnected":
            self._disconnect(data, internal, self.kernel.now())
        return data

    def disconnect_by_user(self, account: str) -> dict[str, Any]:
        """Disconnect an account as the end user would (from their bank or Link)."""
        with self.store.tx():
            self.kernel.run_due()
            data, internal = self.row(account)
            if data["status"] != "disconnected":
                with self.kernel.requests.serving(RequestContext(livemode=data["livemode"])):
                    self._disconnect(data, internal, self.kernel.now())
            return data

    def _disconnect(self, data: dict[str, Any], internal: dict[str, Any], now: int) -> None:
        data["status"] = "disconnected"
        data.pop("status_details", None)
        data["balance"] = None
        data["subscriptions"] = []
        for key in FEATURE_STATE.values():
            state = data.get(key)
            if state:
                if state["status"] == "pending":
                    state["status"] = "failed"
                state["next_refresh_available_at"] = None
        self.kernel.cancel(data["id"])
        self.save(data, internal)
        self.events.emit("financial_connections.account.disconnected", data, now)

    def fire_event(self, account: str, type: str) -> dict[str, Any]:
        """Create an event of any FC type for an account (its current snapshot). Returns it."""
        if type not in EVENT_TYPES:
            raise invalid(
                f"Unknown event type '{type}'. Use one of: {', '.join(EVENT_TYPES)}.",
                param="type",
                code="parameter_invalid_string",
            )
        with self.store.tx():
            self.kernel.run_due()
            data, internal = self.row(account)
            obj = self.authorization(data, internal) if type in AUTHORIZATION_EVENT_TYPES else data
            return self.events.emit(type, obj, self.kernel.now())
