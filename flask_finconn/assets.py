"""The widget's webassets bundles, the route that serves them, and the ``finconn`` Jinja helper.

:func:`init_assets` (called by ``FinConn.init_app``) registers bundles of the package's
``static/finconn`` sources, minified and with a content hash in the file name:

- ``finconn_js``: ``finconn-connect.js`` (the ``<finconn-connect>`` element and
  ``FinConn.connect``), minified with rjsmin, with the package's version as ``FinConn.version``
- ``finconn_css``: ``finconn-connect.css`` (the button's look, themeable with
  ``--finconn-*`` custom properties)
- ``finconn_accounts_js`` and ``finconn_accounts_css``: the optional ``<finconn-accounts>``
  list of linked accounts

The package directory may be read-only (an installed wheel), so on first use the output
goes to ``<instance>/finconn-assets`` or, when that cannot be written, to a per-app directory under
the system's temporary directory. The ``finconn_assets`` blueprint serves it at
``<prefix>/assets/<file>`` with a year-long cache, which is safe because each build has its
own file name.

Templates get a ``finconn`` global (a :class:`TemplateHelper`)::

    {{ finconn.scripts(nonce=csp_nonce(), accounts=True) }}   {# csp_nonce: the host's own #}
    {{ finconn.button("Link your bank", permissions=["balances"], class_="link") }}
    {{ finconn.accounts() }}
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from typing import IO, TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Flask,
    Response,
    current_app,
    request,
    send_from_directory,
    url_for,
)
from markupsafe import Markup, escape
from webassets.bundle import Bundle
from webassets.env import Environment
from webassets.filter import Filter

from .state import __version__

if TYPE_CHECKING:
    from .state import FinConnState

STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
ONE_YEAR = 365 * 24 * 3600
# The placeholder finconn-connect.js carries where its bundle gets the package's version.
VERSION_PLACEHOLDER = "__FINCONN_VERSION__"


class Version(Filter):
    """Writes the installed package's version over the script's placeholder.

    The version comes from the package metadata, so the built file (and the content hash in
    its name) changes with every release and no version string is kept by hand in the JS.
    """

    name = "finconn_version"  # type: ignore[assignment]

    def input(self, _in: IO[str], out: IO[str], **kw: Any) -> None:
        out.write(_in.read().replace(VERSION_PLACEHOLDER, __version__))


class CSSMin(Filter):
    """A small CSS minifier: drops comments and the whitespace CSS does not need."""

    name = "finconn_cssmin"  # type: ignore[assignment]

    def output(self, _in: IO[str], out: IO[str], **kw: Any) -> None:
        css = re.sub(r"/\*.*?\*/", "", _in.read(), flags=re.S)
        css = re.sub(r"\s+", " ", css)
        css = re.sub(r"\s*([{};,>])\s*", r"\1", css)
        css = re.sub(r":\s+", ":", css).replace(";}", "}")
        out.write(css.strip())


def make_bundles() -> dict[str, Bundle]:
    """The widget's bundles by name; their sources are relative to ``flask_finconn/static``."""
    return {
        "finconn_js": Bundle(  # type: ignore[no-untyped-call]
            "finconn/finconn-connect.js",
            filters=(Version(), "rjsmin"),  # type: ignore[no-untyped-call]
            output="finconn-connect.%(version)s.js",
        ),
        "finconn_css": Bundle(  # type: ignore[no-untyped-call]
            "finconn/finconn-connect.css",
            filters=(CSSMin(),),  # type: ignore[no-untyped-call]
            output="finconn-connect.%(version)s.css",
        ),
        "finconn_accounts_js": Bundle(  # type: ignore[no-untyped-call]
            "finconn/finconn-accounts.js",
            filters="rjsmin",
            output="finconn-accounts.%(version)s.js",
        ),
        "finconn_accounts_css": Bundle(  # type: ignore[no-untyped-call]
            "finconn/finconn-accounts.css",
            filters=(CSSMin(),),  # type: ignore[no-untyped-call]
            output="finconn-accounts.%(version)s.css",
        ),
    }


