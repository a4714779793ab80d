"""ACH payments in the sandbox: SetupIntents, PaymentIntents, PaymentMethods, Mandates,
Charges and microdeposits for ``us_bank_account``, as Stripe's API serves them.

The package depends on the rest of the sandbox only through :class:`Host` (store, clock,
events, task queue, customer and account lookup, API base) and the shared wire helpers
(``_params``, ``_data``). The sandbox facade builds one :class:`Payments` (``sb.payments``
and ``sb.parts.payments``), registers each of :data:`TASK_KINDS` with its task queue to run
:meth:`Payments.run_task`, and ``_routes`` adds :data:`.routes.ROUTES` to the router.

Modules, one per resource: :mod:`.payment_methods`, :mod:`.setup_intents`,
:mod:`.payment_intents`, :mod:`.mandates`, :mod:`.charges`, :mod:`.microdeposits`; the
state machine both kinds of intent share in :mod:`._intents` (each intent module gives its
``FLOW``); Stripe's test values in :mod:`.testbank`; accepted
parameters in :mod:`._specs`; HTTP handlers in :mod:`.routes`.
"""

from __future__ import annotations

from ._host import EVENT_TYPES, TASK_KINDS, Host
from .engine import SETTLEMENT_DELAY, Payments

__all__ = ["EVENT_TYPES", "SETTLEMENT_DELAY", "TASK_KINDS", "Host", "Payments"]
