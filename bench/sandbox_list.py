"""The sandbox listing a 100k-transaction account, page by page, vs a bare WSGI app.

The figure is the sandbox's own time: what its WSGI app spends answering the 1,000 pages
of ``GET /v1/financial_connections/transactions?limit=100`` (auth, parameters, the query,
rendering). The baseline is a bare WSGI app serving the very same page bodies,
pre-rendered, keyed by ``starting_after``: the least any server can do. Target: sandbox /
bare <= 2.0.

1. In-process, through the real stripe SDK's auto-pager over the in-process transport
   (what the extension and the tests use): the CPU time inside each WSGI app (this
   process only, so other work on a busy machine does not land on one side; the median
   of rounds that alternate which app goes first), and the whole listing with the SDK's
   parsing and object building, for scale.
2. Over HTTP on loopback, the way other SDKs and curl use the standalone server: the
   pages fetched in order with one kept-alive ``requests`` session (the stripe SDK's
   transport), each app on the development server that ``python -m
   flask_finconn.sandbox serve`` runs, and on gunicorn (one gthread worker).

    .venv/bin/python bench/sandbox_list.py [--transactions 100000] [--repeat 3]
                                           [--no-http]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import requests
import stripe
from stripe.params.financial_connections import TransactionListParams

from flask_finconn.sandbox import Sandbox, SandboxHTTPClient

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
VENV_BIN = Path(sys.executable).parent
HEADERS = [("Content-Type", "application/json"), ("Request-Id", "req_canned")]


def bare_app(pages: Mapping[str | None, bytes]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app that answers each page's pre-rendered body by its cursor; nothing else."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        cursor = dict(parse_qsl(environ.get("QUERY_STRING", ""))).get("starting_after")
        body = pages[cursor]
        start_response("200 OK", [*HEADERS, ("Content-Length", str(len(body)))])
        return [body]

    return app


class TimedHTTPClient(SandboxHTTPClient):
    """The in-process transport, adding up the CPU time spent inside the WSGI app."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.spent = 0.0
        inner = wsgi_app

        def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            started = time.process_time()
            try:
                return list(inner(environ, start_response))
            finally:
                self.spent += time.process_time() - started

        super().__init__(timed)


def list_all(client: stripe.StripeClient, account: str) -> tuple[int, float]:
    gc.collect()  # start each run from the same heap, so one run does not pay for another
    started = time.perf_counter()
    count = 0
    params: TransactionListParams = {"account": account, "limit": 100}
    for _ in client.v1.financial_connections.transactions.list(params).auto_paging_iter():
        count += 1
    return count, time.perf_counter() - started


def prepare(database: str, size: int) -> tuple[str, list[str], dict[str | None, bytes]]:
    """An account with ``size`` transactions; its page URLs in order and their bodies."""
    sb = Sandbox(database)
    client = sb.stripe_client()
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
    sb.set_history_size(account, size)
    fc.accounts.subscribe(account, {"features": ["transactions"]})
    started = time.perf_counter()
    sb.finish_refreshes(account)
    print(f"generated {size} transactions in {time.perf_counter() - started:.2f} s")
    urls: list[str] = []
    pages: dict[str | None, bytes] = {}
    cursor: str | None = None
    while True:
        query = f"account={account}&limit=100" + (f"&starting_after={cursor}" if cursor else "")
        path = f"/v1/financial_connections/transactions?{query}"
        body, status, _ = sb.http_client().request(
            "get", sb.api_base + path, {"Authorization": f"Bearer {sb.api_key}"}
        )
        assert status == 200, body
        urls.append(path)
        pages[cursor] = body.encode()
        page = json.loads(body)
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    sb.close()
    return account, urls, pages


def in_process(database: str, account: str, pages: dict[str | None, bytes], repeat: int) -> float:
    """Sandbox vs bare app through the SDK's auto-pager; returns sandbox / bare inside."""
    sb = Sandbox(database)
    sandbox_http = TimedHTTPClient(sb.wsgi_app)
    bare_http = TimedHTTPClient(bare_app(pages))
    clients = {
        "sandbox": (
            stripe.StripeClient(
                sb.api_key, http_client=sandbox_http, base_addresses={"api": sb.api_base}
            ),
            sandbox_http,
        ),
        "bare": (
            stripe.StripeClient(
                sb.api_key, http_client=bare_http, base_addresses={"api": sb.api_base}
            ),
            bare_http,
        ),
    }
    expected = sum(len(json.loads(body)["data"]) for body in pages.values())
    inside: dict[str, list[float]] = {name: [] for name in clients}
    total: dict[str, list[float]] = {name: [] for name in clients}
    for round_ in range(repeat):
        names = list(clients) if round_ % 2 == 0 else list(reversed(clients))
        for name in names:  # alternate, so machine load hits both alike
            client, http = clients[name]
            http.spent = 0.0
            count, elapsed = list_all(client, account)
            assert count == expected, (name, count)
            inside[name].append(http.spent)
            total[name].append(elapsed)
    sb.close()
    s_in, b_in = statistics.median(inside["sandbox"]), statistics.median(inside["bare"])
    print(f"\nin-process, stripe SDK auto-pager, {len(pages)} pages (median of {repeat}, CPU):")
    print(
        f"  inside the sandbox's WSGI app  {s_in:7.3f} s  ({s_in / len(pages) * 1000:.2f} ms/page)"
    )
    print(
        f"  inside the bare WSGI app       {b_in:7.3f} s  ({b_in / len(pages) * 1000:.2f} ms/page)"
    )
    s_all, b_all = statistics.median(total["sandbox"]), statistics.median(total["bare"])
    print(f"  whole listing with the SDK (wall): sandbox {s_all:.2f} s, bare {b_all:.2f} s")
    print(f"  sandbox / bare (own time): {s_in / b_in:.2f} (target <= 2.0)")
    return s_in / b_in


