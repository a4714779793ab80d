"""Check sandbox traffic against the cut of Stripe's OpenAPI spec in ``tests/data/openapi``.

Generic over endpoints: everything is looked up by ``(template, method)``, e.g.
``("/v1/setup_intents/{intent}/confirm", "post")``.

- :meth:`OpenAPI.errors` validates a response body (JSON Schema draft 7, after turning
  OpenAPI 3.0's ``nullable`` into ``null`` alternatives). Stub schemas (parts of the spec
  that were not transcribed) reject any value, so a body that fills one fails loudly.
- :meth:`OpenAPI.params` lists an operation's parameters (query or form body) with their
  schemas; :func:`sample` builds a value of the right type for one and :func:`form`
  encodes it as Stripe's ``a[b][0]=v`` pairs.
- :meth:`OpenAPI.template` maps a concrete path (``/v1/mandates/mandate_123``) back to its
  template.
- :class:`Recorder` is a ``stripe.HTTPClient`` that passes requests on and keeps every
  ``(method, path, status, body)``, to validate what a flow through the SDK received.

The spec is the 2026-07-29.dahlia cut; ``info.x-endive-overlay`` lists what changed for
Financial Connections in 2026-10-28.endive (which the sandbox speaks). ``OpenAPI(endive=True)``
applies it (:func:`apply_endive`); the payments endpoints are not affected by it.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jsonschema
import stripe

from flask_finconn.sandbox import SandboxHTTPClient

DATA = Path(__file__).parent / "data" / "openapi"
SPEC = DATA / "stripe_openapi_subset.json"


def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 -> JSON Schema: ``nullable`` becomes ``anyOf [null, ...]``, refs move."""
    if isinstance(node, list):
        return [_to_json_schema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "nullable" or key.startswith("x-") or key == "description":
            continue
        if key == "$ref":
            out[key] = value.replace("#/components/schemas/", "#/definitions/")
        elif key == "properties":
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = _to_json_schema(value)
    if node.get("nullable"):
        return {"anyOf": [{"type": "null"}, out]}
    return out


def apply_endive(spec: dict[str, Any]) -> None:
    """Turn the dahlia spec's Financial Connections parts into 2026-10-28.endive's, in place.

    The three changes ``info.x-endive-overlay`` lists: a session's ``filters`` (the object
    and the create parameter) trade ``countries`` (an array) for ``country`` (a string),
    and an account number's ``status`` may also be ``expired`` or ``pending``.
    """
    schemas = spec["components"]["schemas"]
    filters = schemas["bank_connections_resource_link_account_session_filters"]["properties"]
    filters.pop("countries")
    filters["country"] = {"maxLength": 5000, "nullable": True, "type": "string"}
    create = spec["paths"]["/v1/financial_connections/sessions"]["post"]["requestBody"]
    params = create["content"]["application/x-www-form-urlencoded"]["schema"]["properties"]
    params["filters"]["properties"].pop("countries")
    params["filters"]["properties"]["country"] = {"maxLength": 5000, "type": "string"}
    status = schemas["bank_connections_resource_account_number_details"]["properties"]["status"]
    status["enum"] = sorted({*status["enum"], "expired", "pending"})


class OpenAPI:
    """One loaded spec: schemas by name, operations by template and method.

    ``endive=True`` applies :func:`apply_endive` first (for Financial Connections).
    """

    def __init__(self, path: Path = SPEC, *, endive: bool = False) -> None:
        self.spec: dict[str, Any] = json.loads(path.read_text())
        if endive:
            apply_endive(self.spec)
        self.schemas: dict[str, Any] = self.spec["components"]["schemas"]
        self.definitions = {name: _to_json_schema(s) for name, s in self.schemas.items()}
        self._patterns: list[tuple[re.Pattern[str], str]] = [
            (re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", t) + "$"), t)
            for t in sorted(self.spec["paths"], key=lambda t: t.count("{"))
        ]

    def operation(self, template: str, method: str) -> dict[str, Any]:
        try:
            return dict(self.spec["paths"][template][method.lower()])
        except KeyError:
            raise KeyError(f"The spec has no operation {method.upper()} {template}.") from None

    def template(self, path: str) -> str | None:
        """The spec's template for a concrete path, or None when the spec lacks it."""
        path = urlsplit(path).path
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return None

    def resolve(self, schema: Mapping[str, Any]) -> dict[str, Any]:
        """Follow ``$ref`` links to the schema they name."""
        while "$ref" in schema:
            schema = self.schemas[str(schema["$ref"]).rsplit("/", 1)[1]]
        return dict(schema)

    def response_schema(self, template: str, method: str, status: int = 200) -> dict[str, Any]:
        responses = self.operation(template, method)["responses"]
        entry = responses.get(str(status)) or responses["default"]
        return dict(entry["content"]["application/json"]["schema"])

    def errors(self, template: str, method: str, body: Any, status: int = 200) -> list[str]:
        """Why ``body`` does not match the response schema (empty when it does)."""
        return self._report(_to_json_schema(self.response_schema(template, method, status)), body)

    def _report(self, schema: Any, body: Any) -> list[str]:
        validator = _validator(id(self), json.dumps(schema, sort_keys=True), self)
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message[:300]}"
            for e in validator.iter_errors(body)
        ]

    def schema_errors(self, name: str, body: Any) -> list[str]:
        """Why ``body`` is not a valid ``components.schemas[name]`` (empty when it is)."""
        return self._report({"$ref": f"#/definitions/{name}"}, body)

    def params(self, template: str, method: str) -> dict[str, dict[str, Any]]:
        """Every parameter the operation takes in its query string or form body."""
        op = self.operation(template, method)
        out = {p["name"]: p["schema"] for p in op.get("parameters", []) if p["in"] == "query"}
        body = op.get("requestBody", {}).get("content", {})
        form = body.get("application/x-www-form-urlencoded", {}).get("schema", {})
        out.update(form.get("properties", {}))
        return out


