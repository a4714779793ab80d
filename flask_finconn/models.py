"""SQLAlchemy models for linked accounts and their data, stored in the host's database.

The classes are mapped on this module's own declarative base, so they are importable and
fully typed (``from flask_finconn.models import Account``). ``FinConn(db=db)`` copies their
tables into the host's ``db.metadata`` (see :func:`attach_to`), so ``db.create_all()`` and
Flask-Migrate autogenerate see them like the host's own tables. Use the host's
``db.session`` to query them.

Times are stored as UTC and always read back timezone-aware, on SQLite as on PostgreSQL.
Amounts are integers in minor units, signed as Stripe signs them.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime`` that stores naive UTC and returns aware UTC on every backend."""

    impl = sa.DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("Store timezone-aware datetimes in Flask-FinConn models.")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


def from_unix(value: int | None) -> datetime | None:
    """Stripe's Unix seconds as an aware UTC datetime (None stays None)."""
    return None if value is None else datetime.fromtimestamp(value, UTC)


def iso(value: datetime | None) -> str | None:
    """An aware datetime as ``YYYY-MM-DDTHH:MM:SSZ`` (None stays None)."""
    if value is None:
        return None
    if value.utcoffset():
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def iso_unix(value: int | None) -> str | None:
    """Stripe's Unix seconds as an ISO 8601 UTC string (None stays None)."""
    if value is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def new_account_id() -> str:
    """A public, stable account id: it survives relinks that give Stripe a new ``fca_`` id."""
    return "fcacct_" + secrets.token_hex(10)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: sa.JSON, list[str]: sa.JSON}


class Installation(Base):
    """This installation's random id: scopes what it creates at a Stripe account it may share.

    One row (``id`` 1), written once on first use. Two deployments with their own databases
    (dev and staging on one test key) get different ids with no configuration, so their
    Stripe Customers, idempotency keys and events never mix.
    """

    __tablename__ = "finconn_installation"

    id: Mapped[int] = mapped_column(primary_key=True)
    installation_id: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Customer(Base):
    """The Stripe Customer that stands for one holder."""

    __tablename__ = "finconn_customer"

    id: Mapped[int] = mapped_column(primary_key=True)
    holder_id: Mapped[str] = mapped_column(sa.String(255), unique=True)
    stripe_id: Mapped[str] = mapped_column(sa.String(255), unique=True)
    email: Mapped[str | None] = mapped_column(sa.String(320))
    name: Mapped[str | None] = mapped_column(sa.String(255))
    livemode: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class LinkSession(Base):
    """One Financial Connections session opened for a holder."""

    __tablename__ = "finconn_link_session"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)  # fcsess_...
    holder_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("finconn_customer.id"))
    permissions: Mapped[list[str]]
    status: Mapped[str] = mapped_column(sa.String(16), default="open")  # open|completed|cancelled
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]


class Account(Base):
    """A linked bank account, with the fields the Account JSON shows and Stripe's raw object."""

    __tablename__ = "finconn_account"
    __table_args__ = (
        sa.Index("ix_finconn_account_holder_linked", "holder_id", "linked_at"),
        sa.Index(
            "ix_finconn_account_relink", "holder_id", "institution_name", "last4", "subcategory"
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_account_id)
    stripe_id: Mapped[str] = mapped_column(sa.String(255), unique=True)  # fca_..., current
    holder_id: Mapped[str] = mapped_column(sa.String(255))
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("finconn_customer.id"), index=True)
    session_id: Mapped[str | None] = mapped_column(sa.String(255))
    institution_name: Mapped[str] = mapped_column(sa.String(255))
    display_name: Mapped[str | None] = mapped_column(sa.String(255))
    last4: Mapped[str | None] = mapped_column(sa.String(4))
    category: Mapped[str] = mapped_column(sa.String(32))
    subcategory: Mapped[str] = mapped_column(sa.String(32))
    status: Mapped[str] = mapped_column(sa.String(32))  # active|inactive|disconnected
    action: Mapped[str] = mapped_column(sa.String(32), default="none")  # none|relink_required
    permissions: Mapped[list[str]] = mapped_column(default=list)
    subscriptions: Mapped[list[str]] = mapped_column(default=list)
    supported_payment_method_types: Mapped[list[str]] = mapped_column(default=list)
    balance_refresh: Mapped[dict[str, Any] | None]
    ownership_refresh: Mapped[dict[str, Any] | None]
    transaction_refresh: Mapped[dict[str, Any] | None]
    ownership_id: Mapped[str | None] = mapped_column(sa.String(255))  # fcaowns_ last stored
    transactions_cursor: Mapped[str | None] = mapped_column(sa.String(255))  # fctxnref_ synced
    # A sync in progress: {"target", "after", "since"}; committed with each page so a crash
    # resumes at the next page (services/transactions.py).
    transactions_sync: Mapped[dict[str, Any] | None]
    # No database FK: it would close a cycle with finconn_balance.account_id, and Alembic's
    # create_table drops use_alter FKs, so migrations would never create it.
    latest_balance_id: Mapped[int | None]
    previous_stripe_ids: Mapped[list[str]] = mapped_column(default=list)
    livemode: Mapped[bool] = mapped_column(default=False)
    raw: Mapped[dict[str, Any]]
    stripe_created: Mapped[datetime | None]
    linked_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    latest_balance: Mapped[BalanceSnapshot | None] = relationship(
        primaryjoin="foreign(Account.latest_balance_id) == BalanceSnapshot.id",
        post_update=True,
    )


