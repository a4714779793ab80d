"""Flask-Migrate (Alembic) autogenerate sees every finconn_* table, and the result applies."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate, init, migrate, upgrade
from flask_sqlalchemy import SQLAlchemy

from flask_finconn import FinConn
from flask_finconn.models import Base

TABLES = {table.name for table in Base.metadata.sorted_tables}


def make_host(database_url: str) -> tuple[Flask, SQLAlchemy]:
    app = Flask("host")
    app.config.update(
        SQLALCHEMY_DATABASE_URI=database_url,
        FINCONN_STRIPE_SECRET_KEY="sk_test_migrations",
        FINCONN_STRIPE_PUBLISHABLE_KEY="pk_test_migrations",
        FINCONN_WEBHOOK_SECRET="whsec_migrations",
        FINCONN_MERCHANT_NAME="Migrations",
    )
    db = SQLAlchemy()
    db.init_app(app)
    FinConn(db=db).init_app(app)
    Migrate(app, db)
    return app, db


@pytest.fixture(autouse=True)
def keep_loggers_enabled() -> Iterator[None]:
    """Alembic's env.py applies alembic.ini's logging, which disables every logger it does
    not name; enable ours again so later tests still see the extension's log records."""
    yield
    for name, each in logging.root.manager.loggerDict.items():
        if isinstance(each, logging.Logger) and name.startswith("flask_finconn"):
            each.disabled = False


# Flask-Migrate's generated env.py still tries Flask-SQLAlchemy's deprecated get_engine() first.
@pytest.mark.filterwarnings("ignore:'get_engine' is deprecated:DeprecationWarning")
def test_autogenerate_creates_every_table(database_url: str, tmp_path: Path) -> None:
    app, db = make_host(database_url)
    directory = str(tmp_path / "migrations")
    with app.app_context():
        init(directory)
        migrate(directory, message="finconn")
        scripts = list((tmp_path / "migrations" / "versions").glob("*.py"))
        assert len(scripts) == 1
        created = set(re.findall(r"op\.create_table\(\s*'([a-z_]+)'", scripts[0].read_text()))
        assert created == TABLES

        upgrade(directory)
        assert set(sa.inspect(db.engine).get_table_names()) >= TABLES

        # A second autogenerate against the upgraded database finds nothing to do.
        migrate(directory, message="again")
        assert len(list((tmp_path / "migrations" / "versions").glob("*.py"))) == 1
        db.engine.dispose()


def test_all_tables_carry_the_prefix() -> None:
    assert TABLES
    assert all(name.startswith("finconn_") for name in TABLES)