@functools.lru_cache(maxsize=256)
def _validator(_owner: int, schema_text: str, api: OpenAPI) -> jsonschema.Draft7Validator:
    schema = json.loads(schema_text)
    return jsonschema.Draft7Validator({**schema, "definitions": api.definitions})


def is_stub(schema: Mapping[str, Any]) -> bool:
    return "not" in schema or bool(schema.get("x-not-transcribed"))


def sample(api: OpenAPI, schema: Mapping[str, Any], depth: int = 0) -> Any:
    """A wire value of the schema's type, with every property filled (stubs: ``""``)."""
    schema = api.resolve(schema)
    if is_stub(schema):
        return ""
    if "anyOf" in schema:
        branches = [api.resolve(b) for b in schema["anyOf"]]
        usable = [b for b in branches if not is_stub(b) and b.get("enum") != [""]]
        return sample(api, usable[0] if usable else branches[0], depth)
    if "enum" in schema:
        values = [v for v in schema["enum"] if v != ""]
        return str(values[0] if values else "")
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        if not props:
            return {"key": "value"} if schema.get("additionalProperties") else {}
        if depth > 6:
            return {
                k: sample(api, v, depth + 1)
                for k, v in props.items()
                if k in schema.get("required", [])
            }
        return {k: sample(api, v, depth + 1) for k, v in props.items()}
    if kind == "array":
        return [sample(api, schema.get("items", {}), depth + 1)]
    if kind == "integer":
        return "1"
    if kind == "boolean":
        return "true"
    return "x"


def form(params: Mapping[str, Any]) -> str:
    """Stripe's form encoding of nested dicts and lists."""
    pairs: list[tuple[str, str]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, sub in value.items():
                walk(f"{prefix}[{key}]" if prefix else str(key), sub)
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                walk(f"{prefix}[{i}]", sub)
        else:
            pairs.append((prefix, str(value)))

    walk("", params)
    return urlencode(pairs)


class Recorder(stripe.HTTPClient):
    """Passes requests to a sandbox client and keeps ``(method, path, status, body)``."""

    name = "recorder"

    def __init__(self, inner: SandboxHTTPClient) -> None:
        super().__init__()
        self.inner = inner
        self.seen: list[tuple[str, str, int, Any]] = []

    def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        post_data: Any = None,
        *,
        _usage: list[str] | None = None,
    ) -> tuple[str, int, Mapping[str, str]]:
        body, status, response_headers = self.inner.request(method, url, headers, post_data)
        self.seen.append((method.lower(), urlsplit(url).path, status, json.loads(body)))
        return body, status, response_headers

    def close(self) -> None:
        self.inner.close()
