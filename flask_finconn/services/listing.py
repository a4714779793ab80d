"""The holder's account list as Account JSON rendered by the database, in one query.

Listing is the hot read: rendering each row's JSON in SQL (SQLite's JSON1 functions,
PostgreSQL's ``json_build_object``) skips decoding the JSON columns and building Python
objects only to encode them again. The SQL spells out
:class:`~flask_finconn.schemas.AccountSchema`, the one other writer of the Account JSON;
``tests/test_http_accounts.py`` holds the two equal on both databases.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..models import Account, BalanceSnapshot
from ..state import FinConnState

__all__ = ["list_account_json"]


def list_account_json(state: FinConnState, holder_id: str) -> list[str] | None:
    """The holder's accounts, oldest link first, as Account JSON texts (one query).

    None on databases other than SQLite and PostgreSQL: the caller then dumps
    :func:`.accounts.list_accounts` with the schema.
    """
    # A Core execute on the session's connection: no ORM entities, so no ORM overhead.
    connection = state.db.session.connection()
    query = _ACCOUNT_JSON_QUERIES.get(connection.dialect.name)
    if query is None:
        return None
    return list(connection.execute(query, {"holder_id": holder_id}).scalars())


_ISO = "%Y-%m-%dT%H:%M:%SZ"
_PG_ISO = 'YYYY-MM-DD"T"HH24:MI:SS"Z"'


def _lit(value: str) -> Any:
    """A constant inlined in the SQL (keys, formats): dozens of bound parameters per row
    would cost more than the query itself. Only ever our own constants, never input."""
    return sa.literal_column("'" + value + "'")


def _account_json_query(dialect: str) -> sa.Select[Any]:
    f = sa.func

    def build(*pairs: Any) -> Any:
        keyed = [_lit(item) if i % 2 == 0 else item for i, item in enumerate(pairs)]
        return (f.json_object if dialect == "sqlite" else f.json_build_object)(*keyed)

    if dialect == "sqlite":

        def iso(column: Any) -> Any:
            return f.strftime(_lit(_ISO), column)

        def refresh(column: Any) -> Any:
            raw = sa.type_coerce(column, sa.Text)

            def unix(key: str) -> Any:
                return f.strftime(
                    _lit(_ISO), f.json_extract(raw, _lit("$." + key)), _lit("unixepoch")
                )

            return sa.case(
                (sa.or_(raw.is_(None), f.json_type(raw) == _lit("null")), sa.null()),
                else_=build(
                    "status",
                    f.json_extract(raw, _lit("$.status")),
                    "last_attempted_at",
                    unix("last_attempted_at"),
                    "next_refresh_available_at",
                    unix("next_refresh_available_at"),
                ),
            )

        def embedded(column: Any) -> Any:
            return f.json(sa.type_coerce(column, sa.Text))

    else:

        def iso(column: Any) -> Any:
            return f.to_char(column, _lit(_PG_ISO))

        def refresh(column: Any) -> Any:
            raw = sa.type_coerce(column, sa.Text)

            def unix(key: str) -> Any:
                seconds = sa.cast(raw.op("->>")(_lit(key)), sa.BigInteger)
                return f.to_char(f.timezone(_lit("UTC"), f.to_timestamp(seconds)), _lit(_PG_ISO))

            return sa.case(
                (sa.or_(raw.is_(None), f.json_typeof(raw) == _lit("null")), sa.null()),
                else_=build(
                    "status",
                    raw.op("->>")(_lit("status")),
                    "last_attempted_at",
                    unix("last_attempted_at"),
                    "next_refresh_available_at",
                    unix("next_refresh_available_at"),
                ),
            )

        def embedded(column: Any) -> Any:
            return sa.type_coerce(column, sa.Text)

    balance = sa.case(
        (BalanceSnapshot.id.is_(None), sa.null()),
        else_=build(
            "current",
            BalanceSnapshot.current,
            "available",
            sa.func.coalesce(BalanceSnapshot.available, BalanceSnapshot.current),
            "currency",
            BalanceSnapshot.currency,
            "as_of",
            iso(BalanceSnapshot.as_of),
        ),
    )
    document = build(
        "id",
        Account.id,
        "institution_name",
        Account.institution_name,
        "display_name",
        Account.display_name,
        "last4",
        Account.last4,
        "category",
        Account.category,
        "subcategory",
        Account.subcategory,
        "status",
        Account.status,
        "action",
        Account.action,
        "permissions",
        embedded(Account.permissions),
        "subscriptions",
        embedded(Account.subscriptions),
        "balance",
        balance,
        "refresh",
        build(
            "balance",
            refresh(Account.balance_refresh),
            "ownership",
            refresh(Account.ownership_refresh),
            "transactions",
            refresh(Account.transaction_refresh),
        ),
        "linked_at",
        iso(Account.linked_at),
        "updated_at",
        iso(Account.updated_at),
    )
    return (
        sa.select(
            sa.type_coerce(document, sa.Text) if dialect == "sqlite" else sa.cast(document, sa.Text)
        )
        .select_from(Account)
        .outerjoin(BalanceSnapshot, BalanceSnapshot.id == Account.latest_balance_id)
        .where(Account.holder_id == sa.bindparam("holder_id"))
        .order_by(Account.linked_at, Account.id)
    )


# Built once: SQLAlchemy then reuses their compiled forms on every request.
_ACCOUNT_JSON_QUERIES = {name: _account_json_query(name) for name in ("sqlite", "postgresql")}
