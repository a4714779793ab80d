"""Jinja filters and globals: money in minor units, UTC times, and the balance chart.

Money and times are written the way the page script writes them after a refresh
(``Intl`` with ``en-US`` and UTC), so a number looks the same before and after an update.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask

# ISO 4217 currencies Stripe sends without minor units.
ZERO_DECIMAL = frozenset(
    [
        "bif",
        "clp",
        "djf",
        "gnf",
        "jpy",
        "kmf",
        "krw",
        "mga",
        "pyg",
        "rwf",
        "ugx",
        "vnd",
        "vuv",
        "xaf",
        "xof",
        "xpf",
    ]
)
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$", "jpy": "¥"}


def money(amount: int | None, currency: str | None = "usd", whole: bool = False) -> str:
    """``-1234`` and ``usd`` as ``-$12.34``; None as an em dash; ``whole`` drops the cents."""
    if amount is None:
        return "—"
    code = (currency or "usd").lower()
    digits = 0 if code in ZERO_DECIMAL else 2
    shown = 0 if whole else digits
    number = f"{abs(amount) / 10**digits:,.{shown}f}"
    symbol = SYMBOLS.get(code)
    text = f"{symbol}{number}" if symbol else f"{code.upper()} {number}"
    return f"-{text}" if amount < 0 else text


def _aware(value: datetime) -> datetime:
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def when(value: datetime | int | None, style: str = "datetime") -> str:
    """A UTC time as ``Nov 25, 2026, 10:42 AM UTC``.

    ``style="date"`` gives ``Nov 25, 2026``; ``style="seconds"`` adds the seconds.
    """
    if value is None:
        return "—"
    moment = datetime.fromtimestamp(value, UTC) if isinstance(value, int) else _aware(value)
    date = f"{moment:%b} {moment.day}, {moment.year}"
    if style == "date":
        return date
    hour = moment.hour % 12 or 12
    clock = f"{hour}:{moment:%M:%S}" if style == "seconds" else f"{hour}:{moment:%M}"
    return f"{date}, {clock} {'AM' if moment.hour < 12 else 'PM'} UTC"


def iso(value: datetime | int | None) -> str:
    """The machine-readable form for ``<time datetime>``."""
    if value is None:
        return ""
    moment = datetime.fromtimestamp(value, UTC) if isinstance(value, int) else _aware(value)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


EVENT_LABELS = {
    "financial_connections.account.created": "Account linked",
    "financial_connections.account.deactivated": "Account deactivated",
    "financial_connections.account.reactivated": "Account reactivated",
    "financial_connections.account.disconnected": "Account disconnected",
    "financial_connections.account.refreshed_balance": "Balance refreshed",
    "financial_connections.account.refreshed_ownership": "Owners refreshed",
    "financial_connections.account.refreshed_transactions": "Transactions refreshed",
    "payment_intent.created": "Payment created",
    "payment_intent.requires_action": "Payment waits for verification",
    "payment_intent.processing": "Payment processing",
    "payment_intent.succeeded": "Payment succeeded",
    "payment_intent.payment_failed": "Payment failed",
    "payment_intent.canceled": "Payment canceled",
    "charge.pending": "Debit sent to the bank",
    "charge.succeeded": "Debit settled",
    "charge.failed": "Debit returned by the bank",
    "charge.dispute.created": "Payment disputed",
    "charge.dispute.closed": "Dispute closed",
    "setup_intent.created": "Bank account setup started",
    "setup_intent.requires_action": "Bank account waits for verification",
    "setup_intent.succeeded": "Bank account set up for payments",
    "setup_intent.setup_failed": "Bank account setup failed",
    "setup_intent.canceled": "Bank account setup canceled",
    "payment_method.attached": "Bank account saved",
    "payment_method.detached": "Bank account removed",
    "payment_method.automatically_updated": "Bank account details updated",
}
# A mandate's status after ``mandate.updated``, in words.
MANDATE_LABELS = {
    "active": "Debit authorization active",
    "inactive": "Debit authorization ended",
    "pending": "Debit authorization pending",
}


def event_label(event_type: str, payload: dict[str, Any] | None = None) -> str:
    """A Stripe event type in words: ``...account.refreshed_balance`` → Balance refreshed.

    With the event's payload, ``mandate.updated`` says what the mandate became.
    """
    if event_type == "mandate.updated":
        status = (((payload or {}).get("data") or {}).get("object") or {}).get("status")
        return MANDATE_LABELS.get(str(status), "Debit authorization updated")
    if event_type in EVENT_LABELS:
        return EVENT_LABELS[event_type]
    return event_type.rsplit(".", 1)[-1].replace("_", " ").capitalize()


@dataclass(frozen=True)
class Chart:
    """An SVG line chart of balances, in the template's coordinates."""

    width: int
    height: int
    left: int
    right: int
    line: str
    area: str
    dots: list[dict[str, Any]]
    ticks: list[dict[str, Any]]
    first: str
    last: str
    first_x: float
    first_anchor: str
    summary: str


