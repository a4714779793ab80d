"""Create and confirm 1,000 ACH PaymentIntents through the stripe SDK, in-process.

Each debit is ``payment_intents.create`` then ``payment_intents.confirm`` (or, with
``--one-call``, one create with ``confirm=true``) on a saved PaymentMethod with an active
mandate. Baseline: the same SDK calls
served from a canned transport (a ``stripe.HTTPClient`` that returns the bodies recorded
from the sandbox), in the same run, so the ratio is the sandbox's own cost on top of what
the SDK spends encoding requests and parsing responses. Target: ratio <= 2.0.

The ratio is of CPU time (``time.process_time``: this process only, so other work on a
busy machine does not land on one side), the median of ``--repeat`` rounds that
alternate which side runs first; wall-clock figures are printed beside it.

    .venv/bin/python bench/payments_sandbox.py [--intents 1000] [--repeat 3] [--one-call]
"""

from __future__ import annotations

import argparse
import gc
import itertools
import statistics
import time
from collections.abc import Mapping
from typing import Any, cast

import stripe
from requests.structures import CaseInsensitiveDict
from stripe.params import PaymentIntentCreateParams, SetupIntentCreateParamsMandateData

from flask_finconn.sandbox import Sandbox, SandboxHTTPClient

ONLINE: SetupIntentCreateParamsMandateData = {
    "customer_acceptance": {
        "type": "online",
        "online": {"ip_address": "203.0.113.7", "user_agent": "bench"},
    }
}


class TimedSandboxHTTPClient(SandboxHTTPClient):
    """The in-process transport, adding up the CPU time spent inside the sandbox."""

    spent = 0.0

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        started = time.process_time()
        try:
            return super().request(method, url, headers, post_data)
        finally:
            self.spent += time.process_time() - started


class CannedHTTPClient(stripe.HTTPClient):
    """Serves recorded bodies in turn, round and round; does nothing else."""

    name = "canned"

    def __init__(self, bodies: list[str]) -> None:
        super().__init__()
        self._bodies = itertools.cycle(bodies)
        self._headers = CaseInsensitiveDict(
            {"Content-Type": "application/json", "Request-Id": "req_canned"}
        )

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        return next(self._bodies), 200, self._headers

    def close(self) -> None:
        pass


class RecordingHTTPClient(stripe.HTTPClient):
    """Passes requests to another client and keeps each response body."""

    name = "recording"

    def __init__(self, inner: stripe.HTTPClient) -> None:
        super().__init__()
        self.inner = inner
        self.bodies: list[str] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        body, status, rheaders = self.inner.request(method, url, headers, post_data)
        self.bodies.append(body)
        return body, status, rheaders

    def close(self) -> None:
        pass


def debit_many(
    client: stripe.StripeClient, customer: str, pm: str, count: int, separate: bool
) -> tuple[float, float]:
    """Run the debits; returns (CPU seconds, wall seconds)."""
    gc.collect()  # start each run from the same heap, so one run does not pay for another
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        params: dict[str, Any] = {
            "amount": 1000 + i,
            "currency": "usd",
            "customer": customer,
            "payment_method": pm,
            "payment_method_types": ["us_bank_account"],
        }
        # payment_method_types is an API parameter (the sandbox and Stripe take it) that this
        # SDK's TypedDict leaves out.
        create = cast(PaymentIntentCreateParams, params)
        if separate:
            pi = client.v1.payment_intents.create(create)
            pi = client.v1.payment_intents.confirm(pi.id, {"off_session": True})
        else:
            pi = client.v1.payment_intents.create(
                cast(PaymentIntentCreateParams, {**params, "confirm": True, "off_session": True})
            )
        assert pi.status == "processing", pi.status
    return time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--intents", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--one-call",
        action="store_true",
        help="create with confirm=true (one request per debit) instead of create, then confirm",
    )
    args = parser.parse_args()
    separate = not args.one_call
    stripe.enable_telemetry = False

    sb = Sandbox(":memory:", settlement_delay=10**9)
    timed = TimedSandboxHTTPClient(sb.wsgi_app)
    client = sb.stripe_client(http_client=timed)
    customer = client.v1.customers.create({"email": "bench@example.com"}).id
    setup = client.v1.setup_intents.create(
        {
            "customer": customer,
            "payment_method": "pm_usBankAccount_success",
            "confirm": True,
            "mandate_data": ONLINE,
        }
    )
    pm = str(setup.payment_method)

    recorder = RecordingHTTPClient(sb.http_client())
    recorded = stripe.StripeClient(
        sb.api_key, http_client=recorder, base_addresses={"api": sb.api_base}
    )
    debit_many(recorded, customer, pm, args.intents, separate)
    canned = stripe.StripeClient(
        sb.api_key,
        http_client=CannedHTTPClient(recorder.bodies),
        base_addresses={"api": sb.api_base},
    )

    runs: dict[str, list[tuple[float, float]]] = {"sandbox": [], "canned": []}
    inside: list[float] = []
    for round_ in range(args.repeat):
        order = ("sandbox", "canned") if round_ % 2 == 0 else ("canned", "sandbox")
        for side in order:
            if side == "sandbox":
                timed.spent = 0.0
                runs[side].append(debit_many(client, customer, pm, args.intents, separate))
                inside.append(timed.spent)
            else:
                runs[side].append(debit_many(canned, customer, pm, args.intents, separate))
    cpu = {side: statistics.median(r[0] for r in runs[side]) for side in runs}
    wall = {side: statistics.median(r[1] for r in runs[side]) for side in runs}
    calls = "create with confirm=true" if args.one_call else "create, then confirm"
    print(f"{args.intents} x {calls}, median of {args.repeat} rounds (CPU s / wall s):")
    print(f"  sandbox (in-process):              {cpu['sandbox']:.2f} / {wall['sandbox']:.2f}")
    print(f"  baseline (same calls, canned):     {cpu['canned']:.2f} / {wall['canned']:.2f}")
    print(f"  of which inside the sandbox's WSGI app (CPU): {statistics.median(inside):.2f}")
    print(f"ratio (CPU): {cpu['sandbox'] / cpu['canned']:.2f} (target <= 2.0)")
    print(f"ratio (wall): {wall['sandbox'] / wall['canned']:.2f}")


if __name__ == "__main__":
    main()
