"""PaymentMethods of type ``us_bank_account``: from a Financial Connections account, from
routing and account numbers (manual entry), or from a ``pm_usBankAccount_*`` test token.

``internal`` keeps what the API does not show: ``source`` (``fc``, ``manual``, ``token``),
``test_account`` (the account number whose test outcome applies, see :mod:`.testbank`) and
``verified`` (manual entry needs microdeposits first; FC accounts and tokens do not).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .._data import new_id
from .._params import ApiError, invalid, missing
from ._host import Committed
from .testbank import BANK_NAME, ROUTING, TOKEN_PREFIX, fingerprint, token

if TYPE_CHECKING:
    from .engine import Payments

_DIGITS = re.compile(r"^\d+$")


def build(pay: Payments, params: dict[str, Any], base: str = "") -> dict[str, Any]:
    """Create a PaymentMethod from validated create params (``base`` prefixes ``param``)."""

    def name(key: str) -> str:
        return f"{base}[{key}]" if base else key

    kind = params.get("type")
    if kind is None:
        raise missing(name("type"))
    if kind != "us_bank_account":
        raise invalid(
            f"The sandbox only emulates payment methods of type us_bank_account, not {kind}.",
            param=name("type"),
            code="payment_method_invalid_parameter",
        )
    bank = params.get("us_bank_account")
    if not bank:
        raise missing(name("us_bank_account"))
    billing = params.get("billing_details") or {}
    if not billing.get("name"):
        raise invalid(
            "Missing required param: billing_details[name]. A us_bank_account payment method "
            "needs the account holder's name.",
            param=name("billing_details") + "[name]",
            code="parameter_missing",
        )
    fca = bank.get("financial_connections_account")
    if fca:
        for key in ("account_number", "routing_number"):
            if bank.get(key):
                raise invalid(
                    f"Pass either us_bank_account[financial_connections_account] or the account "
                    f"and routing numbers, not both ({key} was given).",
                    param=f"{name('us_bank_account')}[{key}]",
                )
        param = f"{name('us_bank_account')}[financial_connections_account]"
        details, internal = _from_account(pay, fca, param)
    else:
        details, internal = _manual(bank, name("us_bank_account"))
    return _store(pay, params, billing, details, internal)


def _from_account(pay: Payments, fca: str, param: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        account = pay.host.account(fca)
    except ApiError:
        raise invalid(
            f"No such financial connections account: '{fca}'", param=param, code="resource_missing"
        ) from None
    if "us_bank_account" not in (account.get("supported_payment_method_types") or []):
        raise invalid(
            f"The account {fca} is a {account['category']} {account['subcategory']} account; "
            "only cash checking and savings accounts can be debited. Link a checking or "
            "savings account.",
            param=param,
        )
    if "payment_method" not in (account.get("permissions") or []):
        raise invalid(
            f"The account {fca} was linked without the 'payment_method' permission, so it "
            "cannot become a payment method. Link it again in a session that asks for "
            "'payment_method'.",
            param=param,
        )
    if account["status"] != "active":
        raise invalid(
            f"The account {fca} is {account['status']}, so it cannot become a payment method. "
            "Ask the customer to link it again.",
            param=param,
            code="financial_connections_account_inactive",
        )
    holder = account.get("account_holder") or {}
    owner = holder.get("customer") or holder.get("account") or ""
    details = {
        "account_holder_type": "company" if holder.get("type") == "account" else "individual",
        "account_type": account["subcategory"],
        "bank_name": str(account["institution_name"]).upper(),
        "financial_connections_account": fca,
        "fingerprint": fingerprint(account["institution_name"], account["last4"], owner),
        "last4": account["last4"],
        "networks": {"preferred": "ach", "supported": ["ach"]},
        "routing_number": ROUTING,
        "status_details": None,
    }
    return details, {"source": "fc", "test_account": None, "verified": True}


def _manual(bank: dict[str, Any], base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    number, routing = bank.get("account_number"), bank.get("routing_number")
    if not number:
        raise missing(f"{base}[account_number]")
    if not routing:
        raise missing(f"{base}[routing_number]")
    if not _DIGITS.match(routing) or len(routing) != 9:
        raise invalid(
            f"Invalid routing number: {routing}. A US routing number has 9 digits.",
            param=f"{base}[routing_number]",
            code="routing_number_invalid",
        )
    if not _DIGITS.match(number) or not 4 <= len(number) <= 17:
        raise invalid(
            "Invalid account number: a US account number has 4 to 17 digits.",
            param=f"{base}[account_number]",
            code="account_number_invalid",
        )
    details = _details(routing, number, bank)
    # Only routing number 110000000 is Stripe's test bank: other accounts simply succeed.
    test_account = number if routing == ROUTING else None
    return details, {"source": "manual", "test_account": test_account, "verified": False}


def _details(routing: str, number: str, bank: dict[str, Any]) -> dict[str, Any]:
    return {
        "account_holder_type": bank.get("account_holder_type") or "individual",
        "account_type": bank.get("account_type") or "checking",
        "bank_name": BANK_NAME,
        "financial_connections_account": None,
        "fingerprint": fingerprint(routing, number),
        "last4": number[-4:],
        "networks": {"preferred": "ach", "supported": ["ach"]},
        "routing_number": routing,
        "status_details": None,
    }


def _store(
    pay: Payments,
    params: dict[str, Any],
    billing: dict[str, Any],
    details: dict[str, Any],
    internal: dict[str, Any],
) -> dict[str, Any]:
    address = billing.get("address") or {}
    data: dict[str, Any] = {
        "id": new_id("pm_"),
        "object": "payment_method",
        "allow_redisplay": params.get("allow_redisplay") or "unspecified",
        "billing_details": {
            "address": {
                k: address.get(k) or None
                for k in ("city", "country", "line1", "line2", "postal_code", "state")
            },
            "email": billing.get("email") or None,
            "name": billing.get("name") or None,
            "phone": billing.get("phone") or None,
            "tax_id": billing.get("tax_id") or None,
        },
        "created": pay.objects.now(),
        "customer": None,
        "customer_account": None,
        "livemode": False,
        "metadata": params.get("metadata") or {},
        "type": "us_bank_account",
        "us_bank_account": details,
    }
    block = pay.block_of(details["fingerprint"])
    if block is not None:
        details["status_details"] = {"blocked": block}
    pay.objects.insert("pm", data, internal)
    return data


def from_token(pay: Payments, pm_id: str) -> dict[str, Any]:
    """A new PaymentMethod for a ``pm_usBankAccount_*`` token (each use makes a new one)."""
    found = token(pm_id)
    assert found is not None
    details = _details(ROUTING, found.account_number, {})
    internal = {"source": "token", "test_account": found.account_number, "verified": True}
    return _store(pay, {}, {"name": "Jenny Rosen"}, details, internal)


def resolve(pay: Payments, pm_id: str, param: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The PaymentMethod ``pm_id`` names (a stored one, or a fresh one from a test token)."""
    if pm_id.startswith(TOKEN_PREFIX) and token(pm_id) is not None:
        pm_id = from_token(pay, pm_id)["id"]
    return pay.objects.load("pm", pm_id, param=param, status=400 if param else 404)


