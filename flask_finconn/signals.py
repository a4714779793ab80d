"""Blinker signals, sent after the database commit with the app as sender.

Subscribe with ``account_linked.connect(receiver, app)`` or ``connect_via(app)``. Each
receiver gets keyword arguments as listed.
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

account_linked = _signals.signal("account-linked")
"""A new account was stored for a holder. ``account``: the :class:`~.models.Account`."""

account_updated = _signals.signal("account-updated")
"""Stored fields of an account changed after a re-read from Stripe. ``account``."""

account_deactivated = _signals.signal("account-deactivated")
"""The account became ``inactive``; the holder must relink. ``account``."""

account_reactivated = _signals.signal("account-reactivated")
"""The account is ``active`` again. ``account``."""

account_disconnected = _signals.signal("account-disconnected")
"""The account was disconnected, by the app or the holder. ``account``."""

balance_refreshed = _signals.signal("balance-refreshed")
"""A balance refresh finished. ``account``, ``snapshot`` (None when it failed), ``status``."""

ownership_refreshed = _signals.signal("ownership-refreshed")
"""An ownership refresh finished. ``account``, ``owners``, ``status``."""

transactions_synced = _signals.signal("transactions-synced")
"""Transactions were synced. ``account``, ``added``, ``updated`` (counts)."""

event_received = _signals.signal("event-received")
"""A verified webhook event was stored. ``event``: the :class:`~.models.WebhookEvent`."""

event_failed = _signals.signal("event-failed")
"""Processing a webhook event raised. ``event``, ``error`` (the exception)."""

__all__ = [
    "account_deactivated",
    "account_disconnected",
    "account_linked",
    "account_reactivated",
    "account_updated",
    "balance_refreshed",
    "event_failed",
    "event_received",
    "ownership_refreshed",
    "transactions_synced",
]
