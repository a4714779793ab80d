"""The sandbox's facade: :class:`Sandbox`, over one module per resource family.

Layout (each module owns its tables' rows, its task kinds and its events):

- :mod:`._kernel`: storage, settings, the clock, the current request, scheduled tasks
- :mod:`.customers`: ``cus_`` objects
- :mod:`.linking`: FC sessions, the modal's login, linking accounts
- :mod:`.accounts`: FC accounts and their status machine (inactive, disconnected)
- :mod:`.refreshes` (with :mod:`.transactions`): refreshes, subscriptions, generated data
- :mod:`.events` and :mod:`.webhooks`: the event log, and delivery to endpoints
- :mod:`._wire`: the WSGI app (auth, faults, form parsing, idempotency, lists, errors);
  :mod:`._routes` lists every route, served by the ``_http_*`` handler modules

Adding a resource family (payments: SetupIntents, PaymentIntents, PaymentMethods,
mandates, charges) touches no existing family. A new module:

1. defines a class built from the :class:`~._kernel.Kernel` and the collaborators it
   needs (``Events`` to emit, ``Accounts`` to read a linked account, ``Customers``);
2. in its ``__init__``, creates its tables with ``kernel.store.ensure(SCHEMA)`` (``CREATE
   ... IF NOT EXISTS``, so file databases upgrade in place) and registers each task kind it
   schedules with ``kernel.on_task(kind, handler)`` (for example a PaymentIntent that
   settles some sandbox seconds after confirmation);
3. is built in :meth:`Sandbox.__init__` and added to :class:`Parts`, so handlers reach it
   as ``api.sb.parts.<name>``;
4. gets a handler module ``_http_<family>.py`` (handlers take ``(api, params, args)``,
   validate with :mod:`._params`, list with ``api.page``) whose routes are added to the
   list in :mod:`._routes`;
5. adds facade methods here only for what Python callers (tests, the CLI) need besides
   HTTP, each a one-line delegation.
"""

from __future__ import annotations

import functools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._context import RequestContext
from ._kernel import Kernel, Settings
from ._params import ApiError
from ._routes import ROUTES
from ._store import Store
from ._wire import Api
from .accounts import Accounts
from .customers import Customers
from .events import API_VERSION, EVENT_TYPES, Events
from .faults import Faults, fail_after_commit
from .linking import Linking, SessionError
from .payments import SETTLEMENT_DELAY, TASK_KINDS, Host, Payments
from .refreshes import Refreshes
from .webhooks import Webhooks, WSGIApp

if TYPE_CHECKING:
    import stripe

log = logging.getLogger("flask_finconn.sandbox")


@dataclass
class Parts:
    """The resource modules of one sandbox, for the route handlers."""

    customers: Customers
    events: Events
    accounts: Accounts
    refreshes: Refreshes
    linking: Linking
    payments: Payments


