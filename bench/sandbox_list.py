"""The sandbox listing a 100k-transaction account, page by page, vs a bare WSGI app.

The figure is the sandbox's own time: what its WSGI app spends answering the 1,000 pages
of ``GET /v1/financial_connections/transactions?limit=100`` (auth, parameters, the query,
rendering). Two baselines, each a WSGI app measured the same way:

- *same work*: a server without persistence doing the same useful work: the transactions
  held as Python objects in one list, newest first; each request checks the key, parses
  ``account``, ``limit`` and ``starting_after``, finds the cursor in a dict and renders the
  page with ``json.dumps`` (byte for byte the sandbox's body, which the bench checks).
- *pre-rendered*: the very same page bodies, rendered beforehand, keyed by
  ``starting_after``: the least any server can do.

Target: sandbox / baseline <= 2.0. The sandbox keeps a list page's rows in memory until
the next write, so it is measured twice: *cold*, another connection (another process, in
production) writing to the file before every page, so nothing kept is valid; and *warm*,
the same pages read again with nothing written in between (what the cache saves).

1. In-process, through the real stripe SDK's auto-pager over the in-process transport
   (what the extension and the tests use): the CPU time inside each WSGI app (this
   process only, so other work on a busy machine does not land on one side; the median
   of rounds that alternate which app goes first; the write before each cold page is not
   counted, what it costs the sandbox afterwards is), and the whole listing with the
   SDK's parsing and object building, for scale.
2. Over HTTP on loopback, the way other SDKs and curl use the standalone server: the
   pages fetched in order with one kept-alive ``requests`` session (the stripe SDK's
   transport; the time of each request, the cold write before it not counted), each app
   on the development server that ``python -m flask_finconn.sandbox serve`` runs, and on
   gunicorn (one gthread worker).

    .venv/bin/python bench/sandbox_list.py [--transactions 100000] [--repeat 3]
                                           [--no-http]
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
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


def same_work_app(pages: Mapping[str | None, bytes]) -> Callable[..., Iterable[bytes]]:
    """A WSGI app doing the sandbox's useful work without persistence: the transactions of
    ``pages`` held in one list, newest first; each request checks the key, parses its
    parameters, finds the cursor in a dict and renders the page with ``json.dumps``."""
    transactions = [t for body in pages.values() for t in json.loads(body)["data"]]
    position = {t["id"]: i for i, t in enumerate(transactions)}
    account = transactions[0]["account"]
    authorization = f"Bearer {Sandbox.api_key}"

    def error(start_response: Callable[..., Any], status: str, message: str) -> list[bytes]:
        body = json.dumps({"error": {"message": message}}).encode()
        start_response(status, [*HEADERS, ("Content-Length", str(len(body)))])
        return [body]

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("HTTP_AUTHORIZATION") != authorization:
            return error(start_response, "401 Unauthorized", "Invalid API Key provided.")
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        if query.get("account") != account:
            return error(start_response, "404 Not Found", "No such account.")
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 100:
            return error(start_response, "400 Bad Request", "Invalid limit.")
        start = 0
        after = query.get("starting_after")
        if after is not None:
            if after not in position:
                return error(start_response, "400 Bad Request", "No such transaction.")
            start = position[after] + 1
        page = {
            "object": "list",
            "data": transactions[start : start + limit],
            "has_more": start + limit < len(transactions),
            "url": "/v1/financial_connections/transactions",
        }
        body = json.dumps(page, separators=(",", ":")).encode()
        start_response("200 OK", [*HEADERS, ("Content-Length", str(len(body)))])
        return [body]

    return app


class Writer:
    """Another connection to the sandbox's file, as another process would have: each call
    commits a write, so the sandbox's kept pages are void at its next read."""

    def __init__(self, database: str) -> None:
        self._conn = sqlite3.connect(database, isolation_level=None, timeout=30.0)
        self._count = 0

    def __call__(self) -> None:
        self._count += 1
        self._conn.execute(
            "INSERT INTO meta (key, value) VALUES ('bench_write', ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (str(self._count),),
        )

    def close(self) -> None:
        self._conn.close()


