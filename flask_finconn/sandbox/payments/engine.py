"""The payments emulator's entry points: one :class:`Payments` per sandbox (``sb.payments``).

Every API operation takes the request's parameters as parsed from the wire (nested dicts
and lists of strings), validates them against Stripe's parameter list, and runs in one
transaction. The routes in :mod:`.routes` call these same methods, so the Python API and
the HTTP API cannot drift apart. Errors are :class:`ApiError`; one raised after a state
change that must stay (a failed microdeposit attempt, a blocked account) still commits it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .._params import ApiError, invalid
from . import (
    _specs,
    mandates,
    microdeposits,
    payment_intents,
    payment_methods,
    setup_intents,
)
from ._host import TASK_PREFIX, Host, Objects

SETTLEMENT_DELAY = 5.0


class Payments:
    """ACH payments on top of the sandbox: SetupIntents, PaymentIntents, PaymentMethods,
    Mandates, Charges and microdeposits for ``us_bank_account``.

    ``settlement_delay``: sandbox seconds a debit stays ``processing`` before it settles
    (``advance_time`` skips it). ``microdeposit_type``: what ``next_action`` asks for,
    ``descriptor_code`` (default) or ``amounts``; both kinds of value are accepted.
    ``hosted_verification_base``: where ``hosted_verification_url`` points (the token is
    appended); when None (the default), where a ``page_locators`` entry says the request
    being served has the page (the browser half adds one per app serving it), else
    ``<api_base>/sandbox/microdeposits``.
    """

    def __init__(self, host: Host, *, settlement_delay: float = SETTLEMENT_DELAY) -> None:
        self.host = host
        self.objects = Objects(host)
        self.settlement_delay = settlement_delay
        self.microdeposit_type = "descriptor_code"
        self.hosted_verification_base: str | None = None
        self.page_locators: list[Callable[[], str | None]] = []

    # --- SetupIntents -------------------------------------------------------------------

    def create_setup_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.SI_CREATE)
        with self.objects.writing():
            return setup_intents.create(self, p)

    def setup_intent(self, si_id: str, client_secret: str | None = None) -> dict[str, Any]:
        return self._intent("seti", si_id, client_secret)

    def update_setup_intent(self, si_id: str, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.SI_UPDATE)
        with self.objects.writing():
            return setup_intents.update(self, si_id, p)

    def confirm_setup_intent(self, si_id: str, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.SI_CONFIRM)
        with self.objects.writing():
            self._check_secret("seti", si_id, p.get("client_secret"))
            return setup_intents.confirm(self, si_id, p)

    def cancel_setup_intent(self, si_id: str, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.SI_CANCEL)
        with self.objects.writing():
            return setup_intents.cancel(self, si_id, p)

    # --- PaymentIntents -----------------------------------------------------------------

    def create_payment_intent(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.PI_CREATE)
        with self.objects.writing():
            return payment_intents.create(self, p)

    def payment_intent(self, pi_id: str, client_secret: str | None = None) -> dict[str, Any]:
        return self._intent("pi", pi_id, client_secret)

    def update_payment_intent(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.PI_UPDATE)
        with self.objects.writing():
            return payment_intents.update(self, pi_id, p)

    def confirm_payment_intent(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.PI_CONFIRM)
        with self.objects.writing():
            self._check_secret("pi", pi_id, p.get("client_secret"))
            return payment_intents.confirm(self, pi_id, p)

    def cancel_payment_intent(self, pi_id: str, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.PI_CANCEL)
        with self.objects.writing():
            return payment_intents.cancel(self, pi_id, p)

    # --- microdeposits and the browser half ---------------------------------------------

    def verify_microdeposits(self, intent_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Verify by intent id (``seti_`` or ``pi_``): ``{"amounts": [32, 45]}`` or
        ``{"descriptor_code": "SM11AA"}`` (wire strings or ints)."""
        kind = _kind_of(intent_id)
        wire = dict(params)
        if isinstance(wire.get("amounts"), list):
            wire["amounts"] = [str(a) for a in wire["amounts"]]
        p = _specs.check(wire, _specs.VERIFY)
        with self.objects.writing():
            self._check_secret(kind, intent_id, p.get("client_secret"))
            return microdeposits.verify(self, kind, intent_id, p)

    def intent_for_client_secret(self, client_secret: str) -> dict[str, Any]:
        """The SetupIntent or PaymentIntent a client secret belongs to (Stripe.js's view)."""
        intent_id = (client_secret or "").split("_secret_", 1)[0]
        if not intent_id.startswith(("seti_", "pi_")):
            raise invalid("This client secret is not one of an intent.", param="client_secret")
        return self._intent(_kind_of(intent_id), intent_id, client_secret)

    def intent_for_verification(self, token: str) -> dict[str, Any]:
        """The intent a hosted verification page token (``sacs_test_...``) belongs to."""
        with self.host.store.tx(write=False):
            found = self.objects.by_token(token)
            if found is None:
                raise invalid("This verification link is not valid.", param="token")
            return self.objects.get(*found)

    def collect(self, client_secret: str, payment_method_data: dict[str, Any]) -> dict[str, Any]:
        """What the bank account modal does: give the intent a PaymentMethod, so it moves to
        ``requires_confirmation``. ``payment_method_data`` is the wire-shaped hash
        (``type``, ``us_bank_account``, ``billing_details``...)."""
        intent = self.intent_for_client_secret(client_secret)
        params = {"payment_method_data": payment_method_data}
        if intent["object"] == "setup_intent":
            return self.update_setup_intent(intent["id"], params)
        return self.update_payment_intent(intent["id"], params)

    # --- PaymentMethods, Mandates, Charges ----------------------------------------------

    def create_payment_method(self, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.PM_CREATE)
        with self.objects.writing():
            return payment_methods.create(self, p)

    def payment_method(self, pm_id: str) -> dict[str, Any]:
        with self.host.store.tx(write=False):
            return self.objects.get("pm", pm_id)

    def attach_payment_method(self, pm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        p = _specs.check(params, _specs.ATTACH)
        with self.objects.writing():
            return payment_methods.attach(self, pm_id, p.get("customer"))

    def detach_payment_method(self, pm_id: str, params: dict[str, Any]) -> dict[str, Any]:
        _specs.check(params, _specs.RETRIEVE)
        with self.objects.writing():
            return payment_methods.detach(self, pm_id)

    def mandate(self, mandate_id: str) -> dict[str, Any]:
        with self.host.store.tx(write=False):
            return self.objects.get("mandate", mandate_id)

    def charge(self, charge_id: str) -> dict[str, Any]:
        with self.host.store.tx(write=False):
            return self.objects.get("charge", charge_id)

    # --- test helpers -------------------------------------------------------------------

    def settle(self, pi_id: str) -> dict[str, Any]:
        """Settle a processing debit now, successfully (whatever its test account says)."""
        return self._settle(pi_id, "succeeded")

    def fail(self, pi_id: str, failure_code: str = "insufficient_funds") -> dict[str, Any]:
        """Return a processing debit now with ``failure_code`` (an ACH return)."""
        return self._settle(pi_id, failure_code)

    def process(self, pi_id: str) -> dict[str, Any]:
        """Settle a processing debit now as its test account says (skips the delay)."""
        return self._settle(pi_id, None)

    def _settle(self, pi_id: str, force: str | None) -> dict[str, Any]:
        with self.objects.writing():
            data = self.objects.get("pi", pi_id)
            if data["status"] != "processing":
                raise invalid(
                    f"The PaymentIntent {pi_id} is {data['status']}; only a processing one can "
                    "be settled or failed.",
                    param="payment_intent",
                )
            return payment_intents.settle(self, pi_id, self.objects.now(), force=force)

    def dispute(self, pi_id: str, reason: str = "debit_not_authorized") -> dict[str, Any]:
        """Dispute a succeeded debit now: ``charge.dispute.*`` and the mandate inactive."""
        with self.objects.writing():
            return dict(payment_intents.dispute(self, pi_id, self.objects.now(), reason))

    # --- blocks, mandates, tasks --------------------------------------------------------

    def block_of(self, fingerprint: str) -> dict[str, Any] | None:
        """``status_details.blocked`` for a blocked bank account, or None."""
        row = self.host.store.one(
            "SELECT network_code, reason FROM pay_blocks WHERE fingerprint = ?", (fingerprint,)
        )
        return {"network_code": row[0], "reason": row[1]} if row else None

    def add_block(self, fingerprint: str, network_code: str | None, reason: str) -> None:
        """Block a bank account after a return; its saved PaymentMethods say so."""
        now = self.objects.now()
        self.host.store.execute(
            "INSERT OR REPLACE INTO pay_blocks (fingerprint, network_code, reason, created) "
            "VALUES (?, ?, ?, ?)",
            (fingerprint, network_code, reason, now),
        )
        blocked = {"blocked": {"network_code": network_code, "reason": reason}}
        for raw, raw_internal in self.objects.rows(
            "pm", "json_extract(data, '$.us_bank_account.fingerprint') = ?", (fingerprint,)
        ):
            data = self.objects.decode(raw)
            data["us_bank_account"]["status_details"] = blocked
            self.objects.save(data, json.loads(raw_internal))
            if data["customer"]:
                self.host.emit(
                    "payment_method.automatically_updated", data, now, self.objects.text(data)
                )

    def revoke_mandates(self, pm_id: str) -> None:
        mandates.revoke_all(self, pm_id)

    def run_task(self, kind: str, key: str, extra: dict[str, Any], at: int) -> None:
        """Run a due ``payments.*`` task (the sandbox's scheduler calls this)."""
        name = kind[len(TASK_PREFIX) :]
        if name == "settle":
            payment_intents.settle(self, key, at)
        elif name == "dispute":
            data = self.objects.get("pi", key)
            charge = self.objects.get("charge", data["latest_charge"])
            # A test helper may have disputed it already; a debit is disputed once.
            if data["status"] == "succeeded" and not charge["disputed"]:
                payment_intents.dispute(self, key, at)
        elif name == "timeout":
            microdeposits.timeout(self, extra["kind"], key, extra.get("since"), at)

    # --- internals ----------------------------------------------------------------------

    def _intent(self, kind: str, intent_id: str, client_secret: str | None) -> dict[str, Any]:
        with self.host.store.tx(write=False):
            self._check_secret(kind, intent_id, client_secret)
            return self.objects.get(kind, intent_id)

    def _check_secret(self, kind: str, intent_id: str, client_secret: str | None) -> None:
        if client_secret is None:
            return
        data = self.objects.get(kind, intent_id)
        if client_secret != data["client_secret"]:
            raise invalid(
                "The client_secret provided does not match the client_secret associated with "
                "this intent.",
                param="client_secret",
            )


def _kind_of(intent_id: str) -> str:
    if intent_id.startswith("seti_"):
        return "seti"
    if intent_id.startswith("pi_"):
        return "pi"
    raise ApiError(404, f"No such intent: '{intent_id}'", code="resource_missing", param="intent")


__all__ = ["SETTLEMENT_DELAY", "Payments"]
