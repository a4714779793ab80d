"""Two installations on one Stripe account never share a customer, an account or an event.

Dev and staging often run the same code with the same settings on one test key; here two
apps with their own databases share ONE sandbox (the same sandbox database file), as they
would share one Stripe account.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import stripe_event
from flask import Flask

from flask_finconn import Holder, account_linked, get_state
from flask_finconn.errors import ConfigurationError
from flask_finconn.models import Account, Customer, Installation, WebhookEvent
from flask_finconn.services.installation import installation_id
from flask_finconn.testing import captured_signals, create_app, link_accounts, sandbox_of

CREATED = "financial_connections.account.created"


@pytest.fixture
def two_installations(
    make_finconn_app: Callable[..., Flask], tmp_path: Path
) -> tuple[Flask, Flask]:
    """App A on the test's database, app B on a SQLite file of its own; one sandbox file."""
    shared = str(tmp_path / "one-stripe-account.sqlite3")
    settings: dict[str, Any] = {
        "FINCONN_SANDBOX_DATABASE": shared,
        "FINCONN_SANDBOX_REFRESH_DELAY": 3600.0,
    }
    a = make_finconn_app(**settings)
    b = create_app(f"sqlite:///{tmp_path / 'staging.sqlite3'}", **settings)
    return a, b


def customers(app: Flask) -> list[Customer]:
    with app.app_context():
        session = get_state(app).db.session
        rows = list(session.scalars(sa.select(Customer)))
        session.expunge_all()
        return rows


def test_same_holder_id_in_two_installations_gets_two_customers(
    two_installations: tuple[Flask, Flask],
) -> None:
    a, b = two_installations
    # Different emails too: the shared customer used to make B's update fail with a 502.
    ada_a = link_accounts(a, Holder("1", email="ada@dev.example"), accounts=["checking"])
    ada_b = link_accounts(b, Holder("1", email="ada@staging.example"), accounts=["checking"])
    [cus_a], [cus_b] = customers(a), customers(b)
    assert cus_a.stripe_id != cus_b.stripe_id
    assert ada_a[0].stripe_id != ada_b[0].stripe_id
    sb = sandbox_of(a)
    with a.app_context():
        inst_a = installation_id(get_state(a))
    with b.app_context():
        inst_b = installation_id(get_state(b))
    assert inst_a != inst_b
    assert sb.customer(cus_a.stripe_id)["metadata"]["finconn_installation"] == inst_a
    assert sb.customer(cus_b.stripe_id)["metadata"]["finconn_installation"] == inst_b
    assert sb.customer(cus_b.stripe_id)["email"] == "ada@staging.example"


def test_an_event_about_another_installations_account_is_ignored(
    two_installations: tuple[Flask, Flask], post_webhook: Callable[..., Any]
) -> None:
    a, b = two_installations
    link_accounts(b, Holder("1", email="ada@example.com"), accounts=["savings"])
    [theirs] = link_accounts(a, Holder("1", email="ada@example.com"), accounts=["checking"])
    raw = get_state(a).stripe.retrieve_account(theirs.stripe_id).to_dict()
    event = stripe_event(CREATED, raw)
    with captured_signals(account_linked, b) as linked:
        response = post_webhook(b, event)
    assert response.status_code == 200
    assert linked == []
    with b.app_context():
        session = get_state(b).db.session
        stored = session.get(WebhookEvent, event["id"])
        assert stored is not None and stored.status == "ignored"
        assert "did not create" in (stored.last_error or "")
        ids = session.scalars(sa.select(Account.stripe_id)).all()
        assert theirs.stripe_id not in ids and len(ids) == 1


def test_the_installation_id_is_stored_once_even_when_first_use_races(
    make_finconn_app: Callable[..., Flask],
) -> None:
    apps = [make_finconn_app() for _ in range(4)]  # four processes on one database
    seen: list[str] = []
    barrier = threading.Barrier(len(apps))

    def first_use(app: Flask) -> None:
        with app.app_context():
            barrier.wait()
            seen.append(installation_id(get_state(app)))

    threads = [threading.Thread(target=first_use, args=(app,)) for app in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 4 and len(set(seen)) == 1
    with apps[0].app_context():
        rows = get_state(apps[0]).db.session.scalars(sa.select(Installation)).all()
        assert [r.installation_id for r in rows] == seen[:1]


def test_the_installation_id_can_be_set(make_finconn_app: Callable[..., Flask]) -> None:
    app = make_finconn_app(FINCONN_INSTALLATION_ID="staging-eu")
    [account] = link_accounts(app, Holder("7"), accounts=["checking"])
    with app.app_context():
        customer = get_state(app).db.session.get(Customer, account.customer_id)
        assert customer is not None
        stripe_id = customer.stripe_id
    assert sandbox_of(app).customer(stripe_id)["metadata"]["finconn_installation"] == "staging-eu"
    with pytest.raises(ConfigurationError, match="FINCONN_INSTALLATION_ID"):
        make_finconn_app(FINCONN_INSTALLATION_ID="")
