"""The requirement catalogue (``conformance/requirements.yaml``).

Scenarios cite requirement IDs; the loader rejects an ID that is not here, and reports
group results by them.  Each entry carries our own one-line summary, the spec section it
comes from and its level (``must``/``should``/``info``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

CATALOGUE_PATH = Path(__file__).with_name("requirements.yaml")
LEVELS = ("must", "should", "info")
_ID = re.compile(r"^[A-Z]+-[0-9]+$")


@dataclass(frozen=True, slots=True)
class Requirement:
    id: str
    section: str
    level: str
    summary: str


class CatalogueError(ValueError):
    """The catalogue file itself is malformed."""


def _parse(entries: object, where: str) -> list[Requirement]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise CatalogueError(f"{where}: expected a list")
    found = []
    for entry in entries:
        if not isinstance(entry, dict) or set(entry) != {"id", "section", "level", "summary"}:
            raise CatalogueError(f"{where}: each entry needs exactly id, section, level, summary: {entry!r}")
        rid, section, level, summary = (str(entry[k]) for k in ("id", "section", "level", "summary"))
        if not _ID.match(rid):
            raise CatalogueError(f"{where}: malformed requirement id {rid!r}")
        if level not in LEVELS:
            raise CatalogueError(f"{where}: {rid}: level must be one of {', '.join(LEVELS)}")
        found.append(Requirement(rid, section, level, summary))
    return found


@functools.lru_cache(maxsize=4)
def load_catalogue(path: Path | None = None) -> dict[str, Requirement]:
    """Every known requirement by ID, in catalogue order (cached per path)."""
    source = path or CATALOGUE_PATH
    with open(source, encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise CatalogueError(f"{source}: expected a mapping")
    catalogue: dict[str, Requirement] = {}
    for key in ("requirements", "project"):
        for req in _parse(data.get(key), f"{source}: {key}"):
            if req.id in catalogue:
                raise CatalogueError(f"{source}: duplicate requirement id {req.id}")
            catalogue[req.id] = req
    return catalogue


__all__ = ["CATALOGUE_PATH", "LEVELS", "CatalogueError", "Requirement", "load_catalogue"]
