"""axe-core in Chromium: the accessibility checks the browser tests run on a page or part.

The engine is the ``axe.min.js`` that the ``axe-playwright-python`` package ships (a test
extra). It is evaluated through the DevTools protocol, so a page's strict Content Security
Policy does not block it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import axe_playwright_python
from playwright.sync_api import Page

AXE_JS = (Path(axe_playwright_python.__file__).parent / "axe.min.js").read_text(encoding="utf-8")

# WCAG 2.2 A and AA, and axe's best practices (landmarks, one main heading, ...).
RULE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]


def axe_violations(page: Page, within: str | None = None) -> list[str]:
    """What axe-core finds wrong on the page (or inside the elements matching the CSS
    selector ``within``), one line a rule: its id, impact, help text and the elements."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE_JS)
    results: dict[str, Any] = page.evaluate(
        """([within, tags]) => axe.run(within ? {include: [[within]]} : document, {
             runOnly: {type: "tag", values: tags},
             resultTypes: ["violations"],
           })""",
        [within, RULE_TAGS],
    )
    return [
        f"{v['id']} ({v['impact']}): {v['help']}: "
        + "; ".join(
            " ".join(node["target"]) + " " + (node.get("failureSummary") or "").replace("\n", " ")
            for node in v["nodes"]
        )
        for v in results["violations"]
    ]


def assert_accessible(page: Page, within: str | None = None) -> None:
    """Fail with axe-core's findings when it finds anything wrong."""
    found = axe_violations(page, within)
    assert found == [], "axe-core found:\n" + "\n".join(found)
