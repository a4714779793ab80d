"""This installation's id: what keeps deployments that share one Stripe account apart.

Dev, staging and production often run the same code with the same settings on one Stripe
account (one test key for dev and staging). Everything an installation creates at Stripe
is scoped by an id of its own: Customer idempotency keys and the Customer's
``finconn_installation`` metadata. The id is ``FINCONN_INSTALLATION_ID`` when set, else a
random one generated on first use and stored in the host's database
(``finconn_installation``), so separate databases are separate installations with no
configuration.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from ..models import Installation, utcnow
from ..state import FinConnState

__all__ = ["installation_id"]

TABLE: sa.Table = Installation.__table__  # type: ignore[assignment]
ROW_ID = 1


def installation_id(state: FinConnState) -> str:
    """The id that scopes what this app creates at Stripe (read once, then cached).

    The first call on a fresh database stores a random id; concurrent first calls (threads,
    processes) race on the one row's primary key, and every one of them reads the winner's.
    """
    if state.settings.installation_id is not None:
        return state.settings.installation_id
    if state.installation is None:
        state.installation = _stored_or_new(state)
    return state.installation


def _stored_or_new(state: FinConnState) -> str:
    session = state.db.session
    bind = session.get_bind()
    values = {"id": ROW_ID, "installation_id": "fcinst_" + secrets.token_hex(12)}
    values["created_at"] = utcnow()
    dialect = bind.dialect.name
    read = sa.select(TABLE.c.installation_id).where(TABLE.c.id == ROW_ID)
    # On its own connection and transaction: the caller's session may be half-way through
    # work of its own, which this must neither commit nor roll back.
    if isinstance(bind, sa.Engine):
        with bind.begin() as connection:
            found = connection.execute(read).scalar()
            if found is None:
                _insert(connection, dialect, values)
                found = connection.execute(read).scalar()
    else:  # a session bound to a connection (tests inside a transaction)
        found = session.execute(read).scalar()
        if found is None:
            _insert(session.connection(), dialect, values)
            found = session.execute(read).scalar()
    assert found is not None
    return str(found)


def _insert(connection: sa.Connection, dialect: str, values: dict[str, object]) -> None:
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        connection.execute(insert(TABLE).values(values).on_conflict_do_nothing())
        return
    try:
        with connection.begin_nested():
            connection.execute(sa.insert(TABLE).values(values))
    except IntegrityError:
        pass  # another process stored its id first; the caller reads that one
