"""Deterministic, realistic data for sandbox accounts: balances, owners, transactions.

Everything is derived from the account id (and the refresh count where data changes over
time), so the same account always shows the same history.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import secrets
import string
import threading
from typing import Any

ALPHABET = string.digits + string.ascii_letters
DAY = 86400
HISTORY_DAYS = 180
PENDING_WINDOW = 2 * DAY
DEFAULT_DAILY_RATE = 2.0

# (description, min cents, max cents); negative = money out, positive = money in.
_CASH_MERCHANTS: tuple[tuple[str, int, int], ...] = (
    ("Rocket Rides", -4500, -800),
    ("Blue Bottle Coffee", -1200, -350),
    ("Whole Foods Market", -18000, -1500),
    ("Trader Joe's", -9000, -1200),
    ("Shell Oil 5738", -7500, -2000),
    ("Netflix.com", -2299, -1549),
    ("Spotify USA", -1199, -1199),
    ("Amazon Marketplace", -15000, -999),
    ("Uber Trip", -5500, -700),
    ("Lyft Ride", -4800, -650),
    ("Con Edison Bill Pay", -21000, -6000),
    ("Comcast Xfinity", -11000, -7999),
    ("Target T-1234", -12000, -800),
    ("Starbucks Store 0412", -900, -300),
    ("Chipotle Mexican Grill", -1800, -900),
    ("CVS Pharmacy", -4500, -500),
    ("Delta Air Lines", -65000, -18000),
    ("Venmo Payment", -9000, -1000),
    ("ATM Withdrawal", -20000, -2000),
    ("Zelle from Jordan Smith", 2500, 25000),
    ("Venmo Cashout", 1000, 15000),
    ("Interest Payment", 1, 450),
)
_PAYROLL = ("Payroll Deposit ACME Corp", 180000, 360000)
_CARD_PAYMENT = ("Payment - Thank You", 20000, 150000)


# One encoder for every call: json.dumps builds a new one each time it is given separators.
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def dumps(obj: Any) -> str:
    """Compact JSON, as the API sends it."""
    return _ENCODER.encode(obj)


def seed_of(*parts: str) -> int:
    """A stable 64-bit seed from strings."""
    digest = hashlib.sha256(":".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


_ID_TABLE = bytes(ord(ALPHABET[b % 62]) if b < 248 else 0 for b in range(256))
_ID_DROP = bytes(range(248, 256))


class _IdChars:
    """Random characters of [0-9A-Za-z], read from the system's randomness in batches.

    One read serves about 20 ids instead of one (a request makes several). Bytes below 248
    (4 x 62) map to ``ALPHABET[b % 62]``, so each character stays uniform; the rest are
    dropped. A forked child starts empty, so it never hands out its parent's characters.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chars = ""
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._clear)

    def _clear(self) -> None:
        self._lock = threading.Lock()
        self._chars = ""

    def take(self, count: int) -> str:
        with self._lock:
            chars = self._chars
            while len(chars) < count:
                chars += secrets.token_bytes(512).translate(_ID_TABLE, _ID_DROP).decode("ascii")
            self._chars = chars[count:]
            return chars[:count]


_ID_CHARS = _IdChars()


def new_id(prefix: str, rng: random.Random | None = None) -> str:
    """A Stripe-style id: the prefix and 24 characters of [0-9A-Za-z]."""
    if rng is None:
        return prefix + _ID_CHARS.take(24)
    return prefix + "".join(rng.choices(ALPHABET, k=24))


