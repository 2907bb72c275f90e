"""Wire forms of the interface's data types (docs/protocol.md, "Data types").

Buffers travel as ``{"type": int, "data": base64, "size": int|null}``; free-form values
(``auth_data``, QueryContextAttributes results) as JSON with a few ``$``-tagged objects for
what JSON lacks (bytes, tuples, non-string keys, the interface's dataclasses).  Handles are
strings minted by the agent; encoding/decoding of handles lives with whoever mints them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from adapters.api import CallOutputs, Capabilities, ContextSizes, SecBuffer, StreamSizes, Violation

U32 = 0xFFFFFFFF


class WireError(ValueError):
    """A value on the wire does not have the documented shape."""


# ---- buffers -------------------------------------------------------------------------------


def encode_buffer(buf: SecBuffer) -> dict[str, Any]:
    return {
        "type": buf.type,
        "data": base64.b64encode(buf.data).decode("ascii") if buf.data else "",
        "size": buf.size,
    }


def encode_buffers(buffers: list[SecBuffer] | None) -> list[dict[str, Any]] | None:
    if buffers is None:
        return None
    return [encode_buffer(b) for b in buffers]


def decode_buffer(obj: Any) -> SecBuffer:
    if not isinstance(obj, dict):
        raise WireError(f"buffer must be an object, got {type(obj).__name__}")
    btype, data, size = obj.get("type"), obj.get("data", ""), obj.get("size")
    if not isinstance(btype, int) or isinstance(btype, bool) or not 0 <= btype <= U32:
        raise WireError(f"buffer type must be an unsigned 32-bit int, got {btype!r}")
    if not isinstance(data, str):
        raise WireError("buffer data must be a base64 string")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= U32):
        raise WireError(f"buffer size must be null or an unsigned 32-bit int, got {size!r}")
    try:
        raw = base64.b64decode(data, validate=True) if data else b""
    except (binascii.Error, ValueError) as exc:
        raise WireError(f"buffer data is not base64: {exc}") from None
    return SecBuffer(btype, raw, size)


def decode_buffers(obj: Any) -> list[SecBuffer] | None:
    if obj is None:
        return None
    if not isinstance(obj, list):
        raise WireError("a buffer list must be an array or null")
    return [decode_buffer(b) for b in obj]


def update_buffers(target: list[SecBuffer] | None, source: list[SecBuffer] | None) -> None:
    """Write ``source`` into the caller's own SecBuffer objects, in place.

    The caller keeps references to its buffer objects (as C keeps pointers), so we mutate
    them rather than replacing the list; extra buffers the implementation added are
    appended, surplus caller buffers are left as they are.
    """
    if target is None or source is None:
        return
    for i, src in enumerate(source):
        if i < len(target):
            dst = target[i]
            dst.type, dst.data, dst.size = src.type, src.data, src.size
        else:
            target.append(src)


# ---- completion outputs --------------------------------------------------------------------


def encode_outputs(outputs: CallOutputs, handle_of: Any) -> dict[str, Any]:
    """``handle_of(kind, value)`` turns an implementation handle into its wire string."""
    return {
        "credential": handle_of("credential", outputs.credential),
        "new_context": handle_of("context", outputs.new_context),
        "output": encode_buffers(outputs.output),
        "context_attr": outputs.context_attr & U32,
        "expiry": outputs.expiry,
        "written": outputs.written,
    }


def apply_outputs(obj: Any, outputs: CallOutputs) -> None:
    """Write a wire ``outputs`` object into the caller's CallOutputs (validating first,
    so a malformed message changes nothing)."""
    if not isinstance(obj, dict):
        raise WireError("outputs must be an object")
    cred, new_ctx = obj.get("credential"), obj.get("new_context")
    for name, h in (("credential", cred), ("new_context", new_ctx)):
        if h is not None and not isinstance(h, str):
            raise WireError(f"outputs.{name} must be a handle string or null")
    attr, expiry, written = obj.get("context_attr", 0), obj.get("expiry"), obj.get("written", False)
    if not isinstance(attr, int) or isinstance(attr, bool) or not 0 <= attr <= U32:
        raise WireError("outputs.context_attr must be an unsigned 32-bit int")
    if expiry is not None and (not isinstance(expiry, int) or isinstance(expiry, bool)):
        raise WireError("outputs.expiry must be an int or null")
    if not isinstance(written, bool):
        raise WireError("outputs.written must be a boolean")
    output = decode_buffers(obj.get("output"))
    outputs.credential, outputs.new_context = cred, new_ctx
    outputs.context_attr, outputs.expiry = attr, expiry
    if output is not None:
        if outputs.output is None:
            outputs.output = output
        else:
            update_buffers(outputs.output, output)
    outputs.written = written


# ---- free-form values ----------------------------------------------------------------------

# Interface records that attribute queries return; each travels as {"$Name": {field: value}}.
_RECORDS: dict[str, type] = {"StreamSizes": StreamSizes, "ContextSizes": ContextSizes}


def encode_value(value: Any) -> Any:
    """JSON for a Python value; TypeError when it has no wire form."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, list):
        return [encode_value(v) for v in value]
    if isinstance(value, tuple):
        return {"$tuple": [encode_value(v) for v in value]}
    if isinstance(value, (set, frozenset)):
        return {"$set": [encode_value(v) for v in sorted(value, key=repr)]}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("$") for k in value):
            return {k: encode_value(v) for k, v in value.items()}
        return {"$dict": [[encode_value(k), encode_value(v)] for k, v in value.items()]}
    record = type(value).__name__
    if _RECORDS.get(record) is type(value):
        fields = dataclasses.fields(_RECORDS[record])
        return {f"${record}": {f.name: encode_value(getattr(value, f.name)) for f in fields}}
    if isinstance(value, SecBuffer):
        return {"$SecBuffer": encode_buffer(value)}
    raise TypeError(f"a {type(value).__name__} value has no wire form in protocol v1")


