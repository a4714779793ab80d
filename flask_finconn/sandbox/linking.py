"""Linking: Financial Connections sessions, the test institutions' modal login, and the
accounts a completed session links.

A session is ``open`` until completed or cancelled, and its client secret works once and
for ``session_ttl`` sandbox seconds. The browser half drives :meth:`Linking.login` and
:meth:`Linking.complete_session_with`; tests may call :meth:`Linking.complete_session`.
"""

from __future__ import annotations

import json
from typing import Any

from . import _data, institutions
from ._data import dumps as _dumps
from ._kernel import Kernel
from ._params import invalid, not_found
from .accounts import FEATURE_PERMISSION, Accounts
from .customers import Customers
from .events import Events
from .institutions import AccountTemplate, Institution
from .refreshes import Refreshes

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


class Linking:
    """Sessions, the modal's login, and linking accounts."""

    def __init__(
        self,
        kernel: Kernel,
        events: Events,
        customers: Customers,
        accounts: Accounts,
        refreshes: Refreshes,
    ) -> None:
        self.kernel = kernel
        self.store = kernel.store
        self.events = events
        self.customers = customers
        self.accounts = accounts
        self.refreshes = refreshes

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
            self.customers.get(holder["customer"], param="account_holder[customer]", status=400)
        permissions = params["permissions"]
        if not permissions:
            raise invalid(
                "permissions must list at least one permission.",
                param="permissions",
                code="parameter_missing",
            )
        now = self.kernel.now()
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
            "livemode": self.kernel.ctx().livemode,
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
                now + self.kernel.settings.session_ttl,
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
            if row[2] <= self.kernel.now():
                raise SessionError(
                    "session_expired", "This link session has expired. Start a new one."
                )
            return self.session(row[0])

    def expire_session(self, sess_id: str) -> None:
        """Make a session's client secret unusable, as if it had timed out."""
        with self.store.tx():
            self._session_row(sess_id)
            self.store.execute(
                "UPDATE sessions SET expires_at = ? WHERE id = ?", (self.kernel.now(), sess_id)
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
        Magic words in the password or answer, as Stripe's test institutions take them:
        ``mfa``/``confirm_mfa``, ``options``, ``security_question``, ``error`` (ends the
        attempt), ``incorrect``.
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
            self.kernel.run_due()
            session, state, expires_at = self._session_row(session_id, param="session")
            if state != "open":
                raise invalid(
                    f"The session {session_id} was already {state}; start a new session.",
                    param="session",
                    code="session_already_used",
                )
            if expires_at <= self.kernel.now():
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
            now = self.kernel.now()
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
        # Linking again an account of this holder that the bank cut off is a relink, which
        # restores access: the new connection stays active and is not cut off again.
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
            "history_size": self.kernel.settings.history_size,
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
        self.events.emit("financial_connections.account.created", data, now)
        self.accounts.schedule_cutoff(data, internal, now, relinked=relinked)
        prefetch = {"balances": "balance", "ownership": "ownership", "transactions": "transactions"}
        for permission in session["prefetch"]:
            feature = prefetch[permission]
            if FEATURE_PERMISSION[feature] in data["permissions"]:
                self.refreshes.start(data, internal, feature, now)
        self.accounts.save(data, internal)

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


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _magic(text: str | None) -> str | None:
    lowered = (text or "").lower()
    return next((w for w in MAGIC_WORDS if w in lowered), None)


def _login_error(code: str, message: str, *, retry: bool) -> dict[str, Any]:
    return {"status": "error", "code": code, "message": message, "retry": retry}
