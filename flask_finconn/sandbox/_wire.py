"""The sandbox's wire plumbing: a plain WSGI app that speaks Stripe's v1 wire format.

It authenticates (test-mode keys only), injects the configured faults, parses form
bodies, runs due tasks, serves each request in one transaction with its request context,
replays idempotent POSTs, renders errors as Stripe's error body and lists as list objects.
What each path does is in the handler modules; :mod:`._routes` lists them.

A GET's successful answer is kept in memory (:meth:`.Store.keep`) and given again to the
same GET (path, query string, ``Authorization`` header) while it cannot have changed: no
write since, anywhere (:meth:`.Store.kept`), the sandbox clock short of the earliest due
task (a GET runs due work first), and the handler did not read the clock. Faults still
apply to it, and it gets its own ``Request-Id``.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import _data
from ._context import RequestContext
from ._data import dumps as _dumps
from ._kernel import Clock
from ._params import ApiError, invalid, page_limit, parse_form
from .events import API_VERSION

if TYPE_CHECKING:
    from .core import Sandbox

log = logging.getLogger("flask_finconn.sandbox")

MAX_BODY = 1 << 20
_HELPER_PATHS = "/v1/test_helpers/"
_KEY_RE = re.compile(r"^(sk|rk)_(test|live)_[0-9A-Za-z_]+$")

# A route handler: (the API, the parsed parameters, the path's captured ids) -> (status,
# JSON body). One marked ``outside_transaction = True`` runs with no lock held.
Handler = Callable[["Api", dict[str, Any], tuple[str, ...]], tuple[int, str]]


class Api:
    """Auth, faults, idempotency, lists and rendering around the routes of a sandbox."""

    def __init__(self, sandbox: Sandbox, routes: list[tuple[str, str, Handler]]) -> None:
        self.sb = sandbox
        self.store = sandbox.store
        self.requests = sandbox.kernel.requests
        # First match wins. A path with no pattern in it (``/v1/customers``) is looked up in
        # a dict, unless an earlier route would take it; the rest are tried by one regular
        # expression per method, their patterns as alternatives in order.
        by_method: dict[str, list[tuple[str, Handler]]] = {}
        for method, pattern, handler in routes:
            by_method.setdefault(method, []).append((pattern, handler))
        self.fixed: dict[tuple[str, str], Handler] = {}
        self.routes: dict[str, tuple[re.Pattern[str], dict[str, tuple[Handler, int, int]]]] = {}
        for method, entries in by_method.items():
            alternatives, found, group = [], {}, 1
            for i, (pattern, handler) in enumerate(entries):
                compiled = re.compile(pattern)
                earlier = [re.compile(p) for p, _ in entries[:i]]
                if re.escape(pattern) == pattern and not any(e.fullmatch(pattern) for e in earlier):
                    self.fixed.setdefault((method, pattern), handler)
                alternatives.append(f"(?P<r{i}>{pattern})")
                found[f"r{i}"] = (handler, group + 1, group + 1 + compiled.groups)
                group += 1 + compiled.groups
            self.routes[method] = (re.compile("|".join(alternatives)), found)

    # --- WSGI ---------------------------------------------------------------------------

    def wsgi_app(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        request_id = _data.new_id("req_")[:18]
        headers = [
            ("Content-Type", "application/json"),
            ("Request-Id", request_id),
            ("Stripe-Version", environ.get("HTTP_STRIPE_VERSION") or API_VERSION),
            ("Cache-Control", "no-cache, no-store"),
        ]
        key = _kept_key(environ)
        extra: list[tuple[str, str]] = []
        try:
            data = self._kept(key) if key is not None else None
            if data is not None:
                status = 200
            else:
                status, data, extra = self._handle(environ, request_id, key)
        except ApiError as exc:
            status, extra = exc.status, list(exc.headers.items())
            data = _dumps(exc.body()).encode("utf-8")
        except Exception:
            log.exception("The sandbox failed to serve a request.")
            error = ApiError(
                500,
                "An unexpected error occurred in the sandbox. It has been logged.",
                type="api_error",
            )
            status, data, extra = 500, _dumps(error.body()).encode("utf-8"), []
        headers.extend(extra)
        headers.append(("Content-Length", str(len(data))))
        start_response(f"{status} {_REASONS.get(status, 'Status')}", headers)
        return [data]

    def _kept(self, key: _Key) -> bytes | None:
        """The body kept for this GET if it is still the answer; faults apply to it."""
        found: tuple[bytes, Clock] | None = self.store.kept(key)
        if found is None or found[1].work_due():
            return None
        if not key[0].startswith(_HELPER_PATHS):
            self._inject_faults()
        return found[0]

    def _handle(
        self, environ: dict[str, Any], request_id: str, key: _Key | None
    ) -> tuple[int, bytes, list[tuple[str, str]]]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        path = environ.get("PATH_INFO") or "/"
        handler, args = self._route(method, path)
        api_key = self._authenticate(environ)
        livemode = "_live_" in api_key
        if livemode:
            raise ApiError(
                401,
                "The sandbox only accepts test-mode keys (sk_test_... or rk_test_...).",
            )
        helper = path.startswith(_HELPER_PATHS)
        if not helper:
            self._inject_faults()
        params = self._params(environ, method)
        extra: list[tuple[str, str]] = []
        if method == "GET":
            ctx = RequestContext(id=request_id)
            # Usually nothing is due: then the read's own transaction answers both.
            with self.store.tx(write=False):
                if not self.sb.kernel.work_due():
                    return *self._read(handler, params, args, ctx, key), extra
            self.sb.run_due()
            with self.store.tx(write=False):
                return *self._read(handler, params, args, ctx, key), extra
        self.sb.run_due()
        idempotency_key = environ.get("HTTP_IDEMPOTENCY_KEY")
        # Test helpers act as the end user or the bank would: their events are automatic.
        ctx = (
            RequestContext()
            if helper
            else RequestContext(id=request_id, idempotency_key=idempotency_key)
        )
        if getattr(handler, "outside_transaction", False):
            # Delivering webhooks calls other apps, which may call back into the sandbox:
            # never hold the lock across that.
            with self.requests.serving(ctx):
                status, body = handler(self, params, args)
            return status, body.encode("utf-8"), extra
        with self.store.tx(), self.requests.serving(ctx):
            if idempotency_key:
                extra.append(("Idempotency-Key", idempotency_key))
                replay = self._idempotent_replay(api_key, idempotency_key, method, path, params)
                if replay is not None:
                    extra.append(("Idempotent-Replayed", "true"))
                    return replay[0], replay[1].encode("utf-8"), extra
            status, body = handler(self, params, args)
            if idempotency_key and 200 <= status < 300:
                self.store.execute(
                    "INSERT INTO idempotency (api_key, key, method, path, params, status, body, "
                    "created) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        api_key,
                        idempotency_key,
                        method,
                        path,
                        _canonical(params),
                        status,
                        body,
                        self.sb.now(),
                    ),
                )
        return status, body.encode("utf-8"), extra

    def _read(
        self,
        handler: Handler,
        params: dict[str, Any],
        args: tuple[str, ...],
        ctx: RequestContext,
        key: _Key | None,
    ) -> tuple[int, bytes]:
        """A GET's answer, in the open read transaction; kept when it may be given again."""
        since = self.store.version()
        with self.requests.serving(ctx):
            status, body = handler(self, params, args)
        data = body.encode("utf-8")
        if key is not None and status == 200 and not ctx.read_clock:
            size = len(data) + len(key[0]) + len(key[1]) + len(key[2]) + _KEPT_ENTRY_BYTES
            self.store.keep(key, (data, self.sb.kernel.clock()), size, since)
        return status, data

    def _route(self, method: str, path: str) -> tuple[Handler, tuple[str, ...]]:
        fixed = self.fixed.get((method, path))
        if fixed is not None:
            return fixed, ()
        routes = self.routes.get(method)
        match = routes[0].fullmatch(path) if routes is not None else None
        if routes is not None and match is not None and match.lastgroup is not None:
            # The route's own group closes last, so lastgroup names it.
            handler, first, end = routes[1][match.lastgroup]
            return handler, tuple(match.group(i) for i in range(first, end))
        raise ApiError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
            "or we can help at https://support.stripe.com/.",
        )

    def _authenticate(self, environ: dict[str, Any]) -> str:
        header = environ.get("HTTP_AUTHORIZATION", "")
        key = ""
        if header.lower().startswith("bearer "):
            key = header[7:].strip()
        elif header.lower().startswith("basic "):
            import base64
            import binascii

            try:
                key = base64.b64decode(header[6:].strip()).decode().split(":", 1)[0]
            except (binascii.Error, UnicodeDecodeError, ValueError):
                key = ""
        if not key:
            raise ApiError(
                401,
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY').",
            )
        if not _KEY_RE.match(key):
            shown = key[:8] + "*" * 4 + key[-4:] if len(key) > 12 else key[:3] + "****"
            raise ApiError(401, f"Invalid API Key provided: {shown}")
        return key

    def _inject_faults(self) -> None:
        faults = self.sb.faults
        if faults.latency:
            time.sleep(faults.latency)
        if not faults.admit():
            raise ApiError(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential backoff "
                "of your requests.",
                code="rate_limit",
                headers={"Retry-After": "1"},
            )
        status = faults.next_api_error()
        if status is None:
            return
        if status == 429:
            raise ApiError(
                429,
                "Too many requests hit the API too quickly. We recommend an exponential backoff "
                "of your requests.",
                code="rate_limit",
            )
        raise ApiError(
            status,
            "An error occurred with our connection to Stripe (injected by the sandbox's "
            "faults). The request was not processed; retrying it is safe.",
            type="api_error",
        )

    def _params(self, environ: dict[str, Any], method: str) -> dict[str, Any]:
        query = environ.get("QUERY_STRING", "")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY:
            raise invalid("The request body is too large (limit: 1 MB).")
        raw = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid("The request body is not valid UTF-8.") from None
        content_type = environ.get("CONTENT_TYPE", "")
        if text and "json" in content_type:
            raise invalid(
                "Invalid request: the body must be form-encoded "
                "(application/x-www-form-urlencoded), not JSON."
            )
        try:
            params = parse_form(query)
            if text and method == "POST":
                for key, value in parse_form(text).items():
                    params[key] = value
        except UnicodeDecodeError:
            raise invalid("The request parameters are not valid UTF-8.") from None
        return params

    def _idempotent_replay(
        self, api_key: str, key: str, method: str, path: str, params: dict[str, Any]
    ) -> tuple[int, str] | None:
        row = self.store.one(
            "SELECT method, path, params, status, body FROM idempotency "
            "WHERE api_key = ? AND key = ?",
            (api_key, key),
        )
        if row is None:
            return None
        if row[0] != method or row[1] != path or row[2] != _canonical(params):
            raise ApiError(
                400,
                "Keys for idempotent requests can only be used with the same parameters they "
                f"were first used with. Try using a key other than '{key}' if you meant to "
                "execute a different request.",
                type="idempotency_error",
            )
        return int(row[3]), str(row[4])

    # --- pagination and expansion -------------------------------------------------------

    def page(
        self,
        params: dict[str, Any],
        *,
        table: str,
        where: str,
        args: tuple[Any, ...],
        url: str,
        key: tuple[str, ...] = ("seq",),
        column: str = "data",
        kind: str,
        render: Callable[[list[str]], list[str]] | None = None,
        when_empty: Callable[[], None] | None = None,
    ) -> tuple[int, str]:
        """One page of a list object over ``table`` rows matching ``where``, newest first.

        Rows are ordered by ``key`` descending (it must end in a unique column). The cursor
        (``starting_after`` / ``ending_before``) is compared as a row value, ``(key) <
        (cursor's key)``, which SQLite answers by seeking an index that starts with the
        ``where`` columns followed by ``key``; the cursor's key is a subquery, so a page is
        one statement. ``render`` may rewrite the stored JSON bodies. When the page is
        empty, ``when_empty`` may raise the error that explains it (a guard in ``where``
        failed), and then a cursor that matches no row is a 404.
        """
        limit = page_limit(params)
        after, before = params.get("starting_after"), params.get("ending_before")
        if after and before:
            raise invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="ending_before",
            )
        cols = ", ".join(key)
        base = f"SELECT {column} FROM {table} WHERE {where}"
        cursor_id = after or before
        if cursor_id:
            op, order = ("<", "DESC") if after else (">", "ASC")
            sql = (
                f"{base} AND ({cols}) {op} (SELECT {cols} FROM {table} WHERE id = ? AND {where})"
                f" ORDER BY {', '.join(f'{k} {order}' for k in key)} LIMIT ?"
            )
            rows = self.store.column(sql, (*args, cursor_id, *args, limit + 1))
        else:
            desc = ", ".join(f"{k} DESC" for k in key)
            rows = self.store.column(f"{base} ORDER BY {desc} LIMIT ?", (*args, limit + 1))
        if not rows:
            if when_empty is not None:
                when_empty()
            found = f"SELECT 1 FROM {table} WHERE id = ? AND {where}"
            if cursor_id and self.store.one(found, (cursor_id, *args)) is None:
                raise invalid(
                    f"No such {kind}: '{cursor_id}'",
                    param="starting_after" if after else "ending_before",
                    code="resource_missing",
                )
        has_more = len(rows) > limit
        items = rows[:limit] if has_more else rows
        if before:
            items.reverse()
        if render is not None:
            items = render(items)
        return 200, (
            '{"object":"list","data":['
            + ",".join(items)
            + '],"has_more":'
            + ("true" if has_more else "false")
            + ',"url":'
            + _dumps(url)
            + "}"
        )


