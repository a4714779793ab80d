"""``flask finconn refresh`` and ``flask finconn sync``: what they store and their exit codes."""

from __future__ import annotations

from collections.abc import Callable

from conftest import DATA_PERMISSIONS
from flask import Flask

from flask_finconn import Holder, get_state
from flask_finconn.models import Account
from flask_finconn.testing import link_accounts, sandbox_of

ADA = Holder("ada", email="ada@example.com")


def stored_account(app: Flask, account_id: str) -> Account:
    with app.app_context():
        account = get_state(app).db.session.get(Account, account_id)
        assert account is not None
        _ = account.latest_balance
        get_state(app).db.session.expunge(account)
        return account


def test_refresh_starts_every_stale_account_once(data_app: Flask) -> None:
    linked = link_accounts(data_app, ADA)
    runner = data_app.test_cli_runner()
    result = runner.invoke(args=["finconn", "refresh", "--features", "balance,ownership"])
    assert result.exit_code == 0, result.output
    for account in linked:
        assert f"{account.id}: started balance, ownership" in result.stdout
        refresh = stored_account(data_app, account.id).balance_refresh
        assert refresh is not None and refresh["status"] == "pending"
    again = runner.invoke(args=["finconn", "refresh"])
    assert again.exit_code == 0
    assert "Nothing to refresh" in again.stdout


def test_refresh_wait_polls_until_the_results_are_stored(
    make_finconn_app: Callable[..., Flask],
) -> None:
    app = make_finconn_app(FINCONN_PERMISSIONS=DATA_PERMISSIONS, FINCONN_SANDBOX_REFRESH_DELAY=0.2)
    checking = link_accounts(app, ADA)[0]
    result = app.test_cli_runner().invoke(
        args=[
            "finconn",
            "refresh",
            checking.id,
            "--features",
            "balance",
            "--wait",
            "--timeout",
            "20",
            "--interval",
            "0.05",
        ]
    )
    assert result.exit_code == 0, result.output
    assert f"{checking.id}: balance succeeded" in result.stdout
    account = stored_account(app, checking.id)
    assert account.latest_balance is not None and account.latest_balance.current > 0


def test_refresh_wait_gives_up_at_the_timeout(data_app: Flask) -> None:
    checking = link_accounts(data_app, ADA)[0]
    result = data_app.test_cli_runner().invoke(
        args=[
            *("finconn", "refresh", checking.stripe_id, "--features", "balance", "--wait"),
            *("--timeout", "0.3", "--interval", "0.1"),
        ]
    )
    assert result.exit_code == 1
    assert f"{checking.id}: balance pending" in result.stdout
    assert "still running after 0.3 s" in result.stderr


def test_refresh_fails_loudly_for_an_account_that_needs_a_relink(data_app: Flask) -> None:
    checking = link_accounts(data_app, ADA)[0]
    sandbox_of(data_app).deactivate(checking.stripe_id)
    result = data_app.test_cli_runner().invoke(
        args=["finconn", "refresh", checking.id, "--features", "balance"]
    )
    assert result.exit_code == 1
    assert "link it again" in result.stdout
    assert f"could not be refreshed: {checking.id}" in result.stderr
    assert stored_account(data_app, checking.id).status == "inactive"


def test_refresh_refuses_unknown_accounts_and_features(data_app: Flask) -> None:
    runner = data_app.test_cli_runner()
    unknown = runner.invoke(args=["finconn", "refresh", "fcacct_nope"])
    assert unknown.exit_code == 1
    assert "There is no stored account fcacct_nope." in unknown.stderr
    bad = runner.invoke(args=["finconn", "refresh", "--features", "balances"])
    assert bad.exit_code == 2
    assert "balance, ownership, transactions" in bad.stderr


def test_sync_stores_transactions_and_resumes_after_a_failure(data_app: Flask) -> None:
    linked = link_accounts(data_app, ADA)
    sandbox = sandbox_of(data_app)
    sandbox.finish_refreshes()
    runner = data_app.test_cli_runner()
    sandbox.faults.fail_next(500, 500, 500)  # the first account's first page, retries included
    failed = runner.invoke(args=["finconn", "sync"])
    assert failed.exit_code == 1
    assert f"{linked[0].id}: failed" in failed.stdout
    assert f"could not be synced: {linked[0].id}" in failed.stderr
    assert all(f"{a.id}: " in failed.stdout and " added" in failed.stdout for a in linked[1:])

    result = runner.invoke(args=["finconn", "sync"])
    assert result.exit_code == 0, result.output
    assert f"{linked[0].id}: " in result.stdout and " added, 0 updated" in result.stdout
    assert f"{linked[1].id}: up to date" in result.stdout
    one = runner.invoke(args=["finconn", "sync", linked[0].stripe_id])
    assert (one.exit_code, one.stdout.strip()) == (0, f"{linked[0].id}: up to date")
    missing = runner.invoke(args=["finconn", "sync", "fca_nope"])
    assert missing.exit_code == 1
    assert "There is no stored account fca_nope." in missing.stderr
