"""SetupIntents: save a bank account (with a mandate) for later debits.

``requires_payment_method`` → (a PaymentMethod) ``requires_confirmation`` → confirm:
``succeeded`` for a verified account (Financial Connections, a test token, or one that
passed microdeposits before), ``requires_action`` with microdeposits for a manually entered
one, or back to ``requires_payment_method`` when the deposits cannot be sent. Any of the
first three can be ``canceled``. The shared state machine is in :mod:`._intents`; this module holds
what is a SetupIntent's own (:data:`FLOW`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _intents, payment_methods

if TYPE_CHECKING:
    from .engine import Payments


def _fields(p: dict[str, Any], types: list[str]) -> dict[str, Any]:
    return {
        "flow_directions": p.get("flow_directions") or None,
        "last_setup_error": None,
        "latest_attempt": None,
        "mandate": None,
        "single_use_mandate": None,
        "usage": p.get("usage") or "off_session",
    }


def _set_fields(data: dict[str, Any], p: dict[str, Any]) -> None:
    for key in ("description", "flow_directions"):
        if key in p:
            data[key] = p[key] or None


def _succeed(
    pay: Payments,
    data: dict[str, Any],
    internal: dict[str, Any],
    pm: dict[str, Any],
    pm_internal: dict[str, Any],
) -> None:
    """The account is verified: ``succeeded``, the PaymentMethod saved to the customer."""
    now = pay.objects.now()
    data.update(status="succeeded", next_action=None, last_setup_error=None)
    pay.objects.save(data, internal)
    if data["customer"]:
        payment_methods.attach_silently(pay, pm, pm_internal, data["customer"])
    pay.host.emit("setup_intent.succeeded", data, now, pay.objects.text(data))


FLOW = _intents.Flow(
    kind="seti",
    fields=_fields,
    set_fields=_set_fields,
    updatable=_intents.CONFIRMABLE,
    cancelable=(*_intents.CONFIRMABLE, "requires_action"),
    mandate_params=("mandate_data",),
    missing_code="parameter_missing",
    mandate_on_intent=True,
    verified=_succeed,
)

# The API operations (create confirms too when confirm=true).
create, update, confirm, cancel = FLOW.create, FLOW.update, FLOW.confirm, FLOW.cancel
