"""The verdict policy (conformance/policy.py): which results fail a run, by level and --strict,
and the same exit code from the CLI, the pytest plugin and the summary (docs/ci.md)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conformance import policy
from conformance.cli import main
from conformance.reports.jsonl import read_results
from conformance.results import ScenarioResult, Verdict

REPO = Path(__file__).resolve().parent.parent

# Written out independently of policy.RULES: (verdict, fails for must, for should/may, with --strict).
EXPECTED = [
    ("pass", False, False, False),
    ("fail", True, False, True),
    ("unsupported", False, False, False),
    ("skip", False, False, False),
    ("xfail", False, False, False),
    ("xpass", True, True, True),
    ("crashed", True, True, True),
    ("hung", True, True, True),
    ("error", True, True, True),
]


def result(verdict: str, level: str = "must", sid: str = "x") -> ScenarioResult:
    return ScenarioResult(id=sid, title="", file="", verdict=Verdict(verdict), adapter="simulator", level=level)


@pytest.mark.parametrize(("verdict", "must", "should", "strict"), EXPECTED)
def test_grading_by_verdict_level_and_strict(verdict: str, must: bool, should: bool, strict: bool) -> None:
    assert policy.fails_run(result(verdict, "must")) is must
    assert policy.fails_run(result(verdict, "must"), strict=True) is must
    for level in ("should", "may"):
        assert policy.fails_run(result(verdict, level)) is should
        assert policy.fails_run(result(verdict, level), strict=True) is strict


def test_every_verdict_has_exactly_one_rule() -> None:
    assert {rule.verdict for rule in policy.RULES} == set(Verdict)
    assert len(policy.RULES) == len(Verdict)
    assert {v.value for v in policy.FAILING} == {"fail", "xpass", "crashed", "hung", "error"}


def test_exit_code_over_a_run() -> None:
    assert policy.exit_code([]) == 0
    assert policy.exit_code([result("pass"), result("xfail"), result("skip"), result("unsupported")]) == 0
    graded = [result("pass"), result("fail", "should")]
    assert policy.exit_code(graded) == 0
    assert policy.exit_code(graded, strict=True) == 1
    assert policy.exit_code([result("xpass", "may")]) == 1
    assert policy.exit_code([result("fail", "must")]) == 1
    assert policy.is_graded_out(result("fail", "should")) and not policy.is_graded_out(result("fail", "should"), True)


def test_the_old_import_paths_serve_the_policy() -> None:
    from conformance import results
    from conformance.reports import text

    assert results.FAILING is policy.FAILING
    assert text.fails_run is policy.fails_run


def test_docs_ci_table_is_the_policy() -> None:
    """docs/ci.md documents the policy in one table; it must say what the code does."""
    text = (REPO / "docs" / "ci.md").read_text(encoding="utf-8")
    rows = {}
    for line in text.splitlines():
        found = re.match(r"^\| `(\w+)` \|(.*)\|$", line)
        if found and found.group(1) in {v.value for v in Verdict}:
            cells = [c.strip() for c in found.group(2).split("|")]
            rows[found.group(1)] = cells
    assert set(rows) == {v.value for v in Verdict}
    for verdict, _meaning, must, should, strict in policy.policy_table():
        cells = rows[verdict]
        assert cells[-3:] == [must, should, strict], verdict


# ---- the same grading through the CLI and the plugin -------------------------------------------------

SHOULD_FAILING = """\
id: tiny.should-fails
title: A should-level scenario that fails (expects a fresh context to be pending)
requirements: [CTX-7]
level: should
steps:
  - create: a1
  - status: a1
    expect: SEC_I_ASYNC_CALL_PENDING
  - free: a1
"""

PASSING = """\
id: tiny.fresh-not-pending
title: A fresh context is not pending
requirements: [CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_E_OK
  - free: a1
"""


def corpus(root: Path, **files: str) -> Path:
    folder = root / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def test_cli_strict_grades_should_level_failures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = corpus(tmp_path, a=PASSING, s=SHOULD_FAILING)
    reports = tmp_path / "r"
    assert main(["run", str(folder), "--report-dir", str(reports)]) == 0
    out = capsys.readouterr().out
    assert "should/may-level failures (not failing the run without --strict)" in out
    assert "tiny.should-fails [should]" in out
    assert (reports / "summary.md").read_text().startswith("# SSPI conformance summary\n\n**PASSED**")
    assert main(["run", str(folder), "--report-dir", str(reports), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "failures:\n  tiny.should-fails [fail]" in out
    assert "**FAILED**" in (reports / "summary.md").read_text()


def test_plugin_exit_status_follows_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain pytest with the plugin: a should-level failure alone leaves the exit status 0."""
    from conformance.pytest_plugin import RUN_FLAGS, plugin_args

    folder = corpus(tmp_path, a=PASSING, s=SHOULD_FAILING)
    monkeypatch.chdir(tmp_path)
    base = [*plugin_args(), *RUN_FLAGS, "-q", "--scenarios", str(folder), str(folder), "--report-dir", "r"]
    assert pytest.main(base) == pytest.ExitCode.OK
    assert [r.verdict for r in read_results(tmp_path / "r" / "results.jsonl")].count(Verdict.FAIL) == 1
    assert pytest.main([*base, "--strict-levels"]) == pytest.ExitCode.TESTS_FAILED
    must = SHOULD_FAILING.replace("level: should", "level: must")
    (folder / "s.yaml").write_text(must)
    assert pytest.main(base) == pytest.ExitCode.TESTS_FAILED
