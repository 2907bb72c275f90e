"""``report.html``: one self-contained page (inline CSS/JS, no external URL) for people.

The page lists every scenario with its verdict (filterable) and the requirement coverage
table.  A scenario's evidence -- steps, violations, and the timeline of calls, queue
statuses, callback arrivals and status reads taken from the trace -- is embedded as JSON
and drawn only when its row is opened, so a run of thousands of scenarios stays a few MB
and opens at once.

Escaping: the page is rendered by Jinja2 with autoescape on; the embedded data goes
through Jinja's ``tojson`` filter (which escapes ``<``, ``>``, ``&`` and quotes so it cannot
end the script element), and the script inserts every string with ``textContent``, never as
markup.  Implementation output is untrusted and is never interpreted as HTML.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2

from adapters.api import ASYNC_OPERATIONS
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
from conformance.results import ScenarioResult, Verdict

TEMPLATE = "report.html.j2"

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("conformance", "templates"),
    autoescape=True,  # always, whatever the file name: every string here may be hostile
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
# Compact JSON: the data block is most of the page.
_ENV.policies["json.dumps_kwargs"] = {"separators": (",", ":"), "ensure_ascii": False}

# What a trace event is, for a person reading the timeline.
_KIND_LABEL = {"call": "call", "return": "returned", "callback": "callback", "status": "status read",
               "violation": "violation", "note": "note"}


def _label(kind: str, op: str) -> str:
    if kind == "return" and op in ASYNC_OPERATIONS:
        return "queued"  # an async operation's return value is its queue status (CALL-1)
    return _KIND_LABEL.get(kind, kind)


def _args_text(args: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items())


def evidence(result: ScenarioResult) -> dict[str, Any]:
    """The data drawn when a scenario is opened; rows are arrays to keep the page small."""
    threads = ThreadLabels()
    timeline = []
    for e in result.trace:
        details = _args_text(e.args)
        if e.detail:
            details = f"{details} · {e.detail}" if details else e.detail
        timeline.append([f"{e.t * 1000:.3f}", threads(e.thread), e.kind, _label(e.kind, e.op), e.op, e.ctx,
                         describe(e.status) if e.status is not None else "", details])
    return {
        "title": result.title,
        "file": result.file,
        "requirements": result.requirements,
        "tags": result.tags,
        "level": result.level,
        "area": area_of(result),
        "adapter": result.adapter,
        "implementation": result.implementation,
        "expectation": result.expectation,
        "reason": reason(result) if result.verdict is not Verdict.PASS else "",
        "steps": [[s.index + 1, s.line or "", 1 if s.ok else 0, s.summary or s.action, with_status_names(s.expected),
                   with_status_names(s.actual), s.message] for s in result.steps],
        "violations": [[v.requirement, v.party, v.call or "", v.message] for v in result.violations],
        "timeline": timeline,
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
    # Failing first so a reader lands on the evidence; stable by id within a verdict.
    order = {v: i for i, v in enumerate(VERDICT_ORDER)}
    ordered = sorted(results, key=lambda r: (order[r.verdict], r.id))
    anchors: dict[str, str] = {}
    scenarios = []
    for i, r in enumerate(ordered):
        # Repeated runs of one scenario (--repeat) share an id; anchors must stay unique.
        anchor = "s-" + r.id if r.id not in anchors else f"s-{r.id}-{i}"
        anchors.setdefault(r.id, anchor)
        scenarios.append({
            "id": r.id,
            "anchor": anchor,
            "verdict": r.verdict.value,
            "summary": reason(r) if r.verdict is not Verdict.PASS else r.title,
            "duration_ms": f"{r.duration_s * 1000:.1f}",
            "search": " ".join([r.id, r.title, *r.requirements, *r.tags, area_of(r)]).lower(),
        })
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
        scenarios=scenarios,
        evidence=[evidence(r) for r in ordered],
        coverage=[
            {
                "id": row.requirement,
                "summary": row.summary,
                "level": row.level,
                "status": row.status,
                "known": row.in_catalogue,
                "scenarios": [{"id": sid, "anchor": anchors.get(sid, ""), "verdict": v.value}
                              for sid, v in row.scenarios],
            }
            for row in rows
        ],
        coverage_counts=coverage_counts(rows),
    )


def write(
    path: str | os.PathLike[str],
    results: Sequence[ScenarioResult],
    catalogue: Mapping[str, object] | None = None,
    rows: list[CoverageRow] | None = None,
) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(results, catalogue, rows))


__all__ = ["evidence", "render", "write"]