class TimedHTTPClient(SandboxHTTPClient):
    """The in-process transport, adding up the CPU time spent inside the WSGI app
    (``before``, when set, runs ahead of each request, not counted)."""

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        self.spent = 0.0
        self.before: Callable[[], None] | None = None
        inner = wsgi_app

        def timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if self.before is not None:
                self.before()
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


def prepare(database: str, size: int) -> tuple[list[str], dict[str | None, bytes]]:
    """An account with ``size`` transactions: its page URLs in order and their bodies."""
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
    return urls, pages


def call(app: Callable[..., Iterable[bytes]], url: str) -> bytes:
    """The body ``app`` answers to a ``GET`` of ``url``, called directly."""
    path, _, query = url.partition("?")
    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "HTTP_AUTHORIZATION": f"Bearer {Sandbox.api_key}",
        "wsgi.input": io.BytesIO(),
    }
    return b"".join(app(environ, lambda status, headers: None))


def in_process(database: str, urls: list[str], pages: dict[str | None, bytes], repeat: int) -> None:
    """The sandbox (cold and warm) and both baselines through the SDK's auto-pager."""
    sb = Sandbox(database)
    writer = Writer(database)
    same = same_work_app(pages)
    for url, body in zip(urls, pages.values(), strict=True):
        assert call(same, url) == body, f"the same-work baseline renders {url} differently"
    apps = {
        "cold": TimedHTTPClient(sb.wsgi_app),
        "warm": TimedHTTPClient(sb.wsgi_app),
        "same": TimedHTTPClient(same),
        "bare": TimedHTTPClient(bare_app(pages)),
    }
    apps["cold"].before = writer
    account = json.loads(pages[None])["data"][0]["account"]
    expected = sum(len(json.loads(body)["data"]) for body in pages.values())
    inside: dict[str, list[float]] = {name: [] for name in apps}
    total: dict[str, list[float]] = {name: [] for name in apps}
    for round_ in range(repeat):
        names = list(apps) if round_ % 2 == 0 else list(reversed(apps))
        for name in names:  # alternate, so machine load hits all alike
            http = apps[name]
            if name == "warm":
                writer()  # then read every page once, so that the timed pass finds them kept
                for url in urls:
                    call(sb.wsgi_app, url)
            client = stripe.StripeClient(
                sb.api_key, http_client=http, base_addresses={"api": sb.api_base}
            )
            http.spent = 0.0
            count, elapsed = list_all(client, account)
            assert count == expected, (name, count)
            inside[name].append(http.spent)
            total[name].append(elapsed)
    writer.close()
    sb.close()
    own = {name: statistics.median(spent) for name, spent in inside.items()}
    wall = {name: statistics.median(spent) for name, spent in total.items()}
    labels = {
        "cold": "sandbox, cold (another connection writes before every page)",
        "warm": "sandbox, warm (the same pages again, nothing written)",
        "same": "same work without persistence (list, dict, json.dumps)",
        "bare": "pre-rendered page bodies by cursor",
    }
    print(
        f"\nin-process, stripe SDK auto-pager, {len(pages)} pages "
        f"(CPU inside each WSGI app, median of {repeat}):"
    )
    for name, label in labels.items():
        per_page = own[name] / len(pages) * 1000
        print(f"  {label:<62} {own[name]:7.3f} s  ({per_page:.3f} ms/page)")
    print(
        "  whole listing with the SDK (wall): "
        + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in wall.items())
    )
    for base, label in (("same", "same-work baseline"), ("bare", "pre-rendered baseline")):
        print(
            f"  sandbox / {label + ':':<23} cold {own['cold'] / own[base]:6.2f}   "
            f"warm {own['warm'] / own[base]:6.2f}   (target <= 2.0)"
        )


# --- over HTTP (the servers run as their own processes)


def _pages_from_env() -> dict[str | None, bytes]:
    pages = json.loads(Path(os.environ["FINCONN_BENCH_PAGES"]).read_text())
    return {None if k == "" else k: v.encode() for k, v in pages.items()}


def serve_bare() -> Any:
    """gunicorn's factory for the pre-rendered baseline: ``sandbox_list:serve_bare()``."""
    return bare_app(_pages_from_env())


def serve_same() -> Any:
    """gunicorn's factory for the same-work baseline: ``sandbox_list:serve_same()``."""
    return same_work_app(_pages_from_env())


