"""Stripe's form encoding, parameter validation and error bodies.

Parameters arrive as ``a[b][0]=v`` pairs (query string or form body). :func:`parse_form`
turns them into nested dicts and lists; :class:`Spec` values describe what an endpoint
accepts and :func:`validate` checks a parsed dict against one, raising :class:`ApiError`
with the ``code`` and ``param`` Stripe would send.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
# A plain name (no brackets, no control characters): what _KEY and _CONTROL would pass.
_FLAT = re.compile(r"[^\[\]\x00-\x1f\x7f]+")
# Deeper than any parameter Stripe defines (the deepest are five levels); it also keeps
# the recursive steps after parsing (conversion, validation, JSON) far from Python's limit.
MAX_DEPTH = 16
# Control characters (NUL included) never appear in a parameter name.
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# List indices and integers are ASCII digits only: ``str.isdigit`` and ``\d`` would also
# take Arabic-Indic, fullwidth or superscript digits.
_INDEX = re.compile(r"[0-9]{1,9}", re.ASCII)
_INTEGER = re.compile(r"-?[0-9]{1,18}", re.ASCII)


class ApiError(Exception):
    """An error rendered as Stripe's ``{"error": {...}}`` body with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param:
            error["param"] = self.param
        return {"error": error}


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, code=code, param=param)


def page_limit(params: dict[str, Any]) -> int:
    """A list's ``limit`` (10 when absent); outside 1 to 100 it is Stripe's 400."""
    limit: int = params.get("limit", 10)
    if not 1 <= limit <= 100:
        raise invalid(
            f"Invalid limit: must be between 1 and 100, got {limit}.",
            param="limit",
            code="parameter_invalid_integer",
        )
    return limit


def missing(param: str) -> ApiError:
    return ApiError(400, f"Missing required param: {param}.", code="parameter_missing", param=param)


def not_found(kind: str, value: str, *, param: str = "id", status: int = 404) -> ApiError:
    return ApiError(status, f"No such {kind}: '{value}'", code="resource_missing", param=param)


def parse_form(text: str) -> dict[str, Any]:
    """Parse a query string or form body into nested dicts and lists, blank values kept.

    ``a[0]=x&a[1]=y`` and ``a[]=x&a[]=y`` both give ``{"a": ["x", "y"]}``.
    """
    root: dict[str, Any] = {}
    if not text:
        return root
    nested = False
    for raw_key, value in _pairs(text):
        if _FLAT.fullmatch(raw_key):  # the common case: one level, nothing to check
            if isinstance(root.get(raw_key), dict):
                raise invalid(
                    f"Invalid value for {raw_key}: it is also used as a hash.", param=raw_key
                )
            root[raw_key] = value
            continue
        match = _KEY.match(raw_key)
        if not match:
            raise invalid(f"Invalid parameter name: {raw_key}", param=raw_key)
        if _CONTROL.search(raw_key):
            raise invalid(
                "Invalid parameter name: it contains a control character; remove it.",
                param=_CONTROL.sub("?", raw_key),
            )
        parts = [match.group(1), *_PART.findall(match.group(2))]
        if len(parts) > MAX_DEPTH:
            raise invalid(
                f"Invalid parameter name: {raw_key[:100]} is nested {len(parts)} levels deep; "
                f"parameters nest at most {MAX_DEPTH} levels.",
                param=match.group(1),
            )
        _assign(root, parts, value, raw_key)
        nested = True
    # Only nested names leave dicts to turn into lists (or copy).
    return _listify(root) if nested else root


def _pairs(text: str) -> list[tuple[str, str]]:
    """The ``(name, value)`` pairs of ``text``, as ``urllib.parse.parse_qsl`` with
    ``keep_blank_values=True, errors="strict"`` gives them (``UnicodeDecodeError`` for a
    percent-escape that is not UTF-8), without decoding what has nothing to decode."""
    pairs = []
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        if "+" in name or "%" in name:
            name = unquote(name.replace("+", " "), errors="strict")
        if "+" in value or "%" in value:
            value = unquote(value.replace("+", " "), errors="strict")
        pairs.append((name, value))
    return pairs


def _assign(node: dict[str, Any], parts: list[str], value: str, raw_key: str) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if part == "":
            # `a[]=` appends: give each element its own slot after the existing ones (NUL
            # never occurs in a name the client sent, so the slots cannot collide).
            part = f"\0{len(node)}"
        if last:
            if isinstance(node.get(part), dict):
                raise invalid(
                    f"Invalid value for {raw_key}: it is also used as a hash.", param=raw_key
                )
            node[part] = value
            return
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise invalid(
                f"Invalid value for {raw_key}: it is also used as a scalar.", param=raw_key
            )
        node = child


