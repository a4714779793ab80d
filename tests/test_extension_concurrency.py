"""Races a real deployment sees: first requests of one holder, and double completion.

They run on PostgreSQL, where concurrent transactions really interleave.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from flask_finconn import account_linked, get_state
from flask_finconn.models import Account, Customer
from flask_finconn.testing import HOLDER_HEADER, captured_signals, sandbox_of

THREADS = 8


def run_together(work: Callable[[], Any]) -> list[Any]:
    """Run ``work`` in parallel threads released at the same moment; return their results."""
    barrier = threading.Barrier(THREADS)
    results: list[Any] = [None] * THREADS

    def run(index: int) -> None:
        barrier.wait()
        try:
            results[index] = work()
        except Exception as exc:  # a failure must show up in the assertion, not vanish
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_first_requests_create_one_customer(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app()

    def open_session() -> tuple[int, Any]:
        response = app.test_client().post(
            "/finconn/sessions", json={}, headers={HOLDER_HEADER: "ada"}
        )
        return response.status_code, response.json

    results = run_together(open_session)
    assert [status for status, _ in results] == [201] * THREADS
    sandbox = sandbox_of(app)
    customers = {sandbox.session(body["id"])["account_holder"]["customer"] for _, body in results}
    assert len(customers) == 1
    with app.app_context():
        db = get_state(app).db
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Customer)) == 1
    listed = get_state(app).stripe.client.v1.customers.list({"limit": 100})
    assert [c.id for c in listed.data] == list(customers)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_concurrent_completions_link_each_account_once(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app()
    client = app.test_client()
    session = client.post("/finconn/sessions", json={}, headers={HOLDER_HEADER: "ada"}).json
    assert session is not None
    sandbox_of(app).complete_session(session["id"], "bank_nonoauth")

    def complete() -> tuple[int, list[str]]:
        response = app.test_client().post(
            f"/finconn/sessions/{session['id']}/complete",
            json={},
            headers={HOLDER_HEADER: "ada"},
        )
        body = response.json or {}
        return response.status_code, sorted(a["id"] for a in body.get("accounts", []))

    with captured_signals(account_linked, app) as linked:
        results = run_together(complete)
    assert {status for status, _ in results} == {200}
    assert len({tuple(ids) for _, ids in results}) == 1
    assert len(results[0][1]) == 3
    assert len(linked) == 3
    with app.app_context():
        db = get_state(app).db
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Account)) == 3