def serve_sandbox() -> Any:
    """gunicorn's factory for the sandbox: ``sandbox_list:serve_sandbox()``."""
    return Sandbox(os.environ["FINCONN_BENCH_SANDBOX"]).wsgi_app


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
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


def fetch_all(
    base: str, urls: list[str], api_key: str, before: Callable[[], None] | None = None
) -> float:
    """Seconds spent in GETs of every page in order over one kept-alive session
    (``before``, when set, runs ahead of each request, not counted)."""
    spent = 0.0
    with requests.Session() as http:
        http.headers["Authorization"] = f"Bearer {api_key}"
        for url in urls:
            if before is not None:
                before()
            started = time.perf_counter()
            response = http.get(base + url)
            spent += time.perf_counter() - started
            assert response.status_code == 200, response.text
    return spent


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
    factories = {"sandbox": "serve_sandbox()", "same": "serve_same()", "bare": "serve_bare()"}

    def dev(app: str, port: int) -> list[str]:
        if app == "sandbox":  # exactly what a user runs
            return [python, "-m", "flask_finconn.sandbox", "serve", "--port", str(port),
                    "--database", database]  # fmt: skip
        code = (
            "import sandbox_list; from werkzeug.serving import run_simple; "
            f"run_simple('127.0.0.1', {port}, sandbox_list.{factories[app]}, threaded=True)"
        )
        return [python, "-c", code]

    def gunicorn(app: str, port: int) -> list[str]:
        return [str(VENV_BIN / "gunicorn"), "--workers", "1", "--worker-class", "gthread",
                "--threads", "4", "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                f"sandbox_list:{factories[app]}"]  # fmt: skip

    writer = Writer(database)
    print(
        f"\nover HTTP on loopback, one kept-alive requests session, {len(urls)} pages "
        f"(best of {repeat}):"
    )
    for label, command in (("development server", dev), ("gunicorn gthread", gunicorn)):
        best: dict[str, float] = {}
        ports = {app: _free_port() for app in factories}
        with contextlib.ExitStack() as stack:
            bases = {
                app: stack.enter_context(
                    server(command(app, port), port, env, workdir / f"{app}-{label[:3]}.log")
                )
                for app, port in ports.items()
            }
            for base in bases.values():
                fetch_all(base, urls[:20], Sandbox.api_key)  # warm up
            for _ in range(repeat):  # alternate, so machine load hits all alike
                timed = {
                    "cold": fetch_all(bases["sandbox"], urls, Sandbox.api_key, before=writer),
                }
                writer()
                fetch_all(bases["sandbox"], urls, Sandbox.api_key)  # every page kept
                timed["warm"] = fetch_all(bases["sandbox"], urls, Sandbox.api_key)
                for app in ("same", "bare"):
                    timed[app] = fetch_all(bases[app], urls, Sandbox.api_key)
                for name, seconds in timed.items():
                    best[name] = min(best.get(name, seconds), seconds)
        print(
            f"  {label:<20} "
            + "   ".join(
                f"{name} {seconds:5.2f} s ({seconds / len(urls) * 1000:.2f} ms/page)"
                for name, seconds in best.items()
            )
        )
        print(
            f"  {'':<20} sandbox / same work: cold {best['cold'] / best['same']:.2f}, "
            f"warm {best['warm'] / best['same']:.2f};   sandbox / pre-rendered: "
            f"cold {best['cold'] / best['bare']:.2f}, warm {best['warm'] / best['bare']:.2f}"
        )
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="only the in-process figures")
    args = parser.parse_args()
    stripe.enable_telemetry = False
    with tempfile.TemporaryDirectory() as tmp:
        database = f"{tmp}/sandbox.sqlite3"
        urls, pages = prepare(database, args.transactions)
        print_load("before")
        in_process(database, urls, pages, args.repeat)
        print_load("after the in-process part")
        if not args.no_http:
            over_http(database, urls, pages, args.repeat)
            print_load("after the HTTP part")


def print_load(when: str) -> None:
    """The machine's load averages (1, 5, 15 minutes): the figures are only as steady."""
    print(f"load average {when}: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))


if __name__ == "__main__":
    main()
