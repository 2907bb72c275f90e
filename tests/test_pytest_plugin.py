"""The pytest plugin through pytester: collection rules, outcomes, failure display, xdist."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Imported here so pytester's in-process runs find them in sys.modules (its snapshot drops
# modules first imported inside a run, which would reload the loader for every run).
import conformance.executor
import conformance.reports
import conformance.scenario.loader  # noqa: F401
from conformance.pytest_plugin import RUN_FLAGS, plugin_args

REPO = Path(__file__).resolve().parent.parent
# The CLI's flags; without them Hypothesis' plugin alone re-imports Hypothesis in every run.
FAST = RUN_FLAGS

pytest_plugins = ["pytester"]

PASSING = """\
id: {sid}
title: A fresh context is not pending
requirements: [CTX-7]
tags: [tiny]
steps:
  - create: a1
  - status: a1
    expect: SEC_E_OK
  - free: a1
"""

FAILING = """\
id: plug.expects-pending
title: Wrongly expects a fresh context to be pending
requirements: [CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_I_ASYNC_CALL_PENDING
  - free: a1
"""

UNSUPPORTED = """\
id: plug.unsupported
title: Needs a package nobody has
requirements: [CTX-1]
requires: [package:NoSuchPackage]
steps:
  - create: a1
  - free: a1
"""

BROKEN = """\
id: plug.broken
title: Unknown step
requirements: [CTX-1]
steps:
  - frobnicate: a1
"""


def write(pytester: pytest.Pytester, rel: str, text: str) -> Path:
    path = pytester.path / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(*plugin_args(), *FAST, *args)


def results(pytester: pytest.Pytester, report_dir: str = "reports") -> list[dict]:
    text = (pytester.path / report_dir / "results.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_outcomes_follow_verdicts_and_failures_show_the_step_trace(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plug/pass.yaml", PASSING.format(sid="plug.pass"))
    write(pytester, "scenarios/plug/fail.yaml", FAILING)
    write(pytester, "scenarios/plug/unsup.yaml", UNSUPPORTED)
    result = run(pytester, "-rs")
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    out = result.stdout.str()
    assert "expected: SEC_I_ASYNC_CALL_PENDING (0x00090368)" in out
    assert "actual:   SEC_E_OK (0x00000000)" in out
    assert "FAIL #1" in out and "callback timeline:" in out
    assert "Traceback" not in out and "pytest_plugin.py" not in out
    assert "unsupported:" in out and "NoSuchPackage" in out
    verdicts = {r["id"]: r["verdict"] for r in results(pytester)}
    assert verdicts == {"plug.pass": "pass", "plug.expects-pending": "fail", "plug.unsupported": "unsupported"}
    reports = pytester.path / "reports"
    assert (reports / "junit.xml").exists() and (reports / "report.html").exists()
    assert "plug.expects-pending" in (reports / "summary.md").read_text()


def test_yaml_outside_scenarios_folders_is_not_collected(pytester: pytest.Pytester) -> None:
    write(pytester, "malformed/broken.yaml", BROKEN)
    write(pytester, "test_plain.py", "def test_ok():\n    pass\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "reports").exists()  # inert without scenarios


def test_explicit_file_and_scenarios_option_are_collected(pytester: pytest.Pytester) -> None:
    write(pytester, "elsewhere/one.yaml", PASSING.format(sid="plug.one"))
    write(pytester, "other/two.yaml", PASSING.format(sid="plug.two"))
    run(pytester, "elsewhere/one.yaml").assert_outcomes(passed=1)
    run(pytester, "--scenarios", "other").assert_outcomes(passed=1)


def test_load_error_is_a_located_collection_error(pytester: pytest.Pytester) -> None:
    path = write(pytester, "scenarios/plug/broken.yaml", BROKEN)
    result = run(pytester)
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert f"{path}:5:5:" in out or "broken.yaml:5:" in out
    assert "Traceback" not in out


def test_duplicate_ids_are_a_collection_error(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/a/one.yaml", PASSING.format(sid="plug.same"))
    write(pytester, "scenarios/b/two.yaml", PASSING.format(sid="plug.same"))
    result = run(pytester)
    result.assert_outcomes(errors=1)
    assert "duplicate scenario id 'plug.same'" in result.stdout.str()


def test_keyword_selection_by_tag_and_requirement(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plug/pass.yaml", PASSING.format(sid="plug.pass"))
    write(pytester, "scenarios/plug/unsup.yaml", UNSUPPORTED)
    run(pytester, "-k", "tiny").assert_outcomes(passed=1)
    run(pytester, "-k", "CTX-1").assert_outcomes(skipped=1)


def test_options_are_validated_and_recorded(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plug/pass.yaml", PASSING.format(sid="plug.pass"))
    result = run(pytester, "--adapter", "nonesuch")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown adapter 'nonesuch'" in result.stderr.str()
    assert run(pytester, "--adapter-option", "novalue").ret == pytest.ExitCode.USAGE_ERROR
    assert run(pytester, "--profile", "no-such-profile").ret == pytest.ExitCode.USAGE_ERROR
    run(pytester, "--profile", "simulator-kernel", "--report-dir", "out").assert_outcomes(passed=1)
    assert results(pytester, "out")[0]["profile"] == "simulator-kernel"


def test_scenario_timeout_option_bounds_a_sleeping_scenario(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plug/slow.yaml",
          PASSING.format(sid="plug.slow").replace("  - free: a1", "  - sleep_ms: 5000\n  - free: a1"))
    result = run(pytester, "--scenario-timeout-ms", "200")
    result.assert_outcomes(failed=1)
    assert "timed out" in results(pytester)[0]["message"]


def test_xdist_two_workers_record_every_result_exactly_once(pytester: pytest.Pytester, monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    ids = [f"plug.n{i:02d}" for i in range(12)]
    for sid in ids:
        write(pytester, f"scenarios/plug/{sid}.yaml", PASSING.format(sid=sid))
    write(pytester, "scenarios/plug/fail.yaml", FAILING)
    # An implementation that kills its process mid-scenario (as a crashing in-process native
    # implementation would): the controller must still record the scenario as crashed.
    write(pytester, "scenarios/plug/crash.yaml", PASSING.format(sid="plug.crash"))
    pytester.makeconftest(
        "import os\n"
        "def pytest_runtest_call(item):\n"
        "    if item.name == 'plug.crash':\n"
        "        os._exit(3)\n"
    )
    # A stale file from an earlier run must not leak into this one.
    write(pytester, "reports/results.jsonl", '{"id": "stale", "verdict": "pass"}\n')
    result = pytester.runpytest_subprocess(*plugin_args(), *FAST, "-n", "2")
    result.assert_outcomes(passed=12, failed=2)
    assert "expected: SEC_I_ASYNC_CALL_PENDING (0x00090368)" in result.stdout.str()
    lines = results(pytester)
    assert sorted(r["id"] for r in lines) == sorted([*ids, "plug.expects-pending", "plug.crash"])
    by_id = {r["id"]: r for r in lines}
    crash = by_id.pop("plug.crash")
    assert crash["verdict"] == "crashed" and crash["requirements"] == ["CTX-7"]
    assert "crashed while running" in crash["message"]
    assert {r["worker"] for r in by_id.values()} <= {"gw0", "gw1"}
    assert all(r["steps"] and "duration_s" in r and r["adapter"] == "simulator" for r in by_id.values())
    junit = (pytester.path / "reports" / "junit.xml").read_text()
    assert junit.count("<testcase ") == 14


CRASHY_PROFILE = "profile: crashy\nimplementation: {name: crashy, version: '1'}\nexpectations:\n"
CRASHING_CONFTEST = (
    "import os\n"
    "def pytest_runtest_call(item):\n"
    "    if item.name.startswith('plug.crash'):\n"
    "        os._exit(3)\n"
)


def test_a_crash_the_profile_expects_is_an_xfail(pytester: pytest.Pytester, monkeypatch) -> None:
    # The profile pins the crash (xfail, verdict crashed): the worker's death is judged like
    # any other result, in results.jsonl and in pytest's own outcome, and the run passes.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    write(pytester, "scenarios/plug/pass.yaml", PASSING.format(sid="plug.pass"))
    write(pytester, "scenarios/plug/crash.yaml", PASSING.format(sid="plug.crash"))
    write(pytester, "profile.yaml", CRASHY_PROFILE + "  - id: plug.crash\n"
                                                     "    xfail: crashes on purpose\n    pin: {verdict: crashed}\n")
    pytester.makeconftest(CRASHING_CONFTEST)
    result = pytester.runpytest_subprocess(*plugin_args(), *FAST, "-n", "1", "--profile", "profile.yaml")
    result.assert_outcomes(passed=1, xfailed=1)
    assert result.ret == 0
    by_id = {r["id"]: r for r in results(pytester)}
    assert by_id["plug.crash"]["verdict"] == "xfail" and "crashes on purpose" in by_id["plug.crash"]["expectation"]


def test_scenarios_left_unrun_when_xdist_gives_up_fail_the_run(pytester: pytest.Pytester, monkeypatch) -> None:
    # xdist stops replacing crashed workers after --max-worker-restart; the scenarios it never
    # ran have no result, and a run that lost results must not pass, whatever it did run.
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    for i in range(3):
        write(pytester, f"scenarios/plug/crash{i}.yaml", PASSING.format(sid=f"plug.crash{i}"))
    for i in range(4):
        write(pytester, f"scenarios/plug/pass{i}.yaml", PASSING.format(sid=f"plug.pass{i}"))
    write(pytester, "profile.yaml", CRASHY_PROFILE + "  - id: 'plug.crash*'\n    xfail: crashes on purpose\n")
    pytester.makeconftest(CRASHING_CONFTEST)
    result = pytester.runpytest_subprocess(*plugin_args(), *FAST, "-n", "1", "--max-worker-restart", "0",
                                           "--profile", "profile.yaml")
    assert result.ret == 1
    recorded = results(pytester)
    assert len(recorded) < 7
    assert f"{7 - len(recorded)} of 7 scenarios never reported a result" in result.stdout.str()


def test_collect_only_keeps_the_previous_results(pytester: pytest.Pytester) -> None:
    write(pytester, "scenarios/plug/pass.yaml", PASSING.format(sid="plug.pass"))
    run(pytester).assert_outcomes(passed=1)
    before = (pytester.path / "reports" / "results.jsonl").read_text()
    run(pytester, "--collect-only")
    assert (pytester.path / "reports" / "results.jsonl").read_text() == before


@pytest.mark.parametrize("installed", [False, True])
def test_root_conftest_activates_the_plugin_exactly_once(tmp_path: Path, installed: bool) -> None:
    """From a checkout the root conftest loads the plugin; when the package is installed its
    pytest11 entry point does, and the conftest must then stay out of the way."""
    site = tmp_path / "site"
    if installed:  # what `pip install -e .` leaves on sys.path
        info = site / "async_sspi_conformance-0.0.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: async-sspi-conformance\nVersion: 0.0\n")
        (info / "entry_points.txt").write_text("[pytest11]\nsspi_conformance = conformance.pytest_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    env.pop("PYTEST_DISABLE_PLUGIN_AUTOLOAD", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--co", "-q", "-p", "no:cacheprovider", "--adapter", "simulator",
         "tests/test_reports.py"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "already registered" not in proc.stderr