# A GET as its kept answer is looked up: (path, query string, Authorization header): all
# of the request a handler reads besides the database and the clock.
_Key = tuple[str, str, str]


def _kept_key(environ: dict[str, Any]) -> _Key | None:
    """The key of a GET without a body, whose answer may be kept; None for anything else."""
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("CONTENT_LENGTH") not in _NO_BODY:
        return None
    return (
        environ.get("PATH_INFO") or "/",
        environ.get("QUERY_STRING", ""),
        environ.get("HTTP_AUTHORIZATION", ""),
    )


_NO_BODY = (None, "", "0")

# What a kept answer holds besides the text of its body and key: the key's and the value's
# tuples, the strings' and bytes' headers, the Clock and the LRU's link (about 500 bytes
# measured), counted so that many small answers or long query strings stay in the bound.
_KEPT_ENTRY_BYTES = 512

# One encoder for every request: json.dumps builds a new one per call when given options.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def _canonical(params: dict[str, Any]) -> str:
    return _CANONICAL.encode(params)


def expand_paths(params: dict[str, Any], allowed: tuple[str, ...], prefix: str = "") -> list[str]:
    """The expansions asked for, validated against ``allowed`` (``prefix``: ``data.`` for lists)."""
    paths = []
    for i, path in enumerate(params.get("expand") or []):
        if not path.startswith(prefix) or path[len(prefix) :] not in allowed:
            raise invalid(f"This property cannot be expanded ({path}).", param=f"expand[{i}]")
        paths.append(path[len(prefix) :])
    return paths


def created_filter(
    created: int | dict[str, int] | None, where: str, args: list[Any]
) -> tuple[str, list[Any]]:
    """``where`` and ``args`` narrowed by a validated ``created`` (an int or a range)."""
    if isinstance(created, int):
        return f"{where} AND created = ?", [*args, created]
    ops = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
    for name, value in (created or {}).items():
        where += f" AND created {ops[name]} ?"
        args = [*args, value]
    return where, args


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    402: "Request Failed",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    413: "Payload Too Large",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}
