"""The standalone server's WSGI app (``python -m flask_finconn.sandbox serve``).

It serves Stripe's API, as :attr:`Sandbox.wsgi_app` does, and under :data:`PAGES` the
hosted microdeposit verification page that ``hosted_verification_url`` points at, with the
stylesheet it links:

- ``GET|POST /sandbox/microdeposits/<token>``: the page (:mod:`.browser_payments`)
- ``GET /sandbox/static/finconn-verify.css``: its stylesheet

The URL points at this server, at the address the API request that made it came to (the
address the SDK was given), so a browser on the same machine opens it as is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, send_from_directory

from .browser import MAX_BODY, STATIC_DIR
from .browser_payments import add_hosted_page
from .faults import WSGIApp

if TYPE_CHECKING:
    from .core import Sandbox

PAGES = "/sandbox"


def _pages(sandbox: Sandbox) -> Blueprint:
    """The hosted verification page and its stylesheet, nothing else of the browser half."""
    bp = Blueprint("finconn_sandbox", __name__)

    @bp.get("/static/finconn-verify.css")
    def stylesheet() -> Response:
        return send_from_directory(STATIC_DIR, "finconn-verify.css", max_age=0)

    @bp.after_request
    def no_store(response: Response) -> Response:
        # The page shows the intent's current state and the attempts left.
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    add_hosted_page(bp, sandbox)
    return bp


def make_app(sandbox: Sandbox) -> WSGIApp:
    """A WSGI app serving ``sandbox``'s API and, under :data:`PAGES`, its hosted page."""
    pages = Flask(__name__)
    pages.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    pages.register_blueprint(_pages(sandbox), url_prefix=PAGES)
    api: WSGIApp = sandbox.wsgi_app

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") or "").startswith(f"{PAGES}/"):
            return pages.wsgi_app(environ, start_response)
        # In a request context of the pages app, the API call's hosted_verification_url
        # points at this server, at the address this request came to.
        with pages.request_context(environ):
            return api(environ, start_response)

    return app
