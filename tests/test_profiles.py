"""Implementation profiles (conformance/profile.py): located schema errors, applicability and
mandatory capabilities, the status map, skip / xfail / pinned xfail / xpass and their exit
codes, and the built-in sspi-rs profile end to end against sspilib's libsspi."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from conformance import profile as prof
from conformance.cli import main
from conformance.reports.jsonl import read_results
from conformance.results import ScenarioResult, StepRecord, Verdict

REPO = Path(__file__).resolve().parent.parent
HAVE_SSPILIB = importlib.util.find_spec("sspilib") is not None

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

EXPECTS_PENDING = """\
id: tiny.expects-pending
title: Expects a fresh context to be pending (wrong on purpose)
requirements: [CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_I_ASYNC_CALL_PENDING
  - free: a1
"""

NEEDS_PACKAGE = """\
id: tiny.needs-other-package
title: Needs a package the simulator does not have
requirements: [CTX-1]
requires: [package:OtherPkg]
steps:
  - create: a1
  - free: a1
"""

DEFERRED = """\
id: tiny.deferred
title: Switches to deferred completion (needs completion-control)
requirements: [CTX-1]
completion: deferred
steps:
  - create: a1
  - free: a1
"""

HEAD = """\
profile: tiny
implementation: {name: tiny-impl, version: "0.1"}
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def corpus(root: Path, **files: str) -> Path:
    folder = root / "corpus"
    for name, text in files.items():
        write(folder / f"{name}.yaml", text)
    return folder


def run(tmp_path: Path, capsys: pytest.CaptureFixture[str], folder: Path, profile_text: str | None,
        *extra: str) -> tuple[int, dict[str, ScenarioResult], str]:
    argv = ["run", str(folder), "--report-dir", str(tmp_path / "r"), *extra]
    if profile_text is not None:
        argv += ["--profile", str(write(tmp_path / "profile.yaml", profile_text))]
    code = main(argv)
    out, err = capsys.readouterr()
    results = {r.id: r for r in read_results(tmp_path / "r" / "results.jsonl")} if code in (0, 1) else {}
    return code, results, out + err


# ---- loading: located errors ---------------------------------------------------------------------------

BAD = [
    ("profile: p\n", 1, 1, "missing required key 'implementation'"),
    (HEAD + "colour: blue\n", 3, 1, "unknown key 'colour'"),
    (HEAD + "capabilities:\n  features: [client, teleport]\n", 4, 22, "unknown feature 'teleport'"),
    (HEAD + "capabilities:\n  mode: hybrid\n", 4, 9, "'hybrid' is not one of: kernel, user"),
    (HEAD + "map:\n  NOT_A_STATUS: SEC_E_OK\n", 4, 3, "map: 'NOT_A_STATUS' is not a status"),
    (HEAD + "map:\n  \"0x80090399\": SEC_E_NOPE\n", 4, 17, "'SEC_E_NOPE' is not a status name"),
    (HEAD + "expectations:\n  - id: a\n    skip: x\n    xfail: y\n", 4, 5, "give exactly one of skip or xfail"),
    (HEAD + "expectations:\n  - id: a\n    skip: x\n    pin: {verdict: fail}\n", 6, 5, "pin only applies to xfail"),
    (HEAD + "expectations:\n  - id: a\n    xfail: x\n    pin: {verdict: passed}\n", 6, 20,
     "'passed' is not one of: fail, crashed, hung"),
    (HEAD + "expectations:\n  - id: a\n    xfail: x\n  - id: a\n    skip: y\n", 6, 9,
     "duplicate entry for 'a' (first at line 4)"),
    (HEAD + "expectations:\n  - id: a\n    xfail: x\n    pin: {step: 0}\n", 6, 17, "minimum"),
    (HEAD + "adapter: &a simulator\ndescription: *a\n", 3, 10, "anchors and aliases are not allowed in profiles"),
    (HEAD + "profile: twice\n", 3, 1, "duplicate key 'profile'"),
    ("- just\n- a list\n", 1, 1, "a profile must be a mapping"),
    ("profile: [unclosed\n", 2, 1, "YAML syntax error"),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), BAD)
def test_profile_errors_are_located(tmp_path: Path, text: str, line: int, column: int, message: str) -> None:
    path = write(tmp_path / "bad.yaml", text)
    with pytest.raises(prof.ProfileError) as info:
        prof.load_profile(path)
    error = info.value
    assert (error.line, error.column) == (line, column), str(error)
    assert message in error.message
    assert str(error).startswith(f"{path}:{line}:{column}: ")