def _listify(node: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        out[key] = _convert(value)
    return out


def _convert(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    keys = list(value)
    if keys and all(_INDEX.fullmatch(k.lstrip("\0")) for k in keys):
        ordered = sorted(keys, key=lambda k: int(k.lstrip("\0")))
        return [_convert(value[k]) for k in ordered]
    return {k: _convert(v) for k, v in value.items()}


# --- validation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """What one parameter accepts.

    ``kind`` is one of ``str``, ``int``, ``bool``, ``enum``, ``list``, ``hash``, ``map``
    (free-form string map, like ``metadata``), ``int_or_range`` (``transacted_at``) or
    ``int_or_empty`` (``limits[accounts]``).
    """

    kind: str
    required: bool = False
    choices: tuple[str, ...] = ()
    item: Spec | None = None
    fields: Mapping[str, Spec] = field(default_factory=dict)
    prefix: str | None = None


def S(required: bool = False, prefix: str | None = None) -> Spec:
    return Spec("str", required=required, prefix=prefix)


def I(required: bool = False) -> Spec:  # noqa: E743
    return Spec("int", required=required)


def E(*choices: str, required: bool = False) -> Spec:
    return Spec("enum", required=required, choices=choices)


def M() -> Spec:
    return Spec("map")


def L(item: Spec, required: bool = False) -> Spec:
    return Spec("list", required=required, item=item)


def H(required: bool = False, **fields: Spec) -> Spec:
    return Spec("hash", required=required, fields=fields)


EXPAND = L(S())
PAGINATION = {"limit": I(), "starting_after": S(), "ending_before": S(), "expand": EXPAND}


def validate(params: Mapping[str, Any], specs: Mapping[str, Spec]) -> dict[str, Any]:
    """Check ``params`` against ``specs`` and return them with ints and bools converted."""
    return _validate_hash(params, specs, "")


def _name(base: str, key: str) -> str:
    return f"{base}[{key}]" if base else key


def _validate_hash(
    params: Mapping[str, Any], specs: Mapping[str, Spec], base: str
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in params:
        if key not in specs:
            raise ApiError(
                400,
                f"Received unknown parameter: {_name(base, key)}",
                code="parameter_unknown",
                param=_name(base, key),
            )
    for key, spec in specs.items():
        # Most specs name parameters the request leaves out: no name is built for those.
        if key not in params:
            if spec.required:
                raise missing(_name(base, key))
            continue
        out[key] = _validate_value(params[key], spec, _name(base, key))
    return out


def _validate_value(value: Any, spec: Spec, name: str) -> Any:
    kind = spec.kind
    if kind == "hash":
        if value == "" and not spec.required:
            return None
        if not isinstance(value, dict):
            raise invalid(
                f"Invalid object: {name} must be a hash of parameters.",
                param=name,
            )
        return _validate_hash(value, spec.fields, name)
    if kind == "map":
        if value == "":
            return {}
        if not isinstance(value, dict) or any(not isinstance(v, str) for v in value.values()):
            raise invalid(f"Invalid {name}: must be a hash of strings.", param=name)
        return dict(value)
    if kind == "list":
        if value == "":
            if spec.required:
                raise missing(name)
            return []
        if not isinstance(value, list):
            raise invalid(f"Invalid array: {name} must be an array.", param=name)
        assert spec.item is not None
        return [_validate_value(v, spec.item, f"{name}[{i}]") for i, v in enumerate(value)]
    if kind == "int_or_range":
        if isinstance(value, dict):
            return _validate_hash(value, {k: I() for k in ("gt", "gte", "lt", "lte")}, name)
        return _validate_value(value, I(), name)
    if not isinstance(value, str):
        raise invalid(f"Invalid {name}: must be a string, not a hash or array.", param=name)
    if kind == "int_or_empty":
        if value == "":
            return None
        return _validate_value(value, I(), name)
    if kind == "int":
        if not _INTEGER.fullmatch(value):
            raise invalid(f"Invalid integer: {value}", param=name, code="parameter_invalid_integer")
        return int(value)
    if kind == "bool":
        if value not in ("true", "false"):
            raise invalid(f"Invalid boolean: {value}", param=name, code="parameter_invalid_boolean")
        return value == "true"
    if value == "" and spec.required:
        raise invalid(
            f"You passed an empty string for '{name}'. We assume empty values are an attempt to "
            "unset a parameter; however '{name}' cannot be unset. You should remove '{name}' "
            "from your request or supply a non-empty value.".replace("{name}", name),
            param=name,
            code="parameter_invalid_empty",
        )
    if kind == "enum" and value not in spec.choices:
        raise invalid(
            f"Invalid {name}: must be one of {_one_of(spec.choices)}",
            param=name,
            code="parameter_invalid_string",
        )
    if spec.prefix and value and not value.startswith(spec.prefix):
        raise invalid(
            f"Invalid {name}: must be an id starting with {spec.prefix}",
            param=name,
            code="parameter_invalid_string",
        )
    return value


def _one_of(choices: tuple[str, ...]) -> str:
    if len(choices) == 1:
        return choices[0]
    return ", ".join(choices[:-1]) + f", or {choices[-1]}"
