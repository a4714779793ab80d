"""Microdeposit verification of manually entered accounts, for both kinds of intent.

The values are Stripe's test values: ``32``/``45`` or ``SM11AA`` verify; ``10``/``11`` or
``SM33CC`` exhaust the attempts; ``40``/``41`` or ``SM44DD`` time out (the intent is
returned, then the timeout fires on the next tick of the sandbox). Anything else is a
mismatch that costs an attempt: 10 for descriptor codes, 3 for amounts. Not verifying
within 10 days (sandbox clock) also times out.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .._params import invalid
from . import _intents, payment_intents, setup_intents
from ._host import Committed, check_state
from .testbank import AMOUNT_ATTEMPTS, DESCRIPTOR_ATTEMPTS, microdeposit_result

if TYPE_CHECKING:
    from .engine import Payments

FLOWS = {flow.kind: flow for flow in (setup_intents.FLOW, payment_intents.FLOW)}
_CODE = re.compile(r"^SM[A-Za-z0-9]{4}$")
EXCEEDED = "payment_method_microdeposit_verification_attempts_exceeded"
TIMEOUT = "payment_method_microdeposit_verification_timeout"


def verify(pay: Payments, kind: str, intent_id: str, p: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/{setup,payment}_intents/{id}/verify_microdeposits``."""
    data, internal = pay.objects.load(kind, intent_id)
    check_state(kind, data, ("requires_action",), "verify microdeposits for")
    amounts, code = p.get("amounts"), p.get("descriptor_code")
    if amounts and code:
        raise invalid(
            "Pass either amounts or descriptor_code, not both: use what "
            "next_action.verify_with_microdeposits.microdeposit_type names.",
            param="descriptor_code",
            code="payment_method_microdeposit_verification_amounts_invalid",
        )
    if not amounts and not code:
        raise invalid(
            "Missing required param: amounts or descriptor_code (the values the customer "
            "saw on their statement).",
            param="amounts",
            code="parameter_missing",
        )
    if amounts is not None and (len(amounts) != 2 or any(a <= 0 for a in amounts)):
        raise invalid(
            "amounts must be exactly two positive amounts in cents.",
            param="amounts",
            code="payment_method_microdeposit_verification_amounts_invalid",
        )
    if code is not None and not _CODE.match(code):
        raise invalid(
            "descriptor_code must be SM followed by 4 letters or digits, e.g. SM11AA.",
            param="descriptor_code",
            code="payment_method_microdeposit_verification_descriptor_code_mismatch",
        )
    result = microdeposit_result(amounts, code)
    if result == "verified":
        pm, pm_internal = pay.objects.load("pm", data["payment_method"])
        pm_internal["verified"] = True
        pay.objects.save(pm, pm_internal)
        FLOWS[kind].proceed(pay, data, internal)
        return data
    if result == "timeout":
        since = internal.get("action_since")
        pay.host.schedule(
            pay.objects.now(), "payments.timeout", intent_id, {"kind": kind, "since": since}
        )
        return data
    field = "amounts" if amounts is not None else "descriptor_code"
    limit = AMOUNT_ATTEMPTS if amounts is not None else DESCRIPTOR_ATTEMPTS
    attempts = internal.setdefault("attempts", {"amounts": 0, "descriptor_code": 0})
    attempts[field] += 1
    remaining = 0 if result == "exhausted" else limit - attempts[field]
    if remaining <= 0:
        message = (
            "You have exceeded the number of allowed verification attempts. Collect the "
            "bank account again or use another payment method."
        )
        _intents.fail(pay, kind, data, internal, EXCEEDED, message, pay.objects.now())
        raise Committed(
            400, message, code=EXCEEDED, param=field, extra={_intents.PREFIX[kind]: data}
        )
    pay.objects.save(data, internal)
    what = "amounts" if amounts is not None else "descriptor code"
    verb = "do" if amounts is not None else "does"
    raise Committed(
        400,
        f"The {what} provided {verb} not match the microdeposits sent to the bank account. "
        f"You have {remaining} verification attempts remaining.",
        code=f"payment_method_microdeposit_verification_{field}_mismatch",
        param=field,
        extra={_intents.PREFIX[kind]: data},
    )


def timeout(pay: Payments, kind: str, intent_id: str, since: int | None, at: int) -> None:
    """The 10 days (or a timeout test value) ran out without a verification.

    ``since`` is when the verification began; a task from an earlier round does nothing.
    """
    data, internal = pay.objects.load(kind, intent_id)
    if data["status"] != "requires_action" or internal.get("action_since") != since:
        return
    message = (
        "The microdeposits were not verified in time. Collect the bank account again or use "
        "another payment method."
    )
    _intents.fail(pay, kind, data, internal, TIMEOUT, message, at)
