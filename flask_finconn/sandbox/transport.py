"""A ``stripe.HTTPClient`` that serves requests from a WSGI app in the same process."""

from __future__ import annotations

import io
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

import stripe
from requests.structures import CaseInsensitiveDict

# A URL that urlsplit takes apart with no surprises: a lowercase scheme, a netloc with no
# user info, brackets or spaces, no fragment. Its origin (scheme and netloc), path and query.
# Anything else goes through urlsplit.
_SIMPLE_URL = re.compile(r"([a-z][a-z0-9+.-]*://[^/?#@\[\]\s]*)(/[^?#\s]*)?(?:\?([^#\s]*))?")
_ORIGINS_KEPT = 64
# Request header name -> its WSGI environ key (the SDK sends the same few on every request).
_ENVIRON_NAMES: dict[str, str] = {}
_ENVIRON_NAMES_KEPT = 256


def _origin_of(parts: SplitResult) -> tuple[str, str, str]:
    """``wsgi.url_scheme``, ``SERVER_NAME`` and ``SERVER_PORT`` of a split URL."""
    return parts.scheme or "http", parts.hostname or "localhost", str(parts.port or 80)


class SandboxHTTPClient(stripe.HTTPClient):
    """Calls the sandbox's WSGI app directly: no socket, no thread, same wire format."""

    name = "finconn-sandbox"

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        super().__init__()
        self._app = wsgi_app
        self._origins: dict[str, tuple[str, str, str]] = {}

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        body, status, response_headers = self._call(method, url, headers, post_data)
        return body.decode("utf-8"), status, response_headers

    def request_stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[Any, int, Mapping[str, str]]:
        body, status, response_headers = self._call(method, url, headers, post_data)
        return io.BytesIO(body), status, response_headers

    async def request_async(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[bytes, int, Mapping[str, str]]:
        body, status, response_headers = self._call(method, url, headers, post_data)
        return body, status, response_headers

    def close(self) -> None:
        pass

    async def close_async(self) -> None:
        pass

    def _origin(self, origin: str) -> tuple[str, str, str]:
        """:func:`_origin_of` ``scheme://netloc``, kept for the next request."""
        found = self._origins.get(origin)
        if found is None:
            found = _origin_of(urlsplit(origin))  # may raise (a bad port): then nothing is kept
            if len(self._origins) >= _ORIGINS_KEPT:
                self._origins.clear()
            self._origins[origin] = found
        return found

    def _call(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> tuple[bytes, int, CaseInsensitiveDict[str]]:
        data = post_data.encode() if isinstance(post_data, str) else (post_data or b"")
        simple = _SIMPLE_URL.fullmatch(url) if url.__class__ is str else None
        if simple is not None:
            # The client asks one origin over and over: its parts are worked out once.
            scheme, server_name, server_port = self._origin(simple[1])
            path, query = simple[2] or "", simple[3] or ""
        else:
            parts = urlsplit(url)
            scheme, server_name, server_port = _origin_of(parts)
            path, query = parts.path, parts.query
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method.upper(),
            "SCRIPT_NAME": "",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_NAME": server_name,
            "SERVER_PORT": server_port,
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": scheme,
            "wsgi.input": io.BytesIO(data),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        names = _ENVIRON_NAMES
        for key, value in (headers or {}).items():
            name = names.get(key)
            if name is None:
                name = key.upper().replace("-", "_")
                name = name if name == "CONTENT_TYPE" else "HTTP_" + name
                if len(names) < _ENVIRON_NAMES_KEPT:
                    names[key] = name
            environ[name] = value
        captured: dict[str, Any] = {}

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            captured["status"] = int(status.split(" ", 1)[0])
            # Set one by one: the same dict as CaseInsensitiveDict(response_headers), without
            # the generic Mapping.update path.
            kept: CaseInsensitiveDict[str] = CaseInsensitiveDict()
            for name, value in response_headers:
                kept[name] = value
            captured["headers"] = kept
            return lambda chunk: None

        result = self._app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return body, captured["status"], captured["headers"]