# --- over HTTP (the servers run as their own processes)


def serve_bare() -> Any:
    """gunicorn's factory for the bare app: ``sandbox_list:serve_bare()``."""
    pages = json.loads(Path(os.environ["FINCONN_BENCH_PAGES"]).read_text())
    return bare_app({None if k == "" else k: v.encode() for k, v in pages.items()})


def serve_sandbox() -> Any:
    """gunicorn's factory for the sandbox: ``sandbox_list:serve_sandbox()``."""
    return Sandbox(os.environ["FINCONN_BENCH_SANDBOX"]).wsgi_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def server(command: list[str], port: int, env: dict[str, str], log: Path) -> Iterator[str]:
    with open(log, "wb") as output:
        proc = subprocess.Popen(command, env=env, cwd=BENCH_DIR, stdout=output, stderr=output)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command[0]} did not start:\n{log.read_text()[-2000:]}")
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def fetch_all(base: str, urls: list[str], api_key: str) -> float:
    """Seconds to GET every page in order over one kept-alive session."""
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {api_key}"
        started = time.perf_counter()
        for url in urls:
            response = http.get(base + url)
            assert response.status_code == 200, response.text
        return time.perf_counter() - started


def over_http(database: str, urls: list[str], pages: dict[str | None, bytes], repeat: int) -> None:
    workdir = Path(database).parent
    pages_file = workdir / "pages.json"
    pages_file.write_text(json.dumps({k or "": v.decode() for k, v in pages.items()}))
    env = {
        **os.environ,
        "FINCONN_BENCH_PAGES": str(pages_file),
        "FINCONN_BENCH_SANDBOX": database,
        "PYTHONPATH": f"{BENCH_DIR}{os.pathsep}{ROOT}",
    }
    python = str(VENV_BIN / "python")

    def dev(app: str, port: int) -> list[str]:
        if app == "sandbox":  # exactly what a user runs
            return [python, "-m", "flask_finconn.sandbox", "serve", "--port", str(port),
                    "--database", database]  # fmt: skip
        code = (
            "import sandbox_list; from werkzeug.serving import run_simple; "
            f"run_simple('127.0.0.1', {port}, sandbox_list.serve_bare(), threaded=True)"
        )
        return [python, "-c", code]

    def gunicorn(app: str, port: int) -> list[str]:
        factory = "serve_sandbox()" if app == "sandbox" else "serve_bare()"
        return [str(VENV_BIN / "gunicorn"), "--workers", "1", "--worker-class", "gthread",
                "--threads", "4", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                f"sandbox_list:{factory}"]  # fmt: skip

    print(f"\nover HTTP on loopback, one kept-alive requests session, {len(urls)} pages:")
    for label, command in (("development server", dev), ("gunicorn gthread", gunicorn)):
        best: dict[str, float] = {}
        ports = {app: _free_port() for app in ("sandbox", "bare")}
        with (
            server(command("sandbox", ports["sandbox"]), ports["sandbox"], env,
                   workdir / f"sandbox-{label[:3]}.log") as sandbox_base,
            server(command("bare", ports["bare"]), ports["bare"], env,
                   workdir / f"bare-{label[:3]}.log") as bare_base,
        ):  # fmt: skip
            bases = {"sandbox": sandbox_base, "bare": bare_base}
            for base in bases.values():
                fetch_all(base, urls[:20], Sandbox.api_key)  # warm up
            for _ in range(repeat):  # alternate, so machine load hits both alike
                for app, base in bases.items():
                    seconds = fetch_all(base, urls, Sandbox.api_key)
                    best[app] = min(best.get(app, seconds), seconds)
        per = {app: seconds / len(urls) * 1000 for app, seconds in best.items()}
        print(
            f"  {label:<20} sandbox {best['sandbox']:6.2f} s ({per['sandbox']:.2f} ms/page)   "
            f"bare {best['bare']:6.2f} s ({per['bare']:.2f} ms/page)   "
            f"sandbox / bare {best['sandbox'] / best['bare']:.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    stripe.enable_telemetry = False
    with tempfile.TemporaryDirectory() as tmp:
        database = f"{tmp}/sandbox.sqlite3"
        account, urls, pages = prepare(database, args.transactions)
        in_process(database, account, pages, args.repeat)
        if not args.no_http:
            over_http(database, urls, pages, args.repeat)


if __name__ == "__main__":
    main()
