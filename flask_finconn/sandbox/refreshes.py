"""Refreshes of balances, ownership and transactions, the daily transaction subscription,
and the generated data each successful refresh brings.

A refresh is ``pending`` for ``refresh_delay`` sandbox seconds (a ``refresh`` task), then
succeeds or fails and sends its ``refreshed_*`` event; the next may start
``refresh_cooldown`` seconds after it finished.
"""

from __future__ import annotations

import json
from typing import Any

from . import _data, institutions
from ._context import RequestContext
from ._data import dumps as _dumps
from ._kernel import Kernel
from ._params import invalid
from .accounts import FEATURE_PERMISSION, FEATURE_STATE, Accounts
from .events import Events
from .transactions import Transactions

DAY = _data.DAY
REFRESHED_EVENT = {
    "balance": "financial_connections.account.refreshed_balance",
    "ownership": "financial_connections.account.refreshed_ownership",
    "transactions": "financial_connections.account.refreshed_transactions",
}


class Refreshes:
    """Starting and finishing refreshes, and the transaction subscription."""

    def __init__(self, kernel: Kernel, events: Events, accounts: Accounts) -> None:
        self.kernel = kernel
        self.store = kernel.store
        self.events = events
        self.accounts = accounts
        self.transactions = Transactions(kernel)
        kernel.on_task("refresh", self._run_refresh)
        kernel.on_task("daily", self._run_daily)

    # --- the API ------------------------------------------------------------------------

    def refresh_account(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        """``POST .../accounts/{id}/refresh``: start each feature's refresh unless it is too
        early (then the account comes back unchanged)."""
        data, internal = self.accounts.row(acct_id)
        self.accounts.require_active(data, "refreshed")
        features = list(dict.fromkeys(features))
        for i, feature in enumerate(features):
            permission = FEATURE_PERMISSION[feature]
            if permission not in (data["permissions"] or []):
                raise invalid(
                    f"The account {acct_id} was linked without the '{permission}' permission, so "
                    f"'{feature}' cannot be refreshed. Link it again in a session that asks for "
                    f"'{permission}'.",
                    param=f"features[{i}]",
                )
        now = self.kernel.now()
        for feature in features:
            self.start(data, internal, feature, now)
        self.accounts.save(data, internal)
        return data

    def subscribe(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        """``POST .../subscribe``: refresh transactions now and then once a day."""
        data, internal = self.accounts.row(acct_id)
        self.accounts.require_active(data, "subscribed to")
        if "transactions" not in (data["permissions"] or []):
            raise invalid(
                f"The account {acct_id} was linked without the 'transactions' permission, so it "
                "cannot be subscribed to transactions.",
                param="features[0]",
            )
        if "transactions" not in data["subscriptions"]:
            now = self.kernel.now()
            data["subscriptions"] = ["transactions"]
            self.start(data, internal, "transactions", now)
            self.kernel.cancel(acct_id, "daily")
            self.kernel.schedule(now + DAY, "daily", acct_id)
            self.accounts.save(data, internal)
        return data

    def unsubscribe(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        """``POST .../unsubscribe``: stop the daily transaction refreshes."""
        data, internal = self.accounts.row(acct_id)
        if data["status"] == "disconnected":
            self.accounts.require_active(data, "unsubscribed from")
        data["subscriptions"] = []
        self.kernel.cancel(acct_id, "daily")
        self.accounts.save(data, internal)
        return data

    def set_history_size(self, account: str, size: int) -> None:
        """Give ``account`` about ``size`` transactions: the next transaction refresh fills
        the history up to that many rows (100k+ is fine; rows are written in bulk)."""
        if size < 0:
            raise ValueError("size must be zero or more.")
        with self.store.tx():
            data, internal = self.accounts.row(account)
            internal["history_size"] = size
            self.accounts.save(data, internal)

    def finish_all(self, account: str | None = None, status: str = "succeeded") -> int:
        """Finish pending refreshes now (of one account, or all) with ``status``.

        Returns how many finished.
        """
        if status not in ("succeeded", "failed"):
            raise ValueError("status must be 'succeeded' or 'failed'.")
        with self.store.tx():
            self.kernel.run_due()
            if account is not None:
                self.accounts.row(account)
                rows = self.store.all(
                    "SELECT id, account, data FROM tasks WHERE kind = 'refresh' AND account = ? "
                    "ORDER BY due_at, id",
                    (account,),
                )
            else:
                rows = self.store.all(
                    "SELECT id, account, data FROM tasks WHERE kind = 'refresh' ORDER BY due_at, id"
                )
            now = self.kernel.now()
            for task_id, acct_id, extra in rows:
                self.store.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
                data, internal = self.accounts.row(acct_id)
                with self.kernel.requests.serving(RequestContext()):
                    self.finish(data, internal, json.loads(extra)["feature"], now, status)
                self.accounts.save(data, internal)
            return len(rows)

    # --- starting and finishing ---------------------------------------------------------

    def start(self, data: dict[str, Any], internal: dict[str, Any], feature: str, now: int) -> bool:
        """Start a refresh of ``feature`` unless one is pending or it is too early.

        Returns whether it started. The caller saves the account.
        """
        key = FEATURE_STATE[feature]
        state = data.get(key)
        if state is not None:
            available = state.get("next_refresh_available_at")
            # Too early: like Stripe, nothing is started and the account comes back unchanged.
            if state["status"] == "pending" or available is None or available > now:
                return False
        new: dict[str, Any] = {
            "last_attempted_at": now,
            "next_refresh_available_at": None,
            "status": "pending",
        }
        if feature == "transactions":
            new = {"id": self.transactions.new_refresh(data["id"], now), **new}
        data[key] = new
        self.kernel.schedule(
            now + self.kernel.settings.refresh_delay, "refresh", data["id"], {"feature": feature}
        )
        return True

    def finish(
        self,
        data: dict[str, Any],
        internal: dict[str, Any],
        feature: str,
        at: int,
        status: str | None,
    ) -> None:
        """Finish the pending refresh of ``feature`` at ``at`` with ``status`` (None: what
        the institution gives), store what it read, and send its event."""
        key = FEATURE_STATE[feature]
        state = data.get(key)
        if not state or state["status"] != "pending":
            return
        if data["status"] != "active":
            state.update(status="failed", next_refresh_available_at=None)
            self.accounts.save(data, internal)
            self.events.emit(REFRESHED_EVENT[feature], data, at)
            return
        inst = institutions.get(internal["institution"])
        deactivates = (
            inst is not None
            and inst.deactivation in ("inactive", "reauth_immediate")
            and not internal.get("relinked")
        )
        if deactivates:
            status = "failed"
        status = status or "succeeded"
        if status == "succeeded":
            if feature == "balance":
                internal["balance_count"] += 1
                previous = (data.get("balance") or {}).get("as_of")
                data["balance"] = _data.balance(
                    data["id"], data["category"], data["subcategory"], internal["balance_count"], at
                )
                # The reading is as of the refresh's completion. Hosts keep one snapshot per
                # as_of and order them by it, so a second reading within the same second is
                # dated one second after the last rather than colliding with it.
                if previous is not None:
                    data["balance"]["as_of"] = max(at, previous + 1)
            elif feature == "ownership":
                data["ownership"] = self._new_ownership(data["id"], internal["owners"], at)
            else:
                self.transactions.refresh(data, internal, state["id"], at)
        state.update(
            status=status, next_refresh_available_at=at + self.kernel.settings.refresh_cooldown
        )
        self.accounts.save(data, internal)
        self.events.emit(REFRESHED_EVENT[feature], data, at)
        if deactivates:
            self.accounts.mark_inactive(data, internal, at)

    def _new_ownership(self, acct_id: str, variant: str, at: int) -> str:
        own_id = _data.new_id("fcaowns_")
        self.store.execute(
            "INSERT INTO ownerships (id, account, created) VALUES (?, ?, ?)", (own_id, acct_id, at)
        )
        seq = self.store.next_seq("owners")
        for i, owner in enumerate(_data.owners(variant)):
            body = {
                "id": _data.new_id("fcaown_"),
                "object": "financial_connections.account_owner",
                **owner,
                "ownership": own_id,
                "refreshed_at": at,
            }
            self.store.execute(
                "INSERT INTO owners (id, seq, ownership, data) VALUES (?, ?, ?, ?)",
                (body["id"], seq + i, own_id, _dumps(body)),
            )
        return own_id

    # --- tasks --------------------------------------------------------------------------

    def _load(self, acct_id: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        row = self.store.one("SELECT data, internal FROM accounts WHERE id = ?", (acct_id,))
        return None if row is None else (json.loads(row[0]), json.loads(row[1]))

    def _run_refresh(self, acct_id: str, extra: dict[str, Any], at: int) -> None:
        loaded = self._load(acct_id)
        if loaded is not None:
            self.finish(*loaded, extra["feature"], at, extra.get("status"))

    def _run_daily(self, acct_id: str, extra: dict[str, Any], at: int) -> None:
        loaded = self._load(acct_id)
        if loaded is None:
            return
        data, internal = loaded
        if data["status"] == "active" and "transactions" in data["subscriptions"]:
            self.start(data, internal, "transactions", at)
            self.accounts.save(data, internal)
        if data["status"] != "disconnected" and "transactions" in data["subscriptions"]:
            self.kernel.schedule(self.kernel.catch_up(at, DAY), "daily", acct_id)