def test_cli_reports_a_bad_profile_as_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = corpus(tmp_path, a=PASSING)
    code, _, text = run(tmp_path, capsys, folder, HEAD + "colour: blue\n")
    assert code == 2
    assert "profile.yaml:3:1: unknown key 'colour'" in text
    assert main(["run", str(folder), "--profile", "no-such-profile"]) == 2
    assert "built-in: simulator-kernel, simulator-user, sspi-rs" in capsys.readouterr().err


def test_builtin_profiles_load_by_name() -> None:
    assert set(prof.builtin_profiles()) >= {"simulator-kernel", "simulator-user", "sspi-rs"}
    kernel, user, rs = prof.load("simulator-kernel"), prof.load("simulator-user"), prof.load("sspi-rs")
    assert kernel.capabilities is not None and "kernel-mode" in kernel.capabilities.features
    assert user.capabilities is not None and "user-mode" in user.capabilities.features
    assert user.adapter_options == {"profile": "user"}
    assert rs.adapter == "native" and rs.expectations
    assert all("docs/native.md" in e.reason for e in rs.expectations)


def test_exact_id_beats_globs_and_the_first_glob_wins(tmp_path: Path) -> None:
    text = HEAD + ("expectations:\n  - id: 'a.*'\n    skip: glob one\n  - id: 'a.b*'\n    skip: glob two\n"
                   "  - id: a.bc\n    xfail: exact\n")
    profile = prof.load_profile(write(tmp_path / "p.yaml", text))
    found = {sid: profile.expectation_for(sid) for sid in ("a.bc", "a.bd", "a.x", "b.c")}
    assert found["a.bc"] is not None and found["a.bc"].reason == "exact"
    assert found["a.bd"] is not None and found["a.bd"].reason == "glob one"
    assert found["a.x"] is not None and found["a.x"].reason == "glob one"
    assert found["b.c"] is None


# ---- applicability and mandatory capabilities ------------------------------------------------------------


def test_declared_capabilities_replace_the_adapters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = corpus(tmp_path, a=PASSING, n=NEEDS_PACKAGE, d=DEFERRED)
    # No capabilities block: the simulator's own claims decide.
    code, results, _ = run(tmp_path, capsys, folder, HEAD)
    assert code == 0
    assert results["tiny.needs-other-package"].verdict is Verdict.UNSUPPORTED
    assert results["tiny.deferred"].verdict is Verdict.PASS
    # The profile claims OtherPkg (the simulator does not) and not completion-control (it does).
    declared = HEAD + "capabilities:\n  packages: [OtherPkg]\n  features: []\n"
    code, results, _ = run(tmp_path, capsys, folder, declared)
    assert code == 0
    assert results["tiny.needs-other-package"].verdict is Verdict.PASS
    assert results["tiny.deferred"].verdict is Verdict.UNSUPPORTED
    assert "profile tiny does not declare completion-control" in results["tiny.deferred"].message
    assert results["tiny.fresh-not-pending"].implementation == "tiny-impl 0.1"
    # Completion modes: declared control, but only the threaded mode.
    modes = HEAD + "capabilities:\n  completion: [threaded]\n  features: [completion-control]\n"
    code, results, _ = run(tmp_path, capsys, folder, modes)
    assert results["tiny.deferred"].verdict is Verdict.UNSUPPORTED
    assert "completion mode deferred" in results["tiny.deferred"].message


def test_an_unsupported_declared_capability_is_a_failure() -> None:
    profile = prof.Profile(name="p", file="p.yaml", implementation="impl",
                           capabilities=prof.Capabilities("impl", "1", frozenset(), frozenset({"stream"})))
    raw = ScenarioResult(id="s", title="", file="", verdict=Verdict.UNSUPPORTED, adapter="native",
                         message="unsupported during step 2: EncryptMessage")
    judged = prof.apply(profile, raw, ("stream",))
    assert judged.verdict is Verdict.FAIL
    assert "declares what this scenario needs (stream), so it is mandatory" in judged.message
    assert "EncryptMessage" in judged.message
    # Without a capabilities block the adapter may still decline.
    plain = prof.Profile(name="p", file="p.yaml", implementation="impl")
    raw.verdict = Verdict.UNSUPPORTED
    assert prof.apply(plain, raw, ("stream",)).verdict is Verdict.UNSUPPORTED


