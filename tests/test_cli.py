"""The sspi-conformance CLI on a tiny corpus written to tmp_path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conformance import __version__, cli
from conformance.cli import main
from conformance.reports import write_reports
from conformance.reports.jsonl import read_results
from conformance.requirements import load_catalogue
from conformance.results import ScenarioResult, Verdict

REPO = Path(__file__).resolve().parent.parent

PASSING = """\
id: tiny.fresh-not-pending
title: A fresh context is not pending
requirements: [CTX-7]
tags: [tiny]
steps:
  - create: a1
  - status: a1
    expect: SEC_E_OK
  - free: a1
"""

PASSING_2 = """\
id: tiny.create-free
title: Create then free
requirements: [CTX-1, FREE-1]
tags: [tiny]
steps:
  - create: a1
  - free: a1
"""

UNSUPPORTED = """\
id: tiny.needs-other-package
title: Needs a package nobody has
requirements: [CTX-1]
requires: [package:NoSuchPackage]
steps:
  - create: a1
  - free: a1
"""

FAILING = """\
id: tiny.wrongly-expects-pending
title: Expects a fresh context to be pending (wrong on purpose)
requirements: [CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_I_ASYNC_CALL_PENDING
  - free: a1
"""

BROKEN = """\
id: tiny.broken
title: Unknown status name
requirements: [CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_E_NO_SUCH_STATUS
"""


def corpus(root: Path, **files: str) -> Path:
    folder = root / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ---- run ------------------------------------------------------------------------------------------


def test_run_all_expected_outcomes_exits_0_and_writes_reports(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, b=PASSING_2, c=UNSUPPORTED)
    reports = tmp_path / "reports"
    # Two xdist workers: they must load the plugin from the arguments the CLI gives pytest.
    code, out, _ = run_cli(capsys, "run", str(folder), "--report-dir", str(reports), "-n", "2")
    assert code == 0, out
    assert "3 scenarios on simulator" in out
    assert {p.name for p in reports.iterdir()} >= {"results.jsonl", "junit.xml", "summary.md", "report.html"}
    verdicts = {r.id: r.verdict.value for r in read_results(reports / "results.jsonl")}
    assert verdicts == {"tiny.fresh-not-pending": "pass", "tiny.create-free": "pass",
                        "tiny.needs-other-package": "unsupported"}


def test_run_with_a_failure_exits_1_and_lists_it(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, f=FAILING)
    code, out, _ = run_cli(capsys, "run", str(folder), "--report-dir", str(tmp_path / "r"))
    assert code == 1
    assert "failures:\n  tiny.wrongly-expects-pending [fail]" in out
    # pytest's failure section is the step trace with status names, not a traceback.
    assert "SEC_I_ASYNC_CALL_PENDING (0x00090368)" in out
    assert "Traceback" not in out
    # -k deselects the failing scenario: exit 0.
    code, out, _ = run_cli(capsys, "run", str(folder), "-k", "not wrongly", "--report-dir", str(tmp_path / "r2"))
    assert code == 0, out


def test_should_level_failure_fails_only_with_strict(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, f=FAILING.replace("requirements: [CTX-7]", "requirements: [CTX-7]\nlevel: should"))
    code, out, _ = run_cli(capsys, "run", str(folder), "--report-dir", str(tmp_path / "r"))
    assert code == 0 and "should/may-level failures" in out
    code, _, _ = run_cli(capsys, "run", str(folder), "--report-dir", str(tmp_path / "r"), "--strict")
    assert code == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--adapter", "nonesuch"], "unknown adapter 'nonesuch'"),
        (["--adapter-option", "novalue"], "expects KEY=VALUE"),
        (["--adapter-option", "bogus_key=1"], "adapter 'simulator'"),
        (["-n", "two"], "-n expects a number"),
        (["--scenario-timeout-ms", "0"], "must be positive"),
        (["-k", "nothing_matches_this"], "no scenario selected"),
    ],
)
def test_run_usage_errors_exit_2(tmp_path: Path, capsys, argv: list[str], message: str) -> None:
    folder = corpus(tmp_path, a=PASSING)
    code, _, err = run_cli(capsys, "run", str(folder), "--report-dir", str(tmp_path / "r"), *argv)
    assert code == 2
    assert message in err


def test_run_with_load_error_exits_2_with_location(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, z=BROKEN)
    code, out, err = run_cli(capsys, "run", str(folder), "--report-dir", str(tmp_path / "r"))
    assert code == 2
    assert f"{folder / 'z.yaml'}:7:13:" in out + err


def test_run_missing_path_and_bad_option_exit_2(tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(capsys, "run", str(tmp_path / "nope"))
    assert code == 2 and "no such file or directory" in err
    code, _, _ = run_cli(capsys, "run", "--no-such-option")
    assert code == 2


# ---- list / validate / misc -----------------------------------------------------------------------


def test_validate_prints_located_errors_and_exits_2(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, z=BROKEN)
    code, out, _ = run_cli(capsys, "validate", str(folder))
    assert code == 2
    lines = out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{folder / 'z.yaml'}:7:13: ")
    assert "SEC_E_NO_SUCH_STATUS" in lines[0]
    code, out, err = run_cli(capsys, "validate", str(folder / "a.yaml"))
    assert code == 0 and out == "" and "1 scenario file(s) valid" in err


def test_validate_reports_duplicate_ids(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, b=PASSING)
    code, out, _ = run_cli(capsys, "validate", str(folder))
    assert code == 2 and "duplicate id 'tiny.fresh-not-pending'" in out


def test_list_text_and_json(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, b=PASSING_2)
    code, out, err = run_cli(capsys, "list", str(folder))
    assert code == 0
    assert [ln.split()[0] for ln in out.splitlines()] == ["tiny.create-free", "tiny.fresh-not-pending"]
    assert "2 scenarios" in err
    code, out, _ = run_cli(capsys, "list", str(folder), "--json")
    data = json.loads(out)
    first = data["scenarios"][0]
    assert first["id"] == "tiny.create-free" and first["requirements"] == ["CTX-1", "FREE-1"]
    assert first["level"] == "must" and first["file"].endswith("b.yaml") and first["line"] == 1


def test_list_requirements_json_covers_every_catalogue_id(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, b=PASSING_2, c=UNSUPPORTED)
    code, out, _ = run_cli(capsys, "list", str(folder), "--requirements", "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data["requirements"]) == list(load_catalogue())
    assert data["requirements"]["CTX-1"] == ["tiny.create-free", "tiny.needs-other-package"]
    assert data["requirements"]["CTX-7"] == ["tiny.fresh-not-pending"]
    assert data["requirements"]["CTX-2"] == []
    assert data["covered"] == 3 and data["total"] == len(load_catalogue()) and data["uncatalogued"] == {}


def test_list_with_load_errors_exits_2_but_lists_the_rest(tmp_path: Path, capsys) -> None:
    folder = corpus(tmp_path, a=PASSING, z=BROKEN)
    code, out, err = run_cli(capsys, "list", str(folder))
    assert code == 2 and "tiny.fresh-not-pending" in out and "z.yaml:7:13:" in err


def test_version_help_and_missing_command(capsys) -> None:
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0 and out.strip() == f"sspi-conformance {__version__}"
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0 and "validate" in out and "exit codes" in out
    code, _, _ = run_cli(capsys)
    assert code == 2


def test_serve_delegates_to_the_agent(capsys) -> None:
    code, out, _ = run_cli(capsys, "serve", "--help")
    assert code == 0 and "--listen" in out


def test_serve_without_an_agent_exits_2(monkeypatch, capsys) -> None:
    monkeypatch.setattr(cli, "AGENT_MODULE", "adapters.remote.no_such_agent")
    code, _, err = run_cli(capsys, "serve")
    assert code == 2 and "not available" in err


@pytest.mark.parametrize(
    ("verdict", "level", "strict", "fails"),
    [
        (Verdict.FAIL, "must", False, True),
        (Verdict.FAIL, "should", False, False),
        (Verdict.FAIL, "may", True, True),
        (Verdict.CRASHED, "should", False, True),
        (Verdict.XPASS, "may", False, True),
        (Verdict.ERROR, "should", False, True),
        (Verdict.XFAIL, "must", True, False),
        (Verdict.UNSUPPORTED, "must", True, False),
    ],
)
def test_level_grading(verdict: Verdict, level: str, strict: bool, fails: bool) -> None:
    result = ScenarioResult("a.b", "", "", verdict, "simulator", level=level)
    assert cli.counts_as_failure(result, strict) is fails


def test_default_corpus_is_scenarios_under_the_current_directory(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / "scenarios" / "tiny").mkdir(parents=True)
    (tmp_path / "scenarios" / "tiny" / "a.yaml").write_text(PASSING)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli(capsys, "list", "--json")
    assert code == 0
    assert [s["id"] for s in json.loads(out)["scenarios"]] == ["tiny.fresh-not-pending"]


# ---- a killed run ---------------------------------------------------------------------------------


def test_killed_run_keeps_every_finished_result(tmp_path: Path) -> None:
    fast = {f"a{i}": PASSING_2.replace("tiny.create-free", f"tiny.fast-{i}") for i in range(3)}
    slow = PASSING_2.replace("tiny.create-free", "tiny.z-slow").replace(
        "  - free: a1", "  - sleep_ms: 60000\n  - free: a1")
    folder = corpus(tmp_path, **fast, z=slow)
    reports = tmp_path / "reports"
    results = reports / "results.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conformance.cli", "run", str(folder), "--report-dir", str(reports),
         "--scenario-timeout-ms", "120000"],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60  # generous: start-up on a loaded CI machine
        while time.monotonic() < deadline:
            if results.exists() and results.read_bytes().count(b"\n") >= 3:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the run never recorded the fast scenarios")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # Simulate a writer killed mid-line on top of the finished lines.
    with open(results, "ab") as handle:
        handle.write(b'{"id": "tiny.z-slow", "verd')
    finished = read_results(results)
    assert sorted(r.id for r in finished) == ["tiny.fast-0", "tiny.fast-1", "tiny.fast-2"]
    assert not (reports / "report.html").exists()
    paths = write_reports(reports, finished)
    assert "tiny.fast-2" in paths["html"].read_text()


def test_in_process_foreign_code_runs_in_a_worker_that_may_crash(tmp_path: Path, monkeypatch, capsys) -> None:
    # An adapter that loads an implementation's machine code into this process (the native
    # adapter with isolate=false) gets one xdist worker unless -n says otherwise, so that a
    # crash kills a replaceable worker, not the run; xdist must never give up replacing it.
    from adapters import registry

    assert registry.loads_foreign_code("native", {"isolate": "false"})
    assert not registry.loads_foreign_code("native", {})
    assert not registry.loads_foreign_code("simulator", {})
    assert not registry.loads_foreign_code("no-such-adapter", {})
    seen: list[list[str]] = []

    def fake_main(argv: list[str]) -> int:
        seen.append(list(argv))
        return 5  # no tests: the CLI's answer to that is not this test's business

    monkeypatch.setattr("pytest.main", fake_main)
    monkeypatch.setattr(registry, "loads_foreign_code", lambda name, options: name == "simulator")
    (tmp_path / "s.yaml").write_text(PASSING)
    main(["run", "--report-dir", str(tmp_path / "r"), str(tmp_path / "s.yaml")])
    assert "one worker process" in capsys.readouterr().err
    argv = seen[-1]
    assert argv[argv.index("-n") + 1] == "1" and "--max-worker-restart" in argv
    main(["run", "-n", "0", "--report-dir", str(tmp_path / "r"), str(tmp_path / "s.yaml")])
    argv = seen[-1]
    assert argv[argv.index("-n") + 1] == "0"
