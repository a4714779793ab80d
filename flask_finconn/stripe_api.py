"""The one module that talks to Stripe: a small facade over one ``StripeClient`` per app.

In sandbox mode the client is pointed at the in-process emulator through its HTTP client,
so every call below runs the real SDK code path either way. The client pins the API
version the SDK was built for and retries network failures, 409s and 5xx twice. Every POST
carries an idempotency key: a deterministic one where a retry of *our* operation must not
create a second object (a holder's customer, a subscription), the SDK's random one
elsewhere.

SDK exceptions never leave this module: they become :class:`~.errors.FinConnError`s whose
messages name the operation, never the key, a client secret or Stripe's own text.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

import stripe
from stripe.financial_connections import Account as StripeAccount
from stripe.financial_connections import AccountOwner as StripeAccountOwner
from stripe.financial_connections import Session as StripeSession
from stripe.financial_connections import Transaction as StripeTransaction

from .errors import Conflict, FinConnError, NotFound, StripeUnavailable, ValidationError
from .ratelimit import Bucket, RateLimitedHTTPClient

if TYPE_CHECKING:
    from .sandbox import Sandbox

logger = logging.getLogger("flask_finconn.stripe")

MAX_NETWORK_RETRIES = 2
# The version this SDK release was generated for: its types match exactly these payloads.
API_VERSION: str = stripe.api_version
PAGE_SIZE = 100

__all__ = [
    "StripeAPI",
    "StripeAccount",
    "StripeAccountOwner",
    "StripeSession",
    "StripeTransaction",
]


class StripeAPI:
    """The Stripe operations Flask-FinConn uses, with errors mapped to ``FinConnError``."""

    def __init__(
        self,
        client: stripe.StripeClient,
        *,
        livemode: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.livemode = livemode
        self._clock = clock

    @classmethod
    def for_key(cls, secret_key: str, *, bucket: Bucket | None = None) -> StripeAPI:
        """A client for real Stripe with the given secret key.

        With a ``bucket`` every request first takes a token from it, and Stripe's 429s
        pause the bucket and are retried (:mod:`~flask_finconn.ratelimit`).
        """
        client = stripe.StripeClient(
            secret_key,
            stripe_version=API_VERSION,
            http_client=_limited(stripe.new_default_http_client(), bucket),
            max_network_retries=MAX_NETWORK_RETRIES,
        )
        return cls(client, livemode=secret_key.startswith(("sk_live_", "rk_live_")))

    @classmethod
    def for_sandbox(
        cls, sandbox: Sandbox, *, livemode: bool = False, bucket: Bucket | None = None
    ) -> StripeAPI:
        """A client whose requests go to the in-process sandbox, without a socket."""
        client = stripe.StripeClient(
            sandbox.api_key,
            stripe_version=API_VERSION,
            base_addresses={"api": sandbox.api_base},
            http_client=_limited(sandbox.http_client(), bucket),
            max_network_retries=MAX_NETWORK_RETRIES,
        )
        return cls(client, livemode=livemode, clock=sandbox.now)

    def now(self) -> int:
        """Now in Unix seconds by the clock of the Stripe this client talks to.

        Stripe's refresh timestamps (``last_attempted_at``, ``next_refresh_available_at``)
        are on that clock; the sandbox's can be moved forward.
        """
        return int(self._clock())

    @property
    def _fc(self) -> Any:
        return self.client.v1.financial_connections

    # customers

    def create_customer(
        self, holder_id: str, *, installation: str, email: str | None, name: str | None
    ) -> stripe.Customer:
        """Create the Customer for a holder of one installation.

        A retry for the same holder of the same installation returns the same Customer;
        another installation on the same Stripe account (staging beside dev) gets its own,
        because the idempotency key and the metadata name the installation.
        """
        params: dict[str, Any] = {
            "metadata": {"finconn_holder_id": holder_id, "finconn_installation": installation}
        }
        if email:
            params["email"] = email
        if name:
            params["name"] = name
        key = "finconn-customer-" + _digest(installation + "\x00" + holder_id)
        with _calling("create a customer"):
            customer: stripe.Customer = self.client.v1.customers.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": key},
            )
        return customer

    def update_customer(
        self, customer_id: str, *, email: str | None, name: str | None
    ) -> stripe.Customer:
        """Bring a holder's customer up to date with their current email and name."""
        params: dict[str, Any] = {"email": email or "", "name": name or ""}
        with _calling("update the customer", not_found="customer_not_found"):
            customer: stripe.Customer = self.client.v1.customers.update(
                customer_id,
                params,  # type: ignore[arg-type]
            )
        return customer

    def retrieve_customer(self, customer_id: str) -> dict[str, Any]:
        """Read a customer; a deleted one is ``{"id", "object", "deleted": true}``."""
        with _calling("read the customer", not_found="customer_not_found"):
            customer: stripe.Customer = self.client.v1.customers.retrieve(customer_id)
        return _as_dict(customer)

    def delete_customer(self, customer_id: str) -> None:
        """Delete a customer at Stripe for good (its payment methods go with it)."""
        with _calling("delete the customer", not_found="customer_not_found"):
            self.client.v1.customers.delete(customer_id)

    # sessions

    def create_session(
        self,
        customer: str,
        *,
        permissions: list[str],
        prefetch: list[str],
        country: str,
        account_subcategories: list[str] | None,
    ) -> StripeSession:
        """Open a Financial Connections session for a customer."""
        filters: dict[str, Any] = {"country": country}
        if account_subcategories:
            filters["account_subcategories"] = account_subcategories
        params: dict[str, Any] = {
            "account_holder": {"type": "customer", "customer": customer},
            "permissions": permissions,
            "filters": filters,
        }
        if prefetch:
            params["prefetch"] = prefetch
        with _calling("create a linking session"):
            session: StripeSession = self._fc.sessions.create(params)
        return session

    def retrieve_session(self, session_id: str) -> StripeSession:
        """Read a session (404 ``session_not_found`` when Stripe has no such session)."""
        with _calling("read the linking session", not_found="session_not_found"):
            session: StripeSession = self._fc.sessions.retrieve(session_id)
        return session

    def session_accounts(self, session_id: str) -> list[StripeAccount]:
        """Every account linked in a session, read page by page (never the embedded list)."""
        with _calling("list the session's accounts", not_found="session_not_found"):
            page = self._fc.accounts.list({"session": session_id, "limit": PAGE_SIZE})
            return list(page.auto_paging_iter())

    # accounts

    def retrieve_account(
        self, account_id: str, *, expand: list[str] | None = None
    ) -> StripeAccount:
        """Read an account (404 ``account_not_found`` when Stripe has no such account)."""
        params: dict[str, Any] = {"expand": expand} if expand else {}
        with _calling("read the account", not_found="account_not_found"):
            account: StripeAccount = self._fc.accounts.retrieve(account_id, params)
        return account

    def refresh_account(self, account_id: str, features: list[str]) -> StripeAccount:
        """Start refreshes of ``balance``, ``ownership`` and/or ``transactions``."""
        with _calling("refresh the account", not_found="account_not_found"):
            account: StripeAccount = self._fc.accounts.refresh(account_id, {"features": features})
        return account

    def subscribe_transactions(self, account_id: str) -> StripeAccount:
        """Subscribe an account to the daily transaction refresh (once per account)."""
        key = "finconn-subscribe-" + _digest(account_id)
        with _calling("subscribe the account to transactions", not_found="account_not_found"):
            account: StripeAccount = self._fc.accounts.subscribe(
                account_id, {"features": ["transactions"]}, {"idempotency_key": key}
            )
        return account

    def unsubscribe_transactions(self, account_id: str) -> StripeAccount:
        """Stop the daily transaction refresh of an account."""
        with _calling("unsubscribe the account", not_found="account_not_found"):
            account: StripeAccount = self._fc.accounts.unsubscribe(
                account_id, {"features": ["transactions"]}
            )
        return account

    def disconnect_account(self, account_id: str) -> StripeAccount:
        """Disconnect an account at Stripe; its data can no longer be refreshed or read."""
        key = "finconn-disconnect-" + _digest(account_id)
        with _calling("disconnect the account", not_found="account_not_found"):
            account: StripeAccount = self._fc.accounts.disconnect(
                account_id, None, {"idempotency_key": key}
            )
        return account

    def account_owners(self, account_id: str, ownership: str) -> list[StripeAccountOwner]:
        """The owners in one ownership snapshot of an account."""
        with _calling("list the account's owners", not_found="account_not_found"):
            page = self._fc.accounts.owners.list(
                account_id, {"ownership": ownership, "limit": PAGE_SIZE}
            )
            return list(page.auto_paging_iter())

    def transaction_pages(
        self,
        account_id: str,
        *,
        after_refresh: str | None = None,
        starting_after: str | None = None,
        transacted_after: int | None = None,
    ) -> Iterator[tuple[list[StripeTransaction], bool]]:
        """An account's transactions a page at a time, newest first, with "more follow".

        ``after_refresh`` keeps only rows created or updated by later refreshes,
        ``starting_after`` resumes after a row id, ``transacted_after`` (Unix seconds) keeps
        only rows transacted later. Each page is requested only when the previous one has
        been consumed, so a caller that writes a page before asking for the next streams.
        """
        params: dict[str, Any] = {"account": account_id, "limit": PAGE_SIZE}
        if after_refresh:
            params["transaction_refresh"] = {"after": after_refresh}
        if starting_after:
            params["starting_after"] = starting_after
        if transacted_after is not None:
            params["transacted_at"] = {"gt": transacted_after}
        while True:
            with _calling("list the account's transactions", not_found="account_not_found"):
                page = self._fc.transactions.list(params)
            data: list[StripeTransaction] = page.data
            yield data, bool(page.has_more and data)
            if not page.has_more or not data:
                return
            params["starting_after"] = data[-1].id

    # payments

    def create_setup_intent(self, customer: str, *, permissions: list[str]) -> stripe.SetupIntent:
        """A SetupIntent for the browser to collect a bank account into (Stripe.js confirms it)."""
        params: dict[str, Any] = {
            "customer": customer,
            "payment_method_types": ["us_bank_account"],
            "usage": "off_session",
            "payment_method_options": {
                "us_bank_account": {
                    "verification_method": "automatic",
                    "financial_connections": {"permissions": permissions},
                }
            },
        }
        with _calling("create a setup intent"):
            intent: stripe.SetupIntent = self.client.v1.setup_intents.create(params)  # type: ignore[arg-type]
        return intent

    def setup_from_account(
        self,
        customer: str,
        account_id: str,
        *,
        billing_name: str,
        billing_email: str | None,
        acceptance: dict[str, Any],
    ) -> stripe.SetupIntent:
        """Create and confirm a SetupIntent that saves a linked ``fca_`` account for debits.

        ``acceptance`` is the mandate's ``customer_acceptance`` (online: IP, user agent, time).
        """
        billing: dict[str, Any] = {"name": billing_name}
        if billing_email:
            billing["email"] = billing_email
        params: dict[str, Any] = {
            "customer": customer,
            "payment_method_types": ["us_bank_account"],
            "usage": "off_session",
            "confirm": True,
            "payment_method_data": {
                "type": "us_bank_account",
                "us_bank_account": {"financial_connections_account": account_id},
                "billing_details": billing,
            },
            "mandate_data": {"customer_acceptance": acceptance},
            "expand": ["payment_method"],
        }
        with _calling("save the bank account for payments"):
            intent: stripe.SetupIntent = self.client.v1.setup_intents.create(params)  # type: ignore[arg-type]
        return intent

    def retrieve_setup_intent(self, intent_id: str) -> stripe.SetupIntent:
        """Read a SetupIntent with its PaymentMethod expanded."""
        with _calling("read the setup intent", not_found="setup_intent_not_found"):
            intent: stripe.SetupIntent = self.client.v1.setup_intents.retrieve(
                intent_id, {"expand": ["payment_method"]}
            )
        return intent

    def verify_microdeposits(self, intent_id: str, values: dict[str, Any]) -> stripe.SetupIntent:
        """Send the holder's microdeposit ``amounts`` or ``descriptor_code`` to Stripe."""
        with _calling("verify the microdeposits", not_found="setup_intent_not_found"):
            intent: stripe.SetupIntent = self.client.v1.setup_intents.verify_microdeposits(
                intent_id,
                {**values, "expand": ["payment_method"]},  # type: ignore[arg-type]
            )
        return intent

    def retrieve_payment_method(self, payment_method_id: str) -> stripe.PaymentMethod:
        """Read a PaymentMethod."""
        with _calling("read the payment method", not_found="payment_method_not_found"):
            method: stripe.PaymentMethod = self.client.v1.payment_methods.retrieve(
                payment_method_id
            )
        return method

    def detach_payment_method(self, payment_method_id: str) -> stripe.PaymentMethod:
        """Detach a PaymentMethod from its customer; its mandates become inactive."""
        key = "finconn-detach-" + _digest(payment_method_id)
        with _calling("detach the payment method", not_found="payment_method_not_found"):
            method: stripe.PaymentMethod = self.client.v1.payment_methods.detach(
                payment_method_id, None, {"idempotency_key": key}
            )
        return method

    def retrieve_mandate(self, mandate_id: str) -> stripe.Mandate:
        """Read a mandate."""
        with _calling("read the mandate", not_found="mandate_not_found"):
            mandate: stripe.Mandate = self.client.v1.mandates.retrieve(mandate_id)
        return mandate

    def create_debit(
        self,
        *,
        customer: str,
        payment_method: str,
        mandate: str | None,
        amount: int,
        currency: str,
        description: str,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> dict[str, Any]:
        """Create and confirm an off-session PaymentIntent debiting a saved bank account.

        ``idempotency_key`` is already scoped to the holder's customer: the same key
        returns the same PaymentIntent however often the call is retried. The intent comes
        back as the JSON Stripe sent.

        The call is the SDK's raw request: the same POST (form encoding, API version,
        idempotency key, retries, error classes) without building the answer into a
        ``PaymentIntent`` of SDK objects, which a debit never reads and which cost about a
        third of the call's CPU time.
        """
        params: dict[str, Any] = {
            "amount": amount,
            "currency": currency,
            "customer": customer,
            "payment_method": payment_method,
            "payment_method_types": ["us_bank_account"],
            "confirm": True,
            "off_session": True,
            "description": description,
            "metadata": metadata,
        }
        if mandate:
            params["mandate"] = mandate
        key = "finconn-debit-" + _digest(customer + "\x00" + idempotency_key)
        with _calling("debit the bank account"):
            response: stripe.StripeResponse = self.client.raw_request(
                "post", "/v1/payment_intents", **params, idempotency_key=key
            )
        # The answer is the PaymentIntent as a JSON object (a body that is not JSON raised).
        return cast("dict[str, Any]", response.data)

    def retrieve_payment_intent(self, intent_id: str) -> stripe.PaymentIntent:
        """Read a PaymentIntent with its latest charge expanded (disputes show there)."""
        with _calling("read the payment", not_found="payment_not_found"):
            intent: stripe.PaymentIntent = self.client.v1.payment_intents.retrieve(
                intent_id, {"expand": ["latest_charge"]}
            )
        return intent

    def customer_payment_intents(self, customer: str) -> Iterator[dict[str, Any]]:
        """A customer's PaymentIntents, newest first, a page requested as the last is used up.

        Listing is read-after-write consistent, unlike search, so a PaymentIntent created a
        moment ago is in the list.
        """
        params: dict[str, Any] = {"customer": customer, "limit": PAGE_SIZE}
        while True:
            with _calling("list the customer's payments", not_found="customer_not_found"):
                page = self.client.v1.payment_intents.list(params)  # type: ignore[arg-type]
            data: list[stripe.PaymentIntent] = page.data
            for intent in data:
                yield intent.to_dict()
            if not page.has_more or not data:
                return
            params["starting_after"] = data[-1].id

    def cancel_payment_intent(self, intent_id: str) -> stripe.PaymentIntent:
        """Cancel a debit that has not settled yet."""
        key = "finconn-cancel-" + _digest(intent_id)
        with _calling("cancel the payment", not_found="payment_not_found"):
            intent: stripe.PaymentIntent = self.client.v1.payment_intents.cancel(
                intent_id, {"expand": ["latest_charge"]}, {"idempotency_key": key}
            )
        return intent


def _limited(http_client: stripe.HTTPClient, bucket: Bucket | None) -> stripe.HTTPClient:
    return http_client if bucket is None else RateLimitedHTTPClient(http_client, bucket)


def _as_dict(obj: stripe.StripeObject) -> dict[str, Any]:
    """An object as plain data: the response's JSON as Stripe sent it.

    The SDK has parsed that JSON already; ``to_dict()`` would walk the whole object again.
    """
    response = obj.last_response
    data = response.data if response is not None else None
    return data if isinstance(data, dict) else obj.to_dict()


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:32]


