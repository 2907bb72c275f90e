"""What a run produces: trace events, step records, scenario results and verdicts.

These types are the contract between the monitor (which records the trace), the executor
(which runs one scenario and judges it) and the reporters (JSON lines, JUnit, Markdown,
HTML), so each can be written and tested on its own.  Everything here is plain data and
serialises with :func:`dataclasses.asdict`.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class Verdict(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    UNSUPPORTED = "unsupported"  # the implementation does not claim a needed capability
    SKIP = "skip"  # skipped by profile or selection
    XFAIL = "xfail"  # failed as the profile expects
    XPASS = "xpass"  # passed although the profile expects a failure: fails the run
    CRASHED = "crashed"  # the implementation died
    HUNG = "hung"  # the implementation stopped answering
    ERROR = "error"  # the scenario or the harness is broken (not the implementation)


@dataclass(slots=True)
class TraceEvent:
    """One observation.  ``kind``: call | return | callback | status | violation | note."""

    seq: int
    t: float  # seconds since the trace started (monotonic)
    thread: int  # threading.get_ident() of the observing thread
    kind: str
    op: str = ""
    ctx: str = ""  # label of the async context (or handle) concerned
    args: dict[str, Any] = field(default_factory=dict)
    status: int | None = None
    detail: str = ""


@dataclass(slots=True)
class StepRecord:
    """One scenario step as executed: what was expected, what happened."""

    index: int
    line: int  # line of the step in the YAML file (1-based), 0 when generated
    action: str
    summary: str
    ok: bool = True
    expected: str = ""
    actual: str = ""
    message: str = ""
    duration_s: float = 0.0


@dataclass(slots=True)
class ViolationRecord:
    requirement: str
    message: str
    party: str
    call: str | None = None
    seq: int | None = None  # trace event it belongs to


@dataclass(slots=True)
class CallbackRecord:
    """One callback as the executor's recording callback saw it (NOTIFY-8: ``status`` is what
    SspiGetAsyncCallStatus returned inside the callback)."""

    ctx: str  # the scenario's name for the async context
    thread: int
    t: float  # seconds since the scenario started (monotonic)
    data: Any
    status: int | None


@dataclass(slots=True)
class ScenarioResult:
    id: str
    title: str
    file: str
    verdict: Verdict
    adapter: str
    level: str = "must"
    requirements: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    message: str = ""  # one-line reason for a non-pass verdict
    steps: list[StepRecord] = field(default_factory=list)
    trace: list[TraceEvent] = field(default_factory=list)
    violations: list[ViolationRecord] = field(default_factory=list)
    implementation: str = ""  # capabilities().name + version
    expectation: str = ""  # profile expectation applied (xfail/skip reason)
    callbacks: list[CallbackRecord] = field(default_factory=list)  # kept with the trace

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.value
        return data


def __getattr__(name: str) -> frozenset[Verdict]:
    # ``FAILING`` moved to conformance.policy, the single source of the verdict policy
    # (docs/ci.md); it is served from there so older imports keep working.
    if name == "FAILING":
        from conformance.policy import FAILING

        return FAILING
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
