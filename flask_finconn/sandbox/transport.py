"""A ``stripe.HTTPClient`` that serves requests from a WSGI app in the same process."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import stripe
from requests.structures import CaseInsensitiveDict


class SandboxHTTPClient(stripe.HTTPClient):
    """Calls the sandbox's WSGI app directly: no socket, no thread, same wire format."""

    name = "finconn-sandbox"

    def __init__(self, wsgi_app: Callable[..., Iterable[bytes]]) -> None:
        super().__init__()
        self._app = wsgi_app

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

    def _call(
        self, method: str, url: str, headers: Mapping[str, str] | None, post_data: Any
    ) -> tuple[bytes, int, CaseInsensitiveDict[str]]:
        parts = urlsplit(url)
        data = post_data.encode() if isinstance(post_data, str) else (post_data or b"")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method.upper(),
            "SCRIPT_NAME": "",
            "PATH_INFO": parts.path,
            "QUERY_STRING": parts.query,
            "SERVER_NAME": parts.hostname or "localhost",
            "SERVER_PORT": str(parts.port or 80),
            "SERVER_PROTOCOL": "HTTP/1.1",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": parts.scheme or "http",
            "wsgi.input": io.BytesIO(data),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for key, value in (headers or {}).items():
            name = key.upper().replace("-", "_")
            if name == "CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value
            else:
                environ["HTTP_" + name] = value
        captured: dict[str, Any] = {}

        def start_response(
            status: str, response_headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            captured["status"] = int(status.split(" ", 1)[0])
            captured["headers"] = CaseInsensitiveDict(response_headers)
            return lambda chunk: None

        result = self._app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return body, captured["status"], captured["headers"]
