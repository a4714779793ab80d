"""The sandbox's kept GET answers: read again from memory, never stale.

A GET's answer is given again from memory while nothing was written anywhere, the clock
has not reached the earliest due task and the handler did not read the clock; faults
still apply and each answer has its own Request-Id.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sandbox_support import link, sb_fixture  # noqa: F401

from flask_finconn.sandbox import Sandbox
from flask_finconn.sandbox._routes import ROUTES
from flask_finconn.sandbox._wire import Api

FC = "/v1/financial_connections"


def get(
    sb: Sandbox, path: str, key: str | None = Sandbox.api_key, **headers: str
) -> tuple[int, Any, Any]:
    """(status, decoded body, headers) of a GET through the in-process transport."""
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    body, status, got = sb.http_client().request("get", sb.api_base + path, headers)
    return status, json.loads(body), got


@contextlib.contextmanager
def statements(sb: Sandbox) -> Iterator[list[str]]:
    """Every SQL statement the sandbox's connection runs inside the block."""
    seen: list[str] = []
    sb.store._conn.set_trace_callback(seen.append)
    try:
        yield seen
    finally:
        sb.store._conn.set_trace_callback(None)


def account_with_history(sb: Sandbox) -> str:
    client = sb.stripe_client()
    account = link(sb, client, "bank_oauth", accounts=["checking"])[0].id
    client.v1.financial_connections.accounts.refresh(account, {"features": ["transactions"]})
    sb.finish_refreshes(account)
    return account


def page_path(account: str, limit: int = 5) -> str:
    return f"{FC}/transactions?account={account}&limit={limit}"


@pytest.fixture(name="file_sb")
def file_sb_fixture(tmp_path: Any) -> Iterator[Sandbox]:
    """A sandbox on a file, which other processes may share."""
    sandbox = Sandbox(str(tmp_path / "sandbox.sqlite3"))
    yield sandbox
    sandbox.close()


def test_a_get_read_again_is_answered_from_memory_with_its_own_request_id(
    file_sb: Sandbox,
) -> None:
    account = account_with_history(file_sb)
    status, first, first_headers = get(file_sb, page_path(account))
    with statements(file_sb) as seen:
        status, again, headers = get(file_sb, page_path(account), **{"Stripe-Version": "X"})
    assert status == 200 and again == first
    assert seen == ["PRAGMA data_version"]  # whether another process wrote, nothing else
    assert headers["Request-Id"] != first_headers["Request-Id"]
    assert headers["Stripe-Version"] == "X"  # the headers are this request's own
    assert int(headers["Content-Length"]) == len(json.dumps(first, separators=(",", ":")))


def test_another_process_writing_to_the_file_shows_at_once(file_sb: Sandbox) -> None:
    account = account_with_history(file_sb)
    _, first, _ = get(file_sb, page_path(account))
    assert get(file_sb, page_path(account))[1] == first  # kept
    newest = first["data"][0]["id"]
    code = (
        "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
        "c.execute(\"UPDATE transactions SET body = json_set(body, '$.description', "
        "'CHANGED ELSEWHERE') WHERE id = ?\", (sys.argv[2],)); c.commit()"
    )
    subprocess.run([sys.executable, "-c", code, file_sb.store.database, newest], check=True)
    _, again, _ = get(file_sb, page_path(account))
    assert again["data"][0]["description"] == "CHANGED ELSEWHERE"


def test_this_sandboxs_own_writes_show_at_once(sb: Sandbox) -> None:
    account = account_with_history(sb)
    client = sb.stripe_client()
    customer = client.v1.customers.create({"email": "before@example.com"})
    path = f"/v1/customers/{customer.id}"
    assert get(sb, path)[1]["email"] == get(sb, path)[1]["email"] == "before@example.com"
    client.v1.customers.update(customer.id, {"email": "after@example.com"})
    assert get(sb, path)[1]["email"] == "after@example.com"

    _, first, _ = get(sb, page_path(account))
    sb.store.execute(  # a write outside any API call, outside a transaction
        "UPDATE transactions SET body = json_set(body, '$.description', 'CHANGED') WHERE id = ?",
        (first["data"][0]["id"],),
    )
    assert get(sb, page_path(account))[1]["data"][0]["description"] == "CHANGED"
    sb.disconnect(account)  # hides the account's transactions
    assert get(sb, page_path(account))[1]["data"] == []


def test_advancing_the_clock_finishes_what_became_due(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "bank_oauth", accounts=["checking"])[0].id
    sb.refresh_delay = 3600
    client.v1.financial_connections.accounts.refresh(account, {"features": ["balance"]})
    path = f"{FC}/accounts/{account}"
    assert get(sb, path)[1]["balance_refresh"]["status"] == "pending"
    assert get(sb, path)[1]["balance_refresh"]["status"] == "pending"
    sb.advance_time(3600)
    assert get(sb, path)[1]["balance_refresh"]["status"] == "succeeded"


def test_a_refresh_coming_due_on_the_wall_clock_shows_without_any_write(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "bank_oauth", accounts=["checking"])[0].id
    sb.refresh_delay = 2.0
    client.v1.financial_connections.accounts.refresh(account, {"features": ["balance"]})
    path = f"{FC}/accounts/{account}"
    assert get(sb, path)[1]["balance_refresh"]["status"] == "pending"
    with statements(sb) as seen:
        assert get(sb, path)[1]["balance_refresh"]["status"] == "pending"
    assert seen == []  # answered from memory: a private database needs no check
    # Nothing is written from here on: only the time that passes makes the refresh due.
    deadline = time.monotonic() + 30
    while get(sb, path)[1]["balance_refresh"]["status"] == "pending":
        assert time.monotonic() < deadline, "the kept answer outlived the refresh's due time"
        time.sleep(0.05)
    assert get(sb, path)[1]["balance"]["current"]["usd"] > 0


