"""``flask finconn ...`` commands."""

from __future__ import annotations

from flask import Flask

from flask_finconn import Holder
from flask_finconn.testing import link_accounts


def test_info_shows_the_mode(finconn_app: Flask) -> None:
    result = finconn_app.test_cli_runner().invoke(args=["finconn", "info"])
    assert result.exit_code == 0
    assert "mode: sandbox" in result.output
    assert "url prefix: /finconn" in result.output
    assert "permissions: balances, transactions" in result.output


def test_accounts_lists_a_holders_accounts(finconn_app: Flask) -> None:
    runner = finconn_app.test_cli_runner()
    empty = runner.invoke(args=["finconn", "accounts", "ada"])
    assert "No accounts linked for holder ada." in empty.output
    linked = link_accounts(finconn_app, Holder("ada"), accounts=["checking"])
    result = runner.invoke(args=["finconn", "accounts", "ada"])
    assert result.exit_code == 0
    assert linked[0].id in result.output
    assert "*6789" in result.output


def test_the_sandbox_commands_are_mounted(finconn_app: Flask) -> None:
    result = finconn_app.test_cli_runner().invoke(args=["finconn", "sandbox", "--help"])
    assert result.exit_code == 0
    assert "serve" in result.output