def _writable(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def build_directory(app: Flask) -> str:
    """Where the built files go: the instance folder when writable, else a temp directory."""
    preferred = os.path.join(app.instance_path, "finconn-assets")
    if _writable(preferred):
        return preferred
    digest = hashlib.sha256(app.instance_path.encode()).hexdigest()[:12]
    fallback = os.path.join(tempfile.gettempdir(), f"flask-finconn-assets-{os.getuid()}-{digest}")
    if _writable(fallback):
        return fallback
    raise OSError(
        f"Flask-FinConn cannot write its widget files to {preferred} or {fallback}; "
        "make the app's instance folder writable."
    )


def make_environment(directory: str) -> Environment:
    """A webassets environment that builds the widget into ``directory``."""
    env = Environment(directory=directory, url="/", load_path=[STATIC_DIR])  # type: ignore[no-untyped-call]
    env.debug = False
    env.cache = False
    env.url_expire = False
    env.auto_build = True
    env.manifest = f"json:{os.path.join(directory, 'manifest.json')}"
    for name, bundle in make_bundles().items():
        env.register(name, bundle)  # type: ignore[no-untyped-call]
    return env


def _attrs(attrs: dict[str, Any]) -> str:
    """HTML attributes from keyword arguments: ``class_`` → class, ``data_x`` → data-x."""
    parts = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        if value is True:
            parts.append(f" {name}")
            continue
        if isinstance(value, list | tuple):
            value = " ".join(str(v) for v in value)
        parts.append(f' {name}="{escape(value)}"')
    return "".join(parts)


class TemplateHelper:
    """The ``finconn`` Jinja global: script and stylesheet tags, and the button element.

    The bundles are built on first use, inside a request, into :func:`build_directory` of
    the current app; creating an app writes nothing.
    """

    def __init__(self, url_prefix: str) -> None:
        self.url_prefix = url_prefix
        self._directory = ""
        self._files: dict[str, str] = {}
        # A threaded server asks for the CSS and the JS at once: one build at a time.
        self._lock = threading.Lock()

    @property
    def directory(self) -> str:
        """Where the built files are."""
        self.build()
        return self._directory

    def build(self) -> dict[str, str]:
        """Build every bundle once per process; returns the built file names by bundle.

        Each process builds into a private directory and moves the files into place with an
        atomic rename, so workers starting together never serve a half-written file. A file
        name carries a hash of its content: the same name is always the same bytes.
        """
        with self._lock:
            if not self._files:
                directory = build_directory(current_app)
                with tempfile.TemporaryDirectory(prefix=".build-", dir=directory) as private:
                    env = make_environment(private)
                    files = {}
                    for name in make_bundles():
                        files[name] = env[name].urls()[0].rsplit("/", 1)[-1]
                        os.replace(
                            os.path.join(private, files[name]), os.path.join(directory, files[name])
                        )
                self._directory = directory
                self._files = files
        return self._files

    def filename(self, bundle: str) -> str:
        """The built, versioned file name of ``bundle`` (built on first use)."""
        return self.build()[bundle]

    def url(self, bundle: str) -> str:
        """The URL of a built bundle, such as ``finconn_js`` or ``finconn_accounts_css``."""
        return url_for("finconn_assets.asset", filename=self.filename(bundle))

    @property
    def js_url(self) -> str:
        """The URL of the minified widget script."""
        return self.url("finconn_js")

    @property
    def css_url(self) -> str:
        """The URL of the minified widget stylesheet."""
        return self.url("finconn_css")

    @property
    def endpoint(self) -> str:
        """The base URL of the extension's routes, as the browser must call them."""
        return request.script_root + self.url_prefix

    def scripts(
        self, nonce: str | None = None, *, stylesheet: bool = True, accounts: bool = False
    ) -> Markup:
        """The widget's ``<link>`` and deferred ``<script>`` tags, with a CSP nonce if given.

        ``accounts=True`` adds ``<finconn-accounts>`` (after the button's script, which it
        needs); ``stylesheet=False`` leaves the styling to the page.
        """
        extra = _attrs({"nonce": nonce})
        names = ["finconn"] + (["finconn_accounts"] if accounts else [])
        tags = []
        if stylesheet:
            tags += [
                f'<link rel="stylesheet" href="{escape(self.url(name + "_css"))}"{extra}>'
                for name in names
            ]
        endpoint = _attrs({"data_endpoint": self.endpoint})
        tags += [
            f'<script src="{escape(self.url(name + "_js"))}"{endpoint} defer{extra}></script>'
            for name in names
        ]
        return Markup("\n".join(tags))

    def button(self, label: str = "Link your bank", **attrs: Any) -> Markup:
        """A ``<finconn-connect>`` element; keyword arguments become its attributes.

        ``permissions`` may be a list; ``disabled=True`` renders a bare attribute; ``class_``
        and ``data_*`` map to ``class`` and ``data-*``. The label is escaped unless it is
        ``Markup``.
        """
        attrs.setdefault("endpoint", self.endpoint)
        return Markup(f"<finconn-connect{_attrs(attrs)}>{escape(label)}</finconn-connect>")

    def accounts(self, empty: str = "No bank accounts linked yet.", **attrs: Any) -> Markup:
        """A ``<finconn-accounts>`` list (needs ``scripts(accounts=True)``); ``empty`` is
        shown when nothing is linked. Attributes as for :meth:`button` (``features``)."""
        attrs.setdefault("endpoint", self.endpoint)
        return Markup(f"<finconn-accounts{_attrs(attrs)}>{escape(empty)}</finconn-accounts>")

    def __html__(self) -> Markup:
        return self.scripts()


def make_blueprint(helper: TemplateHelper) -> Blueprint:
    """The ``finconn_assets`` blueprint serving the files ``helper`` builds."""
    bp = Blueprint("finconn_assets", __name__)

    @bp.get("/<path:filename>")
    def asset(filename: str) -> Response:
        # Another worker may have rendered the page: build here too before serving.
        helper.build()
        response = send_from_directory(helper.directory, filename, max_age=ONE_YEAR)
        response.headers["Cache-Control"] = f"public, max-age={ONE_YEAR}, immutable"
        return response

    return bp


def init_assets(app: Flask, state: FinConnState) -> None:
    """Register the widget's bundles, the route serving them and the ``finconn`` Jinja global."""
    prefix = state.settings.url_prefix
    helper = TemplateHelper(prefix)
    app.register_blueprint(make_blueprint(helper), url_prefix=f"{prefix}/assets")
    app.extensions["finconn_assets"] = helper
    app.jinja_env.globals["finconn"] = helper
