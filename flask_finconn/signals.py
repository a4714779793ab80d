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

payment_method_saved = _signals.signal("payment-method-saved")
"""A bank account was saved for debits (verified or awaiting microdeposits).
``payment_method``: the :class:`~.models.PaymentMethod`."""

payment_method_verified = _signals.signal("payment-method-verified")
"""A saved bank account's microdeposits were verified; it can be debited. ``payment_method``."""

mandate_inactive = _signals.signal("mandate-inactive")
"""A payment method's mandate ended (detached, disputed, revoked); it can no longer be
debited until the holder saves it again. ``payment_method``."""

payment_processing = _signals.signal("payment-processing")
"""A debit was submitted to the bank and is settling. ``payment``: the
:class:`~.models.Payment`."""

payment_succeeded = _signals.signal("payment-succeeded")
"""A debit settled: fulfil the order now, not at ``processing``. ``payment``."""

payment_failed = _signals.signal("payment-failed")
"""A debit was refused or returned by the bank (``payment.failure_code`` says why). ``payment``."""

payment_disputed = _signals.signal("payment-disputed")
"""A settled debit was disputed by the holder or returned by the bank; the money is taken
back and the mandate ends. ``payment``."""

__all__ = [
    "account_deactivated",
    "account_disconnected",
    "account_linked",
    "account_reactivated",
    "account_updated",
    "balance_refreshed",
    "event_failed",
    "event_received",
    "mandate_inactive",
    "ownership_refreshed",
    "payment_disputed",
    "payment_failed",
    "payment_method_saved",
    "payment_method_verified",
    "payment_processing",
    "payment_succeeded",
    "transactions_synced",
]
