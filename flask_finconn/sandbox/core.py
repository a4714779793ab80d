"""The sandbox: state, clock, refresh and account state machines, events and webhooks."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from . import _data, institutions
from ._data import dumps as _dumps
from ._params import ApiError, invalid, not_found
from ._store import Store
from .faults import Faults, fail_after_commit
from .institutions import AccountTemplate, Institution
from .payments import SETTLEMENT_DELAY, TASK_PREFIX, Host, Payments
from .webhooks import Webhooks, WSGIApp

log = logging.getLogger("flask_finconn.sandbox")

API_VERSION = "2026-10-28.endive"
FEATURE_STATE = {
    "balance": "balance_refresh",
    "ownership": "ownership_refresh",
    "transactions": "transaction_refresh",
}
FEATURE_PERMISSION = {
    "balance": "balances",
    "ownership": "ownership",
    "transactions": "transactions",
}
REFRESHED_EVENT = {
    "balance": "financial_connections.account.refreshed_balance",
    "ownership": "financial_connections.account.refreshed_ownership",
    "transactions": "financial_connections.account.refreshed_transactions",
}
ACCOUNT_EVENT_TYPES = (
    "financial_connections.account.created",
    "financial_connections.account.deactivated",
    "financial_connections.account.reactivated",
    "financial_connections.account.disconnected",
    "financial_connections.account.refreshed_balance",
    "financial_connections.account.refreshed_ownership",
    "financial_connections.account.refreshed_transactions",
    "financial_connections.account.account_numbers_updated",
    "financial_connections.account.upcoming_account_number_expiry",
    "financial_connections.account.supported_payment_method_types_updated",
    "financial_connections.account.upcoming_deactivation",
    "financial_connections.account.expected_deactivation_date_updated",
)
AUTHORIZATION_EVENT_TYPES = (
    "financial_connections.authorization.upcoming_deactivation",
    "financial_connections.authorization.expected_deactivation_date_updated",
)
EVENT_TYPES = ACCOUNT_EVENT_TYPES + AUTHORIZATION_EVENT_TYPES
DAY = _data.DAY
REAUTH_EVENTUAL_DAYS = 30
INACTIVE_AFTER = 60
MAGIC_WORDS = ("error", "incorrect", "confirm_mfa", "mfa", "options", "security_question")


class SessionError(Exception):
    """A client secret that cannot be used: unknown, expired, or already used.

    ``code`` is ``session_unknown``, ``session_expired`` or ``session_used``; ``message``
    is a sentence fit for the modal.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class RequestContext:
    """The API request being served, stamped on the events it causes."""

    id: str | None = None
    idempotency_key: str | None = None
    livemode: bool = False


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
        self.refresh_delay = refresh_delay
        self.refresh_cooldown = refresh_cooldown
        self.session_ttl = session_ttl
        self.default_history_size = history_size
        self.faults = Faults()
        self.webhooks = Webhooks(self.store, self.now_float, self.faults)
        self._local = threading.local()
        self._background: threading.Thread | None = None
        self._stop = threading.Event()
        # Payments hook: ACH payments live in .payments and see the sandbox only through Host.
        self.payments = Payments(
            Host(
                store=self.store,
                now=self.now,
                emit=self._emit,
                schedule=self._schedule,
                customer=self.customer,
                account=self.account,
                api_base=self.api_base,
            ),
            settlement_delay=settlement_delay,
        )
        from ._api import Api

        self._api = Api(self)
        self.wsgi_app: WSGIApp = fail_after_commit(self._api.wsgi_app, self.faults)

    # --- clock --------------------------------------------------------------------------

    def _offset(self) -> float:
        return float(self.store.get_meta("clock_offset", "0") or 0)

    def now(self) -> int:
        """The sandbox clock in Unix seconds (wall time plus what ``advance_time`` added)."""
        return int(self.now_float())

    def now_float(self) -> float:
        return time.time() + self._offset()

    def advance_time(self, seconds: float) -> int:
        """Move the sandbox clock forward and run what became due. Returns the new time."""
        if seconds < 0:
            raise ValueError("The sandbox clock only moves forward; pass a positive number.")
        with self.store.tx():
            self.store.set_meta("clock_offset", repr(self._offset() + seconds))
            self.run_due()
            return self.now()

    # --- clients ------------------------------------------------------------------------

    def http_client(self) -> Any:
        """A ``stripe.HTTPClient`` that calls :attr:`wsgi_app` directly, with no socket."""
        from .transport import SandboxHTTPClient

        return SandboxHTTPClient(self.wsgi_app)

    def stripe_client(self, **kwargs: Any) -> Any:
        """A ``stripe.StripeClient`` wired to this sandbox in-process."""
        import stripe

        kwargs.setdefault("http_client", self.http_client())
        kwargs.setdefault("base_addresses", {"api": self.api_base})
        return stripe.StripeClient(kwargs.pop("api_key", self.api_key), **kwargs)

    # --- request context ----------------------------------------------------------------

    @contextlib.contextmanager
    def _request(self, ctx: RequestContext) -> Iterator[None]:
        previous = getattr(self._local, "request", None)
        self._local.request = ctx
        try:
            yield
        finally:
            self._local.request = previous

    def _ctx(self) -> RequestContext:
        ctx = getattr(self._local, "request", None)
        return ctx if ctx is not None else RequestContext()

    # --- customers ----------------------------------------------------------------------

    def create_customer(self, params: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        cus_id = _data.new_id("cus_")
        data: dict[str, Any] = {
            "id": cus_id,
            "object": "customer",
            "address": None,
            "balance": 0,
            "created": now,
            "currency": None,
            "default_source": None,
            "delinquent": False,
            "description": params.get("description"),
            "discount": None,
            "email": params.get("email"),
            "invoice_prefix": cus_id[4:12].upper(),
            "invoice_settings": {
                "custom_fields": None,
                "default_payment_method": None,
                "footer": None,
                "rendering_options": None,
            },
            "livemode": self._ctx().livemode,
            "metadata": params.get("metadata") or {},
            "name": params.get("name"),
            "next_invoice_sequence": 1,
            "phone": params.get("phone"),
            "preferred_locales": [],
            "shipping": None,
            "tax_exempt": "none",
            "test_clock": None,
        }
        self.store.execute(
            "INSERT INTO customers (id, seq, created, email, data) VALUES (?, ?, ?, ?, ?)",
            (cus_id, self.store.next_seq("customers"), now, data["email"], _dumps(data)),
        )
        return data

    def update_customer(self, cus_id: str, params: dict[str, Any]) -> dict[str, Any]:
        data = self.customer(cus_id)
        for key in ("email", "name", "phone", "description"):
            if key in params:
                data[key] = params[key] or None
        if "metadata" in params:
            merged = {**data["metadata"], **(params["metadata"] or {})}
            data["metadata"] = {k: v for k, v in merged.items() if v != ""}
        if params.get("metadata") == {}:
            data["metadata"] = {}
        self.store.execute(
            "UPDATE customers SET email = ?, data = ? WHERE id = ?",
            (data["email"], _dumps(data), cus_id),
        )
        return data

    def customer(self, cus_id: str, *, param: str = "id", status: int = 404) -> dict[str, Any]:
        """The customer as the API returns it (raises :class:`ApiError` if there is none)."""
        with self.store.tx(write=False):
            row = self.store.one("SELECT data FROM customers WHERE id = ?", (cus_id,))
        if row is None:
            raise not_found("customer", cus_id, param=param, status=status)
        return dict(json.loads(row[0]))

    # --- sessions -----------------------------------------------------------------------

    def create_session(self, params: dict[str, Any]) -> dict[str, Any]:
        holder = params["account_holder"]
        kind = holder["type"]
        needed, forbidden = (
            (("customer", "customer_account"), ("account",))
            if kind == "customer"
            else (("account",), ("customer", "customer_account"))
        )
        if not any(holder.get(key) for key in needed):
            raise invalid(
                f"account_holder[{needed[0]}] is required when account_holder[type] is {kind}.",
                param=f"account_holder[{needed[0]}]",
                code="parameter_missing",
            )
        for key in forbidden:
            if holder.get(key):
                raise invalid(
                    f"account_holder[{key}] cannot be set when account_holder[type] is {kind}.",
                    param=f"account_holder[{key}]",
                )
        if holder.get("customer"):
            self.customer(holder["customer"], param="account_holder[customer]", status=400)
        permissions = params["permissions"]
        if not permissions:
            raise invalid(
                "permissions must list at least one permission.",
                param="permissions",
                code="parameter_missing",
            )
        now = self.now()
        sess_id = _data.new_id("fcsess_")
        filters = params.get("filters") or {}
        data: dict[str, Any] = {
            "id": sess_id,
            "object": "financial_connections.session",
            "account_holder": {k: v for k, v in holder.items() if v},
            "accounts": {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": "/v1/financial_connections/accounts",
            },
            "client_secret": _data.new_id("fcsess_client_secret_"),
            "filters": {
                "account_subcategories": filters.get("account_subcategories") or None,
                "country": filters.get("country") or "US",
            },
            "livemode": self._ctx().livemode,
            "permissions": _unique(permissions),
            "prefetch": _unique(params.get("prefetch") or []),
        }
        if filters.get("require_payment_method_support"):
            data["filters"]["require_payment_method_support"] = filters[
                "require_payment_method_support"
            ]
        limits = params.get("limits")
        if limits and limits.get("accounts") is not None:
            if limits["accounts"] < 1:
                raise invalid(
                    "limits[accounts] must be at least 1.",
                    param="limits[accounts]",
                    code="parameter_invalid_integer",
                )
            data["limits"] = {"accounts": limits["accounts"]}
        if params.get("manual_entry"):
            data["manual_entry"] = params["manual_entry"]
        if params.get("return_url"):
            data["return_url"] = params["return_url"]
        self.store.execute(
            "INSERT INTO sessions (id, seq, created, client_secret, state, expires_at, data, "
            "internal) VALUES (?, ?, ?, ?, 'open', ?, ?, '{}')",
            (
                sess_id,
                self.store.next_seq("sessions"),
                now,
                data["client_secret"],
                now + self.session_ttl,
                _dumps(data),
            ),
        )
        return data

    def _session_row(
        self, sess_id: str, *, param: str = "session"
    ) -> tuple[dict[str, Any], str, int]:
        row = self.store.one(
            "SELECT data, state, expires_at FROM sessions WHERE id = ?", (sess_id,)
        )
        if row is None:
            raise not_found("financial connections session", sess_id, param=param)
        return json.loads(row[0]), row[1], row[2]

    def session(self, sess_id: str) -> dict[str, Any]:
        """The session as the API returns it, with its linked accounts."""
        with self.store.tx(write=False):
            data, _, _ = self._session_row(sess_id)
            rows = self.store.all(
                "SELECT data FROM accounts WHERE session = ? ORDER BY seq DESC LIMIT 101",
                (sess_id,),
            )
        data["accounts"]["data"] = [json.loads(r[0]) for r in rows[:100]]
        data["accounts"]["has_more"] = len(rows) > 100
        return data

    def session_for_client_secret(self, client_secret: str) -> dict[str, Any]:
        """The open session this client secret belongs to.

        Raises :class:`SessionError` when the secret is unknown, expired or already used
        (completed or cancelled), which is when Stripe.js fails to launch.
        """
        with self.store.tx(write=False):
            row = self.store.one(
                "SELECT id, state, expires_at FROM sessions WHERE client_secret = ?",
                (client_secret or "",),
            )
            if row is None:
                raise SessionError(
                    "session_unknown", "This link session does not exist. Start a new one."
                )
            if row[1] != "open":
                raise SessionError(
                    "session_used", "This link session was already used. Start a new one."
                )
            if row[2] <= self.now():
                raise SessionError(
                    "session_expired", "This link session has expired. Start a new one."
                )
            return self.session(row[0])

    def expire_session(self, sess_id: str) -> None:
        """Make a session's client secret unusable, as if it had timed out."""
        with self.store.tx():
            self._session_row(sess_id)
            self.store.execute(
                "UPDATE sessions SET expires_at = ? WHERE id = ?", (self.now(), sess_id)
            )

    def institutions(self, query: str | None = None) -> list[dict[str, Any]]:
        """Institutions for the modal: featured first, filtered by a search string."""
        return [i.as_dict() for i in institutions.search(query)]

    def institution_accounts(self, client_secret: str, institution: str) -> list[dict[str, Any]]:
        """The accounts ``institution`` offers in this session, each selectable or not."""
        session = self.session_for_client_secret(client_secret)
        inst = self._institution(institution)
        return self._offer(inst, session)

    def _institution(self, institution: str) -> Institution:
        inst = institutions.get(institution)
        if inst is None:
            raise invalid(
                f"No such institution: '{institution}'",
                param="institution",
                code="resource_missing",
            )
        return inst

    def _offer(self, inst: Institution, session: dict[str, Any]) -> list[dict[str, Any]]:
        subcategories = session["filters"].get("account_subcategories")
        needs_ach = "payment_method" in session["permissions"] or session["filters"].get(
            "require_payment_method_support"
        ) in ("all",)
        offered = []
        for template in inst.accounts:
            reason = None
            if subcategories and template.subcategory not in subcategories:
                reason = "This account type isn't supported here."
            elif needs_ach and "us_bank_account" not in template.supported_payment_method_types:
                reason = "This account can't be used for ACH payments."
            offered.append(template.as_dict(disabled_reason=reason))
        return offered

    def login(
        self,
        client_secret: str,
        institution: str,
        username: str = "",
        password: str = "",
        answer: str | None = None,
    ) -> dict[str, Any]:
        """Log in to a test institution for the modal.

        Returns ``{"status": "ok", "accounts": [...]}``, a further prompt
        (``{"status": "mfa" | "options" | "security_question", "prompt": ..., ...}``; send
        the reply as ``answer``), or ``{"status": "error", "code", "message", "retry"}``.
        Magic words in the password or answer (reference §7): ``mfa``/``confirm_mfa``,
        ``options``, ``security_question``, ``error`` (ends the attempt), ``incorrect``.
        """
        session = self.session_for_client_secret(client_secret)
        inst = institutions.get(institution)
        if inst is None:
            return _login_error("institution_unknown", "That bank isn't available.", retry=False)
        if inst.status != "up":
            code = {
                "down_scheduled": "institution_unavailable_planned",
                "down_unscheduled": "institution_unavailable_unplanned",
            }.get(inst.status, "institution_timeout")
            return _login_error(
                code, inst.status_message or "This bank is unavailable.", retry=False
            )
        if inst.auth == "credentials":
            word = _magic(answer) if answer is not None else _magic(password)
            if answer is None and not (username or password):
                return _login_error(
                    "credentials_missing", "Enter your username and password.", retry=True
                )
            if word == "error":
                return _login_error(
                    "authorization_failed",
                    "Something went wrong logging in to this bank. Try another bank.",
                    retry=False,
                )
            if word == "incorrect":
                return _login_error(
                    "incorrect_credentials",
                    "The username or password is incorrect. Try again.",
                    retry=True,
                )
            if answer is None and word in ("mfa", "confirm_mfa"):
                return {"status": "mfa", "prompt": "Enter the 6-digit code we sent to your phone."}
            if answer is None and word == "options":
                return {
                    "status": "options",
                    "prompt": "Where should we send your verification code?",
                    "options": ["Text to (***) ***-5555", "Email to j***@example.com"],
                }
            if answer is None and word == "security_question":
                return {
                    "status": "security_question",
                    "prompt": "What was the name of your first pet?",
                }
        return {"status": "ok", "accounts": self._offer(inst, session)}

    def complete_session_with(
        self, client_secret: str, institution: str, account_keys: list[str] | None
    ) -> dict[str, Any]:
        """Attach the chosen accounts of ``institution`` to the session behind this secret."""
        session = self.session_for_client_secret(client_secret)
        return self.complete_session(session["id"], institution=institution, accounts=account_keys)

    def complete_session(
        self,
        session_id: str,
        institution: str = "bank_nonoauth",
        accounts: list[str] | None = None,
    ) -> dict[str, Any]:
        """Finish the linking flow headlessly: link ``accounts`` (template keys; None: all
        selectable) of ``institution`` to the session. Returns the session."""
        with self.store.tx():
            self.run_due()
            session, state, expires_at = self._session_row(session_id, param="session")
            if state != "open":
                raise invalid(
                    f"The session {session_id} was already {state}; start a new session.",
                    param="session",
                    code="session_already_used",
                )
            if expires_at <= self.now():
                raise invalid(
                    f"The session {session_id} has expired; start a new session.",
                    param="session",
                    code="session_expired",
                )
            inst = self._institution(institution)
            if inst.status != "up":
                raise invalid(
                    f"{inst.name} is unavailable: {inst.status_message}",
                    param="institution",
                    code="institution_unavailable",
                )
            offered = {o["key"]: o for o in self._offer(inst, session)}
            if accounts is None:
                chosen = [k for k, o in offered.items() if o["selectable"]]
            else:
                chosen = _unique(accounts)
                for i, key in enumerate(chosen):
                    if key not in offered:
                        raise invalid(
                            f"{inst.name} has no account '{key}'. Choose from: "
                            f"{', '.join(offered)}.",
                            param=f"accounts[{i}]",
                            code="resource_missing",
                        )
                    if not offered[key]["selectable"]:
                        raise invalid(
                            f"The account '{key}' cannot be linked in this session: "
                            f"{offered[key]['disabled_reason']}",
                            param=f"accounts[{i}]",
                        )
            limit = (session.get("limits") or {}).get("accounts")
            if limit is not None and len(chosen) > limit:
                raise invalid(
                    f"This session allows at most {limit} account(s); {len(chosen)} were chosen.",
                    param="accounts",
                )
            now = self.now()
            authorization = _data.new_id("fcauth_")
            for key in chosen:
                template = inst.template(key)
                assert template is not None
                self._link_account(session, inst, template, authorization, now)
            self.store.execute(
                "UPDATE sessions SET state = 'completed' WHERE id = ?", (session_id,)
            )
            return self.session(session_id)

    def cancel_session(self, session_id: str) -> dict[str, Any]:
        """End the flow as if the user closed the modal: no accounts. Returns the session."""
        with self.store.tx():
            _, state, _ = self._session_row(session_id, param="session")
            if state != "open":
                raise invalid(
                    f"The session {session_id} was already {state}; start a new session.",
                    param="session",
                    code="session_already_used",
                )
            self.store.execute(
                "UPDATE sessions SET state = 'cancelled' WHERE id = ?", (session_id,)
            )
            return self.session(session_id)

    def _link_account(
        self,
        session: dict[str, Any],
        inst: Institution,
        template: AccountTemplate,
        authorization: str,
        now: int,
    ) -> None:
        acct_id = _data.new_id("fca_")
        holder = session["account_holder"]
        owner = holder.get("customer") or holder.get("customer_account")
        # Linking again an account of this holder that the bank cut off is a relink, and
        # "a relink restores them" (reference §7): the new connection stays active.
        relinked = inst.deactivation is not None and self._was_cut_off(owner, inst, template)
        data: dict[str, Any] = {
            "id": acct_id,
            "object": "financial_connections.account",
            "account_holder": holder,
            "account_numbers": None,
            "balance": None,
            "balance_refresh": None,
            "category": template.category,
            "created": now,
            "display_name": template.display_name,
            "institution_name": inst.name,
            "last4": template.last4,
            "livemode": session["livemode"],
            "ownership": None,
            "ownership_refresh": None,
            "permissions": list(session["permissions"]),
            "status": "active",
            "status_details": None,
            "subcategory": template.subcategory,
            "subscriptions": [],
            "supported_payment_method_types": list(template.supported_payment_method_types),
            "transaction_refresh": None,
        }
        internal: dict[str, Any] = {
            "institution": inst.id,
            "template": template.key,
            "owners": template.owners,
            "authorization": authorization,
            "balance_count": 0,
            "txn_generation": 0,
            "txn_until": None,
            "history_size": self.default_history_size,
            "relinked": relinked,
        }
        self.store.execute(
            "INSERT INTO accounts (id, seq, created, session, customer, holder_account, data, "
            "internal) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                acct_id,
                self.store.next_seq("accounts"),
                now,
                session["id"],
                holder.get("customer") or holder.get("customer_account"),
                holder.get("account"),
                _dumps(data),
                _dumps(internal),
            ),
        )
        self._emit("financial_connections.account.created", data, now)
        if inst.deactivation in ("inactive", "reauth_immediate") and not relinked:
            self._schedule(now + INACTIVE_AFTER, "deactivate", acct_id)
        elif inst.deactivation == "reauth_eventual":
            self._expect_deactivation(data, internal, now + REAUTH_EVENTUAL_DAYS * DAY, now)
            self._save_account(data, internal)
        prefetch = {"balances": "balance", "ownership": "ownership", "transactions": "transactions"}
        for permission in session["prefetch"]:
            feature = prefetch[permission]
            if FEATURE_PERMISSION[feature] in data["permissions"]:
                self._start_refresh(data, internal, feature, now)
        self._save_account(data, internal)

    def _was_cut_off(self, owner: str | None, inst: Institution, template: AccountTemplate) -> bool:
        """Whether this holder linked the same test account before and it went inactive."""
        if owner is None:
            return False
        for data, internal in self.store.all(
            "SELECT data, internal FROM accounts WHERE customer = ?", (owner,)
        ):
            before, state = json.loads(internal), json.loads(data)
            if (
                before["institution"] == inst.id
                and before["template"] == template.key
                and state["status"] == "inactive"
            ):
                return True
        return False

    # --- accounts -----------------------------------------------------------------------

    def _account_row(
        self, acct_id: str, *, param: str = "account", status: int = 404
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        row = self.store.one("SELECT data, internal FROM accounts WHERE id = ?", (acct_id,))
        if row is None:
            raise not_found("financial connections account", acct_id, param=param, status=status)
        return json.loads(row[0]), json.loads(row[1])

    def account(self, acct_id: str) -> dict[str, Any]:
        """The account as the API returns it (no expansions)."""
        with self.store.tx(write=False):
            return self._account_row(acct_id)[0]

    def _save_account(self, data: dict[str, Any], internal: dict[str, Any]) -> None:
        self.store.execute(
            "UPDATE accounts SET data = ?, internal = ? WHERE id = ?",
            (_dumps(data), _dumps(internal), data["id"]),
        )

    def refresh_account(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        data, internal = self._account_row(acct_id)
        self._require_active(data, "refreshed")
        features = _unique(features)
        for i, feature in enumerate(features):
            permission = FEATURE_PERMISSION[feature]
            if permission not in (data["permissions"] or []):
                raise invalid(
                    f"The account {acct_id} was linked without the '{permission}' permission, so "
                    f"'{feature}' cannot be refreshed. Link it again in a session that asks for "
                    f"'{permission}'.",
                    param=f"features[{i}]",
                )
        now = self.now()
        for feature in features:
            self._start_refresh(data, internal, feature, now)
        self._save_account(data, internal)
        return data

    def subscribe(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        data, internal = self._account_row(acct_id)
        self._require_active(data, "subscribed to")
        if "transactions" not in (data["permissions"] or []):
            raise invalid(
                f"The account {acct_id} was linked without the 'transactions' permission, so it "
                "cannot be subscribed to transactions.",
                param="features[0]",
            )
        if "transactions" not in data["subscriptions"]:
            now = self.now()
            data["subscriptions"] = ["transactions"]
            self._start_refresh(data, internal, "transactions", now)
            self.store.execute("DELETE FROM tasks WHERE account = ? AND kind = 'daily'", (acct_id,))
            self._schedule(now + DAY, "daily", acct_id)
            self._save_account(data, internal)
        return data

    def unsubscribe(self, acct_id: str, features: list[str]) -> dict[str, Any]:
        data, internal = self._account_row(acct_id)
        if data["status"] == "disconnected":
            self._require_active(data, "unsubscribed from")
        data["subscriptions"] = []
        self.store.execute("DELETE FROM tasks WHERE account = ? AND kind = 'daily'", (acct_id,))
        self._save_account(data, internal)
        return data

    def disconnect(self, acct_id: str) -> dict[str, Any]:
        data, internal = self._account_row(acct_id)
        if data["status"] != "disconnected":
            self._disconnect(data, internal, self.now())
        return data

    def _disconnect(self, data: dict[str, Any], internal: dict[str, Any], now: int) -> None:
        data["status"] = "disconnected"
        data["status_details"] = None
        data["balance"] = None
        data["subscriptions"] = []
        for key in FEATURE_STATE.values():
            state = data.get(key)
            if state:
                if state["status"] == "pending":
                    state["status"] = "failed"
                state["next_refresh_available_at"] = None
        self.store.execute("DELETE FROM tasks WHERE account = ?", (data["id"],))
        self._save_account(data, internal)
        self._emit("financial_connections.account.disconnected", data, now)

    def _require_active(self, data: dict[str, Any], verb: str) -> None:
        if data["status"] != "active":
            raise invalid(
                f"The account {data['id']} is {data['status']} and cannot be {verb}. "
                + (
                    "Ask the account holder to link it again."
                    if data["status"] == "disconnected"
                    else "Ask the account holder to relink it (status_details shows the action)."
                ),
                code="financial_connections_account_inactive",
                param="account",
            )

    def _start_refresh(
        self, data: dict[str, Any], internal: dict[str, Any], feature: str, now: int
    ) -> bool:
        key = FEATURE_STATE[feature]
        state = data.get(key)
        if state is not None:
            available = state.get("next_refresh_available_at")
            # Too early: like Stripe, nothing is started and the account comes back unchanged.
            if state["status"] == "pending" or available is None or available > now:
                return False
        new: dict[str, Any] = {
            "last_attempted_at": now,
            "next_refresh_available_at": None,
            "status": "pending",
        }
        if feature == "transactions":
            ref_id = _data.new_id("fctxnref_")
            self.store.execute(
                "INSERT INTO txn_refreshes (id, account, created) VALUES (?, ?, ?)",
                (ref_id, data["id"], now),
            )
            new = {"id": ref_id, **new}
        data[key] = new
        self._schedule(now + self.refresh_delay, "refresh", data["id"], {"feature": feature})
        return True

    def _schedule(
        self, due_at: float, kind: str, account: str, extra: dict[str, Any] | None = None
    ) -> None:
        self.store.execute(
            "INSERT INTO tasks (due_at, kind, account, data) VALUES (?, ?, ?, ?)",
            (due_at, kind, account, _dumps(extra or {})),
        )

    # --- what becomes due ---------------------------------------------------------------

    def run_due(self) -> int:
        """Run every task whose time has come, oldest first, each at its own due time.

        Returns how many ran. API requests call this first, so results do not depend on a
        background thread.
        """
        now = self.now_float()
        if self.store.one("SELECT 1 FROM tasks WHERE due_at <= ? LIMIT 1", (now,)) is None:
            return 0
        ran = 0
        with self.store.tx():
            while True:
                row = self.store.one(
                    "SELECT id, due_at, kind, account, data FROM tasks WHERE due_at <= ? "
                    "ORDER BY due_at, id LIMIT 1",
                    (now,),
                )
                if row is None:
                    return ran
                self.store.execute("DELETE FROM tasks WHERE id = ?", (row[0],))
                with self._request(RequestContext()):
                    self._run_task(row[2], row[3], json.loads(row[4]), int(row[1]))
                ran += 1

    def _run_task(self, kind: str, acct_id: str, extra: dict[str, Any], at: int) -> None:
        if kind.startswith(TASK_PREFIX):  # payments hook: the key is an intent id
            self.payments.run_task(kind, acct_id, extra, at)
            return
        row = self.store.one("SELECT data, internal FROM accounts WHERE id = ?", (acct_id,))
        if row is None:
            return
        data, internal = json.loads(row[0]), json.loads(row[1])
        if kind == "refresh":
            self._finish_refresh(data, internal, extra["feature"], at, extra.get("status"))
        elif kind == "daily":
            if data["status"] == "active" and "transactions" in data["subscriptions"]:
                self._start_refresh(data, internal, "transactions", at)
                self._save_account(data, internal)
            if data["status"] != "disconnected" and "transactions" in data["subscriptions"]:
                self._schedule(at + DAY, "daily", acct_id)
        elif kind == "deactivate" and data["status"] == "active":
            self._deactivate(data, internal, at)

    def finish_refreshes(self, account: str | None = None, status: str = "succeeded") -> int:
        """Finish pending refreshes now (of one account, or all) with ``status``.

        Returns how many finished.
        """
        if status not in ("succeeded", "failed"):
            raise ValueError("status must be 'succeeded' or 'failed'.")
        with self.store.tx():
            self.run_due()
            if account is not None:
                self._account_row(account)
                rows = self.store.all(
                    "SELECT id, account, data FROM tasks WHERE kind = 'refresh' AND account = ? "
                    "ORDER BY due_at, id",
                    (account,),
                )
            else:
                rows = self.store.all(
                    "SELECT id, account, data FROM tasks WHERE kind = 'refresh' ORDER BY due_at, id"
                )
            now = self.now()
            for task_id, acct_id, extra in rows:
                self.store.execute("DELETE FROM tasks WHERE id = ?", (task_id,))
                data, internal = self._account_row(acct_id)
                with self._request(RequestContext()):
                    self._finish_refresh(data, internal, json.loads(extra)["feature"], now, status)
                self._save_account(data, internal)
            return len(rows)

    def _finish_refresh(
        self,
        data: dict[str, Any],
        internal: dict[str, Any],
        feature: str,
        at: int,
        status: str | None,
    ) -> None:
        key = FEATURE_STATE[feature]
        state = data.get(key)
        if not state or state["status"] != "pending":
            return
        if data["status"] != "active":
            state.update(status="failed", next_refresh_available_at=None)
            self._save_account(data, internal)
            self._emit(REFRESHED_EVENT[feature], data, at)
            return
        inst = institutions.get(internal["institution"])
        deactivates = (
            inst is not None
            and inst.deactivation in ("inactive", "reauth_immediate")
            and not internal.get("relinked")
        )
        if deactivates:
            status = "failed"
        status = status or "succeeded"
        if status == "succeeded":
            if feature == "balance":
                internal["balance_count"] += 1
                previous = (data.get("balance") or {}).get("as_of")
                data["balance"] = _data.balance(
                    data["id"], data["category"], data["subcategory"], internal["balance_count"], at
                )
                # A newer reading is never as of an earlier time than the last one (hosts
                # chart and order snapshots by as_of).
                if previous is not None:
                    data["balance"]["as_of"] = max(data["balance"]["as_of"], previous + 1)
            elif feature == "ownership":
                data["ownership"] = self._new_ownership(data["id"], internal["owners"], at)
            else:
                self._refresh_transactions(data, internal, state["id"], at)
        state.update(status=status, next_refresh_available_at=at + self.refresh_cooldown)
        self._save_account(data, internal)
        self._emit(REFRESHED_EVENT[feature], data, at)
        if deactivates:
            self._deactivate(data, internal, at)

    def _new_ownership(self, acct_id: str, variant: str, at: int) -> str:
        own_id = _data.new_id("fcaowns_")
        self.store.execute(
            "INSERT INTO ownerships (id, account, created) VALUES (?, ?, ?)", (own_id, acct_id, at)
        )
        seq = self.store.next_seq("owners")
        for i, owner in enumerate(_data.owners(variant)):
            body = {
                "id": _data.new_id("fcaown_"),
                "object": "financial_connections.account_owner",
                **owner,
                "ownership": own_id,
                "refreshed_at": at,
            }
            self.store.execute(
                "INSERT INTO owners (id, seq, ownership, data) VALUES (?, ?, ?, ?)",
                (body["id"], seq + i, own_id, _dumps(body)),
            )
        return own_id

    def _refresh_transactions(
        self, data: dict[str, Any], internal: dict[str, Any], ref_id: str, at: int
    ) -> None:
        acct_id = data["id"]
        ref_seq = self.store.one("SELECT seq FROM txn_refreshes WHERE id = ?", (ref_id,))[0]
        livemode = data["livemode"]
        generation = internal["txn_generation"] = internal["txn_generation"] + 1
        # Pending rows from earlier refreshes settle: most post, some are voided.
        pending = self.store.all(
            "SELECT id, transacted_at, amount, description FROM transactions "
            "WHERE account = ? AND status = 'pending'",
            (acct_id,),
        )
        updates = []
        for txn_id, transacted_at, amount, description in pending:
            voided = _data.seed_of(txn_id, "void") % 5 == 0
            status = "void" if voided else "posted"
            body = _data.transaction_body(
                txn_id,
                acct_id,
                amount,
                description,
                status,
                transacted_at,
                None if voided else at,
                at if voided else None,
                ref_id,
                at,
                livemode,
            )
            updates.append((status, ref_seq, body, txn_id))
        self.store.executemany(
            "UPDATE transactions SET status = ?, refresh_seq = ?, body = ? WHERE id = ?", updates
        )
        until = internal.get("txn_until")
        size = internal.get("history_size")
        if until is None:
            start = at - _data.HISTORY_DAYS * DAY
            count = size if size is not None else int(_data.HISTORY_DAYS * _data.DEFAULT_DAILY_RATE)
        else:
            start = until
            rate = (size / _data.HISTORY_DAYS) if size is not None else _data.DEFAULT_DAILY_RATE
            days = (at - until) / DAY
            count = int(days * rate + (_data.seed_of(acct_id, str(generation)) % 1000) / 1000)
            if size is not None:
                have = self.store.one(
                    "SELECT COUNT(*) FROM transactions WHERE account = ?", (acct_id,)
                )[0]
                count = max(count, size - have)
        # A few of the newest purchases are still pending; later refreshes settle them.
        fresh = min(count, 2 + generation % 2)
        rows = []
        for pending_now, batch in (
            (
                False,
                _data.generate_transactions(
                    acct_id, data["category"], start, at, count - fresh, generation
                ),
            ),
            (
                True,
                _data.generate_transactions(
                    acct_id, data["category"], max(start, at - DAY), at, fresh, -generation
                ),
            ),
        ):
            for txn_id, transacted_at, amount, description in batch:
                status = "pending" if pending_now else "posted"
                body = _data.transaction_body(
                    txn_id,
                    acct_id,
                    amount,
                    description,
                    status,
                    transacted_at,
                    None if pending_now else min(transacted_at + 3600, at),
                    None,
                    ref_id,
                    at,
                    livemode,
                )
                rows.append(
                    (txn_id, acct_id, transacted_at, status, ref_seq, amount, description, body)
                )
        self.store.executemany(
            "INSERT INTO transactions (id, account, transacted_at, status, refresh_seq, amount, "
            "description, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        internal["txn_until"] = at

    def set_history_size(self, account: str, size: int) -> None:
        """Give ``account`` about ``size`` transactions: the next transaction refresh fills
        the history up to that many rows (100k+ is fine; rows are written in bulk)."""
        if size < 0:
            raise ValueError("size must be zero or more.")
        with self.store.tx():
            data, internal = self._account_row(account)
            internal["history_size"] = size
            self._save_account(data, internal)

    # --- account status -----------------------------------------------------------------

    def _deactivate(
        self,
        data: dict[str, Any],
        internal: dict[str, Any],
        at: int,
        *,
        action: str = "relink_required",
    ) -> None:
        data["status"] = "inactive"
        data["status_details"] = {
            "inactive": {
                "action": action,
                "cause": "access_expired" if action == "relink_required" else "unspecified",
            }
        }
        for key in FEATURE_STATE.values():
            state = data.get(key)
            if state:
                if state["status"] == "pending":
                    state["status"] = "failed"
                state["next_refresh_available_at"] = None
        self.store.execute(
            "DELETE FROM tasks WHERE account = ? AND kind IN ('refresh', 'deactivate')",
            (data["id"],),
        )
        self._save_account(data, internal)
        self._emit("financial_connections.account.deactivated", data, at)

    def _expect_deactivation(
        self, data: dict[str, Any], internal: dict[str, Any], when: int, at: int
    ) -> None:
        previous = (data.get("status_details") or {}).get("active")
        data["status_details"] = {
            "active": {
                "action": "relink_required",
                "cause": "access_expired",
                "expected_deactivation_date": when,
            }
        }
        self.store.execute(
            "DELETE FROM tasks WHERE account = ? AND kind = 'deactivate'", (data["id"],)
        )
        self._schedule(when, "deactivate", data["id"])
        self._save_account(data, internal)
        if previous:
            self._emit("financial_connections.account.expected_deactivation_date_updated", data, at)
        else:
            self._emit("financial_connections.account.upcoming_deactivation", data, at)
            self._emit(
                "financial_connections.authorization.upcoming_deactivation",
                self._authorization(data, internal),
                at,
            )

    def _authorization(self, data: dict[str, Any], internal: dict[str, Any]) -> dict[str, Any]:
        active = (data.get("status_details") or {}).get("active")
        details: dict[str, Any]
        if data["status"] == "active":
            details = {
                "active": {
                    "action": active["action"] if active else "none",
                    "expected_deactivation_date": active["expected_deactivation_date"]
                    if active
                    else None,
                }
            }
        else:
            details = {"inactive": {"action": "relink_required"}}
        return {
            "id": internal["authorization"],
            "object": "financial_connections.authorization",
            "institution_name": data["institution_name"],
            "livemode": data["livemode"],
            "status": "active" if data["status"] == "active" else "inactive",
            "status_details": details,
        }

    def deactivate(self, account: str, *, action: str = "relink_required") -> dict[str, Any]:
        """Make an active account inactive (``action``: ``relink_required`` or ``none``)."""
        if action not in ("relink_required", "none"):
            raise ValueError("action must be 'relink_required' or 'none'.")
        with self.store.tx():
            self.run_due()
            data, internal = self._account_row(account)
            if data["status"] != "active":
                raise invalid(
                    f"The account {account} is {data['status']}; only active accounts can be "
                    "deactivated.",
                    param="account",
                )
            self._deactivate(data, internal, self.now(), action=action)
            return data

    def reactivate(self, account: str) -> dict[str, Any]:
        """Make an inactive account active again, as a successful relink does."""
        with self.store.tx():
            self.run_due()
            data, internal = self._account_row(account)
            if data["status"] != "inactive":
                raise invalid(
                    f"The account {account} is {data['status']}; only inactive accounts can be "
                    "reactivated.",
                    param="account",
                )
            now = self.now()
            data["status"] = "active"
            data["status_details"] = None
            internal["relinked"] = True
            for key in FEATURE_STATE.values():
                state = data.get(key)
                if state:
                    state["next_refresh_available_at"] = now
            self._save_account(data, internal)
            self._emit("financial_connections.account.reactivated", data, now)
            inst = institutions.get(internal["institution"])
            if inst is not None and inst.deactivation == "reauth_immediate":
                self._expect_deactivation(data, internal, now + DAY, now)
            elif inst is not None and inst.deactivation == "reauth_eventual":
                self._expect_deactivation(data, internal, now + REAUTH_EVENTUAL_DAYS * DAY, now)
            return data

    def disconnect_by_user(self, account: str) -> dict[str, Any]:
        """Disconnect an account as the end user would (from their bank or Link)."""
        with self.store.tx():
            self.run_due()
            data, internal = self._account_row(account)
            if data["status"] != "disconnected":
                with self._request(RequestContext(livemode=data["livemode"])):
                    self._disconnect(data, internal, self.now())
            return data

    def fire_event(self, account: str, type: str) -> dict[str, Any]:
        """Create an event of any FC type for an account (its current snapshot). Returns it."""
        if type not in EVENT_TYPES:
            raise invalid(
                f"Unknown event type '{type}'. Use one of: {', '.join(EVENT_TYPES)}.",
                param="type",
                code="parameter_invalid_string",
            )
        with self.store.tx():
            self.run_due()
            data, internal = self._account_row(account)
            obj = self._authorization(data, internal) if type in AUTHORIZATION_EVENT_TYPES else data
            return self._emit(type, obj, self.now())

    # --- events and webhooks ------------------------------------------------------------

    def _emit(self, type: str, obj: dict[str, Any], at: int) -> dict[str, Any]:
        ctx = self._ctx()
        endpoints = self.webhooks.endpoint_ids()
        event = {
            "id": _data.new_id("evt_"),
            "object": "event",
            "api_version": API_VERSION,
            "created": at,
            "data": {"object": obj},
            "livemode": obj.get("livemode", False),
            "pending_webhooks": len(endpoints),
            "request": {"id": ctx.id, "idempotency_key": ctx.idempotency_key},
            "type": type,
        }
        account = obj["id"] if obj.get("object") == "financial_connections.account" else None
        self.store.execute(
            "INSERT INTO events (id, created, type, account, body) VALUES (?, ?, ?, ?, ?)",
            (event["id"], at, type, account, _dumps(event)),
        )
        self.webhooks.enqueue(event["id"], endpoints)
        return event

    def event(self, event_id: str) -> dict[str, Any]:
        with self.store.tx(write=False):
            row = self.store.one("SELECT body FROM events WHERE id = ?", (event_id,))
            if row is None:
                raise not_found("event", event_id)
            return dict(json.loads(row[0]))

    def events(self, type: str | None = None, account: str | None = None) -> list[dict[str, Any]]:
        """Every event so far, oldest first, optionally of one type or for one account."""
        sql, args = "SELECT body FROM events WHERE 1 = 1", []
        if type:
            sql += " AND type = ?"
            args.append(type)
        if account:
            sql += " AND account = ?"
            args.append(account)
        with self.store.tx(write=False):
            return [json.loads(r[0]) for r in self.store.all(sql + " ORDER BY seq", args)]

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
        self.stop_background()
        self.store.close()


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _magic(text: str | None) -> str | None:
    lowered = (text or "").lower()
    return next((w for w in MAGIC_WORDS if w in lowered), None)


def _login_error(code: str, message: str, *, retry: bool) -> dict[str, Any]:
    return {"status": "error", "code": code, "message": message, "retry": retry}


__all__ = ["ApiError", "RequestContext", "Sandbox", "SessionError"]
