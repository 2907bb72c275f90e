"""``bless`` on real runs against a mutant simulator, and ``report`` merging two real runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from conformance.bless import scalar
from conformance.cli import main
from conformance.profile import load_profile
from conformance.reports.jsonl import read_results
from conformance.results import Verdict

# Passes on the simulator; fails under the mutant idle-reads-pending (OQ-1: a fresh context
# reads SEC_I_ASYNC_CALL_PENDING).
FRESH = """\
id: tiny.fresh-not-pending
title: A fresh context is not pending
requirements: [CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_E_OK
  - free: a1
"""

CREATE_FREE = """\
id: tiny.create-free
title: Create then free
requirements: [CTX-1, FREE-1]
steps:
  - create: a1
  - free: a1
"""

WRONG = """\
id: tiny.wrongly-expects-pending
title: Expects a fresh context to be pending (wrong on purpose)
requirements: [CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_I_ASYNC_CALL_PENDING
  - free: a1
"""

PROFILE = """\
# Tiny profile for the bless test.
# This header is kept.

profile: tiny
description: "A mutant: fresh contexts read pending"
implementation:
  name: mutant-sim
  version: "1"
adapter: simulator
adapter_options: {mutant: idle-reads-pending}
expectations:
  # create-free was broken once
  - id: tiny.create-free
    xfail: old bug
  - id: tiny.gone
    xfail: the scenario was deleted
  # why the wrong one is skipped
  - id: tiny.wrongly-*
    skip: wrong on purpose
"""

MUTANT = "idle-reads-pending"


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for name, text in (("fresh", FRESH), ("create-free", CREATE_FREE), ("wrong", WRONG)):
        (folder / f"{name}.yaml").write_text(text)
    return folder


def run(corpus: Path, report_dir: Path, *extra: str) -> int:
    return main(["run", str(corpus), "--report-dir", str(report_dir), *extra])


def test_bless_rewrites_the_profile_from_a_real_run(corpus: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "tiny.yaml"
    profile.write_text(PROFILE)
    reports = tmp_path / "r"
    assert run(corpus, reports, "--profile", str(profile)) == 1
    verdicts = {r.id: r.verdict for r in read_results(reports / "results.jsonl")}
    assert verdicts == {"tiny.fresh-not-pending": Verdict.FAIL, "tiny.create-free": Verdict.XPASS,
                        "tiny.wrongly-expects-pending": Verdict.SKIP}
    capsys.readouterr()
    results = str(reports / "results.jsonl")
    assert main(["bless", "--profile", str(profile), "--results", results, "--check"]) == 1
    assert profile.read_text() == PROFILE  # --check changes nothing
    assert main(["bless", "--profile", str(profile), "--results", results]) == 0
    out = capsys.readouterr().out
    assert "added xfail: tiny.fresh-not-pending" in out
    assert "removed stale entry tiny.create-free: now passing" in out
    assert "removed stale entry tiny.gone: no such scenario in the results" in out
    text = profile.read_text()
    assert text.startswith("# Tiny profile for the bless test.\n# This header is kept.\n\nprofile: tiny\n")
    assert "  # why the wrong one is skipped\n  - id: tiny.wrongly-*\n    skip: wrong on purpose\n" in text
    assert "create-free was broken once" not in text and "tiny.gone" not in text
    added = (r"  - id: tiny.fresh-not-pending\n    xfail: \"blessed: step 2 \(line 6\) status a1: expected "
             r"SEC_E_OK.*\"\n"
             r"    pin: \{verdict: fail, step: 2, actual: SEC_I_ASYNC_CALL_PENDING\}\n")
    assert re.search(added, text), text
    blessed = load_profile(profile)
    assert [e.pattern for e in blessed.expectations] == ["tiny.wrongly-*", "tiny.fresh-not-pending"]
    assert blessed.adapter_options == {"mutant": MUTANT}
    # The blessed profile makes the same run pass, and is then up to date.
    assert run(corpus, reports, "--profile", str(profile)) == 0
    assert {r.id: r.verdict for r in read_results(reports / "results.jsonl")}["tiny.fresh-not-pending"] \
        is Verdict.XFAIL
    capsys.readouterr()
    assert main(["bless", "--profile", str(profile), "--results", results, "--check"]) == 0
    before = profile.read_text()
    assert main(["bless", "--profile", str(profile), "--results", results]) == 0
    assert profile.read_text() == before  # blessing twice changes nothing


def test_bless_repins_a_changed_failure(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "tiny.yaml"
    profile.write_text(PROFILE.split("expectations:")[0] + "expectations:\n  - id: tiny.fresh-not-pending\n"
                       "    xfail: OQ-1 bug\n    pin: {verdict: fail, step: 2, actual: SEC_E_INVALID_HANDLE}\n"
                       "  - id: tiny.wrongly-expects-pending\n    xfail: passes only under the mutant\n")
    reports = tmp_path / "r"
    assert run(corpus, reports, "--profile", str(profile)) == 1  # the pinned failure changed
    capsys.readouterr()
    assert main(["bless", "--profile", str(profile), "--results", str(reports / "results.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "re-pinned: tiny.fresh-not-pending" in out
    entry = load_profile(profile).expectation_for("tiny.fresh-not-pending")
    assert entry is not None and entry.reason == "OQ-1 bug"  # the reason is the person's, kept
    assert entry.pin is not None and entry.pin.actual == "SEC_I_ASYNC_CALL_PENDING"
    assert run(corpus, reports, "--profile", str(profile)) == 0


def test_bless_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "tiny.yaml"
    profile.write_text(PROFILE)
    assert main(["bless", "--profile", str(profile), "--results", str(tmp_path / "none.jsonl")]) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json}\n{}\n")
    assert main(["bless", "--profile", str(profile), "--results", str(bad)]) == 2
    assert f"{bad}:1: not JSON" in capsys.readouterr().err
    assert profile.read_text() == PROFILE


@pytest.mark.parametrize("value", ["plain", "with: colon", "yes", "null", "0x1F", "- dash", "#hash", "a #b",
                                   "", " padded ", "line\nbreak", "quote\"s", "ünïcode", "3", "tiny.*", "[x]"])
def test_scalars_read_back(value: str) -> None:
    assert yaml.safe_load(f"k: {scalar(value)}") == {"k": value}


# ---- report: the matrix ---------------------------------------------------------------------------------


def test_report_merges_two_real_runs(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = tmp_path / "runs"
    assert run(corpus, runs / "sim") == 1  # the wrong-on-purpose scenario fails on the simulator
    assert run(corpus, runs / "mutant", "--adapter-option", f"mutant={MUTANT}") == 1
    out = tmp_path / "matrix"
    capsys.readouterr()
    assert main(["report", str(runs / "sim"), str(runs / "mutant" / "results.jsonl"), "--out", str(out)]) == 0
    assert "3 scenarios x 2 runs" in capsys.readouterr().err
    markdown = (out / "matrix.md").read_text()
    # Both runs are "simulator 1 via simulator": the columns are kept apart.
    assert "**1** simulator 1 via simulator; **2** simulator 1 via simulator #2" in markdown
    link = "../runs/{}/report.html#s-tiny.fresh-not-pending"
    assert f"| `tiny.fresh-not-pending` | must | [pass]({link.format('sim')}) | " \
           f"[**fail**]({link.format('mutant')}) |" in markdown
    assert "| `CTX-7` | failing | failing |" in markdown  # each run has one failing CTX-7 scenario
    assert "| `FREE-1` | passing | passing |" in markdown
    html = (out / "matrix.html").read_text()
    assert f'href="{link.format("mutant")}"' in html
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    # The link target exists and carries the anchor.
    target = (out / link.format("mutant").split("#")[0]).resolve()
    assert 'id="s-tiny.fresh-not-pending"' in target.read_text()


def test_report_escapes_hostile_results_and_rejects_bad_input(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    import json

    evil = tmp_path / "evil.jsonl"
    evil.write_text(json.dumps({"id": "x<script>alert(1)</script>", "verdict": "fail", "adapter": "a|b",
                                "implementation": "<img src=x onerror=alert(1)>", "message": "m|<b>"}) + "\n")
    out = tmp_path / "m"
    assert main(["report", str(evil), "--out", str(out)]) == 0
    html = (out / "matrix.html").read_text()
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "&lt;script&gt;" in html
    assert "<script>" not in (out / "matrix.md").read_text()
    capsys.readouterr()
    assert main(["report", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "no such results file" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["report", str(empty)]) == 2


def test_matrix_counts_an_expected_failure_as_known_failing(tmp_path: Path) -> None:
    from conformance.matrix import build_matrix
    from conformance.reports.jsonl import write_results
    from conformance.results import ScenarioResult

    def one(sid: str, verdict: Verdict, requirement: str) -> ScenarioResult:
        return ScenarioResult(id=sid, title="", file="", verdict=verdict, adapter="a", requirements=[requirement],
                              level="should")

    path = tmp_path / "results.jsonl"
    write_results(path, [one("a", Verdict.PASS, "CTX-1"), one("b", Verdict.XFAIL, "CTX-1"),
                         one("c", Verdict.PASS, "CTX-2"), one("d", Verdict.FAIL, "CTX-3"),
                         one("e", Verdict.FAIL, "CTX-3")])
    matrix = build_matrix([path], catalogue={"CTX-1": "", "CTX-2": "", "CTX-3": "", "CTX-4": ""})
    run = matrix.runs[0]
    assert run.requirement_status == {"CTX-1": "known-failing", "CTX-2": "passing", "CTX-3": "failing",
                                      "CTX-4": "uncovered"}
    assert run.code == 0  # should-level failures only
    assert build_matrix([path], strict=True, catalogue={}).runs[0].code == 1