class BalanceSnapshot(Base):
    """One balance reading from a completed refresh; the history hosts chart."""

    __tablename__ = "finconn_balance"
    __table_args__ = (sa.UniqueConstraint("account_id", "as_of", "currency"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[str] = mapped_column(
        sa.ForeignKey("finconn_account.id", ondelete="CASCADE"), index=True
    )
    as_of: Mapped[datetime]
    type: Mapped[str] = mapped_column(sa.String(16))  # cash|credit
    currency: Mapped[str] = mapped_column(sa.String(3))
    current: Mapped[int] = mapped_column(sa.BigInteger)
    available: Mapped[int | None] = mapped_column(sa.BigInteger)  # cash accounts
    credit_used: Mapped[int | None] = mapped_column(sa.BigInteger)  # credit accounts
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Owner(Base):
    """An owner of an account, from one ownership snapshot (``fcaowns_``)."""

    __tablename__ = "finconn_owner"

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)  # fcaown_...
    account_id: Mapped[str] = mapped_column(
        sa.ForeignKey("finconn_account.id", ondelete="CASCADE"), index=True
    )
    ownership_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    name: Mapped[str]
    email: Mapped[str | None]
    phone: Mapped[str | None]
    raw_address: Mapped[str | None]
    refreshed_at: Mapped[datetime | None]


class Transaction(Base):
    """A transaction, upserted by its Stripe id as it moves pending → posted or void.

    Keyed by (``account_id``, ``id``): a Stripe transaction belongs to one ``fca_`` account,
    and an ``fca_`` account to one of ours, so each Stripe id is still stored once.
    """

    __tablename__ = "finconn_transaction"
    __table_args__ = (
        # The account first: Stripe's ids are random, and a key of the id alone puts each
        # synced row on its own page of one table-wide index, which SQLite journals and
        # writes at every commit (one 4 KiB page a row once the table holds a million rows).
        # Under the account, a sync writes into the account's own part of the key.
        sa.PrimaryKeyConstraint("account_id", "id"),
        # The listing's keyset order, unfiltered and by status: each page is one index
        # range, however deep, and a rare status (pending) never walks the rest of the
        # history.
        sa.Index("ix_finconn_transaction_account_time", "account_id", "transacted_at", "id"),
        sa.Index(
            "ix_finconn_transaction_account_status_time",
            "account_id",
            "status",
            "transacted_at",
            "id",
        ),
    )

    id: Mapped[str] = mapped_column(sa.String(255))  # fctxn_...
    account_id: Mapped[str] = mapped_column(sa.ForeignKey("finconn_account.id", ondelete="CASCADE"))
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    description: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(16))  # pending|posted|void
    transacted_at: Mapped[datetime]
    posted_at: Mapped[datetime | None]
    void_at: Mapped[datetime | None]
    transaction_refresh: Mapped[str] = mapped_column(sa.String(255))
    stripe_updated: Mapped[int] = mapped_column(sa.BigInteger)
    livemode: Mapped[bool] = mapped_column(default=False)


class WebhookEvent(Base):
    """A verified Stripe event, stored before it is acknowledged and processed once."""

    __tablename__ = "finconn_webhook_event"
    __table_args__ = (sa.Index("ix_finconn_webhook_event_status", "status", "received_at"),)

    id: Mapped[str] = mapped_column(sa.String(255), primary_key=True)  # evt_...
    type: Mapped[str] = mapped_column(sa.String(255), index=True)
    created: Mapped[datetime]
    account_stripe_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    livemode: Mapped[bool] = mapped_column(default=False)
    payload: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(sa.String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)  # "Type: message"
    last_traceback: Mapped[str | None] = mapped_column(sa.Text)  # of the last failure
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    claimed_at: Mapped[datetime | None]  # when a worker last took it: finds stuck ones
    processed_at: Mapped[datetime | None]


