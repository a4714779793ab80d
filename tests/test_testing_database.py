"""``flask_finconn.testing``'s database helpers: throwaway databases and statement counting."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import require_postgres
from flask import Flask

from flask_finconn.testing import HOLDER_HEADER, count_statements, throwaway_database


def _databases(server_url: str) -> set[str]:
    engine = sa.create_engine(server_url)
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
    finally:
        engine.dispose()


def test_a_postgresql_throwaway_is_empty_and_dropped_even_with_connections_open() -> None:
    server_url = require_postgres()
    before = _databases(server_url)
    with throwaway_database(server_url) as url, throwaway_database(server_url) as other:
        name = sa.make_url(url).database
        assert name is not None and name not in before
        assert sa.make_url(other).database != name
        engine = sa.create_engine(url)
        conn = engine.connect()  # left open on purpose: the drop must not wait for it
        assert sa.inspect(conn).get_table_names() == []
        conn.execute(sa.text("CREATE TABLE t (id integer)"))
        conn.commit()
    assert _databases(server_url) == before
    conn.invalidate()  # the server ended it; close the client side without a rollback
    engine.dispose()


def test_a_postgresql_throwaway_from_a_template_starts_as_its_copy(tmp_path: Path) -> None:
    server_url = require_postgres()
    with throwaway_database(server_url) as source:
        engine = sa.create_engine(source)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE kept (id integer)"))
            conn.execute(sa.text("INSERT INTO kept VALUES (7)"))
        engine.dispose()
        template = sa.make_url(source).database
        assert template is not None
        with throwaway_database(server_url, template=template) as copy:
            engine = sa.create_engine(copy)
            with engine.connect() as conn:
                assert conn.execute(sa.text("SELECT id FROM kept")).scalars().all() == [7]
            engine.dispose()
    sqlite = f"sqlite:///{tmp_path}/app.sqlite3"
    refused = pytest.raises(ValueError, match="template is the name of a PostgreSQL database")
    with refused, throwaway_database(sqlite, template="anything"):
        pass


def test_a_sqlite_throwaway_is_a_new_file_beside_the_given_one_removed_after(
    tmp_path: Path,
) -> None:
    given = tmp_path / "app.sqlite3"
    with throwaway_database(f"sqlite:///{given}") as url:
        path = Path(str(sa.make_url(url).database))
        assert path.parent == tmp_path and path != given
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id integer)"))
        engine.dispose()
        assert path.exists()
    assert not path.exists() and not given.exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://localhost/app"])
def test_a_throwaway_of_an_unsupported_url_says_what_to_do(url: str) -> None:
    with pytest.raises(ValueError, match="throwaway_database") as info, throwaway_database(url):
        pass
    assert str(info.value).endswith(".")


def test_count_statements_lists_what_the_app_sends_inside_the_block(
    finconn_app: Flask,
) -> None:
    client = finconn_app.test_client()
    with count_statements(finconn_app) as statements:
        assert client.get("/finconn/accounts", headers={HOLDER_HEADER: "h1"}).status_code == 200
        during = len(statements)
    client.get("/finconn/accounts", headers={HOLDER_HEADER: "h1"})
    assert during > 0 and len(statements) == during
    assert any("finconn_account" in statement for statement in statements)
    with finconn_app.app_context():
        engine = finconn_app.extensions["sqlalchemy"].engine
    with count_statements(engine) as direct, engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert direct == ["SELECT 1"]
