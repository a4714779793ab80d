"""The README's code runs as written: the minimal app, its template, its test and the snippets.

Each fenced ``python`` and ``jinja`` block of README.md is taken from the file itself, so an
edit that breaks one fails here. The minimal app and its template are written where the
README says to put them (``yourapp.py`` and ``templates/dashboard.html``), its test example
runs under pytest in a fresh process, and the page is checked for what a user would see.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flask import Flask

from flask_finconn import Holder
from flask_finconn.tasks import PROCESS_TASK
from flask_finconn.testing import deactivate, finish_refreshes, link_accounts

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^( *)```(\w+)\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)
TEST_CONFIG = {
    "TESTING": True,
    "SQLALCHEMY_DATABASE_URI": "sqlite://",
    "FINCONN_SANDBOX_DATABASE": ":memory:",
    # A refresh stays pending until the test finishes it: on a slow box a 1 s delay could
    # run out inside link_accounts, and "balance on its way" would never be seen.
    "FINCONN_SANDBOX_REFRESH_DELAY": 3600,
}


def blocks(language: str) -> list[str]:
    """The README's fenced blocks in ``language``, dedented, in order."""
    text = README.read_text(encoding="utf-8")
    return [textwrap.dedent(body) for _, lang, body in FENCE.findall(text) if lang == language]


def block(language: str, marker: str) -> str:
    """The one block of ``language`` that contains ``marker``."""
    found = [body for body in blocks(language) if marker in body]
    assert len(found) == 1, f"README.md has {len(found)} {language} blocks with {marker!r}."
    return found[0]


APP = ("python", "def create_app(")
TEMPLATE = ("jinja", "<!doctype html>")
TEST = ("python", "def test_dashboard_shows_balance(")
QUERY = ("python", 'Account.holder_id == "42"')
SIGNAL = ("python", "@account_deactivated.connect_via(app)")
CELERY = ("python", "init_celery(celery, create_app())")
PAYMENTS = ("python", "def test_rent_is_debited_once(")
# Run by tests/test_migrations.py, on both databases.
MIGRATION = ("python", 'get_pk_constraint("finconn_transaction")')


def test_every_python_and_jinja_block_of_the_readme_is_run_here() -> None:
    covered = [APP, TEMPLATE, TEST, QUERY, SIGNAL, CELERY, PAYMENTS, MIGRATION]
    for language in ("python", "jinja"):
        markers = [marker for lang, marker in covered if lang == language]
        for body in blocks(language):
            assert sum(marker in body for marker in markers) == 1, (
                f"This {language} block of README.md is not run by tests/test_readme.py; "
                f"add a test for it:\n{body}"
            )


@pytest.fixture
def yourapp(tmp_path: Path) -> Iterator[ModuleType]:
    """The README's minimal app as ``yourapp.py``, with its template beside it, imported."""
    (tmp_path / "yourapp.py").write_text(block(*APP), encoding="utf-8")
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "dashboard.html").write_text(block(*TEMPLATE), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("yourapp", tmp_path / "yourapp.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["yourapp"] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules["yourapp"]


def sign_in(app: Flask, user_id: str) -> Any:
    client = app.test_client()
    with client.session_transaction() as session:
        session["user_id"] = user_id
    return client


def test_the_minimal_app_shows_linked_accounts_and_their_balances(yourapp: ModuleType) -> None:
    app = yourapp.create_app(TEST_CONFIG)
    stranger = app.test_client().get("/").get_data(as_text=True)
    assert "No bank accounts linked yet." in stranger and "<finconn-connect" not in stranger

    client = sign_in(app, "42")
    empty = client.get("/").get_data(as_text=True)
    assert "No bank accounts linked yet." in empty
    assert "<finconn-connect" in empty and "Link your bank" in empty
    assert 'nonce=""' not in empty
    assert "finconn-connect-success" in empty

    accounts = link_accounts(app, Holder("42", email="ada@example.com"))
    linked = client.get("/").get_data(as_text=True)
    # The prefetched balance is on its way: the page says so and reloads until it is here.
    assert "balance on its way" in linked and 'http-equiv="refresh"' in linked
    for account in accounts:
        assert f"•••• {account.last4}" in linked

    finish_refreshes(app)
    page = client.get("/").get_data(as_text=True)
    assert "balance on its way" not in page and 'http-equiv="refresh"' not in page
    shown = re.findall(r"(-?[\d,]+\.\d\d) USD", page)
    with app.app_context():
        expected = []
        for account in accounts:
            balance = yourapp.db.session.get(type(account), account.id).latest_balance
            expected.append(f"{balance.current / 100:,.2f}")
    assert sorted(shown) == sorted(expected)

    # Another holder sees none of them.
    assert "No bank accounts linked yet." in sign_in(app, "7").get("/").get_data(as_text=True)


def test_the_readme_test_example_passes_under_pytest(yourapp: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "test_yourapp.py").write_text(block(*TEST), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_yourapp.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


def test_the_readme_snippets_run_against_the_minimal_app(yourapp: ModuleType) -> None:
    app = yourapp.create_app(TEST_CONFIG)
    accounts = link_accounts(app, Holder("42", email="ada@example.com"))

    with app.app_context():
        query: dict[str, Any] = {"db": yourapp.db}
        exec(block(*QUERY), query)
        assert sorted(a.id for a in query["accounts"]) == sorted(a.id for a in accounts)

    notified: list[tuple[str, str]] = []
    signal: dict[str, Any] = {"app": app, "notify": lambda *args: notified.append(args)}
    exec(block(*SIGNAL), signal)
    deactivate(app, accounts[0])
    assert notified == [("42", "Your bank needs you to log in again.")]

    # The production snippet, with the test config so that the sandbox may start.
    celery: dict[str, Any] = {"create_app": lambda: yourapp.create_app(TEST_CONFIG)}
    exec(block(*CELERY), celery)
    assert PROCESS_TASK in celery["celery"].tasks