def new_payment_method_id() -> str:
    """A public id for a saved bank payment method."""
    return "fcpm_" + secrets.token_hex(10)


def new_payment_id() -> str:
    """A public id for a debit."""
    return "fcpay_" + secrets.token_hex(10)


class PaymentMethod(Base):
    """A holder's saved bank account for debits: a ``us_bank_account`` PaymentMethod and its
    mandate, with the microdeposit verification it may still need."""

    __tablename__ = "finconn_payment_method"

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_payment_method_id)
    holder_id: Mapped[str] = mapped_column(sa.String(255), index=True)
    customer_id: Mapped[int] = mapped_column(sa.ForeignKey("finconn_customer.id"))
    stripe_id: Mapped[str] = mapped_column(sa.String(255), unique=True)  # pm_...
    # Our account id when the bank account came from Financial Connections; null when the
    # holder typed the routing and account numbers.
    account_id: Mapped[str | None] = mapped_column(
        sa.ForeignKey("finconn_account.id", ondelete="SET NULL"), index=True
    )
    bank_name: Mapped[str | None] = mapped_column(sa.String(255))
    last4: Mapped[str | None] = mapped_column(sa.String(4))
    account_type: Mapped[str | None] = mapped_column(sa.String(16))  # checking|savings
    # verified|requires_verification|verification_failed|detached
    status: Mapped[str] = mapped_column(sa.String(32))
    verification_type: Mapped[str | None] = mapped_column(sa.String(32))  # amounts|descriptor_code
    verification_arrival_date: Mapped[datetime | None]
    verification_attempts_remaining: Mapped[int | None]
    mandate_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    mandate_status: Mapped[str | None] = mapped_column(sa.String(16))  # active|pending|inactive
    mandate_accepted_at: Mapped[datetime | None]
    # Stripe's us_bank_account.status_details.blocked ({network_code, reason}) while the
    # bank account is blocked after a return; null otherwise.
    blocked: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    setup_intent_id: Mapped[str | None] = mapped_column(sa.String(255), index=True)
    livemode: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Payment(Base):
    """One debit of a saved bank payment method: a Stripe PaymentIntent as it settles.

    ``(holder_id, idempotency_key)`` is unique: a retried or raced :meth:`FinConn.debit`
    finds the row the first call stored instead of charging again.
    """

    __tablename__ = "finconn_payment"
    __table_args__ = (
        sa.UniqueConstraint("holder_id", "idempotency_key"),
        sa.Index("ix_finconn_payment_holder_created", "holder_id", "created_at"),
    )

    id: Mapped[str] = mapped_column(sa.String(32), primary_key=True, default=new_payment_id)
    holder_id: Mapped[str] = mapped_column(sa.String(255))
    payment_method_id: Mapped[str] = mapped_column(
        sa.ForeignKey("finconn_payment_method.id"), index=True
    )
    # Null only while the first call of a debit is still talking to Stripe.
    stripe_id: Mapped[str | None] = mapped_column(sa.String(255), unique=True)  # pi_...
    amount: Mapped[int] = mapped_column(sa.BigInteger)
    currency: Mapped[str] = mapped_column(sa.String(3))
    description: Mapped[str] = mapped_column(sa.Text)
    # requires_verification|processing|succeeded|failed|canceled|disputed
    status: Mapped[str] = mapped_column(sa.String(32), index=True)
    failure_code: Mapped[str | None] = mapped_column(sa.String(255))
    failure_message: Mapped[str | None] = mapped_column(sa.Text)
    idempotency_key: Mapped[str] = mapped_column(sa.String(255))
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    livemode: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def attach_to(metadata: sa.MetaData) -> None:
    """Copy the ``finconn_*`` tables into the host's metadata (once; safe to repeat)."""
    for table in Base.metadata.sorted_tables:
        if table.name not in metadata.tables:
            copy = table.to_metadata(metadata)
            # The copies only serve create_all and migrations; plain column types there make
            # Alembic render `sa.DateTime()` instead of an unimported `flask_finconn...` name.
            for column in copy.columns:
                if isinstance(column.type, TypeDecorator):
                    column.type = column.type.impl_instance


__all__ = [
    "Account",
    "BalanceSnapshot",
    "Base",
    "Customer",
    "Installation",
    "LinkSession",
    "Owner",
    "Payment",
    "PaymentMethod",
    "Transaction",
    "WebhookEvent",
    "attach_to",
]
