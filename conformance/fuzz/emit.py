"""Turn the minimal failing run into a regression scenario (docs/scenarios.md format).

The steps already carry the reference simulator's answers as expectations, so the scenario
fails against the faulty implementation (at the step where it diverged, or through the
contract monitor) and passes against the correct simulator.  The description keeps what is
needed to reproduce the finding with Hypothesis itself: the seed and the
``@reproduce_failure`` blob.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import yaml

from conformance.fuzz.config import Run
from conformance.requirements import load_catalogue

SCHEMA_LINE = "# yaml-language-server: $schema=../../conformance/schema/scenario.schema.json\n"
_BLOB = re.compile(r"@reproduce_failure\([^)]*\)")


def reproduce_blob(exc: BaseException) -> str | None:
    """The ``@reproduce_failure(...)`` decorator Hypothesis attached to a failure, if any."""
    for note in getattr(exc, "__notes__", ()) or ():
        found = _BLOB.search(str(note))
        if found:
            return found.group(0)
    found = _BLOB.search(str(exc))
    return found.group(0) if found else None


def scenario_document(
    run: Run,
    *,
    requirement: str,
    message: str,
    adapter: str,
    options: dict[str, str],
    seed: int | None,
    blob: str | None,
    controlled: bool,
    package: str = "Sim",
) -> dict[str, Any]:
    """The scenario mapping for one finding (key order as in the corpus)."""
    digest = hashlib.sha256(json.dumps(run.steps, sort_keys=True, default=str).encode()).hexdigest()[:10]
    known = load_catalogue()
    requirements = [requirement] if requirement in known else ["CTX-7"]
    shown = ", ".join(f"{k}={v}" for k, v in sorted(options.items())) or "defaults"
    lines = [
        f"Found by `sspi-conformance fuzz` against {adapter} ({shown}).",
        f"Finding: [{requirement}] {message}",
        f"Seed: {seed if seed is not None else 'random'} (of the chunk of programs that found it).",
        f"Hypothesis reproduction: {blob or 'not available'}",
        "Expectations are the reference simulator's answers to the same calls.",
    ]
    doc: dict[str, Any] = {
        "id": f"fuzz.{requirement.lower()}.{digest}",
        "title": f"Fuzzer regression: {requirement} " + _short(message),
        "requirements": requirements,
        "level": "must",
        "tags": ["fuzz", "regression"],
        "requires": ["completion-control", f"package:{package}"] if controlled else [f"package:{package}"],
    }
    if controlled:
        doc["completion"] = "deferred"
    doc["description"] = "\n".join(lines)
    doc["steps"] = [_clean(step) for step in run.steps]
    return doc


def dump(doc: dict[str, Any]) -> str:
    """YAML text with the schema comment the corpus files start with."""
    return SCHEMA_LINE + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=110)


def write_scenario(doc: dict[str, Any], directory: str | Path) -> Path:
    """Write ``<id>.yaml`` into ``directory`` (created if needed); returns the path."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{doc['id']}.yaml"
    path.write_text(dump(doc), encoding="utf-8")
    return path


def _short(message: str, limit: int = 80) -> str:
    text = message.split("\n", 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _clean(step: dict[str, Any]) -> dict[str, Any]:
    """A plain-data copy (tuples to lists) that yaml.safe_dump accepts."""
    return json.loads(json.dumps(step))