@contextmanager
def _calling(operation: str, *, not_found: str | None = None) -> Iterator[None]:
    """Turn SDK exceptions raised while doing ``operation`` into ``FinConnError``s.

    Only the exception class, HTTP status, Stripe's error code and request id are logged:
    Stripe's messages can quote (masked) keys and are not ours to show.
    """
    try:
        yield
    except stripe.StripeError as exc:
        logger.warning(
            "Stripe call failed: could not %s (%s, status %s, code %s, request %s)",
            operation,
            type(exc).__name__,
            exc.http_status,
            exc.code,
            exc.request_id,
        )
        raise _translate(exc, operation, not_found) from exc


def _translate(exc: stripe.StripeError, operation: str, not_found: str | None) -> FinConnError:
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return StripeUnavailable(
            f"Stripe refused our API key while trying to {operation}; "
            "check FINCONN_STRIPE_SECRET_KEY.",
            code="stripe_authentication_failed",
        )
    if isinstance(exc, stripe.RateLimitError):
        return StripeUnavailable(
            f"Stripe is receiving too many requests; could not {operation}. Try again shortly."
        )
    if isinstance(exc, stripe.CardError):
        return Conflict(
            _PAYMENT_MESSAGES.get(exc.code or "", "The bank refused the debit."),
            code=exc.code or "payment_declined",
        )
    if isinstance(exc, stripe.InvalidRequestError):
        if exc.code and exc.code.startswith(_MICRODEPOSIT_PREFIX):
            return _microdeposit_error(exc)
        if exc.code in _PAYMENT_MESSAGES:
            return Conflict(_PAYMENT_MESSAGES[exc.code], code=exc.code)
        if exc.http_status == 404 and not_found is not None:
            return NotFound(_NOT_FOUND_MESSAGES.get(not_found, NotFound.message), code=not_found)
        if exc.code and exc.code.startswith("financial_connections_"):
            return Conflict(
                _CONFLICT_MESSAGES.get(exc.code, f"Stripe would not {operation} in its state."),
                code=exc.code.removeprefix("financial_connections_"),
            )
        return FinConnError(
            f"Stripe rejected the request to {operation}.",
            code="stripe_request_rejected",
            status=502,
        )
    return StripeUnavailable(
        f"Stripe could not be reached or failed while trying to {operation}. Try again in a moment."
    )


