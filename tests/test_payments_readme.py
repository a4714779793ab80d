"""The README's Payments example runs as written."""

from __future__ import annotations

from typing import Any

from test_readme import PAYMENTS, block


def test_the_readme_payments_example_passes() -> None:
    namespace: dict[str, Any] = {}
    exec(block(*PAYMENTS), namespace)
    namespace["test_rent_is_debited_once"]()
