"""Reports: results.jsonl round trip and truncation, JUnit, Markdown summary, HTML report."""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from adapters import status
from conformance.reports import html as html_report
from conformance.reports import junit, markdown, write_reports
from conformance.reports.coverage import coverage, coverage_counts
from conformance.reports.jsonl import (
    JsonlError,
    append_result,
    encode,
    read_results,
    result_from_json,
)
from conformance.reports.text import area_of, counts, reason, step_trace, with_status_names
from conformance.results import ScenarioResult, StepRecord, TraceEvent, Verdict, ViolationRecord

MAIN, WORKER = 140001, 140777


def failing_result(sid: str = "lifecycle.pending-status", **kw: object) -> ScenarioResult:
    data: dict = dict(
        id=sid,
        title="Status reads pending until completion",
        file="scenarios/lifecycle/pending.yaml",
        verdict=Verdict.FAIL,
        adapter="simulator",
        requirements=["CTX-7", "CALL-1"],
        tags=["lifecycle"],
        duration_s=0.012,
        message="step 2 (status a1): expected SEC_I_ASYNC_CALL_PENDING",
        steps=[
            StepRecord(0, 5, "create", "create a1"),
            StepRecord(1, 7, "status", "status a1", ok=False,
                       expected=status.describe(status.SEC_I_ASYNC_CALL_PENDING),
                       actual=status.describe(status.SEC_E_OK), message="status is not pending"),
        ],
        trace=[
            TraceEvent(0, 0.0001, MAIN, "call", "create_async_context", "a1"),
            TraceEvent(1, 0.0002, MAIN, "return", "acquire_credentials_handle_async", "a1",
                       status=status.SEC_I_ASYNC_CALL_PENDING),
            TraceEvent(2, 0.0031, WORKER, "callback", "", "a1", args={"data": "a1"},
                       status=status.SEC_E_OK),
            TraceEvent(3, 0.0040, MAIN, "status", "get_async_call_status", "a1", status=status.SEC_E_OK),
        ],
        violations=[ViolationRecord("CTX-7", "status read OK while the call was pending", "implementation",
                                    "get_async_call_status", 3)],
    )
    data.update(kw)
    return ScenarioResult(**data)


def passing_result(sid: str, requirements: list[str], verdict: Verdict = Verdict.PASS) -> ScenarioResult:
    return ScenarioResult(id=sid, title=f"title of {sid}", file=f"scenarios/notify/{sid}.yaml", verdict=verdict,
                          adapter="simulator", requirements=requirements, duration_s=0.001,
                          message="" if verdict is Verdict.PASS else f"{verdict.value} reason")


# ---- jsonl ----------------------------------------------------------------------------------------