class Sandbox:
    """A stateful emulator of Stripe's Customers and Financial Connections API.

    ``database`` is a SQLite file (state survives restarts) or ``":memory:"``.
    ``refresh_delay`` is how long (sandbox seconds) a refresh stays pending;
    ``refresh_cooldown`` how long after it finished the next one may start.
    ``settlement_delay`` is how long (sandbox seconds) an ACH debit stays ``processing``;
    ``sb.payments`` is the payments emulator (see ``flask_finconn.sandbox.payments``).
    """

    api_key = "sk_test_sandbox"
    publishable_key = "pk_test_sandbox"
    api_base = "http://sandbox.finconn.invalid"

    def __init__(
        self,
        database: str = ":memory:",
        *,
        refresh_delay: float = 1.0,
        refresh_cooldown: int = 10,
        session_ttl: int = 3600,
        history_size: int | None = None,
        settlement_delay: float = SETTLEMENT_DELAY,
    ) -> None:
        self.store = Store(database)
        self.settings = Settings(refresh_delay, refresh_cooldown, session_ttl, history_size)
        self.kernel = Kernel(self.store, self.settings)
        self.faults = Faults()
        self.webhooks = Webhooks(self.store, self.now_float, self.faults)
        events = Events(self.kernel, self.webhooks)
        customers = Customers(self.kernel)
        accounts = Accounts(self.kernel, events)
        refreshes = Refreshes(self.kernel, events, accounts)
        linking = Linking(self.kernel, events, customers, accounts, refreshes)
        # Payments see the sandbox only through Host (flask_finconn.sandbox.payments).
        payments = Payments(
            Host(
                store=self.store,
                now=self.kernel.now,
                emit=events.emit,
                schedule=self.kernel.schedule,
                customer=customers.get,
                check_customer=customers.check,
                account=accounts.get,
                api_base=self.api_base,
            ),
            settlement_delay=settlement_delay,
        )
        for kind in TASK_KINDS:
            self.kernel.on_task(kind, functools.partial(payments.run_task, kind))
        self.payments = payments
        self.parts = Parts(customers, events, accounts, refreshes, linking, payments)
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        self._api = Api(self, ROUTES)
        self.wsgi_app: WSGIApp = fail_after_commit(self._api.wsgi_app, self.faults)

    # --- settings -----------------------------------------------------------------------

    @property
    def refresh_delay(self) -> float:
        """Sandbox seconds a refresh stays pending (may be changed on a running sandbox)."""
        return self.settings.refresh_delay

    @refresh_delay.setter
    def refresh_delay(self, value: float) -> None:
        self.settings.refresh_delay = value

    @property
    def refresh_cooldown(self) -> int:
        """Sandbox seconds after a refresh finished before the next may start."""
        return self.settings.refresh_cooldown

    @refresh_cooldown.setter
    def refresh_cooldown(self, value: int) -> None:
        self.settings.refresh_cooldown = value

    @property
    def session_ttl(self) -> int:
        """Sandbox seconds a session's client secret stays usable."""
        return self.settings.session_ttl

    @session_ttl.setter
    def session_ttl(self, value: int) -> None:
        self.settings.session_ttl = value

    @property
    def default_history_size(self) -> int | None:
        """The ``history_size`` a newly linked account starts with (None: about 2 a day)."""
        return self.settings.history_size

    @default_history_size.setter
    def default_history_size(self, value: int | None) -> None:
        self.settings.history_size = value

    # --- clock --------------------------------------------------------------------------

    def now(self) -> int:
        """The sandbox clock in Unix seconds (wall time plus what ``advance_time`` added)."""
        return self.kernel.now()

    def now_float(self) -> float:
        """The sandbox clock in Unix seconds, with fractions."""
        return self.kernel.now_float()

    def advance_time(self, seconds: float) -> int:
        """Move the sandbox clock forward and run what became due. Returns the new time.

        Raises ``ValueError`` for a negative, infinite or NaN amount, a non-number, or one
        that would move the clock past 9999-12-31. Daily refreshes a jump skipped collapse
        into one, so any accepted amount returns promptly.
        """
        return self.kernel.advance(seconds)

    def run_due(self) -> int:
        """Run every task whose time has come, oldest first, each at its own due time.

        Returns how many ran. API requests call this first, so results do not depend on a
        background thread.
        """
        return self.kernel.run_due()

    # --- clients ------------------------------------------------------------------------

    def http_client(self) -> Any:
        """A ``stripe.HTTPClient`` that calls :attr:`wsgi_app` directly, with no socket."""
        from .transport import SandboxHTTPClient

        return SandboxHTTPClient(self.wsgi_app)

    def stripe_client(self, **kwargs: Any) -> stripe.StripeClient:
        """A ``stripe.StripeClient`` wired to this sandbox in-process."""
        import stripe

        kwargs.setdefault("http_client", self.http_client())
        kwargs.setdefault("base_addresses", {"api": self.api_base})
        return stripe.StripeClient(kwargs.pop("api_key", self.api_key), **kwargs)

    # --- customers ----------------------------------------------------------------------

    def create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        """Create a customer from API parameters (``email``, ``name``, ...)."""
        return self.parts.customers.create(params)

    def update_customer(self, cus_id: str, params: dict[str, Any]) -> dict[str, Any]:
        """Update a customer from API parameters; blank strings unset."""
        return self.parts.customers.update(cus_id, params)

    def delete_customer(self, cus_id: str) -> dict[str, Any]:
        """Delete a customer; later requests naming it are 404s."""
        return self.parts.customers.delete(cus_id)

    def customer(self, cus_id: str, *, param: str = "id", status: int = 404) -> dict[str, Any]:
        """The customer as the API returns it (raises :class:`ApiError` if there is none)."""
        return self.parts.customers.get(cus_id, param=param, status=status)

    # --- sessions and the modal ---------------------------------------------------------

    def create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        """Create an FC session from validated API parameters."""
        return self.parts.linking.create_session(params)

    def session(self, sess_id: str) -> dict[str, Any]:
        """The session as the API returns it, with its linked accounts."""
        return self.parts.linking.session(sess_id)

    def session_for_client_secret(self, client_secret: str) -> dict[str, Any]:
        """The open session this client secret belongs to.

        Raises :class:`SessionError` when the secret is unknown, expired or already used
        (completed or cancelled), which is when Stripe.js fails to launch.
        """
        return self.parts.linking.session_for_client_secret(client_secret)

    def expire_session(self, sess_id: str) -> None:
        """Make a session's client secret unusable, as if it had timed out."""
        self.parts.linking.expire_session(sess_id)

    def institutions(self, query: str | None = None) -> list[dict[str, Any]]:
        """Institutions for the modal: featured first, filtered by a search string."""
        return self.parts.linking.institutions(query)

    def institution_accounts(self, client_secret: str, institution: str) -> list[dict[str, Any]]:
        """The accounts ``institution`` offers in this session, each selectable or not."""
        return self.parts.linking.institution_accounts(client_secret, institution)

    def login(
        self,
        client_secret: str,
        institution: str,
        username: str = "",
        password: str = "",
        answer: str | None = None,
    ) -> dict[str, Any]:
        """Log in to a test institution for the modal (see :meth:`.Linking.login`)."""
        return self.parts.linking.login(client_secret, institution, username, password, answer)

    def complete_session_with(
        self, client_secret: str, institution: str, account_keys: list[str] | None
    ) -> dict[str, Any]:
        """Attach the chosen accounts of ``institution`` to the session behind this secret."""
        return self.parts.linking.complete_session_with(client_secret, institution, account_keys)

    def complete_session(
        self,
        session_id: str,
        institution: str = "bank_nonoauth",
        accounts: list[str] | None = None,
    ) -> dict[str, Any]:
        """Finish the linking flow headlessly: link ``accounts`` (template keys; None: all
        selectable) of ``institution`` to the session. Returns the session."""
        return self.parts.linking.complete_session(session_id, institution, accounts)

    def cancel_session(self, session_id: str) -> dict[str, Any]:
        """End the flow as if the user closed the modal: no accounts. Returns the session."""
        return self.parts.linking.cancel_session(session_id)

    # --- accounts -----------------------------------------------------------------------

    def account(self, acct_id: str) -> dict[str, Any]:
        """The account as the API returns it (no expansions)."""
        return self.parts.accounts.get(acct_id)

    def refresh_account(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        """Start refreshes of ``features``, as ``POST .../refresh`` does."""
        return self.parts.refreshes.refresh_account(acct_id, features)

    def subscribe(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        """Subscribe to daily transaction refreshes, as ``POST .../subscribe`` does."""
        return self.parts.refreshes.subscribe(acct_id, features)

    def unsubscribe(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        """End the transaction subscription, as ``POST .../unsubscribe`` does."""
        return self.parts.refreshes.unsubscribe(acct_id, features)

    def disconnect(self, acct_id: str) -> dict[str, Any]:
        """Disconnect an account, as ``POST .../disconnect`` does."""
        return self.parts.accounts.disconnect(acct_id)

    def set_history_size(self, account: str, size: int) -> None:
        """Give ``account`` about ``size`` transactions: the next transaction refresh fills
        the history up to that many rows (100k+ is fine; rows are written in bulk)."""
        self.parts.refreshes.set_history_size(account, size)

    def finish_refreshes(self, account: str | None = None, status: str = "succeeded") -> int:
        """Finish pending refreshes now (of one account, or all) with ``status``.

        Returns how many finished.
        """
        return self.parts.refreshes.finish_all(account, status)

    def deactivate(self, account: str, *, action: str = "relink_required") -> dict[str, Any]:
        """Make an active account inactive (``action``: ``relink_required`` or ``none``)."""
        return self.parts.accounts.deactivate(account, action=action)

    def reactivate(self, account: str) -> dict[str, Any]:
        """Make an inactive account active again, as a successful relink does."""
        return self.parts.accounts.reactivate(account)

    def disconnect_by_user(self, account: str) -> dict[str, Any]:
        """Disconnect an account as the end user would (from their bank or Link)."""
        return self.parts.accounts.disconnect_by_user(account)

    def fire_event(self, account: str, type: str) -> dict[str, Any]:
        """Create an event of any FC type for an account (its current snapshot). Returns it."""
        return self.parts.accounts.fire_event(account, type)

    # --- events and webhooks ------------------------------------------------------------

    def event(self, event_id: str) -> dict[str, Any]:
        """The event as the API returns it (raises :class:`ApiError` if there is none)."""
        return self.parts.events.get(event_id)

    def events(self, type: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        """Every event so far, oldest first, optionally of one type or for one account."""
        return self.parts.events.all(type, account)

    def add_webhook_endpoint(
        self,
        url: str | None = None,
        wsgi_app: WSGIApp | None = None,
        path: str = "/",
        secret: str | None = None,
    ) -> dict[str, str]:
        """Send every event from now on to ``url`` (HTTP POST) or to ``wsgi_app`` at ``path``.

        Returns ``{"id", "secret"}``. Registering the same target again (after a restart)
        keeps its id and secret unless ``secret`` is given, so a file-backed sandbox and
        its app agree on the secret across restarts.
        """
        return self.webhooks.add_endpoint(url, wsgi_app, path, secret, self.now())

    def remove_webhook_endpoint(self, endpoint_id: str) -> None:
        """Stop delivering to an endpoint; its undelivered events are dropped."""
        self.webhooks.remove_endpoint(endpoint_id)

    def deliver_events(self, *, retry_now: bool = False) -> int:
        """Deliver what is due now: new events and retries whose backoff passed (all waiting
        retries with ``retry_now``). Returns the number of HTTP attempts made.

        Failed attempts (non-2xx or no connection) are retried with exponential backoff on
        the sandbox clock. Faults apply: duplicates, delays, out-of-order delivery.
        """
        self.run_due()
        return self.webhooks.deliver(retry_now=retry_now)

    def webhook_attempts(self, event: str | None = None) -> list[dict[str, Any]]:
        """Every delivery attempt so far (oldest first): event, endpoint, at, status, error."""
        return self.webhooks.attempts(event)

    def pending_deliveries(self) -> int:
        """How many deliveries are still waiting (new or to be retried)."""
        return self.webhooks.pending()

    # --- background thread --------------------------------------------------------------

    def start_background(self, interval: float = 0.2) -> None:
        """Start a daemon thread that finishes due refreshes and delivers webhooks."""
        if self._background is not None and self._background.is_alive():
            return
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.run_due()
                    self.deliver_events()
                except Exception:
                    log.exception("The sandbox background thread hit an error; continuing.")

        self._background = threading.Thread(target=loop, name="finconn-sandbox", daemon=True)
        self._background.start()

    def stop_background(self) -> None:
        """Stop the background thread (waits for it)."""
        self._stop.set()
        if self._background is not None:
            self._background.join(timeout=5)
            self._background = None

    def close(self) -> None:
        """Stop the background thread and close the database."""
        self.stop_background()
        self.store.close()


__all__ = [
    "API_VERSION",
    "EVENT_TYPES",
    "ApiError",
    "RequestContext",
    "Sandbox",
    "SessionError",
]
