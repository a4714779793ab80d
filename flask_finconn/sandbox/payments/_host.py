"""What the payments emulator needs of the rest of the sandbox, and its own storage.

:class:`Host` is the whole interface: the store (one SQLite connection under a lock, with
``tx``/``one``/``all``/``execute``), the sandbox clock, event emission (signed and delivered
like every other event), task scheduling on the shared "what becomes due" queue, customer
and Financial Connections account lookup, and the API base address. Nothing else of the
sandbox is imported at run time, so the sandbox's layout can change around it.

:class:`Objects` keeps every payments object (PaymentMethods, SetupIntents, PaymentIntents,
Mandates, Charges, disputes) in one table: the API-shaped ``data`` and a private
``internal`` dict (test outcome, verification state, attempt counters). ``owner`` is what
lists filter on: the customer of a PaymentMethod, the PaymentMethod of a mandate.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._data import dumps
from .._params import ApiError, not_found

if TYPE_CHECKING:
    from .._store import Store

TASK_PREFIX = "payments."
"""The prefix of every task kind the payments emulator schedules."""
TASK_KINDS = ("payments.settle", "payments.dispute", "payments.timeout")
"""Every task kind the payments emulator schedules (a debit settles, a dispute arrives,
microdeposits time out); the sandbox hands each to ``Payments.run_task``."""

EVENT_TYPES = (
    "setup_intent.created",
    "setup_intent.requires_action",
    "setup_intent.succeeded",
    "setup_intent.setup_failed",
    "setup_intent.canceled",
    "payment_intent.created",
    "payment_intent.requires_action",
    "payment_intent.processing",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_method.attached",
    "payment_method.detached",
    "payment_method.automatically_updated",
    "mandate.updated",
    "charge.pending",
    "charge.succeeded",
    "charge.failed",
    "charge.dispute.created",
    "charge.dispute.closed",
)
"""Every event type the payments emulator emits."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS pay_objects (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, seq INTEGER NOT NULL, owner TEXT, token TEXT,
    data TEXT NOT NULL, internal TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pay_objects_kind ON pay_objects (kind, owner, seq);
