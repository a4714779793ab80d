"""Bytes a host page downloads for the widget, and for the sandbox modal, minified and gzipped.

Builds the widget bundles exactly as the extension serves them (webassets, rjsmin and the
CSS filter), minifies the sandbox modal the same way, and prints each one's size raw,
minified and minified+gzipped, with the ratio against the raw sources (the baseline,
measured in the same run) and against the widget's 6 KB budget, which holds what a page
loads by default (the button); the payments script is fetched only on first use.

    .venv/bin/python bench/widget_size.py
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import tempfile

import rjsmin

from flask_finconn.assets import CSSMin, make_environment

SANDBOX_STATIC = os.path.join(os.path.dirname(__file__), "..", "flask_finconn", "sandbox", "static")
BUDGET = 6 * 1024


def gz(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def css_min(text: str) -> str:
    out = io.StringIO()
    CSSMin().output(io.StringIO(text), out)  # type: ignore[no-untyped-call]
    return out.getvalue()


def built(*names: str) -> tuple[int, int, int]:
    """(raw, minified, minified+gzipped) bytes of these bundles, built as the app serves them."""
    with tempfile.TemporaryDirectory() as directory:
        env = make_environment(directory)
        raw = minified = zipped = 0
        for name in names:
            bundle = env[name]
            built = bundle.urls()[0].rsplit("/", 1)[-1]
            for source in bundle.contents:
                raw += os.path.getsize(os.path.join(env.load_path[0], source))
            with open(os.path.join(directory, built), "rb") as fh:
                data = fh.read()
            minified += len(data)
            zipped += gz(data)
    return raw, minified, zipped


def modal() -> tuple[int, int, int]:
    """(raw, minified, minified+gzipped) bytes of the sandbox's Stripe.js stand-in and CSS."""
    raw = minified = zipped = 0
    for name, minify in (("finconn-sandbox.js", rjsmin.jsmin), ("finconn-sandbox.css", css_min)):
        with open(os.path.join(SANDBOX_STATIC, name), encoding="utf-8") as fh:
            text = fh.read()
        data = minify(text).encode()
        raw += len(text.encode())
        minified += len(data)
        zipped += gz(data)
    return raw, minified, zipped


def main() -> int:
    print(f"{'what':<36}{'raw':>9}{'min':>9}{'min+gz':>9}{'gz/raw':>9}")
    rows = {
        "widget (button: JS + CSS)": built("finconn_js", "finconn_css"),
        "accounts list (optional, JS + CSS)": built("finconn_accounts_js", "finconn_accounts_css"),
        "payments (on first use, JS + CSS)": built("finconn_payments_js", "finconn_payments_css"),
        "sandbox modal (JS + CSS)": modal(),
    }
    for label, (raw, minified, zipped) in rows.items():
        print(f"{label:<36}{raw:>9}{minified:>9}{zipped:>9}{zipped / raw:>9.2f}")
    zipped = rows["widget (button: JS + CSS)"][2]
    verdict = "within" if zipped <= BUDGET else "OVER"
    print(f"widget: {zipped} B min+gz = {zipped / BUDGET:.2f} x the {BUDGET} B budget ({verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