def create(pay: Payments, params: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/payment_methods``."""
    if params.get("payment_method") or params.get("customer"):
        raise invalid(
            "The sandbox does not clone payment methods (customer with payment_method is for "
            "Connect platforms). Create the payment method from its details instead.",
            param="payment_method" if params.get("payment_method") else "customer",
        )
    return build(pay, params)


def attach(pay: Payments, pm_id: str, customer: str | None) -> dict[str, Any]:
    """``POST /v1/payment_methods/{pm}/attach``: save it to a customer."""
    if not customer:
        raise missing("customer")
    pay.host.check_customer(customer, param="customer", status=400)
    data, internal = resolve(pay, pm_id, "")
    if data["customer"] == customer:
        return data
    if data["customer"]:
        raise invalid(
            f"The payment method {data['id']} is already attached to the customer "
            f"{data['customer']}. Detach it first.",
            param="payment_method",
        )
    attach_silently(pay, data, internal, customer)
    return data


def attach_silently(
    pay: Payments, data: dict[str, Any], internal: dict[str, Any], customer: str
) -> None:
    """Attach without the checks (an intent saving its PaymentMethod); emits the event."""
    if data["customer"] == customer:
        return
    data["customer"] = customer
    pay.objects.save(data, internal, owner=customer)
    pay.host.emit("payment_method.attached", data, pay.objects.now(), pay.objects.text(data))


def detach(pay: Payments, pm_id: str) -> dict[str, Any]:
    """``POST /v1/payment_methods/{pm}/detach``: unsave it; its mandates become inactive."""
    data, internal = pay.objects.load("pm", pm_id)
    if not data["customer"]:
        raise Committed(
            400,
            f"The payment method {pm_id} is not attached to a customer, so it cannot be detached.",
            code="payment_method_unexpected_state",
            param="payment_method",
            extra={},
        )
    data["customer"] = None
    pay.objects.save(data, internal, owner="")
    pay.revoke_mandates(pm_id)
    pay.host.emit("payment_method.detached", data, pay.objects.now(), pay.objects.text(data))
    return data
