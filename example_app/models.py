"""The example app's own tables: its users and their server-side login sessions.

The extension's ``finconn_*`` tables live on the same ``db`` (``FinConn(db=db)`` adds them
to ``db.metadata``), so one ``db.create_all()`` creates everything.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_finconn import FinConn


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
# Beside ``db`` so that the pages can reach ``finconn.debit`` without importing the app.
finconn = FinConn(db=db)


def utcnow() -> datetime:
    return datetime.now(UTC)


class User(db.Model):  # type: ignore[name-defined]
    """A demo user: known by an email address alone (there is no password)."""

    __tablename__ = "example_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)

    @property
    def name(self) -> str:
        """What the header shows: the part of the email before the ``@``."""
        return self.email.split("@", 1)[0]


class LoginSession(db.Model):  # type: ignore[name-defined]
    """A server-side session: the cookie holds a random token, the table its SHA-256.

    Anonymous visitors get one too when they open the sign-in form, so that the form's
    CSRF token has somewhere to live; signing in replaces it with a fresh one.
    """

    __tablename__ = "example_login_session"

    id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)  # sha256(token) hex
    user_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("example_user.id", ondelete="CASCADE"), index=True
    )
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(sa.DateTime(timezone=True), default=utcnow)
