"""The sandbox's state: persistence, concurrency, the clock, institutions and the modal's API."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

import pytest
import stripe
from sandbox_support import Served, client_fixture, link, present, sb_fixture  # noqa: F401
from stripe.params.financial_connections import SessionCreateParams, SessionCreateParamsLimits

from flask_finconn.sandbox import Sandbox, SessionError, _data
from flask_finconn.sandbox._store import Store


def _session(
    sb: Sandbox,
    client: stripe.StripeClient,
    permissions: Sequence[str] = ("balances", "transactions"),
    limits: SessionCreateParamsLimits | None = None,
) -> stripe.financial_connections.Session:
    customer = client.v1.customers.create()
    params: SessionCreateParams = {
        "account_holder": {"type": "customer", "customer": customer.id},
        "permissions": list(permissions),
    }
    if limits is not None:
        params["limits"] = limits
    return client.v1.financial_connections.sessions.create(params)


# --- persistence and concurrency ----------------------------------------------------------


def test_a_file_database_survives_a_restart(tmp_path: Any) -> None:
    path = str(tmp_path / "sandbox.sqlite3")
    first = Sandbox(path)
    client = first.stripe_client()
    account = link(first, client, "bank_oauth", accounts=["checking"])[0]
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    first.advance_time(3600)
    clock = first.now()
    first.close()

    second = Sandbox(path)
    client = second.stripe_client()
    assert second.now() >= clock, "the clock offset is part of the state"
    again = client.v1.financial_connections.accounts.retrieve(account.id)
    assert present(again.balance_refresh).status == "succeeded", "the pending refresh finished"
    assert present(again.balance).current["usd"] > 0
    assert [e["type"] for e in second.events(account=account.id)] == [
        "financial_connections.account.created",
        "financial_connections.account.refreshed_balance",
    ]
    second.close()


def test_concurrent_requests_from_many_threads(sb: Sandbox) -> None:
    served = Served(sb.wsgi_app)
    clients = [
        sb.stripe_client(),
        stripe.StripeClient(sb.api_key, base_addresses={"api": served.url}),
    ]
    errors: list[BaseException] = []
    ids: list[str] = []
    lock = threading.Lock()

    def work(n: int) -> None:
        try:
            client = clients[n % 2]
            for _ in range(10):
                customer = client.v1.customers.create({"email": f"t{n}@example.com"})
                session = client.v1.financial_connections.sessions.create(
                    {
                        "account_holder": {"type": "customer", "customer": customer.id},
                        "permissions": ["balances"],
                    }
                )
                sb.complete_session(session.id, "test_oauth", ["checking"])
                listed = client.v1.financial_connections.accounts.list({"session": session.id})
                client.v1.financial_connections.accounts.refresh(
                    listed.data[0].id, {"features": ["balance"]}
                )
                with lock:
                    ids.append(customer.id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    finisher = threading.Thread(target=lambda: [sb.finish_refreshes() for _ in range(20)])
    finisher.start()
    for t in [*threads, finisher]:
        t.join()
    served.close()
    assert errors == []
    assert len(set(ids)) == 80
    client = sb.stripe_client()
    customers = list(client.v1.customers.list({"limit": 100}).auto_paging_iter())
    assert len(customers) == 80
    accounts = list(
        client.v1.financial_connections.accounts.list({"limit": 100}).auto_paging_iter()
    )
    assert len(accounts) == 80
    sb.finish_refreshes()
    created = sb.events(type="financial_connections.account.created")
    refreshed = sb.events(type="financial_connections.account.refreshed_balance")
    assert len(created) == len(refreshed) == 80


def test_two_sandboxes_on_one_file_share_state(tmp_path: Any) -> None:
    path = str(tmp_path / "shared.sqlite3")
    one, two = Sandbox(path), Sandbox(path)
    errors: list[BaseException] = []

    def create(sb: Sandbox) -> None:
        try:
            client = sb.stripe_client()
            for _ in range(25):
                client.v1.customers.create()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in (one, two, one, two)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    listed = list(two.stripe_client().v1.customers.list({"limit": 100}).auto_paging_iter())
    assert len({c.id for c in listed}) == 100
    one.close()
    two.close()


def test_a_sandbox_sees_what_another_on_the_same_file_changed(tmp_path: Any) -> None:
    # The clock, the next due task and the webhook endpoints are kept in memory; another
    # connection's commit (another process, in production) must make them read again.
    path = str(tmp_path / "shared.sqlite3")
    one, two = Sandbox(path), Sandbox(path)
    client_one, client_two = one.stripe_client(), two.stripe_client()
    account = link(one, client_one, "bank_oauth", accounts=["checking"])[0]
    fc_two = client_two.v1.financial_connections
    assert fc_two.accounts.retrieve(account.id).balance_refresh is None  # two has read it all

    before = two.now()
    one.advance_time(3600)
    assert two.now() >= before + 3600

    one.refresh_delay = 0
    client_one.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    # Nothing serves one's requests any more: two's GET finds the task due and runs it.
    assert present(fc_two.accounts.retrieve(account.id).balance_refresh).status == "succeeded"

    # two emitted the refresh's event with no endpoint; now one adds an endpoint.
    one.add_webhook_endpoint(url="http://127.0.0.1:9/hook")
    event = two.fire_event(account.id, "financial_connections.account.refreshed_balance")
    assert event["pending_webhooks"] == 1
    assert two.pending_deliveries() == 1
    one.close()
    two.close()


def test_a_failed_operation_leaves_nothing_half_written(sb: Sandbox) -> None:
    client = sb.stripe_client()
    session = _session(sb, client, limits={"accounts": 1})
    with pytest.raises(Exception, match="at most 1"):
        sb.complete_session(session.id, "bank_oauth", ["checking", "savings"])
    assert client.v1.financial_connections.accounts.list().data == []
    assert sb.events() == []
    sb.complete_session(session.id, "bank_oauth", ["checking"])
    assert len(client.v1.financial_connections.accounts.list().data) == 1


def test_a_failed_commit_forgets_what_the_transaction_remembered() -> None:
    store = Store(":memory:")
    # A deferred foreign key is checked at COMMIT, which then fails.
    store.execute("PRAGMA foreign_keys = ON")
    store.ensure(
        "CREATE TABLE parent (id TEXT PRIMARY KEY);"
        "CREATE TABLE child (parent TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);"
    )
    assert store.cached("count", lambda: 0) == 0
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"), store.tx():
        store.execute("INSERT INTO child (parent) VALUES ('missing')")
        store.remember("count", 1)
    # The value is read again, and the failed transaction is over: the next one starts.
    assert store.cached("count", lambda: 0) == 0
    with store.tx():
        assert store.all("SELECT * FROM child") == []
    store.close()


def test_in_memory_stores_are_private_and_roll_back() -> None:
    one, two = Store(":memory:"), Store(":memory:")
    one.set_meta("owner", "one")
    assert two.get_meta("owner") is None
    with pytest.raises(RuntimeError, match="undone"), one.tx():
        one.set_meta("owner", "changed")
        raise RuntimeError("undone")
    assert one.get_meta("owner") == "one"
    one.close()
    # A new in-memory store starts empty, whatever an earlier one held.
    three = Store(":memory:")
    assert three.get_meta("owner") is None
    two.close()
    three.close()


def _newest(client: stripe.StripeClient, account: str) -> list[tuple[str, str]]:
    page = client.v1.financial_connections.transactions.list({"account": account, "limit": 20})
    return [(t.id, t.status) for t in page.data]


def _stored_newest(sb: Sandbox, account: str) -> list[tuple[str, str]]:
    return [
        (row[0], row[1])
        for row in sb.store.all(
            "SELECT id, status FROM transactions WHERE account = ? "
            "ORDER BY transacted_at DESC, id DESC LIMIT 20",
            (account,),
        )
    ]


def _refresh_transactions(sb: Sandbox, account: str) -> None:
    sb.advance_time(2 * 86400)
    sb.refresh_account(account, ["transactions"])
    sb.finish_refreshes(account)


def test_a_page_read_again_shows_what_was_written_in_between(
    sb: Sandbox, client: stripe.StripeClient
) -> None:
    # Pages are kept in memory until the next write: a write between two identical list
    # calls must show in the second.
    account = link(sb, client, "bank_oauth", accounts=["checking"])[0].id
    _refresh_transactions(sb, account)
    first = _newest(client, account)
    assert _newest(client, account) == first == _stored_newest(sb, account)
    _refresh_transactions(sb, account)  # new rows, and the pending ones settle
    second = _newest(client, account)
    assert second != first and second == _stored_newest(sb, account)
    sb.disconnect(account)  # hides the account's transactions
    assert _newest(client, account) == []


def test_a_page_read_again_shows_what_another_sandbox_on_the_file_wrote(tmp_path: Any) -> None:
    path = str(tmp_path / "shared.sqlite3")
    one, two = Sandbox(path), Sandbox(path)
    client_one = one.stripe_client()
    account = link(one, client_one, "bank_oauth", accounts=["checking"])[0].id
    _refresh_transactions(one, account)
    first = _newest(client_one, account)
    assert _newest(client_one, account) == first
    _refresh_transactions(two, account)  # another connection (another process, in production)
    second = _newest(client_one, account)
    assert second != first and second == _stored_newest(two, account)
    one.close()
    two.close()


def test_a_rolled_back_write_leaves_no_page_behind(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "bank_oauth", accounts=["checking"])[0].id
    _refresh_transactions(sb, account)
    first = _newest(client, account)
    newest = first[0][0]

    class Abandoned(Exception):
        pass

    with pytest.raises(Abandoned), sb.store.tx():
        sb.store.execute(
            "UPDATE transactions SET body = json_set(body, '$.status', 'void') WHERE id = ?",
            (newest,),
        )
        # The request joins the open transaction, so it sees (and may keep) the change.
        assert _newest(client, account)[0] == (newest, "void")
        raise Abandoned
    assert _newest(client, account) == first == _stored_newest(sb, account)


# --- data -------------------------------------------------------------------------------


def test_generated_data_is_deterministic() -> None:
    args = ("fca_same", "cash", 1_000_000, 1_000_000 + 180 * 86400, 50, 1)
    assert _data.generate_transactions(*args) == _data.generate_transactions(*args)
    assert _data.balance("fca_same", "cash", "checking", 1, 5) == _data.balance(
        "fca_same", "cash", "checking", 1, 5
    )
    assert _data.balance("fca_same", "cash", "checking", 1, 5) != _data.balance(
        "fca_other", "cash", "checking", 1, 5
    )


def test_a_very_large_history_pages_both_ways(sb: Sandbox) -> None:
    # How fast it is generated is measured by bench/sandbox_state.py, not asserted here.
    client = sb.stripe_client()
    account = link(sb, client, "test_oauth", accounts=["checking"])[0]
    sb.set_history_size(account.id, 100_000)
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["transactions"]})
    sb.finish_refreshes()
    fc = client.v1.financial_connections
    page = fc.transactions.list({"account": account.id, "limit": 100})
    assert len(page.data) == 100 and page.has_more
    oldest = fc.transactions.list(
        {"account": account.id, "limit": 100, "ending_before": page.data[-1].id}
    )
    assert oldest.data[-1].id == page.data[-2].id
    count = sb.store.one("SELECT COUNT(*) FROM transactions WHERE account = ?", (account.id,))
    assert count[0] == 100_000


# --- the clock and the deactivation banks ---------------------------------------------------


def test_advance_time_only_moves_forward(sb: Sandbox) -> None:
    before = sb.now()
    assert sb.advance_time(86400) >= before + 86400
    with pytest.raises(ValueError, match="forward"):
        sb.advance_time(-1)


def test_inactive_accounts_go_inactive_on_their_first_refresh(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "inactive", accounts=["checking"])[0]
    assert account.status == "active"
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    sb.finish_refreshes()
    after = client.v1.financial_connections.accounts.retrieve(account.id)
    assert after.status == "inactive"
    assert present(after.balance_refresh).status == "failed"
    assert present(after.status_details)["inactive"]["action"] == "relink_required"
    assert [e["type"] for e in sb.events(account=account.id)][-2:] == [
        "financial_connections.account.refreshed_balance",
        "financial_connections.account.deactivated",
    ]
    # After a relink the account stays active.
    sb.reactivate(account.id)
    client.v1.financial_connections.accounts.refresh(account.id, {"features": ["balance"]})
    sb.finish_refreshes()
    assert client.v1.financial_connections.accounts.retrieve(account.id).status == "active"


def test_inactive_accounts_also_go_inactive_after_a_minute(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "inactive", accounts=["savings"])[0]
    sb.advance_time(61)
    assert client.v1.financial_connections.accounts.retrieve(account.id).status == "inactive"


def test_eventually_requires_reauthentication(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "reauth_eventual", accounts=["checking"])[0]
    details = present(present(account.status_details).active)
    assert details.action == "relink_required"
    assert details.expected_deactivation_date == account.created + 30 * 86400
    types = [e["type"] for e in sb.events()]
    assert "financial_connections.account.upcoming_deactivation" in types
    assert "financial_connections.authorization.upcoming_deactivation" in types
    sb.advance_time(29 * 86400)
    assert client.v1.financial_connections.accounts.retrieve(account.id).status == "active"
    sb.advance_time(86400)
    assert client.v1.financial_connections.accounts.retrieve(account.id).status == "inactive"


def test_immediately_requires_reauthentication(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "reauth_immediate", accounts=["checking"])[0]
    sb.advance_time(61)
    assert client.v1.financial_connections.accounts.retrieve(account.id).status == "inactive"
    reactivated = sb.reactivate(account.id)
    expected = reactivated["status_details"]["active"]["expected_deactivation_date"]
    assert expected == sb.now() + 86400 or expected == sb.now() + 86399
    sb.advance_time(86400)
    assert client.v1.financial_connections.accounts.retrieve(account.id).status == "inactive"


def test_disconnect_by_user_emits_an_automatic_event(sb: Sandbox) -> None:
    client = sb.stripe_client()
    account = link(sb, client, "test_oauth", accounts=["checking"])[0]
    assert sb.disconnect_by_user(account.id)["status"] == "disconnected"
    event = sb.events(type="financial_connections.account.disconnected")[0]
    assert event["request"] == {"id": None, "idempotency_key": None}


# --- the modal's Python API ----------------------------------------------------------------


def test_institutions_for_the_modal(sb: Sandbox) -> None:
    everything = sb.institutions()
    assert len(everything) == 12
    assert [i["featured"] for i in everything] == sorted(
        (i["featured"] for i in everything), reverse=True
    )
    first = everything[0]
    assert set(first) == {
        "id",
        "name",
        "featured",
        "logo",
        "auth",
        "status",
        "status_message",
        "description",
    }
    assert first["logo"]["color"].startswith("#") and len(first["logo"]["initials"]) == 2
    assert [i["id"] for i in sb.institutions("down")] == [
        "down_scheduled",
        "down_unscheduled",
        "down_error",
    ]
    assert sb.institutions("no such bank") == []


def test_client_secrets_work_once_and_expire(sb: Sandbox) -> None:
    client = sb.stripe_client()
    with pytest.raises(SessionError) as info:
        sb.session_for_client_secret("fcsess_client_secret_nope")
    assert info.value.code == "session_unknown"

    session = _session(sb, client)
    assert sb.session_for_client_secret(present(session.client_secret))["id"] == session.id
    done = sb.complete_session_with(present(session.client_secret), "bank_oauth", ["checking"])
    assert [a["subcategory"] for a in done["accounts"]["data"]] == ["checking"]
    with pytest.raises(SessionError) as info:
        sb.session_for_client_secret(present(session.client_secret))
    assert info.value.code == "session_used"

    expiring = _session(sb, client)
    sb.advance_time(sb.session_ttl)
    with pytest.raises(SessionError) as info:
        sb.login(present(expiring.client_secret), "bank_nonoauth", "u", "p")
    assert info.value.code == "session_expired"
    manual = _session(sb, client)
    sb.expire_session(manual.id)
    with pytest.raises(SessionError):
        sb.institution_accounts(present(manual.client_secret), "bank_oauth")


@pytest.mark.parametrize(
    ("institution", "password", "answer", "expected"),
    [
        ("bank_nonoauth", "hunter2", None, {"status": "ok"}),
        ("bank_nonoauth", "mfa", None, {"status": "mfa"}),
        ("bank_nonoauth", "confirm_mfa", None, {"status": "mfa"}),
        ("bank_nonoauth", "mfa", "123456", {"status": "ok"}),
        ("bank_nonoauth", "options", None, {"status": "options"}),
        ("bank_nonoauth", "security_question", None, {"status": "security_question"}),
        ("bank_nonoauth", "security_question", "Rex", {"status": "ok"}),
        ("bank_nonoauth", "mfa", "incorrect", {"status": "error", "retry": True}),
        ("bank_nonoauth", "incorrect", None, {"code": "incorrect_credentials", "retry": True}),
        ("bank_nonoauth", "error", None, {"code": "authorization_failed", "retry": False}),
        ("bank_oauth", "error", None, {"status": "ok"}),
        ("down_scheduled", "x", None, {"code": "institution_unavailable_planned"}),
        ("down_unscheduled", "x", None, {"code": "institution_unavailable_unplanned"}),
        ("down_error", "x", None, {"code": "institution_timeout"}),
        ("atlantis", "x", None, {"code": "institution_unknown"}),
    ],
)
def test_login_magic_words(
    sb: Sandbox, institution: str, password: str, answer: str | None, expected: dict[str, Any]
) -> None:
    session = _session(sb, sb.stripe_client())
    result = sb.login(present(session.client_secret), institution, "jenny", password, answer)
    assert {k: result.get(k) for k in expected} == expected
    if result["status"] == "ok":
        assert result["accounts"] and all("selectable" in a for a in result["accounts"])
    elif result["status"] == "error":
        assert result["message"].endswith(".")
    else:
        assert result["prompt"]


def test_offered_accounts_follow_the_session(sb: Sandbox) -> None:
    session = _session(sb, sb.stripe_client(), permissions=["payment_method"])
    offered = {
        a["key"]: a for a in sb.institution_accounts(present(session.client_secret), "bank_oauth")
    }
    assert offered["checking"]["selectable"] is True
    assert offered["credit_card"]["selectable"] is False
    assert "ACH" in offered["credit_card"]["disabled_reason"]
    invalid = sb.institution_accounts(present(session.client_secret), "invalid_payment")
    assert invalid and not any(a["selectable"] for a in invalid)
