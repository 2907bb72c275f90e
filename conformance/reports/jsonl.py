"""``results.jsonl``: one JSON object per finished scenario, appended as it finishes.

Several processes (pytest-xdist workers) append to the same file.  Each line goes out in a
single ``write()`` on a descriptor opened with ``O_APPEND``, so lines from different
workers never interleave and a killed run keeps every line written before it died.  The
reader therefore tolerates a truncated *last* line (a writer killed mid-write) but reports
a malformed line anywhere else with its line number.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from conformance.results import ScenarioResult, StepRecord, TraceEvent, Verdict, ViolationRecord

RESULTS_NAME = "results.jsonl"


class JsonlError(ValueError):
    """A results file line that is not a result; ``str()`` is ``file:line: message``."""


def _fallback(value: Any) -> Any:
    # Trace arguments may carry bytes or implementation handles; keep them readable.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return repr(value)


_FIELDS: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls))
    return names


def _shallow(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in _field_names(type(record))}


def as_dict(result: ScenarioResult) -> dict[str, Any]:
    """What :meth:`ScenarioResult.to_json` gives, without its deep copies.

    ``dataclasses.asdict`` deep-copies every trace argument; at one result per scenario
    that was half of the plugin's per-scenario cost, and json.dumps needs no copy.
    """
    data = _shallow(result)
    data["verdict"] = result.verdict.value
    data["steps"] = [_shallow(s) for s in result.steps]
    data["trace"] = [_shallow(e) for e in result.trace]
    data["violations"] = [_shallow(v) for v in result.violations]
    return data


def encode(result: ScenarioResult, **extra: Any) -> bytes:
    """One line (newline included) for ``result``; ``extra`` keys are added (e.g. ``nodeid``)."""
    data = as_dict(result)
    data.update(extra)
    text = json.dumps(data, default=_fallback, separators=(",", ":"), allow_nan=False)
    return text.encode("utf-8") + b"\n"


def append_line(path: str | os.PathLike[str], line: bytes) -> None:
    """Append one encoded line with a single O_APPEND write (atomic among appenders)."""
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, line)
        # A regular file only writes short on a full disk or a signal; finish the line so
        # the file stays parseable rather than silently dropping the tail.
        while written < len(line):
            written += os.write(fd, line[written:])
    finally:
        os.close(fd)


def append_result(path: str | os.PathLike[str], result: ScenarioResult, **extra: Any) -> None:
    append_line(path, encode(result, **extra))


def write_results(path: str | os.PathLike[str], results: Iterable[ScenarioResult]) -> None:
    """Write a whole file at once (for tools that build results outside a run)."""
    with open(path, "wb") as handle:
        for result in results:
            handle.write(encode(result))


def result_from_json(data: dict[str, Any]) -> ScenarioResult:
    """Rebuild a :class:`ScenarioResult` from :meth:`ScenarioResult.to_json` output.

    Unknown keys (``nodeid``, ``worker``) are ignored so the line format can grow.
    """
    try:
        return ScenarioResult(
            id=str(data["id"]),
            title=str(data.get("title", "")),
            file=str(data.get("file", "")),
            verdict=Verdict(data["verdict"]),
            adapter=str(data.get("adapter", "")),
            level=str(data.get("level", "must")),
            requirements=[str(r) for r in data.get("requirements", [])],
            tags=[str(t) for t in data.get("tags", [])],
            duration_s=float(data.get("duration_s", 0.0)),
            message=str(data.get("message", "")),
            steps=[StepRecord(**s) for s in data.get("steps", [])],
            trace=[TraceEvent(**e) for e in data.get("trace", [])],
            violations=[ViolationRecord(**v) for v in data.get("violations", [])],
            implementation=str(data.get("implementation", "")),
            expectation=str(data.get("expectation", "")),
        )
    except KeyError as exc:
        raise ValueError(f"missing key {exc.args[0]!r}") from None
    except TypeError as exc:
        raise ValueError(f"bad record: {exc}") from None


def iter_records(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, decoded object) for each complete line; see the module note on truncation."""
    raw = Path(path).read_bytes()
    lines = raw.split(b"\n")
    # After the final newline split() leaves b""; anything else there is an unterminated tail.
    tail_truncated = lines[-1] != b""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_tail = number == len(lines)
        try:
            data = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            if is_tail and tail_truncated:
                return  # a writer died mid-line: every earlier line is complete
            raise JsonlError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise JsonlError(f"{path}:{number}: expected a JSON object")
        yield number, data


def read_results(path: str | os.PathLike[str]) -> list[ScenarioResult]:
    """Every result in the file, in the order written.  Missing file -> empty list."""
    if not Path(path).exists():
        return []
    results = []
    for number, data in iter_records(path):
        try:
            results.append(result_from_json(data))
        except ValueError as exc:
            raise JsonlError(f"{path}:{number}: {exc}") from None
    return results


__all__ = [
    "RESULTS_NAME",
    "JsonlError",
    "append_line",
    "append_result",
    "as_dict",
    "encode",
    "iter_records",
    "read_results",
    "result_from_json",
    "write_results",
]
