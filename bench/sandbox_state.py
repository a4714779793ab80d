"""Generate a 100k-transaction history in the sandbox and time the refresh that writes it.

The figure is the time the transaction refresh takes to generate and store the history
(rows are written in bulk), against a target of 10 s on a shared development machine.
A test suite asserts no wall-clock time; this is where the figure is watched.

    .venv/bin/python bench/sandbox_state.py [--transactions 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import stripe

from flask_finconn.sandbox import Sandbox

TARGET = 10.0


def generate(transactions: int) -> float:
    """Seconds one transaction refresh takes to write ``transactions`` rows."""
    sb = Sandbox(":memory:")
    try:
        client = sb.stripe_client()
        fc = client.v1.financial_connections
        customer = client.v1.customers.create({"email": "bench@example.com"})
        session = fc.sessions.create(
            {
                "account_holder": {"type": "customer", "customer": customer.id},
                "permissions": ["transactions"],
            }
        )
        sb.complete_session(session.id, institution="test_oauth", accounts=["checking"])
        account = fc.accounts.list({"session": session.id}).data[0].id
        sb.set_history_size(account, transactions)
        fc.accounts.refresh(account, {"features": ["transactions"]})
        started = time.perf_counter()
        sb.finish_refreshes(account)
        elapsed = time.perf_counter() - started
        count = sb.store.one("SELECT COUNT(*) FROM transactions WHERE account = ?", (account,))
        assert count[0] == transactions, count
        return elapsed
    finally:
        sb.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stripe.enable_telemetry = False
    best = min(generate(args.transactions) for _ in range(args.repeat))
    print(f"generated {args.transactions} transactions in {best:.2f} s (best of {args.repeat})")
    print(f"ratio to target: {best / TARGET:.2f} (target {TARGET:.0f} s, pass if <= 1.0)")


if __name__ == "__main__":
    main()
