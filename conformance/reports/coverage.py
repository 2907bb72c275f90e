"""Requirement coverage: which scenarios cite each catalogue ID, and how they fared."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from conformance.policy import FAILING
from conformance.reports.text import VERDICT_ORDER
from conformance.results import ScenarioResult, Verdict

_RANK = {v: i for i, v in enumerate(VERDICT_ORDER)}  # lower = worse


@dataclass(slots=True)
class CoverageRow:
    requirement: str
    summary: str
    level: str
    scenarios: list[tuple[str, Verdict]] = field(default_factory=list)
    in_catalogue: bool = True

    @property
    def status(self) -> str:
        """``uncovered``, ``failing`` (any failing verdict), ``passing`` (a pass), else ``not-run``."""
        verdicts = {v for _, v in self.scenarios}
        if not verdicts:
            return "uncovered"
        if verdicts & FAILING:
            return "failing"
        if Verdict.PASS in verdicts or Verdict.XFAIL in verdicts:
            return "passing"
        return "not-run"


def _summary_and_level(entry: object) -> tuple[str, str]:
    # The catalogue holds Requirement objects; tests and tools may pass plain strings.
    if isinstance(entry, str):
        return entry, ""
    return str(getattr(entry, "summary", "")), str(getattr(entry, "level", ""))


def coverage(results: Iterable[ScenarioResult], catalogue: Mapping[str, object] | None = None) -> list[CoverageRow]:
    """One row per catalogue ID (catalogue order), then any cited ID the catalogue lacks."""
    rows: dict[str, CoverageRow] = {}
    for rid, entry in (catalogue or {}).items():
        summary, level = _summary_and_level(entry)
        rows[rid] = CoverageRow(rid, summary, level)
    extra: dict[str, CoverageRow] = {}
    # One entry per scenario id: a scenario run several times (--repeat) shows its worst verdict.
    worst: dict[tuple[str, str], Verdict] = {}
    for result in results:
        for rid in result.requirements:
            row = rows.get(rid) or extra.get(rid)
            if row is None:
                row = extra[rid] = CoverageRow(rid, "", "", in_catalogue=catalogue is None)
            key = (rid, result.id)
            seen = worst.get(key)
            if seen is None:
                row.scenarios.append((result.id, result.verdict))
            elif _RANK[result.verdict] < _RANK[seen]:
                row.scenarios[row.scenarios.index((result.id, seen))] = (result.id, result.verdict)
            else:
                continue
            worst[key] = result.verdict
    return list(rows.values()) + [extra[k] for k in sorted(extra)]


def coverage_counts(rows: Iterable[CoverageRow]) -> dict[str, int]:
    """Totals for the summary: requirements in total and per coverage status."""
    tally = {"total": 0, "covered": 0, "passing": 0, "failing": 0, "not-run": 0, "uncovered": 0}
    for row in rows:
        tally["total"] += 1
        tally[row.status] += 1
        if row.scenarios:
            tally["covered"] += 1
    return tally


def load_default_catalogue() -> Mapping[str, object] | None:
    """The project catalogue, or None when it cannot be read (reports still render)."""
    try:
        from conformance.requirements import load_catalogue

        return load_catalogue()
    except Exception:  # a broken catalogue must not stop the reports of a finished run
        return None


__all__ = ["CoverageRow", "coverage", "coverage_counts", "load_default_catalogue"]
