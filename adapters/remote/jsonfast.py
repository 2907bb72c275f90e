"""Compact JSON for the hot path: the C encoder and scanner without their Python wrappers.

``json.dumps``/``json.loads`` spend about half their time in Python-level argument
handling and encoding detection for messages this small; both sides of the protocol
exchange one message per API call, so this is worth a few lines.  Falls back to the
standard functions when the C accelerator is missing.
"""

from __future__ import annotations

import json
import json.decoder
import json.encoder
from typing import Any


def _no_default(value: Any) -> Any:
    raise TypeError(f"a {type(value).__name__} value is not JSON serialisable")


_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
_encode_ascii = json.encoder.encode_basestring_ascii

if _c_make_encoder is not None:
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan)
    _encoder = _c_make_encoder(None, _no_default, _encode_ascii, None, ":", ",", False, False, False)

    def dumps(obj: Any) -> str:
        """Compact, ASCII-only JSON text (so also valid UTF-8)."""
        return "".join(_encoder(obj, 0))

else:  # pragma: no cover - CPython always has the accelerator
    _py_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)

    def dumps(obj: Any) -> str:
        return _py_encoder.encode(obj)


_scan_once = json.decoder.JSONDecoder().scan_once  # type: ignore[attr-defined]
_WS = " \t\r"


def loads(line: bytes) -> Any:
    """One JSON value from a line (UTF-8); ValueError for anything else."""
    text = line.decode("utf-8")  # UnicodeDecodeError is a ValueError
    start = len(text) - len(text.lstrip(_WS))
    try:
        value, end = _scan_once(text, start)
    except StopIteration:
        raise ValueError("not a JSON value") from None
    except RecursionError:  # hostile nesting depth: refuse it like any other bad input
        raise ValueError("JSON nested too deeply") from None
    if text[end:].strip(_WS):
        raise ValueError("trailing data after the JSON value")
    return value


def response_line(rid: Any, result: Any) -> bytes:
    """A successful response as one line.  The envelope is formatted around the encoded
    result rather than encoded with it: a third cheaper for the small results of most calls."""
    if type(rid) is int:
        return f'{{"jsonrpc":"2.0","id":{rid},"result":{dumps(result)}}}\n'.encode()
    return (dumps({"jsonrpc": "2.0", "id": rid, "result": result}) + "\n").encode()
