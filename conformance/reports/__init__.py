"""The reports of a run, all derived from ``results.jsonl``.

``results.jsonl`` is written line by line while scenarios run (by every xdist worker);
at the end of the session the controller reads it back and writes ``junit.xml``,
``summary.md`` and ``report.html`` next to it with :func:`write_reports`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from conformance.reports import html, junit, markdown
from conformance.reports.coverage import coverage, load_default_catalogue
from conformance.reports.jsonl import RESULTS_NAME, read_results
from conformance.results import ScenarioResult

JUNIT_NAME = "junit.xml"
SUMMARY_NAME = "summary.md"
HTML_NAME = "report.html"

_UNSET: Mapping[str, object] = {}


def write_reports(
    report_dir: str | Path,
    results: Sequence[ScenarioResult] | None = None,
    catalogue: Mapping[str, object] | None = _UNSET,
    *,
    strict: bool = False,
) -> dict[str, Path]:
    """Write junit.xml, summary.md and report.html into ``report_dir``; return their paths.

    ``results`` defaults to the contents of ``report_dir/results.jsonl``; ``catalogue``
    defaults to the project's requirement catalogue (pass None to report without one);
    ``strict`` is the run's level grading (conformance/policy.py) for the summary headline.
    """
    directory = Path(report_dir)
    directory.mkdir(parents=True, exist_ok=True)
    if results is None:
        results = read_results(directory / RESULTS_NAME)
    if catalogue is _UNSET:
        catalogue = load_default_catalogue()
    rows = coverage(results, catalogue)
    paths = {
        "junit": directory / JUNIT_NAME,
        "summary": directory / SUMMARY_NAME,
        "html": directory / HTML_NAME,
    }
    junit.write(paths["junit"], results)
    markdown.write(paths["summary"], results, catalogue, rows, strict=strict)
    html.write(paths["html"], results, catalogue, rows)
    return paths


__all__ = ["HTML_NAME", "JUNIT_NAME", "RESULTS_NAME", "SUMMARY_NAME", "write_reports"]
