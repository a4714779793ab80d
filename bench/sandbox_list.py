"""List a 100k-transaction account through the stripe SDK's auto-pager, in-process.

Baseline: the same SDK calls served from a canned transport (a ``stripe.HTTPClient`` that
returns the pre-rendered page bodies), in the same run, so the ratio is the sandbox's own
cost on top of what the SDK spends parsing and building objects. Target: ratio <= 2.0.

    .venv/bin/python bench/sandbox_list.py [--transactions 100000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import stripe
from requests.structures import CaseInsensitiveDict
from stripe.params.financial_connections import TransactionListParams

from flask_finconn.sandbox import Sandbox, SandboxHTTPClient


class TimedSandboxHTTPClient(SandboxHTTPClient):
    """The in-process transport, adding up the time spent inside the sandbox."""

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
        started = time.perf_counter()
        try:
            return super().request(method, url, headers, post_data)
        finally:
            self.spent += time.perf_counter() - started


class CannedHTTPClient(stripe.HTTPClient):
    """Serves pre-recorded bodies keyed by the page's cursor; does nothing else."""

    name = "canned"

    def __init__(self, pages: dict[str | None, str]) -> None:
        super().__init__()
        self._pages = pages
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
        query = dict(parse_qsl(urlsplit(url).query))
        return self._pages[query.get("starting_after")], 200, self._headers

    def close(self) -> None:
        pass


class RecordingHTTPClient(stripe.HTTPClient):
    """Passes requests to another client and keeps each page's body by its cursor."""

    name = "recording"

    def __init__(self, inner: stripe.HTTPClient) -> None:
        super().__init__()
        self.inner = inner
        self.pages: dict[str | None, str] = {}

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
        self.pages[dict(parse_qsl(urlsplit(url).query)).get("starting_after")] = body
        return body, status, rheaders

    def close(self) -> None:
        pass


def list_all(client: stripe.StripeClient, account: str) -> tuple[int, float]:
    gc.collect()  # start each run from the same heap, so one run does not pay for another
    started = time.perf_counter()
    count = 0
    params: TransactionListParams = {"account": account, "limit": 100}
    for _ in client.v1.financial_connections.transactions.list(params).auto_paging_iter():
        count += 1
    return count, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    stripe.enable_telemetry = False

    sb = Sandbox(":memory:")
    timed = TimedSandboxHTTPClient(sb.wsgi_app)
    client = sb.stripe_client(http_client=timed)
    fc = client.v1.financial_connections
    customer = client.v1.customers.create({"email": "bench@example.com"})
    session = fc.sessions.create(
        {
            "account_holder": {"type": "customer", "customer": customer.id},
            "permissions": ["transactions"],
        }
    )
    sb.complete_session(session.id, institution="bank_oauth", accounts=["checking"])
    account = fc.accounts.list({"session": session.id}).data[0].id
    sb.set_history_size(account, args.transactions)
    fc.accounts.subscribe(account, {"features": ["transactions"]})
    started = time.perf_counter()
    sb.finish_refreshes(account)
    print(f"generated {args.transactions} transactions in {time.perf_counter() - started:.2f} s")

    recorder = RecordingHTTPClient(sb.http_client())
    recorded = stripe.StripeClient(
        sb.api_key, http_client=recorder, base_addresses={"api": sb.api_base}
    )
    list_all(recorded, account)
    canned = stripe.StripeClient(
        sb.api_key,
        http_client=CannedHTTPClient(recorder.pages),
        base_addresses={"api": sb.api_base},
    )

    sandbox_times, canned_times, inside = [], [], []
    for _ in range(args.repeat):
        timed.spent = 0.0
        count, elapsed = list_all(client, account)
        assert count == args.transactions, count
        sandbox_times.append(elapsed)
        inside.append(timed.spent)
        count, elapsed = list_all(canned, account)
        assert count == args.transactions, count
        canned_times.append(elapsed)
    best_sandbox, best_canned = min(sandbox_times), min(canned_times)
    print(f"sandbox (in-process, SDK auto-pager, limit 100): {best_sandbox:.2f} s")
    print(f"baseline (same SDK calls, canned transport):      {best_canned:.2f} s")
    print(f"  of which inside the sandbox's WSGI app:   {min(inside):.2f} s")
    print(f"ratio: {best_sandbox / best_canned:.2f} (target <= 2.0; best of {args.repeat})")


if __name__ == "__main__":
    main()