_MICRODEPOSIT_PREFIX = "payment_method_microdeposit_"
_ATTEMPTS = re.compile(r"(\d+) verification attempts? remaining")
# A wrong code and wrong amounts are told apart: the holder looks at a different thing.
_MISMATCH_MESSAGES = {
    "verification_amounts_mismatch": "Those values do not match the deposits.",
    "verification_descriptor_code_mismatch": "That code does not match the one on the deposit.",
}


def _microdeposit_error(exc: stripe.StripeError) -> FinConnError:
    """A refused verification: our sentence, with the attempts Stripe says are left."""
    match = _ATTEMPTS.search(str(exc.user_message or ""))
    remaining = int(match.group(1)) if match else None
    code = (exc.code or "").removeprefix(_MICRODEPOSIT_PREFIX)
    if code in _MISMATCH_MESSAGES:
        message = _MISMATCH_MESSAGES[code]
        if remaining is not None:
            message += f" {remaining} attempt{'s' if remaining != 1 else ''} left."
    elif code == "verification_attempts_exceeded":
        message = "Too many wrong attempts; save the bank account again."
        remaining = 0
    elif code == "verification_timeout":
        message = "The deposits were not verified in time; save the bank account again."
        remaining = 0
    elif code == "verification_amounts_invalid":
        message = "Enter the two deposit amounts in cents, such as 32 and 45."
    else:
        message = "Stripe could not verify the deposits; check the values and try again."
    return ValidationError(
        message, code="verification_failed", extra={"attempts_remaining": remaining}
    )


_PAYMENT_MESSAGES = {
    "bank_account_unusable": (
        "The bank account can no longer be debited; ask the holder for another account."
    ),
    "payment_intent_mandate_invalid": (
        "The mandate for this bank account is no longer active; ask the holder to save it again."
    ),
    "payment_intent_unexpected_state": "The payment can no longer be changed.",
    "setup_intent_unexpected_state": "The bank account is not waiting for verification.",
    "payment_method_bank_account_already_verified": "The bank account is already verified.",
}

_NOT_FOUND_MESSAGES = {
    "customer_not_found": "There is no such customer at Stripe.",
    "session_not_found": "There is no such linking session for this user.",
    "account_not_found": "There is no such bank account for this user.",
    "setup_intent_not_found": "There is no such setup intent for this user.",
    "payment_method_not_found": "There is no such payment method for this user.",
    "payment_not_found": "There is no such payment for this user.",
    "mandate_not_found": "There is no such mandate.",
}

_CONFLICT_MESSAGES = {
    "financial_connections_account_inactive": (
        "The bank account is inactive; link it again to resume updates."
    ),
    "financial_connections_no_successful_transaction_refresh": (
        "No transaction refresh has succeeded for this account yet; refresh it first."
    ),
}
