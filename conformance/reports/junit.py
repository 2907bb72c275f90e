"""``junit.xml``: one testcase per scenario for CI test tabs (classname = corpus area)."""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence

from conformance.reports.text import area_of, reason, step_trace
from conformance.results import ScenarioResult, Verdict

# XML 1.0 cannot carry most control characters, even escaped; implementations under test
# may put anything in a message, so drop them rather than write an unreadable file.
_INVALID_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")

_FAILURE = {Verdict.FAIL, Verdict.XPASS, Verdict.CRASHED, Verdict.HUNG}
_SKIPPED = {Verdict.SKIP, Verdict.UNSUPPORTED, Verdict.XFAIL}


def _clean(text: str) -> str:
    return _INVALID_XML.sub("?", text)


def build(results: Sequence[ScenarioResult], suite_name: str = "sspi-conformance") -> ET.ElementTree:
    failures = sum(r.verdict in _FAILURE for r in results)
    errors = sum(r.verdict is Verdict.ERROR for r in results)
    skipped = sum(r.verdict in _SKIPPED for r in results)
    total_time = sum(r.duration_s for r in results)
    root = ET.Element("testsuites")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=suite_name,
        tests=str(len(results)),
        failures=str(failures),
        errors=str(errors),
        skipped=str(skipped),
        time=f"{total_time:.3f}",
    )
    for result in results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_clean(area_of(result)),
            name=_clean(result.id),
            file=_clean(result.file),
            time=f"{result.duration_s:.3f}",
        )
        props = ET.SubElement(case, "properties")
        ET.SubElement(props, "property", name="verdict", value=result.verdict.value)
        ET.SubElement(props, "property", name="adapter", value=_clean(result.adapter))
        ET.SubElement(props, "property", name="level", value=_clean(result.level))
        ET.SubElement(props, "property", name="requirements", value=_clean(",".join(result.requirements)))
        message = _clean(f"[{result.verdict.value}] {reason(result)}".strip())
        if result.verdict in _FAILURE:
            node = ET.SubElement(case, "failure", message=message, type=result.verdict.value)
            node.text = _clean(step_trace(result))
        elif result.verdict is Verdict.ERROR:
            node = ET.SubElement(case, "error", message=message, type="error")
            node.text = _clean(step_trace(result))
        elif result.verdict in _SKIPPED:
            ET.SubElement(case, "skipped", message=message, type=result.verdict.value)
    ET.indent(root)
    return ET.ElementTree(root)


def write(path: str | os.PathLike[str], results: Sequence[ScenarioResult]) -> None:
    build(results).write(os.fspath(path), encoding="utf-8", xml_declaration=True)


__all__ = ["build", "write"]