def balance(
    account_id: str, category: str, subcategory: str, refresh_count: int, now: int
) -> dict[str, Any]:
    """The balance after the ``refresh_count``-th successful balance refresh, as of ``now``
    (the refresh's completion)."""
    rng = random.Random(seed_of(account_id, "balance", str(refresh_count)))
    base = random.Random(seed_of(account_id, "balance")).randint(100_000, 2_500_000)
    drift = rng.randint(-base // 20, base // 20)
    as_of = now
    if category == "credit":
        scale = 40 if subcategory == "mortgage" else 1
        current = -((base // 5 + drift // 5) * scale)
        return {
            "as_of": as_of,
            "current": {"usd": current},
            "credit": {"used": {"usd": current}},
            "type": "credit",
        }
    current = base + drift
    held = rng.randint(0, min(current, 25_000))
    return {
        "as_of": as_of,
        "cash": {"available": {"usd": current - held}},
        "current": {"usd": current},
        "type": "cash",
    }


_PEOPLE = {
    "jenny": (
        "Jenny Rosen",
        "jenny.rosen@example.com",
        "+1 555-555-5555",
        "510 Townsend San Francisco, CA 94103",
    ),
    "rocket": (
        "Rocket Rosen",
        "rocket.rosen@example.com",
        "+1 555-555-1234",
        "510 Townsend San Francisco, CA 94103",
    ),
    "business": (
        "Rocket Rides Inc.",
        "accounts@rocketrides.example",
        "+1 555-555-9876",
        "354 Oyster Point Blvd South San Francisco, CA 94080",
    ),
}


def owners(variant: str) -> list[dict[str, Any]]:
    """Owner details for an ownership variant (``single``, ``joint``, ``business``, ...)."""

    def person(key: str, *, partial: bool = False) -> dict[str, Any]:
        name, email, phone, address = _PEOPLE[key]
        if partial:
            return {"name": name, "email": None, "phone": None, "raw_address": None}
        return {"name": name, "email": email, "phone": phone, "raw_address": address}

    if variant == "none":
        return []
    if variant == "joint":
        return [person("jenny"), person("rocket")]
    if variant == "business":
        return [person("business"), person("jenny")]
    if variant == "partial":
        return [person("jenny", partial=True)]
    return [person("jenny")]


def generate_transactions(
    account_id: str,
    category: str,
    start: int,
    end: int,
    count: int,
    generation: int,
) -> list[tuple[str, int, int, str]]:
    """``count`` transactions between ``start`` and ``end``, oldest first.

    Each is ``(id, transacted_at, amount, description)``; ``generation`` keeps ids and
    amounts stable per refresh.
    """
    if count <= 0 or end <= start:
        return []
    rng = random.Random(seed_of(account_id, "transactions", str(generation)))
    credit = category == "credit"
    span = end - start
    times = sorted(start + rng.randrange(span) for _ in range(count))
    rows: list[tuple[str, int, int, str]] = []
    merchants = _CASH_MERCHANTS
    for at in times:
        roll = rng.random()
        if credit and roll < 0.04:
            desc, lo, hi = _CARD_PAYMENT
        elif not credit and roll < 0.05:
            desc, lo, hi = _PAYROLL
        else:
            desc, lo, hi = merchants[rng.randrange(len(merchants))]
            if credit and lo > 0:
                desc, lo, hi = merchants[0]
        rows.append((new_id("fctxn_", rng), at, rng.randint(lo, hi), desc))
    return rows


def transaction_body(
    txn_id: str,
    account: str,
    amount: int,
    description: str,
    status: str,
    transacted_at: int,
    posted_at: int | None,
    void_at: int | None,
    refresh_id: str,
    updated: int,
    livemode: bool = False,
) -> str:
    """The wire JSON of one ``financial_connections.transaction``.

    Built from a template (every field but the description is an id, a number or an enum),
    because histories of 100k+ rows are rendered in one go.
    """
    return (
        f'{{"id":"{txn_id}","object":"financial_connections.transaction",'
        f'"account":"{account}","amount":{amount},"currency":"usd",'
        f'"description":{_json_string(description)},"livemode":{"true" if livemode else "false"},'
        f'"status":"{status}","status_transitions":{{"posted_at":{_json_int(posted_at)},'
        f'"void_at":{_json_int(void_at)}}},"transacted_at":{transacted_at},'
        f'"transaction_refresh":"{refresh_id}","updated":{updated}}}'
    )


@functools.lru_cache(maxsize=256)
def _json_string(text: str) -> str:
    return json.dumps(text)


def _json_int(value: int | None) -> str:
    return "null" if value is None else str(int(value))
