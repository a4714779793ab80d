"""What SetupIntents and PaymentIntents share: the state machine (create, update, confirm,
cancel), collecting the PaymentMethod, the ``us_bank_account`` options, blocks, failures and
the microdeposit ``next_action``.

``kind`` is ``seti`` or ``pi`` throughout; a :class:`Flow` holds what else sets one kind
apart (its own fields and statuses, and what a verified account leads to).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._data import DAY, new_id
from .._params import invalid
from . import mandates, payment_methods
from ._host import Committed, check_state
from .testbank import VERIFICATION_DAYS, outcome

if TYPE_CHECKING:
    from .engine import Payments

NAME = {"seti": "SetupIntent", "pi": "PaymentIntent"}
ERROR_FIELD = {"seti": "last_setup_error", "pi": "last_payment_error"}
FAILED_EVENT = {"seti": "setup_intent.setup_failed", "pi": "payment_intent.payment_failed"}
PREFIX = {"seti": "setup_intent", "pi": "payment_intent"}
EXPANDABLE = ("customer", "payment_method", "mandate", "latest_charge", "on_behalf_of")
CONFIRMABLE = ("requires_payment_method", "requires_confirmation")

Found = tuple[dict[str, Any], dict[str, Any]]  # an object and its internal state


@dataclass(frozen=True)
class Flow:
    """The state machine of one kind of intent: its methods are the API operations, the
    fields are what sets the kind apart.

    - ``fields(p, types)``: its own fields of a new intent, from the create parameters (it
      raises for values the kind refuses, such as too small an amount)
    - ``set_fields(intent, p)``: apply its own update parameters (and check the result)
    - ``updatable``, ``cancelable``: the statuses that allow an update and a cancel
    - ``mandate_params``: the confirm-only mandate parameters that create takes with
      ``confirm=true``
    - ``missing_code``: the error code of a confirm without a PaymentMethod
    - ``mandate_on_intent``: the mandate shows as the intent's ``mandate`` (SetupIntents);
      otherwise it is kept internally (PaymentIntents show it on the charge)
    - ``verified(pay, intent, internal, pm, pm_internal)``: what a verified account leads to
      (``succeeded``, or ``processing`` with a pending charge), after :meth:`proceed`
    - ``canceling(pay, intent, now)``: its own part of a cancel, if any, before the status
      changes
    """

    kind: str
    fields: Callable[[dict[str, Any], list[str]], dict[str, Any]]
    set_fields: Callable[[dict[str, Any], dict[str, Any]], None]
    updatable: tuple[str, ...]
    cancelable: tuple[str, ...]
    mandate_params: tuple[str, ...]
    missing_code: str
    mandate_on_intent: bool
    verified: Callable[[Payments, dict[str, Any], dict[str, Any], *Found], None]
    canceling: Callable[[Payments, dict[str, Any], int], None] | None = None

    def create(self, pay: Payments, p: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/{setup,payment}_intents`` (confirms too when ``confirm=true``)."""
        now = pay.objects.now()
        if p.get("customer"):
            pay.host.check_customer(p["customer"], param="customer", status=400)
        types = p.get("payment_method_types") or ["us_bank_account"]
        own = self.fields(p, types)
        intent_id = new_id(f"{self.kind}_")
        automatic = p.get("automatic_payment_methods")
        shared: dict[str, Any] = {
            "application": None,
            "automatic_payment_methods": (
                {"allow_redirects": automatic.get("allow_redirects") or "always", "enabled": True}
                if automatic and automatic.get("enabled")
                else None
            ),
            "cancellation_reason": None,
            "client_secret": client_secret(intent_id),
            "created": now,
            "customer": p.get("customer"),
            "customer_account": None,
            "description": p.get("description"),
            "excluded_payment_method_types": None,
            "livemode": False,
            "metadata": p.get("metadata") or {},
            "next_action": None,
            "on_behalf_of": p.get("on_behalf_of"),
            "payment_method": None,
            "payment_method_configuration_details": None,
            "payment_method_options": {},
            "payment_method_types": types,
            "status": "requires_payment_method",
        }
        # Stripe's order: id and object, then the fields by name.
        data = {
            "id": intent_id,
            "object": PREFIX[self.kind],
            **dict(sorted({**shared, **own}.items())),
        }
        if "us_bank_account" in types:
            given = (p.get("payment_method_options") or {}).get("us_bank_account")
            data["payment_method_options"]["us_bank_account"] = options(given, None)
        if collect(pay, self.kind, data, p) is not None:
            data["status"] = "requires_confirmation"
        if not p.get("confirm"):  # confirming stores it, once, in its final state
            pay.objects.insert(self.kind, data, {}, owner=data["customer"])
        pay.host.emit(f"{PREFIX[self.kind]}.created", data, now, pay.objects.text(data))
        if p.get("confirm"):
            keep = {k: v for k, v in p.items() if k in self.mandate_params}
            return self.confirm(pay, intent_id, keep, True, loaded=(data, {}))
        given = [k for k in self.mandate_params if p.get(k)]
        if given:
            names = " and ".join(self.mandate_params)
            raise invalid(f"{names} can only be passed together with confirm=true.", param=given[0])
        return data

    def update(self, pay: Payments, intent_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/{setup,payment}_intents/{id}``."""
        data, internal = pay.objects.load(self.kind, intent_id)
        check_state(self.kind, data, self.updatable, "update")
        if "customer" in p:
            if p["customer"]:
                pay.host.check_customer(p["customer"], param="customer", status=400)
            data["customer"] = p["customer"] or None
        if "metadata" in p:
            merged = {**data["metadata"], **(p["metadata"] or {})}
            data["metadata"] = {k: v for k, v in merged.items() if v != ""}
        if p.get("payment_method_types"):
            data["payment_method_types"] = p["payment_method_types"]
        self.set_fields(data, p)
        apply_options(data, p)
        if collect(pay, self.kind, data, p) is not None:
            data.update(status="requires_confirmation", next_action=None)
        pay.objects.save(data, internal, owner=data["customer"] or "")
        return data

    def confirm(
        self,
        pay: Payments,
        intent_id: str,
        p: dict[str, Any],
        strict: bool = False,
        loaded: Found | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/{setup,payment}_intents/{id}/confirm`` (``strict``: the create-and-confirm
        rules; ``loaded``: the intent and its internal state, when the caller has them)."""
        kind = self.kind
        data, internal = loaded or pay.objects.load(kind, intent_id)
        check_state(kind, data, CONFIRMABLE, "confirm")
        # Only a PaymentIntent's confirm takes it (the SetupIntent's parameters leave it out).
        if p.get("setup_future_usage") is not None:
            data["setup_future_usage"] = p["setup_future_usage"] or None
        apply_options(data, p)
        found = collect(pay, kind, data, p)
        if found is None:
            if not data["payment_method"]:
                raise invalid(
                    f"You cannot confirm this {NAME[kind]} because it's missing a payment method. "
                    "Update it with a payment method, or pass payment_method or "
                    "payment_method_data, and confirm again.",
                    param="payment_method",
                    code=self.missing_code,
                )
            found = pay.objects.load("pm", data["payment_method"])
        pm, pm_internal = found
        check_instant(kind, data, pm_internal)
        data[ERROR_FIELD[kind]] = None
        check_block(pay, kind, data, internal, pm)
        if microdeposits_fail(pay, kind, data, internal, pm_internal):
            return data
        verified = bool(pm_internal["verified"])
        mandate = mandate_for(pay, kind, data, pm, p, strict=strict, verified=verified)
        (data if self.mandate_on_intent else internal)["mandate"] = mandate
        if verified:
            self.proceed(pay, data, internal, found)
        else:
            internal["pending_mandate"] = mandate
            require_action(pay, kind, data, internal)
        return data

    def proceed(
        self,
        pay: Payments,
        intent: dict[str, Any],
        internal: dict[str, Any],
        found: Found | None = None,
    ) -> None:
        """The account is verified (at confirm, or by microdeposits later): a mandate that
        waited for it becomes ``active``, and the intent moves on (``found``: its
        PaymentMethod and internal state, when the caller has them)."""
        pm, pm_internal = found or pay.objects.load("pm", intent["payment_method"])
        if internal.pop("pending_mandate", None):
            holder = intent if self.mandate_on_intent else internal
            mandates.set_status(pay, holder["mandate"], "active")
        self.verified(pay, intent, internal, pm, pm_internal)

    def cancel(self, pay: Payments, intent_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """``POST /v1/{setup,payment}_intents/{id}/cancel``."""
        data, internal = pay.objects.load(self.kind, intent_id)
        check_state(self.kind, data, self.cancelable, "cancel")
        now = pay.objects.now()
        if self.canceling is not None:
            self.canceling(pay, data, now)
        if internal.get("pending_mandate"):
            mandates.set_status(pay, internal.pop("pending_mandate"), "inactive")
        data.update(
            status="canceled", next_action=None, cancellation_reason=p.get("cancellation_reason")
        )
        pay.objects.save(data, internal)
        pay.host.emit(f"{PREFIX[self.kind]}.canceled", data, now, pay.objects.text(data))
        return data


def client_secret(intent_id: str) -> str:
    return f"{intent_id}_secret_{new_id('')}"


def options(given: dict[str, Any] | None, current: dict[str, Any] | None) -> dict[str, Any]:
    """The ``payment_method_options.us_bank_account`` echo, after checking Stripe's rules."""
    base = "payment_method_options[us_bank_account]"
    echo = dict(current or {})
    if given:
        fc = given.get("financial_connections")
        if fc is not None:
            permissions = fc.get("permissions")
            if permissions is not None and "payment_method" not in permissions:
                raise invalid(
                    f"{base}[financial_connections][permissions] must include "
                    "payment_method: the account is collected to be debited.",
                    param=f"{base}[financial_connections][permissions]",
                )
            merged = dict(echo.get("financial_connections") or {})
            for key, value in fc.items():
                merged[key] = list(dict.fromkeys(value)) if isinstance(value, list) else value
            echo["financial_connections"] = merged
        for key in ("verification_method", "setup_future_usage", "target_date"):
            if key in given:
                echo[key] = given[key] or None
        if "transaction_purpose" in given:
            echo["transaction_purpose"] = given["transaction_purpose"] or None
        if "mandate_options" in given:
            method = (given["mandate_options"] or {}).get("collection_method")
            echo["mandate_options"] = {"collection_method": method} if method else {}
        if echo.get("target_date") and echo.get("verification_method") == "microdeposits":
            raise invalid(
                f"{base}[target_date] cannot be used with verification_method microdeposits.",
                param=f"{base}[target_date]",
            )
    echo.setdefault("financial_connections", {"permissions": ["payment_method"], "prefetch": []})
    echo.setdefault("mandate_options", {})
    echo.setdefault("verification_method", "automatic")
    return {k: v for k, v in echo.items() if v is not None}


def apply_options(intent: dict[str, Any], p: dict[str, Any]) -> None:
    """Merge ``payment_method_options`` from params into the intent."""
    if "payment_method_options" not in p:
        return
    given = (p["payment_method_options"] or {}).get("us_bank_account")
    pmo = intent.get("payment_method_options") or {}
    pmo["us_bank_account"] = options(given, pmo.get("us_bank_account"))
    intent["payment_method_options"] = pmo


def collect(
    pay: Payments, kind: str, intent: dict[str, Any], p: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Set the intent's PaymentMethod from ``payment_method`` or ``payment_method_data``."""
    if p.get("payment_method") and p.get("payment_method_data"):
        raise invalid(
            "You may only specify one of these parameters: payment_method, payment_method_data.",
            param="payment_method_data",
        )
    if p.get("payment_method_data"):
        method = (intent_ach(intent) or {}).get("verification_method")
        data = p["payment_method_data"]
        if method == "instant" and not (data.get("us_bank_account") or {}).get(
            "financial_connections_account"
        ):
            raise invalid(
                "payment_method_data with account and routing numbers cannot be used with "
                "verification_method instant: instant verification needs a Financial "
                "Connections account. Use verification_method automatic or microdeposits.",
                param="payment_method_data",
                code="payment_method_invalid_parameter",
            )
        pm = payment_methods.build(pay, data, "payment_method_data")
        found = pay.objects.load("pm", pm["id"])
    elif p.get("payment_method"):
        found = payment_methods.resolve(pay, p["payment_method"], "payment_method")
    else:
        return None
    pm, internal = found
    if pm["type"] not in intent["payment_method_types"]:
        raise invalid(
            f"The PaymentMethod provided ({pm['type']}) is not allowed for this "
            f"{NAME[kind]}. Add {pm['type']} to its payment_method_types.",
            param="payment_method",
            code="payment_intent_incompatible_payment_method"
            if kind == "pi"
            else "setup_intent_invalid_parameter",
        )
    if kind == "seti" and pm["customer"] and intent["customer"] != pm["customer"]:
        raise invalid(
            f"The PaymentMethod {pm['id']} belongs to another customer.", param="payment_method"
        )
    intent["payment_method"] = pm["id"]
    return pm, internal


def intent_ach(intent: dict[str, Any]) -> dict[str, Any] | None:
    return (intent.get("payment_method_options") or {}).get("us_bank_account")


def check_instant(kind: str, intent: dict[str, Any], pm_internal: dict[str, Any]) -> None:
    """``verification_method=instant`` refuses a PaymentMethod that needs microdeposits."""
    if (intent_ach(intent) or {}).get("verification_method") == "instant" and pm_internal[
        "source"
    ] != "fc":
        raise invalid(
            f"This {NAME[kind]} asks for instant verification, but its PaymentMethod was "
            "entered manually. Collect the account with Financial Connections.",
            param="payment_method",
            code="payment_method_invalid_parameter",
        )


def error_body(code: str, message: str, pm: dict[str, Any] | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "invalid_request_error",
        "code": code,
        "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
        "message": message,
    }
    if pm is not None:
        body["payment_method"] = pm
    return body


def fail(
    pay: Payments,
    kind: str,
    intent: dict[str, Any],
    internal: dict[str, Any],
    code: str,
    message: str,
    at: int,
) -> None:
    """Back to ``requires_payment_method`` with the error; emits the failed event."""
    pm = pay.objects.get("pm", intent["payment_method"]) if intent["payment_method"] else None
    intent[ERROR_FIELD[kind]] = error_body(code, message, pm)
    intent.update(status="requires_payment_method", next_action=None, payment_method=None)
    if internal.get("pending_mandate"):
        mandates.set_status(pay, internal.pop("pending_mandate"), "inactive")
        if kind == "seti":
            intent["mandate"] = None
    pay.objects.save(intent, internal)
    pay.host.emit(FAILED_EVENT[kind], intent, at, pay.objects.text(intent))


def check_block(
    pay: Payments,
    kind: str,
    intent: dict[str, Any],
    internal: dict[str, Any],
    pm: dict[str, Any],
) -> None:
    """A blocked account cannot be debited: 402 ``bank_account_unusable`` (kept).

    Blocks are written onto every PaymentMethod of the account when they happen (and onto
    new ones when they are created), so the PaymentMethod itself says.
    """
    block = (pm["us_bank_account"].get("status_details") or {}).get("blocked")
    if block is None:
        return
    message = (
        "The bank account is blocked because an earlier debit was returned "
        f"({block['reason']}). Collect a different bank account."
    )
    fail(pay, kind, intent, internal, "bank_account_unusable", message, pay.objects.now())
    raise Committed(
        402,
        message,
        type="card_error",
        code="bank_account_unusable",
        extra={PREFIX[kind]: intent, "payment_method": pm},
    )


def microdeposits_fail(
    pay: Payments, kind: str, intent: dict[str, Any], internal: dict[str, Any], pm_internal: Any
) -> bool:
    """Fail the intent if the deposits to this account cannot be sent (a test account)."""
    test = outcome("110000000", pm_internal.get("test_account"))
    if pm_internal["source"] == "fc" or test.result != "microdeposits_fail":
        return False
    assert test.code is not None and test.message is not None
    fail(pay, kind, intent, internal, test.code, test.message, pay.objects.now())
    return True


def hosted_base(pay: Payments) -> str:
    """Where ``hosted_verification_url`` points, before the token: the base set on ``pay``,
    else where the first page locator that knows says (the app or server serving the
    request at hand), else ``<api_base>/sandbox/microdeposits``."""
    if pay.hosted_verification_base is not None:
        return pay.hosted_verification_base
    for locate in pay.page_locators:
        found = locate()
        if found is not None:
            return found
    return f"{pay.host.api_base}/sandbox/microdeposits"


def require_action(
    pay: Payments, kind: str, intent: dict[str, Any], internal: dict[str, Any]
) -> None:
    """``requires_action`` with ``next_action.verify_with_microdeposits``; the 10 days start."""
    now = pay.objects.now()
    token = internal.get("verification_token") or new_id("sacs_test_")
    internal["verification_token"] = token
    internal["attempts"] = {"amounts": 0, "descriptor_code": 0}
    internal["action_since"] = now
    intent["status"] = "requires_action"
    intent["next_action"] = {
        "type": "verify_with_microdeposits",
        "verify_with_microdeposits": {
            "arrival_date": now + DAY,
            "hosted_verification_url": f"{hosted_base(pay)}/{token}",
            "microdeposit_type": pay.microdeposit_type,
        },
    }
    pay.objects.save(intent, internal)
    pay.objects.store.execute(
        "UPDATE pay_objects SET token = ? WHERE id = ?", (token, intent["id"])
    )
    pay.host.schedule(
        now + VERIFICATION_DAYS * DAY,
        "payments.timeout",
        intent["id"],
        {"kind": kind, "since": now},
    )
    pay.host.emit(f"{PREFIX[kind]}.requires_action", intent, now, pay.objects.text(intent))


def mandate_for(
    pay: Payments,
    kind: str,
    intent: dict[str, Any],
    pm: dict[str, Any],
    p: dict[str, Any],
    *,
    strict: bool,
    verified: bool,
) -> str:
    """The mandate this confirm uses: explicit, new from ``mandate_data``, or reused."""
    at = pay.objects.now()
    explicit = p.get("mandate")
    if explicit:
        data = pay.objects.load("mandate", explicit, param="mandate", status=400)[0]
        if data["status"] != "active" or data["payment_method"] != pm["id"]:
            raise invalid(
                f"The mandate {explicit} is {data['status']} or belongs to another payment "
                "method. Collect a new mandate with mandate_data.",
                param="mandate",
                code="payment_intent_mandate_invalid",
            )
        return str(explicit)
    acceptance = mandates.acceptance(p.get("mandate_data"), at, strict=strict)
    if acceptance is None:
        reused = mandates.reusable(pay, pm["id"])
        if reused is not None:
            return reused
        raise invalid(
            mandates.NO_MANDATE.format(name=NAME[kind]),
            param="mandate_data",
            code="payment_intent_mandate_invalid"
            if kind == "pi"
            else "setup_intent_mandate_invalid",
        )
    single = None
    if kind == "pi" and not intent.get("setup_future_usage"):
        single = (intent["amount"], intent["currency"])
    method = ((intent_ach(intent) or {}).get("mandate_options") or {}).get("collection_method")
    created = mandates.create(
        pay,
        pm,
        acceptance,
        single_use=single,
        collection_method=method,
        status="active" if verified else "pending",
    )
    return str(created["id"])


def render(pay: Payments, data: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Expand the requested fields of an intent."""
    for path in paths:
        value = data.get(path)
        if not value:
            continue
        if path == "customer":
            data[path] = pay.host.customer(value, status=400)
        elif path == "payment_method":
            data[path] = pay.objects.get("pm", value)
        elif path == "mandate":
            data[path] = pay.objects.get("mandate", value)
        elif path == "latest_charge":
            data[path] = pay.objects.get("charge", value)
    return data