def test_faults_still_apply_to_kept_answers(sb: Sandbox) -> None:
    account = account_with_history(sb)
    path = page_path(account)
    _, first, _ = get(sb, path)
    assert get(sb, path)[1] == first
    sb.faults.fail_next(503)
    status, body, _ = get(sb, path)
    assert status == 503 and body["error"]["type"] == "api_error"
    assert get(sb, path)[1] == first
    sb.faults.rate_limit = 1
    statuses = [get(sb, path)[0] for _ in range(5)]
    assert 429 in statuses and sb.faults.rate_limited >= 1
    sb.faults.reset()
    # Test helpers are exempt from faults, kept or not.
    sb.faults.fail_next(500)
    assert get(sb, "/v1/test_helpers/financial_connections/institutions")[0] == 200
    assert get(sb, "/v1/test_helpers/financial_connections/institutions")[0] == 200


def test_keys_never_share_a_kept_answer(sb: Sandbox) -> None:
    account = account_with_history(sb)
    path = page_path(account)
    _, first, _ = get(sb, path)
    assert get(sb, path)[1] == first
    status, body, _ = get(sb, path, key="sk_live_sandboxsandboxsandbox")
    assert status == 401 and "test-mode" in body["error"]["message"]
    assert get(sb, path, key=None)[0] == 401
    assert get(sb, path, key="not a key")[0] == 401
    assert get(sb, path, key="rk_test_restricted")[:2] == (200, first)


def test_every_parameter_is_part_of_what_is_kept(sb: Sandbox) -> None:
    client = sb.stripe_client()
    one, two = (
        link(sb, client, "bank_oauth", accounts=["checking", "savings"])[i].id for i in (0, 1)
    )
    for account in (one, two):
        client.v1.financial_connections.accounts.refresh(account, {"features": ["transactions"]})
    sb.finish_refreshes()
    pages = {a: get(sb, page_path(a))[1] for a in (one, two)}
    assert {t["account"] for t in pages[one]["data"]} == {one}
    assert {t["account"] for t in pages[two]["data"]} == {two}
    assert get(sb, page_path(one, limit=2))[1]["data"] == pages[one]["data"][:2]

    client.v1.financial_connections.accounts.refresh(one, {"features": ["ownership"]})
    sb.finish_refreshes()
    path = f"{FC}/accounts/{one}"
    assert isinstance(get(sb, path)[1]["ownership"], str)
    expanded = get(sb, path + "?expand[]=ownership")[1]["ownership"]
    assert expanded["object"] == "financial_connections.account_ownership"
    assert isinstance(get(sb, path)[1]["ownership"], str)


def test_an_answer_that_read_the_clock_is_never_kept(sb: Sandbox) -> None:
    def clock(api: Api, params: dict[str, Any], args: tuple[str, ...]) -> tuple[int, str]:
        return 200, json.dumps({"now": api.sb.now_float()})

    api = Api(sb, [("GET", "/v1/clock", clock), *ROUTES])
    sb.wsgi_app = api.wsgi_app
    first = get(sb, "/v1/clock")[1]["now"]
    assert get(sb, "/v1/clock")[1]["now"] > first


def test_kept_answers_stay_within_their_bound(sb: Sandbox) -> None:
    account = account_with_history(sb)
    paths = [page_path(account, limit) for limit in range(1, 11)]
    size = len(json.dumps(get(sb, paths[-1])[1], separators=(",", ":")))
    sb.store.KEPT_BYTES = 3 * size
    for path in paths:
        get(sb, path)
    assert 0 < sb.store._kept_bytes <= sb.store.KEPT_BYTES
    with statements(sb) as seen:
        get(sb, paths[-1])  # the most recent is still kept
    assert seen == []
    with statements(sb) as seen:
        get(sb, paths[0])  # the oldest was dropped
    assert any(s.startswith("SELECT") for s in seen)


def test_a_failed_commit_leaves_nothing_kept(sb: Sandbox) -> None:
    store = sb.store
    store.execute("PRAGMA foreign_keys = ON")
    store.ensure(
        "CREATE TABLE parent (id TEXT PRIMARY KEY);"
        "CREATE TABLE child (parent TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
    )
    with pytest.raises(sqlite3.IntegrityError), store.tx(write=False):
        # A read transaction whose reads saw a write that COMMIT then refuses.
        store.execute("INSERT INTO child (parent) VALUES ('missing')")
        store.keep("answer", "missing", 7, store.version())
    assert store.kept("answer") is None
    with store.tx(write=False):
        store.keep("answer", "none", 4, store.version())
    assert store.kept("answer") == "none"


def test_the_bound_counts_each_answers_key_too(sb: Sandbox) -> None:
    # Small answers to GETs with long query strings: what is held is mostly the keys.
    sb.store.KEPT_BYTES = 100_000
    paths = [f"/v1/customers?email={i:010000d}%40example.com" for i in range(20)]
    for path in paths:
        status, body, _ = get(sb, path)
        assert status == 200 and body["data"] == []
    assert 20 * 10_000 > sb.store.KEPT_BYTES >= sb.store._kept_bytes
    with statements(sb) as seen:
        get(sb, paths[-1])  # the most recent is still kept
    assert seen == []
    with statements(sb) as seen:
        get(sb, paths[0])  # the oldest was dropped: the keys alone pass the bound
    assert any(s.startswith("SELECT") for s in seen)
