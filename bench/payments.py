"""Debits through ``finconn.debit`` against the same PaymentIntents through the bare SDK.

Part 1: 1,000 debits with ``finconn.debit`` (idempotency row, Stripe call, stored state,
signal) on the in-process sandbox, against the same ``payment_intents.create`` with
``confirm=true`` and an idempotency key through the bare stripe SDK on the same sandbox,
in the same run. Target: ratio <= 1.5. Both wall-clock and CPU time (of this process: the
sandbox runs in it) are shown; on a shared machine the CPU ratio is the steadier one.

Part 2: 8 threads race ``finconn.debit`` over the same 200 idempotency keys (each thread
in its own order): exactly 200 PaymentIntents at the sandbox and 200 rows must result.

    .venv/bin/python bench/payments.py [--debits 1000] [--keys 200] [--threads 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import tempfile
import threading
import time
from typing import Any

import sqlalchemy as sa
import stripe
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Payment
from flask_finconn.testing import create_app, link_accounts, sandbox_of, save_account_for_payments

HOLDER = Holder("bench", email="bench@example.com", name="Bench Holder")
PERMISSIONS = ["balances", "payment_method"]


def setup(directory: str) -> tuple[Flask, str]:
    app = create_app(
        f"sqlite:///{directory}/bench.sqlite3",
        FINCONN_PERMISSIONS=PERMISSIONS,
        FINCONN_SANDBOX_REFRESH_DELAY=3600,
    )
    sandbox_of(app).payments.settlement_delay = 10**9
    with app.app_context():
        # What a host on SQLite would run in production: WAL, not a journal file per commit.
        get_state(app).db.session.execute(sa.text("PRAGMA journal_mode=WAL"))
        get_state(app).db.session.commit()
    [checking] = link_accounts(app, HOLDER, accounts=["checking"], permissions=PERMISSIONS)
    return app, save_account_for_payments(app, HOLDER, checking).id


def through_finconn(app: Flask, method_id: str, count: int, run: int) -> tuple[float, float]:
    """Seconds of wall-clock and CPU time for ``count`` debits through the extension."""
    with app.app_context():
        finconn = get_state(app).extension
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            payment = finconn.debit(
                HOLDER.id,
                method_id,
                1000 + i,
                description="Bench",
                idempotency_key=f"ext-{run}-{i}",
            )
            assert payment.status == "processing", payment.status
        return time.perf_counter() - started, time.process_time() - cpu


def through_sdk(app: Flask, method_id: str, count: int, run: int) -> tuple[float, float]:
    """Seconds of wall-clock and CPU time for ``count`` bare SDK debits."""
    with app.app_context():
        from flask_finconn.models import Customer, PaymentMethod

        state = get_state(app)
        method = state.db.session.get(PaymentMethod, method_id)
        assert method is not None
        customer = state.db.session.get(Customer, method.customer_id)
        assert customer is not None
        client: stripe.StripeClient = state.stripe.client
        params: dict[str, Any] = {
            "currency": "usd",
            "customer": customer.stripe_id,
            "payment_method": method.stripe_id,
            "payment_method_types": ["us_bank_account"],
            "mandate": method.mandate_id,
            "confirm": True,
            "off_session": True,
            "description": "Bench",
        }
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(count):
            # The same PaymentIntent finconn.debit creates, with its metadata.
            metadata = {"finconn_payment_id": f"fcpay_{run:04d}{i:016d}"}
            intent = client.v1.payment_intents.create(
                {**params, "amount": 1000 + i, "metadata": metadata},  # type: ignore[typeddict-item]
                {"idempotency_key": f"sdk-{run}-{i}"},
            )
            assert intent.status == "processing", intent.status
        return time.perf_counter() - started, time.process_time() - cpu


def race(app: Flask, method_id: str, keys: int, threads: int) -> tuple[int, int, float]:
    """Each thread debits every key once, in its own order; returns intents, rows, seconds."""
    before = len(sandbox_of(app).events("payment_intent.created"))
    barrier = threading.Barrier(threads)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        order = list(range(keys))
        random.Random(seed).shuffle(order)
        try:
            with app.app_context():
                finconn = get_state(app).extension
                barrier.wait()
                for i in order:
                    finconn.debit(
                        HOLDER.id,
                        method_id,
                        500 + i,
                        description="Race",
                        idempotency_key=f"race-{i}",
                    )
        except BaseException as exc:
            errors.append(exc)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    intents = len(sandbox_of(app).events("payment_intent.created")) - before
    with app.app_context():
        rows = (
            get_state(app)
            .db.session.query(Payment)
            .filter(Payment.idempotency_key.like("race-%"))
            .count()
        )
    return intents, rows, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--debits", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stripe.enable_telemetry = False
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    with tempfile.TemporaryDirectory(dir=base) as directory:
        app, method_id = setup(directory)
        ours, bare = [], []
        for run in range(args.repeat):
            bare.append(through_sdk(app, method_id, args.debits, run))
            ours.append(through_finconn(app, method_id, args.debits, run))
        for kind, index in (("wall", 0), ("CPU", 1)):
            best_ours = min(t[index] for t in ours)
            best_bare = min(t[index] for t in bare)
            print(
                f"{kind}: finconn.debit x {args.debits}: {best_ours:.2f} s; bare SDK "
                f"create+confirm (baseline): {best_bare:.2f} s; ratio "
                f"{best_ours / best_bare:.2f} (target <= 1.5; best of {args.repeat})"
            )
        intents, rows, elapsed = race(app, method_id, args.keys, args.threads)
        print(
            f"{args.threads} threads racing {args.keys} keys: {intents} PaymentIntents, "
            f"{rows} rows ({elapsed:.2f} s; want {args.keys} and {args.keys})"
        )
        with app.app_context():
            app.extensions["sqlalchemy"].engine.dispose()


if __name__ == "__main__":
    main()