CREATE INDEX IF NOT EXISTS pay_objects_token ON pay_objects (token);
CREATE INDEX IF NOT EXISTS pay_objects_seq ON pay_objects (seq);
CREATE TABLE IF NOT EXISTS pay_blocks (
    fingerprint TEXT PRIMARY KEY, network_code TEXT, reason TEXT NOT NULL,
    created INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Host:
    """The sandbox services the payments emulator uses (built by the sandbox facade).

    - ``store``: the sandbox's :class:`Store`.
    - ``now()``: the sandbox clock (Unix seconds, moved by ``advance_time``).
    - ``emit(type, obj, at, text=None)``: record an event and queue its webhook deliveries
      (``text``: ``obj`` already encoded as compact JSON, see :meth:`Objects.text`).
    - ``schedule(due_at, kind, key, extra)``: queue a task; when due, the sandbox calls
      ``Payments.run_task(kind, key, extra, at)`` (it registers every kind in
      :data:`TASK_KINDS` with its task queue).
    - ``customer(id, param=..., status=...)``: the customer dict, or an :class:`ApiError`.
    - ``check_customer(id, param=..., status=...)``: the same error when there is no such
      customer, else nothing (cheaper when the customer itself is not needed).
    - ``account(fca_id)``: the Financial Connections account dict, or an :class:`ApiError`.
    - ``api_base``: the sandbox's base address (for ``hosted_verification_url``).
    """

    store: Store
    now: Callable[[], int]
    emit: Callable[[str, dict[str, Any], int, str | None], dict[str, Any]]
    schedule: Callable[[float, str, str, dict[str, Any]], None]
    customer: Callable[..., dict[str, Any]]
    check_customer: Callable[..., None]
    account: Callable[[str], dict[str, Any]]
    api_base: str


class Committed(ApiError):
    """An API error raised after a state change that must be kept (a failed attempt counts).

    Route handlers turn it into a response without rolling back; :meth:`Objects.atomic`
    commits first and raises it afterwards. ``extra`` adds fields to the error body
    (``payment_intent``, ``setup_intent``, ``payment_method``), as Stripe does.
    """

    def __init__(self, status: int, message: str, *, extra: dict[str, Any], **kw: Any) -> None:
        super().__init__(status, message, **kw)
        self.extra = extra

    def body(self) -> dict[str, Any]:
        body = conformant(super().body())
        body["error"].update(self.extra)
        return body


def conformant(body: dict[str, Any]) -> dict[str, Any]:
    """Stripe's error body: ``request_log_url`` is a string when present, never null."""
    if body["error"].get("request_log_url", "") is None:
        del body["error"]["request_log_url"]
    return body


class PaymentsError(ApiError):
    """An :class:`ApiError` from the payments endpoints, with a spec-conformant body."""

    @classmethod
    def wrap(cls, exc: ApiError) -> PaymentsError:
        wrapped = cls(
            exc.status,
            exc.message,
            type=exc.type,
            code=exc.code,
            param=exc.param,
            headers=exc.headers,
        )
        return wrapped

    def body(self) -> dict[str, Any]:
        return conformant(super().body())


KIND_OF = {
    "payment_method": "pm",
    "setup_intent": "seti",
    "payment_intent": "pi",
    "mandate": "mandate",
    "charge": "charge",
    "dispute": "dispute",
}
KIND_NAMES = {
    "pm": "payment method",
    "seti": "setupintent",
    "pi": "payment_intent",
    "mandate": "mandate",
    "charge": "charge",
    "dispute": "dispute",
}


class Objects:
    """Load and save payments objects in the ``pay_objects`` table."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self.store = host.store
        self._local = threading.local()
        self.store.ensure(SCHEMA)

    def insert(
        self,
        kind: str,
        data: dict[str, Any],
        internal: dict[str, Any],
        *,
        owner: str | None = None,
    ) -> None:
        """Store a new object (or overwrite it: an intent confirmed as it is created is
        stored once, in its final state)."""
        text = dumps(data)
        self.store.execute(
            "INSERT INTO pay_objects (id, kind, seq, owner, data, internal) VALUES "
            "(?, ?, (SELECT COALESCE(MAX(seq), 0) + 1 FROM pay_objects), ?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data, internal = excluded.internal, "
            "owner = COALESCE(excluded.owner, pay_objects.owner)",
            (data["id"], kind, owner, text, dumps(internal) if internal else "{}"),
        )
        self._local.saved = (data, text)

    def text(self, data: dict[str, Any]) -> str:
        """``data`` as compact JSON: the text just stored when ``data`` is the object this
        thread saved last, else encoded now.

        Callers use it right after the save, before changing ``data`` again (for its event,
        or for the response), so an object is encoded once per state.
        """
        saved: tuple[dict[str, Any], str] | None = getattr(self._local, "saved", None)
        if saved is not None and saved[0] is data:
            return saved[1]
        return dumps(data)

    def load(
        self, kind: str, obj_id: str, *, param: str = "id", status: int = 404
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        row = self.store.one(
            "SELECT data, internal FROM pay_objects WHERE id = ? AND kind = ?", (obj_id, kind)
        )
        if row is None:
            raise not_found(KIND_NAMES[kind], obj_id, param=param, status=status)
        # Most objects have no internal state: "{}" needs no decoder.
        return json.loads(row[0]), (json.loads(row[1]) if row[1] != "{}" else {})

    def get(self, kind: str, obj_id: str) -> dict[str, Any]:
        return self.load(kind, obj_id)[0]

    def save(
        self, data: dict[str, Any], internal: dict[str, Any], *, owner: str | None = None
    ) -> None:
        """Store an object's new state (``owner``: change what lists filter on)."""
        if owner is None and data["object"] in ("setup_intent", "payment_intent"):
            owner = data["customer"]
        self.insert(KIND_OF[data["object"]], data, internal, owner=owner)

    def by_token(self, token: str) -> tuple[str, str] | None:
        """``(kind, id)`` of the object holding this token (a hosted verification token)."""
        row = self.store.one("SELECT kind, id FROM pay_objects WHERE token = ?", (token,))
        return (str(row[0]), str(row[1])) if row else None

    @staticmethod
    def decode(raw: str) -> dict[str, Any]:
        return dict(json.loads(raw))

    def rows(self, kind: str, where: str, args: tuple[Any, ...]) -> list[Any]:
        return self.store.all(
            f"SELECT data, internal FROM pay_objects WHERE kind = ? AND {where} ORDER BY seq",
            (kind, *args),
        )

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        """One write transaction in which a :class:`Committed` error still commits.

        The sandbox clock is read once per transaction (see :meth:`now`).
        """
        error: Committed | None = None
        with self.store.tx():
            outer = getattr(self._local, "now", None) is None
            if outer:
                self._local.now = self.host.now()
                self._local.saved = None
            try:
                yield
            except Committed as exc:
                error = exc
            finally:
                if outer:
                    self._local.now = None
        if error is not None:
            raise error

    def now(self) -> int:
        """The sandbox clock: fixed for the duration of a :meth:`writing` transaction."""
        cached: int | None = getattr(self._local, "now", None)
        return cached if cached is not None else self.host.now()


def check_state(kind: str, obj: dict[str, Any], allowed: tuple[str, ...], verb: str) -> None:
    """Raise the ``*_unexpected_state`` error unless ``obj['status']`` is in ``allowed``."""
    if obj["status"] in allowed:
        return
    name = "PaymentIntent" if kind == "pi" else "SetupIntent"
    code = "payment_intent_unexpected_state" if kind == "pi" else "setup_intent_unexpected_state"
    raise Committed(
        400,
        f"You cannot {verb} this {name} because it has a status of {obj['status']}. "
        f"This is allowed only when its status is one of: {', '.join(allowed)}.",
        code=code,
        extra={"payment_intent" if kind == "pi" else "setup_intent": obj},
    )