@pytest.mark.skipif(not HAVE_SSPILIB, reason="sspilib (libsspi) is not installed")
def test_mandatory_capability_on_a_real_adapter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The native adapter has no completion control: a profile declaring it makes that a failure."""
    folder = corpus(tmp_path, d=DEFERRED)
    base = HEAD + "adapter: native\nadapter_options: {isolate: false}\n"
    code, results, _ = run(tmp_path, capsys, folder, base)
    assert code == 0 and results["tiny.deferred"].verdict is Verdict.UNSUPPORTED
    code, results, _ = run(tmp_path, capsys, folder, base + "capabilities:\n  features: [completion-control]\n")
    assert code == 1
    assert results["tiny.deferred"].verdict is Verdict.FAIL
    assert "mandatory" in results["tiny.deferred"].message


def test_adapter_must_match_the_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = corpus(tmp_path, a=PASSING)
    code, _, text = run(tmp_path, capsys, folder, HEAD + "adapter: native\n", "--adapter", "simulator")
    assert code == 2 and "describes adapter 'native', not 'simulator'" in text


# ---- status map ----------------------------------------------------------------------------------------


def test_status_map_applies_before_comparing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = corpus(tmp_path, p=EXPECTS_PENDING, a=PASSING)
    code, results, _ = run(tmp_path, capsys, folder, HEAD)
    assert code == 1 and results["tiny.expects-pending"].verdict is Verdict.FAIL
    # Pretend this implementation's "0x00000000" on a fresh context means "pending".
    mapped = HEAD + 'map:\n  "0x00000000": SEC_I_ASYNC_CALL_PENDING\n'
    code, results, _ = run(tmp_path, capsys, folder, mapped)
    assert results["tiny.expects-pending"].verdict is Verdict.PASS
    assert results["tiny.fresh-not-pending"].verdict is Verdict.FAIL  # the map hides SEC_E_OK from everyone
    assert "got SEC_I_ASYNC_CALL_PENDING" in results["tiny.fresh-not-pending"].message
    assert code == 1


# ---- expectations and exit codes ------------------------------------------------------------------------


def test_skip_xfail_xpass_and_pins_give_the_policy_exit_codes(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = corpus(tmp_path, p=EXPECTS_PENDING, a=PASSING)
    entries = "expectations:\n  - id: tiny.expects-pending\n    xfail: known\n"
    code, results, _ = run(tmp_path, capsys, folder, HEAD + entries)
    assert code == 0 and results["tiny.expects-pending"].verdict is Verdict.XFAIL
    assert results["tiny.expects-pending"].expectation == "xfail: known"
    # Pinned to what happens: still xfail.
    pinned = entries + "    pin: {verdict: fail, step: 2, actual: SEC_E_OK}\n"
    code, results, _ = run(tmp_path, capsys, folder, HEAD + pinned)
    assert code == 0 and results["tiny.expects-pending"].verdict is Verdict.XFAIL
    # Pinned to another failure: the change is a failure, said as such.
    moved = entries + "    pin: {verdict: fail, step: 2, actual: SEC_E_INVALID_HANDLE}\n"
    code, results, _ = run(tmp_path, capsys, folder, HEAD + moved)
    assert code == 1
    changed = results["tiny.expects-pending"]
    assert changed.verdict is Verdict.FAIL
    assert changed.message.startswith("expected failure changed: actual SEC_E_OK (0x00000000) "
                                      "(pinned SEC_E_INVALID_HANDLE)")
    assert "pinned xfail changed" in changed.expectation
    # An xfail on a passing scenario: xpass, which fails the run even for a may-level scenario.
    stale = HEAD + "expectations:\n  - id: 'tiny.fresh-*'\n    xfail: was broken once\n"
    write(folder / "a.yaml", PASSING.replace("requirements: [CTX-7]", "requirements: [CTX-7]\nlevel: may"))
    code, results, out = run(tmp_path, capsys, folder, HEAD + stale.removeprefix(HEAD))
    assert code == 1 and results["tiny.fresh-not-pending"].verdict is Verdict.XPASS
    assert "the profile is stale" in out
    # skip: not run at all.
    skipping = HEAD + "expectations:\n  - id: 'tiny.*'\n    skip: not today\n"
    code, results, _ = run(tmp_path, capsys, folder, skipping)
    assert code == 0
    assert {r.verdict for r in results.values()} == {Verdict.SKIP}
    assert results["tiny.expects-pending"].message == "skipped by profile: not today"
    assert not results["tiny.expects-pending"].steps


def _failing(steps: list[StepRecord], verdict: Verdict = Verdict.FAIL, message: str = "") -> ScenarioResult:
    return ScenarioResult(id="s", title="", file="", verdict=verdict, adapter="a", steps=steps, message=message)


def test_pins_on_crashes_hangs_and_errors() -> None:
    xfail = prof.Expectation("s", "xfail", "F-1", prof.Pin(verdict="crashed", step=5))
    profile = prof.Profile(name="p", file="p.yaml", implementation="impl", expectations=(xfail,))
    crashed = _failing([StepRecord(0, 3, "create", "create a1")], Verdict.CRASHED,
                       "implementation crashed during step 5 (line 15) free ad: SIGSEGV")
    assert prof.apply(profile, crashed).verdict is Verdict.XFAIL
    # A crash is placed at the step it happened during, even after an earlier failed wait.
    waited = _failing([StepRecord(3, 12, "wait", "wait ad", ok=False, actual="none")], Verdict.CRASHED,
                      "implementation crashed during step 5 (line 15) free ad: SIGSEGV")
    assert prof.observed(waited) == prof.Observed("crashed", 5, "")
    assert prof.observed(_failing([StepRecord(3, 12, "wait", "wait ad", ok=False, actual="none")])) \
        == prof.Observed("fail", 4, "none")
    hung = _failing([], Verdict.HUNG, "implementation hung during step 5 (line 15) free ad")
    judged = prof.apply(profile, hung)
    assert judged.verdict is Verdict.HUNG and "verdict hung (pinned crashed)" in judged.message
    # error is never absorbed by an xfail: the harness or the scenario is broken.
    error = _failing([], Verdict.ERROR, "harness error: KeyError")
    assert prof.apply(profile, error).verdict is Verdict.ERROR


def test_list_shows_what_a_profile_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = corpus(tmp_path, p=EXPECTS_PENDING, a=PASSING, n=NEEDS_PACKAGE)
    text = (HEAD + "capabilities:\n  features: []\nexpectations:\n  - id: tiny.expects-pending\n    xfail: known\n"
            "  - id: tiny.fresh-not-pending\n    skip: boring\n")
    path = write(tmp_path / "p.yaml", text)
    assert main(["list", str(folder), "--profile", str(path)]) == 0
    out = capsys.readouterr().out
    assert "[xfail: known]" in out and "[skip: boring]" in out
    assert "[unsupported: profile does not declare package:OtherPkg]" in out


# ---- the built-in sspi-rs profile, end to end ------------------------------------------------------------


@pytest.mark.skipif(not HAVE_SSPILIB, reason="sspilib (libsspi) is not installed")
def test_sspi_rs_profile_exits_0_and_1_without_one_entry(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    # Four workers on two cores: the slow scenarios mostly wait (a hang, a crashed agent).
    code = main(["run", "--adapter", "native", "--profile", "sspi-rs", "-n", "4",
                 "--report-dir", str(tmp_path / "full")])
    out = capsys.readouterr().out
    assert code == 0, out
    verdicts = {r.verdict for r in read_results(tmp_path / "full" / "results.jsonl")}
    assert Verdict.XFAIL in verdicts and Verdict.PASS in verdicts
    # Drop one must-level entry from a copy: that scenario fails the run again.
    copy = tmp_path / "sspi-rs.yaml"
    shutil.copy(prof.resolve("sspi-rs"), copy)
    text = copy.read_text()
    entry = "  - id: native.asc-garbage-token\n"
    start = text.index(entry)
    end = text.index("  - id:", start + len(entry))
    copy.write_text(text[:start] + text[end:])
    scenario = REPO / "scenarios" / "native" / "asc-garbage-token.yaml"
    code = main(["run", str(scenario), "--adapter", "native", "--profile", str(copy),
                 "--report-dir", str(tmp_path / "one")])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "native.asc-garbage-token [fail]" in out


def test_completion_modes_come_from_the_scenario_and_its_mode_steps(tmp_path: Path) -> None:
    from conformance.scenario.loader import load_scenario

    switching = DEFERRED.replace("  - free: a1\n", "  - mode: inline\n  - mode: deferred\n  - free: a1\n")
    scenario = load_scenario(write(tmp_path / "s.yaml", switching))
    assert prof.completion_modes(scenario) == ("deferred", "inline")
    profile = prof.load_profile(write(tmp_path / "p.yaml", HEAD + "capabilities:\n  completion: [deferred]\n"
                                      "  features: [completion-control]\n"))
    assert profile.missing(scenario.needs, prof.completion_modes(scenario)) == ["completion mode inline"]
