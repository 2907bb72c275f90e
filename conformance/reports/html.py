"""``report.html``: one self-contained page (inline CSS/JS, no external URL) for people.

The page lists every scenario with its verdict (filterable), and inside a collapsed
section the steps, the violations and the timeline of calls, queue statuses, callback
arrivals and status reads taken from the trace; then the requirement coverage table.
Everything is escaped by Jinja2's autoescape: implementation output is untrusted.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from adapters.status import describe
from conformance import __version__
from conformance.reports.coverage import CoverageRow, coverage, coverage_counts
from conformance.reports.text import (
    VERDICT_ORDER,
    ThreadLabels,
    area_of,
    counts,
    is_failing,
    reason,
    with_status_names,
)
from conformance.results import FAILING, ScenarioResult

TEMPLATE = "report.html.j2"

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("conformance", "templates"),
    autoescape=True,  # always, whatever the file name: every string here may be hostile
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)

# What a trace event is, for a person reading the timeline.
_KIND_LABEL = {
    "call": "call",
    "return": "queued",
    "callback": "callback",
    "status": "status read",
    "violation": "violation",
    "note": "note",
}


def _args_text(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items())


def _scenario_view(result: ScenarioResult) -> dict[str, Any]:
    threads = ThreadLabels()
    timeline = []
    for event in result.trace:
        timeline.append(
            {
                "t_ms": f"{event.t * 1000:.3f}",
                "thread": threads(event.thread),
                "kind": event.kind,
                "label": _KIND_LABEL.get(event.kind, event.kind),
                "op": event.op,
                "ctx": event.ctx,
                "status": describe(event.status) if event.status is not None else "",
                "args": _args_text(event.args),
                "detail": event.detail,
            }
        )
    return {
        "id": result.id,
        "anchor": "s-" + result.id,
        "title": result.title,
        "file": result.file,
        "area": area_of(result),
        "verdict": result.verdict.value,
        "failing": result.verdict in FAILING,
        "level": result.level,
        "duration_ms": f"{result.duration_s * 1000:.1f}",
        "reason": reason(result),
        "requirements": result.requirements,
        "tags": result.tags,
        "adapter": result.adapter,
        "implementation": result.implementation,
        "expectation": result.expectation,
        "steps": [
            {
                "index": s.index,
                "line": s.line or "",
                "summary": s.summary or s.action,
                "ok": s.ok,
                "expected": with_status_names(s.expected),
                "actual": with_status_names(s.actual),
                "message": s.message,
            }
            for s in result.steps
        ],
        "violations": result.violations,
        "timeline": timeline,
        "threads": len({e["thread"] for e in timeline}),
        "callbacks": sum(e.kind == "callback" for e in result.trace),
    }


def render(
    results: Sequence[ScenarioResult],
    catalogue: Mapping[str, object] | None = None,
    rows: list[CoverageRow] | None = None,
    *,
    title: str = "SSPI conformance report",
) -> str:
    rows = rows if rows is not None else coverage(results, catalogue)
    verdict_of = {r.id: r.verdict.value for r in results}
    # Failing first so a reader lands on the evidence; stable by id within a verdict.
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    ordered = sorted(results, key=lambda r: (order[r.verdict], r.id))
    template = _ENV.get_template(TEMPLATE)
    return template.render(
        title=title,
        version=__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        adapters=sorted({r.adapter for r in results if r.adapter}),
        implementations=sorted({r.implementation for r in results if r.implementation}),
        total=len(results),
        failing=sum(is_failing(r) for r in results),
        counts=counts(results),
        scenarios=[_scenario_view(r) for r in ordered],
        coverage=[
            {
                "id": row.requirement,
                "summary": row.summary,
                "level": row.level,
                "status": row.status,
                "known": row.in_catalogue,
                "scenarios": [{"id": sid, "anchor": "s-" + sid, "verdict": v.value} for sid, v in row.scenarios],
            }
            for row in rows
        ],
        coverage_counts=coverage_counts(rows),
        verdict_of=verdict_of,
    )


def write(
    path: str | os.PathLike[str],
    results: Sequence[ScenarioResult],
    catalogue: Mapping[str, object] | None = None,
    rows: list[CoverageRow] | None = None,
) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(results, catalogue, rows))


__all__ = ["render", "write"]
