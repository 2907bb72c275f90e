"""``summary.md``: a short Markdown summary sized for a CI step summary."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from conformance.reports.coverage import CoverageRow, coverage, coverage_counts
from conformance.reports.text import counts, fails_run, is_failing, reason
from conformance.results import ScenarioResult

# GitHub caps a step summary at 1 MiB; a run with thousands of failures must still fit.
MAX_LISTED = 200
MAX_REASON = 160


def cell(text: str) -> str:
    """Make text safe inside a Markdown table cell (no pipes, newlines or raw HTML)."""
    text = " ".join(text.split())
    for raw, escaped in (("\\", "\\\\"), ("|", "\\|"), ("<", "&lt;"), (">", "&gt;"), ("`", "\\`")):
        text = text.replace(raw, escaped)
    return text


def _short(text: str) -> str:
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def render(
    results: Sequence[ScenarioResult],
    catalogue: Mapping[str, object] | None = None,
    rows: list[CoverageRow] | None = None,
    *,
    strict: bool = False,
) -> str:
    tally = counts(results)
    failing = [r for r in results if is_failing(r)]
    graded = [r for r in failing if not fails_run(r, strict)]
    adapters = sorted({r.adapter for r in results if r.adapter})
    out = ["# SSPI conformance summary", ""]
    headline = "FAILED" if len(failing) > len(graded) else "PASSED"
    where = cell(", ".join(adapters) or "no adapter")
    line = f"**{headline}**: {len(results)} scenarios on {where}, {len(failing)} failing"
    if graded:
        line += f" ({len(graded)} of them should/may-level, which fail the run only with `--strict`)"
    out.append(line + ".")
    out += ["", "| verdict | count |", "|---|---:|"]
    out += [f"| {verdict} | {n} |" for verdict, n in tally.items() if n]
    if failing:
        out += ["", "## Failing scenarios", "", "| scenario | verdict | level | requirements | reason |",
                "|---|---|---|---|---|"]
        for r in failing[:MAX_LISTED]:
            out.append(f"| `{cell(r.id)}` | {r.verdict.value} | {cell(r.level)} | "
                       f"{cell(', '.join(r.requirements))} | {cell(_short(reason(r)))} |")
        if len(failing) > MAX_LISTED:
            out.append(f"| … | {len(failing) - MAX_LISTED} more | | | |")
    rows = rows if rows is not None else coverage(results, catalogue)
    cov = coverage_counts(rows)
    out += ["", "## Requirement coverage", ""]
    out += ["| requirements | covered | passing | failing | not run | uncovered |", "|---:|---:|---:|---:|---:|---:|",
            f"| {cov['total']} | {cov['covered']} | {cov['passing']} | {cov['failing']} | {cov['not-run']} | "
            f"{cov['uncovered']} |"]
    broken = [row.requirement for row in rows if row.status == "failing"]
    if broken:
        out += ["", "Requirements with failing scenarios: " + ", ".join(f"`{cell(b)}`" for b in broken[:MAX_LISTED])]
    unknown = [row.requirement for row in rows if not row.in_catalogue]
    if unknown:
        out += ["", "Cited but not in the catalogue: " + ", ".join(f"`{cell(u)}`" for u in unknown)]
    return "\n".join(out) + "\n"


def write(
    path: str | os.PathLike[str],
    results: Sequence[ScenarioResult],
    catalogue: Mapping[str, object] | None = None,
    rows: list[CoverageRow] | None = None,
    *,
    strict: bool = False,
) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(render(results, catalogue, rows, strict=strict))


__all__ = ["cell", "render", "write"]
