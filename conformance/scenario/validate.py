"""Schema validation of a parsed scenario, with every error mapped to its YAML position.

The committed JSON Schema (``conformance/schema/scenario.schema.json``) describes the whole
format, for editors.  A valid document is recognised by the compiled checks of ``fastcheck``;
otherwise ``jsonschema`` finds the error.  It is applied in two passes so that messages stay
precise: the
top level with steps checked only as mappings, then each step against the one definition its
action key selects (``$defs/step_<action>``).  A step with no known action key is reported as
"unknown step" at that key, rather than as a failure of a 25-way ``anyOf``.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jsonschema

from conformance.scenario.errors import LoadError
from conformance.scenario.fastcheck import Check, compile_check
from conformance.scenario.yamlsafe import Locations

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "scenario.schema.json"
COMMON_STEP_KEYS = frozenset({"expect", "note", "completes", "outputs", "data", "on_callback",
                              "timeout_ms", "within_ms"})


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


@functools.lru_cache(maxsize=1)
def _validators() -> tuple[jsonschema.Draft202012Validator, dict[str, jsonschema.Draft202012Validator]]:
    schema = load_schema()
    defs = schema["$defs"]
    top = dict(schema)
    top["$defs"] = {**defs, "step": {"type": "object"}}
    per_action = {}
    for action in defs["step"]["x-actions"]:
        sub = {"$schema": schema["$schema"], "$defs": defs, "$ref": f"#/$defs/step_{action}"}
        per_action[action] = jsonschema.Draft202012Validator(sub)
    return jsonschema.Draft202012Validator(top), per_action


@functools.lru_cache(maxsize=1)
def _fast_checks() -> tuple[Check, dict[str, Check]]:
    schema = load_schema()
    defs = schema["$defs"]
    top = {k: v for k, v in schema.items() if k != "$defs"}
    fast_defs = {**defs, "step": {"type": "object"}}
    per_action = {a: compile_check({"$ref": f"#/$defs/step_{a}"}, defs) for a in defs["step"]["x-actions"]}
    return compile_check(top, fast_defs), per_action


def _quick_valid(document: Any) -> bool:
    """True when the document is certainly valid (the usual case), without jsonschema."""
    top, per_action = _fast_checks()
    if not isinstance(document, dict) or not top(document):
        return False
    for step in document["steps"]:
        actions = [k for k in step if k in per_action]
        if len(actions) != 1 or not per_action[actions[0]](step):
            return False
    return True


def actions() -> tuple[str, ...]:
    return tuple(load_schema()["$defs"]["step"]["x-actions"])


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_WORDS = {"integer": "an integer", "string": "a string", "object": "a mapping", "array": "a list",
               "boolean": "true or false", "null": "null", "number": "a number"}
_PY_WORDS = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a mapping",
             list: "a list", type(None): "null"}


def path_text(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: jsonschema.ValidationError) -> tuple[str, bool, tuple[Any, ...]]:
    """(message, locate-at-key, path) for one schema error."""
    path = tuple(error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    what = schema.get("x-what")
    kind, value = error.validator, error.instance
    if what and kind in ("anyOf", "oneOf", "enum"):
        return f"{_short(value)} is not {what}", False, path
    if kind == "additionalProperties" and isinstance(value, dict):
        allowed = schema.get("properties", {})
        extra = [k for k in value if k not in allowed]
        key = extra[0] if extra else "?"
        names = ", ".join(allowed) if allowed else "none"
        return f"unknown key {key!r} (allowed here: {names})", True, (*path, key)
    if kind == "required":
        missing = [k for k in error.validator_value if not isinstance(value, dict) or k not in value]
        return f"missing required key {missing[0] if missing else '?'!r}", False, path
    if kind == "type":
        wanted = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
        words = " or ".join(_TYPE_WORDS.get(str(w), str(w)) for w in wanted)
        got = _PY_WORDS.get(type(value), type(value).__name__)
        return f"wrong type: expected {words}, got {got} {_short(value)}", False, path
    if kind == "enum":
        options = ", ".join(str(o) for o in error.validator_value)
        return f"{_short(value)} is not one of: {options}", False, path
    if kind == "const":
        return f"{_short(value)} must be {error.validator_value!r}", False, path
    return error.message, False, path


def _located(file: str, locs: Locations, error: jsonschema.ValidationError, prefix: tuple[Any, ...]) -> LoadError:
    message, at_key, path = _message(error)
    full = (*prefix, *path)
    line, column = locs.key(full) if at_key else locs.of(full)
    where = path_text(full[:-1] if at_key else full)
    return LoadError(file, line, column, f"{where}: {message}" if where else message)


def _first(errors: list[LoadError]) -> LoadError | None:
    return min(errors, key=lambda e: (e.line, e.column)) if errors else None


def validate(document: Any, file: str, locs: Locations, *, force: bool = False) -> None:
    """Raise the first (in file order) schema error of ``document`` as a LoadError.

    ``force`` skips the fast check (used when a document that passed it fails to compile)."""
    if not force and _quick_valid(document):
        return
    top, per_action = _validators()
    if not isinstance(document, dict):
        raise LoadError(file, *locs.of(()), "a scenario must be a mapping of keys (id, title, steps, ...)")
    found = [_located(file, locs, error, ()) for error in top.iter_errors(document)]
    steps = document.get("steps")
    if isinstance(steps, list):
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                continue  # already reported by the top-level pass
            prefix = ("steps", index)
            action_keys = [k for k in step if k in per_action]
            if not action_keys:
                unknown = [k for k in step if k not in COMMON_STEP_KEYS]
                if unknown:
                    line, column = locs.key((*prefix, unknown[0]))
                    found.append(LoadError(file, line, column,
                                           f"steps[{index}]: unknown step {unknown[0]!r} "
                                           f"(known: {', '.join(per_action)})"))
                else:
                    line, column = locs.of(prefix)
                    found.append(LoadError(file, line, column, f"steps[{index}]: the step has no action key"))
                continue
            if len(action_keys) > 1:
                line, column = locs.key((*prefix, action_keys[1]))
                found.append(LoadError(file, line, column,
                                       f"steps[{index}]: one action per step, found {action_keys[0]!r} "
                                       f"and {action_keys[1]!r}"))
                continue
            found.extend(_located(file, locs, e, prefix) for e in per_action[action_keys[0]].iter_errors(step))
    first = _first(found)
    if first is not None:
        raise first
