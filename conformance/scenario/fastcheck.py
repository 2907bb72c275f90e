"""A fast yes/no check of the scenario schema, for the common case of a valid file.

``jsonschema`` takes about 0.3 ms per step (reference resolution on every descent), which made
loading a corpus slower than running it.  This module compiles the subset of JSON Schema 2020-12
that ``scenario.schema.json`` uses into plain closures that only answer "valid?".  When the answer
is no, the loader asks ``jsonschema`` for the located error, so every message still comes from
the reference implementation; tests check that both agree on the corpus, the malformed files and
generated mutations.  A keyword outside the subset is a ValueError when the schema is compiled,
so the schema cannot silently outgrow this checker.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

Check = Callable[[Any], bool]

_IGNORED = frozenset({"$schema", "$id", "$defs", "title", "description", "$comment"})


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and value.is_integer())


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _equal(a: Any, b: Any) -> bool:
    """JSON equality as jsonschema applies it: booleans never equal numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, dict)) or isinstance(b, (list, dict)):
        return type(a) is type(b) and a == b
    return bool(a == b)


class _Compiler:
    def __init__(self, defs: Mapping[str, Any]) -> None:
        self.defs = defs
        self.refs: dict[str, Check] = {}

    def ref(self, name: str) -> Check:
        found = self.refs.get(name)
        if found is None:
            cell: list[Check] = []
            self.refs[name] = lambda v: cell[0](v)  # recursion (token_spec.concat) goes through the cell
            cell.append(self.node(self.defs[name]))
            found = self.refs[name] = cell[0]
        return found

    def node(self, schema: Mapping[str, Any]) -> Check:
        checks: list[Check] = []
        for keyword, value in schema.items():
            if keyword in _IGNORED or keyword.startswith("x-") or keyword in ("then", "else"):
                continue
            checks.append(self.keyword(keyword, value, schema))
        if not checks:
            return lambda v: True
        if len(checks) == 1:
            return checks[0]
        return lambda v: all(check(v) for check in checks)

    def keyword(self, keyword: str, value: Any, schema: Mapping[str, Any]) -> Check:
        if keyword == "$ref":
            if not value.startswith("#/$defs/"):
                raise ValueError(f"unsupported $ref {value!r}")
            return self.ref(value[8:])
        if keyword == "type":
            names = value if isinstance(value, list) else [value]
            tests = [_TYPES[n] for n in names]
            return lambda v: any(t(v) for t in tests)
        if keyword == "enum":
            options = list(value)
            hashable = {o for o in options if isinstance(o, str)}
            return lambda v: (isinstance(v, str) and v in hashable) or any(_equal(v, o) for o in options)
        if keyword == "const":
            return lambda v: _equal(v, value)
        if keyword == "pattern":
            search = re.compile(value).search
            return lambda v: not isinstance(v, str) or search(v) is not None
        if keyword in ("minimum", "maximum"):
            bound = value
            if keyword == "minimum":
                return lambda v: not _is_number(v) or v >= bound
            return lambda v: not _is_number(v) or v <= bound
        if keyword == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= value
        if keyword in ("minItems", "maxItems"):
            if keyword == "minItems":
                return lambda v: not isinstance(v, list) or len(v) >= value
            return lambda v: not isinstance(v, list) or len(v) <= value
        if keyword in ("minProperties", "maxProperties"):
            if keyword == "minProperties":
                return lambda v: not isinstance(v, dict) or len(v) >= value
            return lambda v: not isinstance(v, dict) or len(v) <= value
        if keyword == "required":
            names = list(value)
            return lambda v: not isinstance(v, dict) or all(n in v for n in names)
        if keyword == "dependentRequired":
            deps = {k: list(x) for k, x in value.items()}
            return lambda v: not isinstance(v, dict) or all(
                all(n in v for n in needed) for key, needed in deps.items() if key in v)
        if keyword == "properties":
            props = {name: self.node(sub) for name, sub in value.items()}
            return lambda v: not isinstance(v, dict) or all(
                check(v[name]) for name, check in props.items() if name in v)
        if keyword == "additionalProperties":
            if value is not False:
                raise ValueError("additionalProperties other than false is not supported")
            allowed = frozenset(schema.get("properties", {}))
            return lambda v: not isinstance(v, dict) or all(k in allowed for k in v)
        if keyword == "items":
            item = self.node(value)
            return lambda v: not isinstance(v, list) or all(item(x) for x in v)
        if keyword == "anyOf":
            options = [self.node(sub) for sub in value]
            return lambda v: any(option(v) for option in options)
        if keyword == "if":
            condition = self.node(value)
            then = self.node(schema.get("then", {}))
            otherwise = self.node(schema.get("else", {}))
            return lambda v: then(v) if condition(v) else otherwise(v)
        raise ValueError(f"schema keyword {keyword!r} is not supported by the fast checker")


def compile_check(schema: Mapping[str, Any], defs: Mapping[str, Any]) -> Check:
    """A ``value -> bool`` function equivalent to validating ``value`` against ``schema``."""
    return _Compiler(defs).node(schema)