def test_jsonl_round_trip_keeps_every_field(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    original = failing_result()
    append_result(path, original, nodeid="x.yaml::lifecycle.pending-status")
    append_result(path, passing_result("notify.ok", ["NOTIFY-1"]))
    back = read_results(path)
    assert [r.id for r in back] == ["lifecycle.pending-status", "notify.ok"]
    assert back[0] == original
    assert json.loads(path.read_text().splitlines()[0])["nodeid"] == "x.yaml::lifecycle.pending-status"


def test_jsonl_line_matches_the_result_to_json_form() -> None:
    result = failing_result()
    assert json.loads(encode(result)) == json.loads(json.dumps(result.to_json()))


def test_jsonl_encodes_bytes_and_odd_values_in_trace_args() -> None:
    result = failing_result()
    result.trace[0].args = {"token": b"\x01\xff", "handle": object(), "flags": {1}}
    data = json.loads(encode(result))
    assert data["trace"][0]["args"]["token"] == "01ff"
    assert data["trace"][0]["args"]["flags"] == [1]
    assert data["verdict"] == "fail"


def test_jsonl_reader_tolerates_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_result(path, passing_result("a.one", ["CTX-1"]))
    append_result(path, passing_result("a.two", ["CTX-1"]))
    line = encode(failing_result())
    with open(path, "ab") as handle:
        handle.write(line[: len(line) // 2])  # the writer was killed mid-line
    assert [r.id for r in read_results(path)] == ["a.one", "a.two"]


def test_jsonl_reader_rejects_a_corrupt_middle_line_with_its_number(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    append_result(path, passing_result("a.one", ["CTX-1"]))
    with open(path, "ab") as handle:
        handle.write(b"{not json\n")
    append_result(path, passing_result("a.two", ["CTX-1"]))
    with pytest.raises(JsonlError, match=r"results.jsonl:2: not JSON"):
        read_results(path)


def test_jsonl_reader_rejects_a_record_without_verdict(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    path.write_text('{"id": "x"}\n')
    with pytest.raises(JsonlError, match=r":1: missing key 'verdict'"):
        read_results(path)
    with pytest.raises(ValueError):
        result_from_json({"id": "x", "verdict": "bogus"})


def test_jsonl_appends_from_many_processes_never_interleave(tmp_path: Path) -> None:
    path = tmp_path / "results.jsonl"
    big = failing_result(message="x" * 20000)  # far above PIPE_BUF: atomicity comes from O_APPEND
    pids = []
    for child in range(4):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child process
            try:
                for i in range(25):
                    append_result(path, failing_result(f"p{child}.n{i}", message=big.message))
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    ids = [r.id for r in read_results(path)]
    assert len(ids) == 100 and len(set(ids)) == 100


# ---- text -----------------------------------------------------------------------------------------


def test_step_trace_shows_statuses_violations_and_callback_timeline() -> None:
    text = step_trace(failing_result())
    assert "SEC_I_ASYNC_CALL_PENDING (0x00090368)" in text
    assert "expected: SEC_I_ASYNC_CALL_PENDING (0x00090368)" in text
    assert "actual:   SEC_E_OK (0x00000000)" in text
    assert "FAIL #1" in text and "L7" in text
    assert "CTX-7 [implementation] in get_async_call_status" in text
    assert "callback timeline:" in text
    callback_lines = [ln for ln in text.splitlines() if " callback " in ln]
    assert len(callback_lines) == 1 and "T1" in callback_lines[0] and "3.100 ms" in callback_lines[0]
    assert "Traceback" not in text


def test_step_trace_names_bare_status_numbers() -> None:
    assert with_status_names("0x90368") == "SEC_I_ASYNC_CALL_PENDING (0x00090368)"
    assert with_status_names("2148074241") == "SEC_E_INVALID_HANDLE (0x80090301)"
    assert with_status_names("success") == "success"


def test_reason_area_and_counts() -> None:
    result = failing_result(message="")
    assert reason(result).startswith("step 1 (status): status is not pending")
    assert area_of(result) == "lifecycle"
    assert area_of(passing_result("solo", [])) == "notify"
    assert area_of(ScenarioResult("tls.x", "", "", Verdict.PASS, "sim")) == "tls"
    tally = counts([result, passing_result("a", []), passing_result("b", [])])
    assert tally["pass"] == 2 and tally["fail"] == 1 and tally["hung"] == 0
    assert next(iter(tally)) == "fail"


# ---- coverage, junit, markdown --------------------------------------------------------------------


CATALOGUE = {"CTX-1": "created fresh", "CTX-7": "pending until done", "CALL-1": "queue status", "SHUT-1": "shutdown"}


def sample() -> list[ScenarioResult]:
    return [
        failing_result(),
        passing_result("notify.one", ["CTX-1"]),
        passing_result("notify.two", ["CTX-1", "NOPE-9"]),
        passing_result("notify.unsup", ["SHUT-1"], Verdict.UNSUPPORTED),
        passing_result("notify.hang", ["CALL-1"], Verdict.HUNG),
    ]


def test_coverage_rows_follow_catalogue_and_flag_unknown_ids() -> None:
    rows = coverage(sample(), CATALOGUE)
    by_id = {r.requirement: r for r in rows}
    assert [r.requirement for r in rows] == ["CTX-1", "CTX-7", "CALL-1", "SHUT-1", "NOPE-9"]
    assert by_id["CTX-1"].status == "passing"
    assert by_id["CTX-7"].status == "failing"
    assert by_id["SHUT-1"].status == "not-run"
    assert not by_id["NOPE-9"].in_catalogue
    assert coverage_counts(rows) == {"total": 5, "covered": 5, "passing": 2, "failing": 2, "not-run": 1,
                                     "uncovered": 0}
    assert coverage([], CATALOGUE)[0].status == "uncovered"


def test_junit_has_one_testcase_per_scenario_with_area_and_trace(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    junit.write(path, sample())
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert suite.get("tests") == "5" and suite.get("failures") == "2" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    assert set(cases) == {r.id for r in sample()}
    failed = cases["lifecycle.pending-status"]
    assert failed.get("classname") == "lifecycle"
    failure = failed.find("failure")
    assert failure is not None and failure.get("type") == "fail"
    assert "SEC_I_ASYNC_CALL_PENDING (0x00090368)" in (failure.text or "")
    assert "[fail] step 2" in (failure.get("message") or "")
    assert cases["notify.unsup"].find("skipped") is not None
    assert cases["notify.one"].find("failure") is None and cases["notify.one"].find("skipped") is None


def test_junit_survives_control_characters_from_the_implementation(tmp_path: Path) -> None:
    path = tmp_path / "junit.xml"
    junit.write(path, [failing_result(message="bad\x00byte\x1b[31m")])
    failure = ET.parse(path).getroot().find("testsuite/testcase/failure")
    assert failure is not None and failure.get("message") == "[fail] bad?byte?[31m"


def test_markdown_summary_totals_failures_and_coverage() -> None:
    text = markdown.render(sample(), CATALOGUE)
    assert text.startswith("# SSPI conformance summary")
    assert "**FAILED**: 5 scenarios on simulator, 2 failing." in text
    assert "| pass | 2 |" in text and "| hung | 1 |" in text and "| xfail |" not in text
    assert "| `lifecycle.pending-status` | fail | must | CTX-7, CALL-1 |" in text
    assert "| 5 | 5 | 2 | 2 | 1 | 0 |" in text
    assert "Cited but not in the catalogue: `NOPE-9`" in text
    assert "**PASSED**" in markdown.render([passing_result("a", [])], CATALOGUE)
    should = failing_result(level="should")
    text = markdown.render([should, passing_result("a", [])], CATALOGUE)
    assert "**PASSED**: 2 scenarios on simulator, 1 failing (1 of them should/may-level" in text


def test_markdown_cells_cannot_break_the_table() -> None:
    text = markdown.render([failing_result(message="a | b\tc <script>")], {})
    row = next(ln for ln in text.splitlines() if ln.startswith("| `lifecycle"))
    assert "a \\| b c &lt;script&gt;" in row
    assert row.count(" | ") == 4


# ---- html -----------------------------------------------------------------------------------------


def test_html_report_is_self_contained_and_escaped(tmp_path: Path) -> None:
    hostile = failing_result("evil.one", message='<script>alert("x")</script>')
    hostile.trace.append(TraceEvent(9, 0.005, MAIN, "note", detail="<img src=x onerror=alert(1)>"))
    page = html_report.render([hostile, *sample()[1:]], CATALOGUE)
    assert "<script>alert" not in page and "&lt;script&gt;alert" in page
    assert "<img src=x" not in page
    assert "http://" not in page and "https://" not in page and "<link" not in page
    assert page.count('<details class="sc"') == 5
    assert 'data-verdict="hung"' in page
    assert 'id="r-CTX-7"' in page and "pending until done" in page
    # The evidence block parses back; the timeline has the callback's thread and time offset.
    block = re.search(r'<script type="application/json" id="evidence">(.*?)</script>', page, re.S)
    assert block is not None and "</" not in block.group(1)
    evidence = json.loads(block.group(1))
    first = evidence[0]
    assert first["steps"][1][2:6] == [0, "status a1", "SEC_I_ASYNC_CALL_PENDING (0x00090368)",
                                      "SEC_E_OK (0x00000000)"]
    assert ["3.100", "T1", "callback", "callback", "", "a1", "SEC_E_OK (0x00000000)", "data=a1"] in first["timeline"]
    assert ["0.200", "T0", "return", "queued", "acquire_credentials_handle_async", "a1",
            "SEC_I_ASYNC_CALL_PENDING (0x00090368)", ""] in first["timeline"]
    assert first["timeline"][-1][-1] == "<img src=x onerror=alert(1)>"  # data, drawn with textContent
    assert first["violations"] == [["CTX-7", "implementation", "get_async_call_status",
                                    "status read OK while the call was pending"]]
    # Failing scenarios come first.
    assert page.index('id="s-evil.one"') < page.index('id="s-notify.one"')


def test_html_report_stays_small_for_a_large_corpus() -> None:
    results = [failing_result(f"area.s{i:03d}") if i % 10 == 0 else passing_result(f"area.s{i:03d}", ["CTX-1"])
               for i in range(250)]
    page = html_report.render(results, CATALOGUE)
    assert page.count('<details class="sc"') == 250
    assert len(page) < 250 * 3000  # evidence as compact JSON: a few KB per scenario at most


def test_html_repeated_ids_get_unique_anchors_and_one_coverage_entry() -> None:
    runs = [passing_result("notify.one", ["CTX-1"]), passing_result("notify.one", ["CTX-1"], Verdict.HUNG)]
    page = html_report.render(runs, CATALOGUE)
    anchors = re.findall(r'<details class="sc" id="([^"]+)"', page)
    assert len(anchors) == 2 and len(set(anchors)) == 2
    row = coverage(runs, CATALOGUE)[0]
    assert row.scenarios == [("notify.one", Verdict.HUNG)] and row.status == "failing"


def test_write_reports_reads_results_jsonl(tmp_path: Path) -> None:
    for result in sample():
        append_result(tmp_path / "results.jsonl", result)
    paths = write_reports(tmp_path, catalogue=CATALOGUE)
    assert {p.name for p in paths.values()} == {"junit.xml", "summary.md", "report.html"}
    assert all(p.stat().st_size > 0 for p in paths.values())
    assert "notify.hang" in paths["html"].read_text()
