"""Transaction histories: what a transaction refresh writes.

Each refresh settles the rows still pending (most post, one in five is voided), then
generates the days since the last refresh (the last 180 days the first time) at the
account's rate, the newest few still pending. ``history_size`` (per account) sets how many
rows the history should hold; rows are written in bulk, so 100k+ is fine.
"""

from __future__ import annotations

from typing import Any

from . import _data
from ._kernel import Kernel

DAY = _data.DAY


class Transactions:
    """The transaction histories of one sandbox."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.store = kernel.store

    def new_refresh(self, acct_id: str, now: int) -> str:
        """Record a new transaction refresh of the account and return its ``fctxnref_`` id."""
        ref_id = _data.new_id("fctxnref_")
        self.store.execute(
            "INSERT INTO txn_refreshes (id, account, created) VALUES (?, ?, ?)",
            (ref_id, acct_id, now),
        )
        return ref_id

    def refresh(self, data: dict[str, Any], internal: dict[str, Any], ref_id: str, at: int) -> None:
        """Apply the transaction refresh ``ref_id`` finishing at ``at`` (the caller saves
        ``internal``, which records how far the history reaches)."""
        acct_id = data["id"]
        ref_seq = self.store.one("SELECT seq FROM txn_refreshes WHERE id = ?", (ref_id,))[0]
        livemode = data["livemode"]
        generation = internal["txn_generation"] = internal["txn_generation"] + 1
        # Pending rows from earlier refreshes settle: most post, some are voided.
        pending = self.store.all(
            "SELECT id, transacted_at, amount, description FROM transactions "
            "WHERE account = ? AND status = 'pending'",
            (acct_id,),
        )
        updates = []
        for txn_id, transacted_at, amount, description in pending:
            voided = _data.seed_of(txn_id, "void") % 5 == 0
            status = "void" if voided else "posted"
            body = _data.transaction_body(
                txn_id,
                acct_id,
                amount,
                description,
                status,
                transacted_at,
                None if voided else at,
                at if voided else None,
                ref_id,
                at,
                livemode,
            )
            updates.append((status, ref_seq, body, txn_id))
        self.store.executemany(
            "UPDATE transactions SET status = ?, refresh_seq = ?, body = ? WHERE id = ?", updates
        )
        until = internal.get("txn_until")
        size = internal.get("history_size")
        if until is None:
            start = at - _data.HISTORY_DAYS * DAY
            count = size if size is not None else int(_data.HISTORY_DAYS * _data.DEFAULT_DAILY_RATE)
        else:
            # After a jump of the clock the bank reports no more than its history window,
            # so a refresh's work is bounded by that, never by the time skipped.
            start = max(until, at - _data.HISTORY_DAYS * DAY)
            rate = (size / _data.HISTORY_DAYS) if size is not None else _data.DEFAULT_DAILY_RATE
            days = (at - start) / DAY
            count = int(days * rate + (_data.seed_of(acct_id, str(generation)) % 1000) / 1000)
            if size is not None:
                have = self.store.one(
                    "SELECT COUNT(*) FROM transactions WHERE account = ?", (acct_id,)
                )[0]
                count = max(count, size - have)
        # A few of the newest purchases are still pending; later refreshes settle them.
        fresh = min(count, 2 + generation % 2)
        rows = []
        for pending_now, batch in (
            (
                False,
                _data.generate_transactions(
                    acct_id, data["category"], start, at, count - fresh, generation
                ),
            ),
            (
                True,
                _data.generate_transactions(
                    acct_id, data["category"], max(start, at - DAY), at, fresh, -generation
                ),
            ),
        ):
            for txn_id, transacted_at, amount, description in batch:
                status = "pending" if pending_now else "posted"
                body = _data.transaction_body(
                    txn_id,
                    acct_id,
                    amount,
                    description,
                    status,
                    transacted_at,
                    None if pending_now else min(transacted_at + 3600, at),
                    None,
                    ref_id,
                    at,
                    livemode,
                )
                rows.append(
                    (txn_id, acct_id, transacted_at, status, ref_seq, amount, description, body)
                )
        self.store.executemany(
            "INSERT INTO transactions (id, account, transacted_at, status, refresh_seq, amount, "
            "description, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        internal["txn_until"] = at
