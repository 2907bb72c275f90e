"""Plain-text views of a result shared by every reporter: reasons, step traces, timelines.

The pytest failure section, the JUnit failure body and the CLI summary all print a
result the same way, so a person sees one format wherever a failure shows up.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from pathlib import PurePath

from adapters.status import describe
from conformance.policy import fails_run, is_failing
from conformance.results import ScenarioResult, TraceEvent, Verdict

# Report order: worst first, so tables read top-down by urgency.
VERDICT_ORDER: tuple[Verdict, ...] = (
    Verdict.FAIL,
    Verdict.XPASS,
    Verdict.CRASHED,
    Verdict.HUNG,
    Verdict.ERROR,
    Verdict.PASS,
    Verdict.XFAIL,
    Verdict.UNSUPPORTED,
    Verdict.SKIP,
)

_BARE_NUMBER = re.compile(r"^(0[xX][0-9a-fA-F]+|-?[0-9]+)$")


def with_status_names(text: str) -> str:
    """A bare status number (``0x90368``, ``590696``) becomes ``NAME (0x...)``; other text stays."""
    stripped = text.strip()
    if _BARE_NUMBER.match(stripped):
        return describe(int(stripped, 0))
    return text


def status_text(value: int | None) -> str:
    return "" if value is None else describe(value)


def counts(results: Iterable[ScenarioResult]) -> dict[str, int]:
    """How many results per verdict, every verdict present (zeros included), in report order."""
    tally = Counter(r.verdict for r in results)
    return {v.value: tally.get(v, 0) for v in VERDICT_ORDER}


def reason(result: ScenarioResult) -> str:
    """One line saying why a result is not a plain pass."""
    if result.message:
        return result.message.splitlines()[0]
    for step in result.steps:
        if not step.ok:
            return f"step {step.index} ({step.action}): {step.message or 'expectation not met'}"
    for violation in result.violations:
        if violation.party == "implementation":
            return f"{violation.requirement}: {violation.message}"
    return result.expectation or ""


def area_of(result: ScenarioResult) -> str:
    """The corpus area: the folder under ``scenarios/``, else the id's first dotted part."""
    parts = PurePath(result.file).parts if result.file else ()
    if len(parts) >= 3 and parts[-3] == "scenarios":
        return parts[-2]
    if "." in result.id:
        return result.id.split(".", 1)[0]
    return "scenarios"


class ThreadLabels:
    """Short stable names (T0, T1, ...) for thread idents, in order of first appearance."""

    def __init__(self) -> None:
        self._labels: dict[int, str] = {}

    def __call__(self, ident: int) -> str:
        label = self._labels.get(ident)
        if label is None:
            label = self._labels[ident] = f"T{len(self._labels)}"
        return label


def event_line(event: TraceEvent, threads: ThreadLabels) -> str:
    """``+  1.234 ms T1 callback a1 ...`` - one trace event on one line."""
    parts = [f"+{event.t * 1000:9.3f} ms", threads(event.thread), f"{event.kind:<9}"]
    if event.op:
        parts.append(event.op)
    if event.ctx:
        parts.append(f"[{event.ctx}]")
    if event.status is not None:
        parts.append(f"-> {describe(event.status)}")
    if event.args:
        parts.append(" ".join(f"{k}={v!r}" for k, v in event.args.items()))
    if event.detail:
        parts.append(f"({event.detail})")
    return " ".join(parts)


def step_trace(result: ScenarioResult, *, timeline: str = "callbacks") -> str:
    """The multi-line evidence for a result: header, steps, violations and a timeline.

    ``timeline`` is ``callbacks`` (callback arrivals only), ``all`` (every trace event) or
    ``none``.
    """
    lines = [f"scenario {result.id} [{result.verdict.value}] on {result.adapter}"]
    if result.implementation:
        lines[0] += f" ({result.implementation})"
    if result.file:
        lines.append(f"  file: {result.file}")
    if result.requirements:
        lines.append(f"  requirements: {', '.join(result.requirements)}")
    why = reason(result)
    if why and result.verdict is not Verdict.PASS:
        lines.append(f"  reason: {why}")
    if result.expectation:
        lines.append(f"  profile expectation: {result.expectation}")
    if result.steps:
        lines.append("steps:")
        for step in result.steps:
            mark = "ok  " if step.ok else "FAIL"
            where = f"L{step.line}" if step.line else "gen"
            lines.append(f"  {mark} #{step.index:<3} {where:<5} {step.summary or step.action}")
            if not step.ok or step.expected or step.actual:
                if step.expected:
                    lines.append(f"             expected: {with_status_names(step.expected)}")
                if step.actual:
                    lines.append(f"             actual:   {with_status_names(step.actual)}")
            if not step.ok and step.message:
                lines.append(f"             {step.message}")
    if result.violations:
        lines.append("violations:")
        for v in result.violations:
            call = f" in {v.call}" if v.call else ""
            lines.append(f"  {v.requirement} [{v.party}]{call}: {v.message}")
    if timeline != "none" and result.trace:
        threads = ThreadLabels()
        events = result.trace if timeline == "all" else [e for e in result.trace if e.kind == "callback"]
        # Label threads in trace order so T0 is the thread that made the first call.
        for event in result.trace:
            threads(event.thread)
        title = "trace:" if timeline == "all" else "callback timeline:"
        lines.append(title)
        if events:
            lines.extend("  " + event_line(e, threads) for e in events)
        else:
            lines.append("  (no callbacks arrived)")
    return "\n".join(lines)


__all__ = [
    "VERDICT_ORDER",
    "ThreadLabels",
    "area_of",
    "counts",
    "event_line",
    "fails_run",
    "is_failing",
    "reason",
    "status_text",
    "step_trace",
    "with_status_names",
]