def _axis_labels(first: datetime, last: datetime) -> tuple[str, str]:
    """Dates under the chart's ends, or times when every reading is from one day."""
    first, last = _aware(first), _aware(last)
    if first.date() != last.date():
        return when(first, "date"), when(last, "date")
    start = when(first).removesuffix(" UTC").split(", ")
    end = when(last).split(", ")
    return f"{start[0]}, {start[2]}", end[2]


def balance_chart(
    points: Sequence[tuple[datetime, int]], currency: str, width: int = 960, height: int = 240
) -> Chart | None:
    """Coordinates for a balance-history chart, oldest reading first (None without any)."""
    if not points:
        return None
    left, right, top, bottom = 96, 16, 16, 32
    plot_w, plot_h = width - left - right, height - top - bottom
    times = [_aware(t).timestamp() for t, _ in points]
    values = [v for _, v in points]
    pad = max((max(values) - min(values)) * 0.15, abs(max(values)) * 0.02, 100)
    low, high = min(values) - pad, max(values) + pad
    start, span = times[0], (times[-1] - times[0]) or 1.0

    def x(t: float) -> float:
        return left + (plot_w / 2 if len(points) == 1 else (t - start) / span * plot_w)

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * plot_h

    coords = [(round(x(t), 1), round(y(v), 1)) for t, v in zip(times, values, strict=True)]
    line = "M" + " L".join(f"{cx},{cy}" for cx, cy in coords)
    base = top + plot_h
    area = f"{line} L{coords[-1][0]},{base} L{coords[0][0]},{base} Z"
    dots = [
        {"x": cx, "y": cy, "label": f"{money(v, currency)} on {when(t)}"}
        for (cx, cy), (t, v) in zip(coords, points, strict=True)
    ]
    # Whole units on the axis once the range is wide enough that cents are noise.
    whole = high - low > 20_000
    ticks = [
        {"y": round(y(value), 1), "label": money(round(value), currency, whole=whole)}
        for value in dict.fromkeys((high - pad, (high + low) / 2, low + pad))
    ]
    first, last = points[0], points[-1]
    if len(points) == 1:
        labels = (when(first[0], "date"), "")
        summary = f"One balance reading so far: {money(first[1], currency)} on {when(first[0])}."
    else:
        labels = _axis_labels(first[0], last[0])
        summary = (
            f"{len(points)} balance readings, from {money(first[1], currency)} on "
            f"{when(first[0])} to {money(last[1], currency)} on {when(last[0])}."
        )
    return Chart(
        width=width,
        height=height,
        left=left,
        right=width - right,
        line=line,
        area=area,
        dots=dots,
        ticks=ticks,
        first=labels[0],
        last=labels[1],
        # A single reading sits in the middle; its date goes right under it.
        first_x=coords[0][0] if len(points) == 1 else left,
        first_anchor="middle" if len(points) == 1 else "start",
        summary=summary,
    )


def init_app(app: Flask) -> None:
    """Register the filters and globals the templates use."""
    from . import csp_nonce
    from .auth import csrf_token

    app.add_template_filter(money)
    app.add_template_filter(when)
    app.add_template_filter(iso)
    app.add_template_filter(event_label)
    app.add_template_global(csp_nonce)
    app.add_template_global(csrf_token)
    versions: dict[str, str] = {}

    def asset_version(filename: str) -> str:
        """A short hash of a static file, so browsers fetch it again when it changes."""
        if filename not in versions:
            assert app.static_folder is not None
            with open(os.path.join(app.static_folder, filename), "rb") as file:
                versions[filename] = hashlib.sha256(file.read()).hexdigest()[:10]
        return versions[filename]

    app.add_template_global(asset_version)