def decode_value(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, list):
        return [decode_value(v) for v in obj]
    if not isinstance(obj, dict):
        raise WireError(f"unexpected JSON value {obj!r}")
    if len(obj) == 1:
        ((key, inner),) = obj.items()
        if key.startswith("$"):
            return _decode_tagged(key, inner)
    return {k: decode_value(v) for k, v in obj.items()}


def _decode_tagged(tag: str, inner: Any) -> Any:
    try:
        if tag == "$bytes":
            return base64.b64decode(inner, validate=True)
        if tag == "$tuple":
            return tuple(decode_value(v) for v in inner)
        if tag == "$set":
            return frozenset(decode_value(v) for v in inner)
        if tag == "$dict":
            return {decode_value(k): decode_value(v) for k, v in inner}
        if tag[1:] in _RECORDS:
            return _RECORDS[tag[1:]](**{k: decode_value(v) for k, v in inner.items()})
        if tag == "$SecBuffer":
            return decode_buffer(inner)
    except (TypeError, ValueError, AttributeError, binascii.Error) as exc:
        raise WireError(f"bad {tag} value: {exc}") from None
    raise WireError(f"unknown tagged value {tag}")


# ---- violations and capabilities -------------------------------------------------------------


def encode_violation(v: Violation) -> dict[str, Any]:
    return {"requirement": v.requirement, "message": v.message, "party": v.party, "call": v.call}


def decode_violation(obj: Any) -> Violation:
    if not isinstance(obj, dict):
        raise WireError("a violation must be an object")
    req, msg, party, call = obj.get("requirement"), obj.get("message"), obj.get("party", "implementation"), obj.get(
        "call"
    )
    if not isinstance(req, str) or not isinstance(msg, str) or party not in ("implementation", "caller"):
        raise WireError(f"malformed violation {obj!r}")
    if call is not None and not isinstance(call, str):
        raise WireError("violation.call must be a string or null")
    return Violation(req, msg, party, call)


def decode_violations(obj: Any) -> list[Violation]:
    if not isinstance(obj, list):
        raise WireError("violations must be an array")
    return [decode_violation(v) for v in obj]


def encode_capabilities(caps: Capabilities) -> dict[str, Any]:
    return {"packages": sorted(caps.packages), "features": sorted(caps.features)}


def _strings(obj: Any, what: str) -> Iterable[str]:
    if not isinstance(obj, list) or not all(isinstance(s, str) for s in obj):
        raise WireError(f"{what} must be an array of strings")
    return obj


def decode_capabilities(name: Any, version: Any, obj: Any) -> Capabilities:
    if not isinstance(name, str) or not isinstance(version, str):
        raise WireError("implementation name and version must be strings")
    if not isinstance(obj, dict):
        raise WireError("capabilities must be an object")
    return Capabilities(
        name=name,
        version=version,
        packages=frozenset(_strings(obj.get("packages", []), "capabilities.packages")),
        features=frozenset(_strings(obj.get("features", []), "capabilities.features")),
    )


def u32(value: Any, what: str) -> int:
    """An unsigned 32-bit int from the wire (statuses, flags), or WireError."""
    if type(value) is not int or not 0 <= value <= U32:
        raise WireError(f"{what} must be an unsigned 32-bit int, got {value!r}")
    return value
