"""``sspi-conformance report``: several runs merged into one scenario x implementation matrix.

Each input is the ``results.jsonl`` of one run (one implementation through one adapter,
usually under one profile), or the report folder that holds it.  The matrix has one row per
scenario id seen in any run and one column per run; a cell is the run's verdict (the worst
one when the run repeated the scenario) and links to the scenario's timeline in that run's
own ``report.html`` (its ``#s-<id>`` anchor), when that file sits next to the results.

Per run it also gives the verdict counts, the exit code the verdict policy gives that run
(conformance/policy.py), and the requirement coverage; and one table of requirement x run
coverage status.  Written as ``matrix.html`` (self-contained, Jinja2, autoescaped) and
``matrix.md`` (for a CI step summary).
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import jinja2

from conformance import __version__
from conformance.bless import worst_by_id
from conformance.policy import exit_code, fails_run, is_failing
from conformance.reports import HTML_NAME
from conformance.reports.coverage import CoverageRow, coverage, load_default_catalogue
from conformance.reports.jsonl import RESULTS_NAME, JsonlError, iter_records, result_from_json
from conformance.reports.markdown import cell
from conformance.reports.text import VERDICT_ORDER, counts, reason
from conformance.results import ScenarioResult, Verdict

MATRIX_HTML = "matrix.html"
MATRIX_MD = "matrix.md"
MAX_MD_ROWS = 2000  # a step summary is capped at 1 MiB
_MD_VERDICTS = ("pass", "fail", "xfail", "xpass", "crashed", "hung", "error", "unsupported", "skip")


class MatrixError(ValueError):
    """An input that is not a readable results file; ``str()`` names it."""


@dataclass
class Run:
    label: str
    source: Path
    results: dict[str, ScenarioResult]  # worst result per scenario id
    report_html: Path | None
    profile: str = ""
    code: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    coverage: dict[str, int] = field(default_factory=dict)
    requirement_status: dict[str, str] = field(default_factory=dict)


@dataclass
class Cell:
    verdict: str  # "" when the run has no such scenario
    reason: str = ""
    href: str = ""
    fails_run: bool = False


@dataclass
class Row:
    id: str
    title: str
    level: str
    requirements: list[str]
    cells: list[Cell]

    @property
    def differs(self) -> bool:
        return len({c.verdict for c in self.cells}) > 1


@dataclass
class Matrix:
    runs: list[Run]
    rows: list[Row]
    requirements: list[tuple[str, str, list[str]]]  # (id, summary, status per run)
    strict: bool = False

    @property
    def scenarios(self) -> list[str]:
        return [row.id for row in self.rows]


def results_file(path: Path) -> Path:
    """``path`` itself, or the results.jsonl inside the folder ``path``."""
    if path.is_dir():
        path = path / RESULTS_NAME
    if not path.is_file():
        raise MatrixError(f"{path}: no such results file")
    return path


def read_run(path: Path) -> tuple[list[ScenarioResult], str]:
    """The results of one run and the profile it ran under ("" when none)."""
    results = []
    profiles: set[str] = set()
    try:
        for number, data in iter_records(path):
            try:
                results.append(result_from_json(data))
            except ValueError as exc:
                raise MatrixError(f"{path}:{number}: {exc}") from None
            profiles.add(str(data.get("profile", "") or ""))
    except (JsonlError, OSError) as exc:
        raise MatrixError(str(exc)) from None
    if not results:
        raise MatrixError(f"{path}: holds no result")
    return results, ", ".join(sorted(p for p in profiles if p))


def _label(results: Sequence[ScenarioResult], profile: str) -> str:
    implementations = sorted({r.implementation for r in results if r.implementation})
    adapters = sorted({r.adapter for r in results if r.adapter})
    label = ", ".join(implementations) or "unknown implementation"
    label += f" via {', '.join(adapters) or '?'}"
    return f"{label} [{profile}]" if profile else label


def build_matrix(paths: Sequence[Path], *, strict: bool = False,
                 catalogue: Mapping[str, object] | None = None) -> Matrix:
    if not paths:
        raise MatrixError("no results given")
    catalogue = catalogue if catalogue is not None else load_default_catalogue()
    runs: list[Run] = []
    labels: dict[str, int] = {}
    for given in paths:
        source = results_file(given)
        results, profile = read_run(source)
        label = _label(results, profile)
        labels[label] = labels.get(label, 0) + 1
        if labels[label] > 1:  # two runs of one implementation: keep the columns apart
            label = f"{label} #{labels[label]}"
        html = source.parent / HTML_NAME
        statuses = {row.requirement: requirement_status(row) for row in coverage(results, catalogue)}
        runs.append(Run(
            label=label,
            source=source,
            results=worst_by_id(results),
            report_html=html if html.is_file() else None,
            profile=profile,
            code=exit_code(results, strict),
            counts=counts(results),
            coverage=_tally(statuses.values()),
            requirement_status=statuses,
        ))
    return Matrix(runs, _rows(runs, strict), _requirements(runs, catalogue), strict)


def requirement_status(row: CoverageRow) -> str:
    """The report's coverage status, except that a requirement whose scenarios only pass or
    xfail, with at least one xfail, is ``known-failing``: an expected failure is still one."""
    status = row.status
    if status == "passing" and any(v is Verdict.XFAIL for _, v in row.scenarios):
        return "known-failing"
    return status


STATUSES = ("passing", "known-failing", "failing", "not-run", "uncovered")


def _tally(statuses: Iterable[str]) -> dict[str, int]:
    tally = dict.fromkeys(("total", "covered", *STATUSES), 0)
    for status in statuses:
        tally["total"] += 1
        tally[status] += 1
        tally["covered"] += status != "uncovered"
    return tally


def _rows(runs: list[Run], strict: bool) -> list[Row]:
    ids = sorted({sid for run in runs for sid in run.results})
    rows = []
    for sid in ids:
        first = next(run.results[sid] for run in runs if sid in run.results)
        cells = []
        for run in runs:
            result = run.results.get(sid)
            if result is None:
                cells.append(Cell(""))
                continue
            shown = is_failing(result) or result.expectation or result.verdict.value in ("unsupported", "skip")
            cells.append(Cell(result.verdict.value, reason(result) if shown else "", "", fails_run(result, strict)))
        rows.append(Row(sid, first.title, first.level, list(first.requirements), cells))
    return rows


def _requirements(runs: list[Run], catalogue: Mapping[str, object] | None) -> list[tuple[str, str, list[str]]]:
    ids: list[str] = list(catalogue or {})
    for run in runs:
        ids += [rid for rid in run.requirement_status if rid not in ids]
    table = []
    for rid in ids:
        entry = (catalogue or {}).get(rid)
        summary = str(getattr(entry, "summary", entry if isinstance(entry, str) else "")) if entry else ""
        table.append((rid, summary, [run.requirement_status.get(rid, "uncovered") for run in runs]))
    return table


def _link(matrix: Matrix, out_dir: Path) -> None:
    """Link each cell to the scenario in its run's report.html, relative to the output folder,
    so the matrix and the run reports can be moved (or uploaded) together."""
    for index, run in enumerate(matrix.runs):
        if run.report_html is None:
            continue
        target = Path(os.path.relpath(run.report_html.resolve(), out_dir.resolve())).as_posix()
        for row in matrix.rows:
            c = row.cells[index]
            if c.verdict:
                c.href = f"{quote(target)}#{quote('s-' + row.id)}"


# ---- rendering -------------------------------------------------------------------------------------

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("conformance", "templates"),
    autoescape=True,  # every string here comes from results files, which may be hostile
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)


def render_html(matrix: Matrix) -> str:
    return _ENV.get_template("matrix.html.j2").render(
        matrix=matrix,
        verdicts=[v.value for v in VERDICT_ORDER],
        version=__version__,
        generated=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


def render_markdown(matrix: Matrix) -> str:
    out = ["# SSPI conformance matrix", ""]
    out += ["| run | profile | exit | pass | fail | xfail | xpass | crashed | hung | error | unsupported | skip |"
            " requirements covered | passing | known failing | failing |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for run in matrix.runs:
        tally, cov = run.counts, run.coverage
        numbers: list[object] = [tally[v] for v in _MD_VERDICTS]
        numbers += [f"{cov['covered']}/{cov['total']}", cov["passing"], cov["known-failing"], cov["failing"]]
        out.append(f"| {cell(run.label)} | {cell(run.profile) or '-'} | {run.code} | "
                   + " | ".join(str(n) for n in numbers) + " |")
    out += ["", "## Scenarios", ""]
    heads = [f"{i + 1}" for i in range(len(matrix.runs))]
    named = zip(heads, matrix.runs, strict=True)
    out.append("Columns: " + "; ".join(f"**{h}** {cell(run.label)}" for h, run in named))
    out += ["", "| scenario | level | " + " | ".join(heads) + " |", "|---|---|" + "---|" * len(heads)]
    for row in matrix.rows[:MAX_MD_ROWS]:
        cells = []
        for c in row.cells:
            word = c.verdict or "–"
            if c.fails_run:
                word = f"**{word}**"
            cells.append(f"[{word}]({c.href})" if c.href else word)
        out.append(f"| `{cell(row.id)}` | {cell(row.level)} | " + " | ".join(cells) + " |")
    if len(matrix.rows) > MAX_MD_ROWS:
        out.append(f"| … {len(matrix.rows) - MAX_MD_ROWS} more | | " + " | ".join("" for _ in heads) + " |")
    out += ["", "## Requirement coverage", "", "| requirement | " + " | ".join(heads) + " |",
            "|---|" + "---|" * len(heads)]
    for rid, _summary, statuses in matrix.requirements:
        out.append(f"| `{cell(rid)}` | " + " | ".join(statuses) + " |")
    return "\n".join(out) + "\n"


def write_matrix(matrix: Matrix, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    _link(matrix, out_dir)
    paths = {"html": out_dir / MATRIX_HTML, "markdown": out_dir / MATRIX_MD}
    paths["html"].write_text(render_html(matrix), encoding="utf-8")
    paths["markdown"].write_text(render_markdown(matrix), encoding="utf-8")
    return paths


__all__ = ["Cell", "Matrix", "MatrixError", "Row", "Run", "build_matrix", "render_html", "render_markdown",
           "write_matrix"]
