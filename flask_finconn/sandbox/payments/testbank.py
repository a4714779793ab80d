"""Stripe's ACH test bank accounts, ``pm_usBankAccount_*`` tokens and microdeposit values.

Manually entered accounts on routing number ``110000000`` behave as Stripe documents for
its test mode; any other account number (on any routing number) succeeds. The error codes
for each failure are the sandbox's choice where Stripe does not document them (see
``docs/sandbox.md``, "Payments").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

ROUTING = "110000000"
BANK_NAME = "STRIPE TEST BANK"
TOKEN_PREFIX = "pm_usBankAccount_"


@dataclass(frozen=True)
class Outcome:
    """What happens to a debit from one test account.

    ``result``: ``succeeded``, ``failed`` (an ACH return while processing),
    ``microdeposits_fail`` (the deposits cannot be sent), ``dispute`` (succeeds, then
    disputed) or ``processing`` (stays processing until a test helper settles it).
    ``block``: ``(network_code, reason)`` put on the fingerprint by the return, or None.
    """

    account_number: str
    token: str | None
    result: str
    code: str | None = None
    message: str | None = None
    block: tuple[str | None, str] | None = None


OUTCOMES: tuple[Outcome, ...] = (
    Outcome("000123456789", "success", "succeeded"),
    Outcome(
        "000111111113",
        "accountClosed",
        "failed",
        "account_closed",
        "The customer's bank account has been closed.",
        ("R02", "bank_account_closed"),
    ),
    Outcome(
        "000000004954",
        "riskLevelHighest",
        "failed",
        "payment_intent_payment_attempt_failed",
        "The payment was blocked because it was assessed as highest risk.",
    ),
    Outcome(
        "000111111116",
        "noAccount",
        "failed",
        "no_account",
        "The bank account could not be located.",
        ("R03", "bank_account_invalid_details"),
    ),
    Outcome(
        "000222222227",
        "insufficientFunds",
        "failed",
        "insufficient_funds",
        "The customer's account has insufficient funds to cover this payment.",
    ),
    Outcome(
        "000333333335",
        "debitNotAuthorized",
        "failed",
        "debit_not_authorized",
        "The customer has notified their bank that this payment was unauthorized.",
    ),
    Outcome(
        "000444444440",
        "invalidCurrency",
        "failed",
        "invalid_currency",
        "The bank was unable to process this payment because of its currency.",
    ),
    Outcome(
        "000666666661",
        "failMicrodeposits",
        "microdeposits_fail",
        "payment_method_microdeposit_failed",
        "Microdeposits could not be sent to this bank account. Use a different payment method.",
    ),
    Outcome("000555555559", "dispute", "dispute"),
    Outcome("000000000009", "processing", "processing"),
    Outcome(
        "000777777771",
        "weeklyLimitExceeded",
        "failed",
        "payment_intent_payment_attempt_failed",
        "The payment failed because it would exceed the weekly ACH volume limit.",
    ),
    Outcome(
        "000888888885",
        None,
        "failed",
        "bank_account_unusable",
        "The tokenized account number was deactivated. Collect the account details again.",
        (None, "tokenized_account_number_deactivated"),
    ),
)
SUCCESS = OUTCOMES[0]
_BY_NUMBER = {o.account_number: o for o in OUTCOMES}
_BY_TOKEN = {TOKEN_PREFIX + o.token: o for o in OUTCOMES if o.token}
TOKENS = tuple(_BY_TOKEN)


def outcome(routing_number: str | None, account_number: str | None) -> Outcome:
    """The test outcome of an account (success for anything Stripe does not list)."""
    if routing_number == ROUTING and account_number in _BY_NUMBER:
        return _BY_NUMBER[account_number]
    return SUCCESS


def token(pm_id: str) -> Outcome | None:
    """The outcome a ``pm_usBankAccount_*`` token stands for, or None."""
    return _BY_TOKEN.get(pm_id)


def fingerprint(*parts: str) -> str:
    """A fingerprint stable for the same bank account (16 characters, like Stripe's)."""
    digest = hashlib.sha256(":".join(("fp", *parts)).encode()).hexdigest()
    return digest[:16]


# Microdeposit test values: amounts in cents or the descriptor code.
VERIFY_AMOUNTS, VERIFY_CODE = (32, 45), "SM11AA"
EXHAUST_AMOUNTS, EXHAUST_CODE = (10, 11), "SM33CC"
TIMEOUT_AMOUNTS, TIMEOUT_CODE = (40, 41), "SM44DD"
DESCRIPTOR_ATTEMPTS = 10
AMOUNT_ATTEMPTS = 3
VERIFICATION_DAYS = 10


def microdeposit_result(amounts: list[int] | None, code: str | None) -> str:
    """``verified``, ``exhausted``, ``timeout`` or ``mismatch`` for the values given."""
    given: tuple[object, ...] = tuple(amounts) if amounts is not None else (code,)
    if given in (VERIFY_AMOUNTS, (VERIFY_CODE,)):
        return "verified"
    if given in (EXHAUST_AMOUNTS, (EXHAUST_CODE,)):
        return "exhausted"
    if given in (TIMEOUT_AMOUNTS, (TIMEOUT_CODE,)):
        return "timeout"
    return "mismatch"
