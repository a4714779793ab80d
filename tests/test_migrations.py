"""Flask-Migrate (Alembic) autogenerate sees every finconn_* table, and the result applies."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.migration import MigrationContext
from alembic.operations import Operations
from flask import Flask
from flask_migrate import Migrate, init, migrate, upgrade
from flask_sqlalchemy import SQLAlchemy
from test_readme import MIGRATION, block

from flask_finconn import FinConn, Holder, get_state
from flask_finconn.models import Base, Transaction
from flask_finconn.services.sync import sync_account_from_stripe
from flask_finconn.services.transactions import list_transactions, transaction_row
from flask_finconn.testing import create_app, link_accounts, sandbox_of

TABLES = {table.name for table in Base.metadata.sorted_tables}
TRANSACTIONS: sa.Table = Transaction.__table__  # type: ignore[assignment]


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


def keyed_by_id_alone(engine: sa.Engine) -> None:
    """Replace ``finconn_transaction`` with its 0.1.0 form: the primary key is ``id`` alone."""
    table = TRANSACTIONS
    metadata = sa.MetaData(naming_convention=Base.metadata.naming_convention)
    sa.Table("finconn_account", metadata, sa.Column("id", sa.String(32), primary_key=True))
    old = sa.Table(
        table.name,
        metadata,
        *(sa.Column(column.name, column.type, nullable=column.nullable) for column in table.c),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["account_id"], ["finconn_account.id"], ondelete="CASCADE"),
        *(sa.Index(index.name, *(c.name for c in index.columns)) for index in table.indexes),
    )
    with engine.begin() as connection:
        table.drop(connection)
        old.create(connection)


def run_readme_migration(engine: sa.Engine, step: str) -> None:
    """Run the README's ``upgrade()`` or ``downgrade()`` as Alembic runs a revision."""
    revision: dict[str, Any] = {}
    exec(block(*MIGRATION), revision)
    with engine.begin() as connection, Operations.context(MigrationContext.configure(connection)):
        revision[step]()


def primary_key(engine: sa.Engine) -> list[str]:
    return list(sa.inspect(engine).get_pk_constraint("finconn_transaction")["constrained_columns"])


def test_the_readme_migration_rekeys_a_0_1_0_table_and_keeps_its_rows(database_url: str) -> None:
    app = create_app(
        database_url, FINCONN_PERMISSIONS=["transactions"], FINCONN_SANDBOX_REFRESH_DELAY=3600
    )
    with app.app_context():
        state = get_state(app)
        engine = state.db.engine
    keyed_by_id_alone(engine)
    assert primary_key(engine) == ["id"]
    # The rows a 0.1.0 sync stored: every transaction of the account, by Stripe id.
    account = link_accounts(app, Holder("ada"), accounts=["checking"])[0]
    sandbox_of(app).finish_refreshes(account.stripe_id)
    with app.app_context():
        stored = [
            transaction_row(txn, account.id)
            for page, _ in state.stripe.transaction_pages(account.stripe_id)
            for txn in page
        ]
        state.db.session.execute(sa.insert(Transaction), stored)
        state.db.session.commit()
        state.db.session.remove()
    assert len(stored) > 300

    run_readme_migration(engine, "upgrade")
    assert primary_key(engine) == ["account_id", "id"]
    indexes = {index["name"] for index in sa.inspect(engine).get_indexes(Transaction.__tablename__)}
    assert indexes >= {index.name for index in TRANSACTIONS.indexes}
    foreign_keys = sa.inspect(engine).get_foreign_keys(Transaction.__tablename__)
    assert [(fk["referred_table"], fk["options"].get("ondelete")) for fk in foreign_keys] == [
        ("finconn_account", "CASCADE")
    ]
    with app.app_context():
        # The first sync after the upgrade finds every row already there, by Stripe id.
        applied = sync_account_from_stripe(state, account.stripe_id)
        assert applied is not None and applied.sync is not None
        assert (applied.sync.added, applied.sync.updated) == (0, 0)
        rows = state.db.session.execute(
            sa.select(Transaction.id, Transaction.transacted_at)
            .where(Transaction.account_id == account.id)
            .order_by(Transaction.transacted_at.desc(), Transaction.id.desc())
        ).all()
        assert sorted(row.id for row in rows) == sorted(row["id"] for row in stored)
        first = list_transactions(state, "ada", account.id, limit=25)
        assert [row.id for row in first.data] == [row.id for row in rows[:25]]
        second = list_transactions(state, "ada", account.id, limit=25, cursor=first.next_cursor)
        assert [row.id for row in second.data] == [row.id for row in rows[25:50]]
        state.db.session.remove()

    run_readme_migration(engine, "downgrade")
    assert primary_key(engine) == ["id"]
    with app.app_context():
        count = state.db.session.scalar(sa.select(sa.func.count()).select_from(Transaction))
        assert count == len(stored)
        state.db.session.remove()
    engine.dispose()
