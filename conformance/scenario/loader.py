"""Loading scenario files: ``load_scenario``, ``load_corpus``, ``validate_paths``.

Every problem with a file is a :class:`LoadError` whose ``str()`` is ``file:line:col: message``,
exactly one per malformed file (the first problem in file order), so that a corpus with
several broken files lists each once.  Loading is safe on hostile input: a size limit is
checked before parsing, anchors/aliases are refused, nesting is bounded (see ``yamlsafe``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from conformance.scenario.compile import compile_scenario
from conformance.scenario.errors import LoadError
from conformance.scenario.model import Scenario
from conformance.scenario.validate import validate
from conformance.scenario.yamlsafe import parse_yaml

MAX_BYTES = 256 * 1024
PathLike = str | os.PathLike[str]


def _read(path: PathLike, max_bytes: int) -> bytes:
    name = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size > max_bytes:
                raise LoadError(name, 1, 1, f"file is {size} bytes, over the {max_bytes}-byte limit")
            data = handle.read(max_bytes + 1)
    except OSError as exc:
        raise LoadError(name, 1, 1, f"cannot read the file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:  # grew after fstat, or not a regular file
        raise LoadError(name, 1, 1, f"file is over the {max_bytes}-byte limit")
    return data


def load_scenario(path: PathLike, *, max_bytes: int = MAX_BYTES) -> Scenario:
    """Parse, validate and compile one scenario file; LoadError when anything is wrong."""
    name = os.fspath(path)
    data = _read(path, max_bytes)
    document, locs = parse_yaml(data, name)
    validate(document, name, locs)
    try:
        return compile_scenario(document, name, locs)
    except LoadError:
        raise
    except Exception as exc:  # the fast schema check let something through: ask jsonschema
        validate(document, name, locs, force=True)
        line, column = locs.of(())
        raise LoadError(name, line, column, f"cannot compile the scenario: {type(exc).__name__}: {exc}") from None


def expand_paths(paths: Iterable[PathLike]) -> list[Path]:
    """Files as given, directories searched recursively for ``*.yaml``/``*.yml`` (sorted)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()))
        else:
            found.append(path)
    return found


def load_corpus(
    paths: Iterable[PathLike], *, max_bytes: int = MAX_BYTES
) -> tuple[list[Scenario], list[LoadError]]:
    """Load many files (directories are searched); good scenarios and one error per bad file.

    A scenario whose ``id`` repeats an earlier one is rejected with both locations named.
    """
    scenarios: list[Scenario] = []
    errors: list[LoadError] = []
    seen: dict[str, Scenario] = {}
    for path in expand_paths(paths):
        try:
            scenario = load_scenario(path, max_bytes=max_bytes)
        except LoadError as exc:
            errors.append(exc)
            continue
        first = seen.get(scenario.id)
        if first is not None:
            errors.append(LoadError(
                scenario.file, scenario.line, scenario.column,
                f"duplicate id {scenario.id!r} (first defined at {first.file}:{first.line}:{first.column})"))
            continue
        seen[scenario.id] = scenario
        scenarios.append(scenario)
    return scenarios, errors


def validate_paths(paths: Iterable[PathLike], *, max_bytes: int = MAX_BYTES) -> list[LoadError]:
    """Just the errors of :func:`load_corpus` (empty when every file is good)."""
    return load_corpus(paths, max_bytes=max_bytes)[1]
