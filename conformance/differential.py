"""Differential mode: one scenario, two adapters, the first place where they answer differently.

Each side runs the scenario through the ordinary executor (:func:`conformance.executor.run_scenario`)
on an adapter wrapped in a :class:`Recorder`.  The recorder sees every call the executor makes, in
the executor's own order, and keeps one :class:`Observation` per call: the operation, what it
returned (queue status, NTSTATUS, handle or bool) and, for the five async operations, the status
and the out-parameters present when the completion callback ran.  The two observation lists are
then compared in order; the first difference is reported with the scenario step that made the
call (the executor exposes the step it is running as ``current`` on the object whose bound method
it registers as callback; when it does not, the step is simply unknown).

Timing-dependent reads are left out so that a threaded and an inline implementation can agree:
``SspiGetAsyncCallStatus`` answering ``SEC_I_ASYNC_CALL_PENDING`` (a poll), and repeats of the
same read on the same context.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from adapters import status as st
from adapters.api import (
    Adapter,
    Callback,
    CallOutputs,
    Capabilities,
    CompletionControl,
    Handle,
    SecBuffer,
    Violation,
)
from adapters.constants import SECBUFFER_TOKEN
from conformance.results import ScenarioResult

_ABSENT = "-"


def status_text(value: int | None) -> str:
    """``NAME (0x........)``, or ``-`` when there is no status."""
    if value is None:
        return _ABSENT
    return f"{st.name_of(value)} (0x{value & 0xFFFFFFFF:08X})"


@dataclass
class Observation:
    """One call made by the executor, and what came back."""

    op: str
    ctx: str  # label of the async context it concerns ("a1", "a2", ... in creation order)
    step: int | None = None  # scenario step index (0-based) running when the call was made
    line: int = 0
    summary: str = ""
    value: str = ""  # non-status results: handle/null, true/false
    status: int | None = None  # queue status, NTSTATUS or returned status
    completion: int | None = None  # async ops: the status when the callback ran
    outputs: tuple[str, ...] | None = None  # async ops: out-parameters present at completion

    def key(self) -> tuple[Any, ...]:
        return (self.op, self.ctx, self.value, self.status, self.completion, self.outputs)

    def describe_outputs(self) -> str:
        if self.outputs is None:
            return _ABSENT
        return ", ".join(self.outputs) if self.outputs else "none"


def _current_step(depth: int = 12) -> tuple[int | None, int, str]:
    """(index, line, summary) of the scenario step the executor is running, found on the
    caller's stack: the executor's run object keeps it as ``current`` next to ``scenario``.
    Only a label for the report; (None, 0, "") when no such frame is found."""
    frame: FrameType | None = sys._getframe(2)
    for _ in range(depth):
        if frame is None:
            break
        owner = frame.f_locals.get("self")
        step = getattr(owner, "current", None) if hasattr(owner, "scenario") else None
        if step is not None and hasattr(step, "index"):
            return int(step.index), int(getattr(step, "line", 0)), str(getattr(step, "summary", ""))
        frame = frame.f_back
    return None, 0, ""


def _present(outputs: CallOutputs) -> tuple[str, ...]:
    """Which out-parameters the implementation wrote (names, stable order)."""
    if not outputs.written:
        return ()
    found = []
    if outputs.credential is not None:
        found.append("credential")
    if outputs.new_context is not None:
        found.append("new_context")
    token = next((b for b in outputs.output or [] if (b.type & 0x0FFFFFFF) == SECBUFFER_TOKEN), None)
    if token is not None and token.data:
        found.append("token")
    # ptsExpiry is left out: libraries differ on it for reasons of their own (sspi-rs never
    # writes it, finding F-7), which would make it the first divergence of nearly every run;
    # scenarios check it explicitly with ``outputs: {expiry: ...}``.
    return tuple(found)


class Recorder(Adapter):
    """Delegates every call to ``inner`` and records it as an :class:`Observation`."""

    def __init__(self, inner: Adapter) -> None:
        self.inner = inner
        self.observations: list[Observation] = []
        self._labels: dict[Any, str] = {}
        self._pending: dict[Any, tuple[Observation, CallOutputs | None]] = {}
        self._lock = threading.Lock()

    # ---- bookkeeping --------------------------------------------------------------------
    @staticmethod
    def _key(ctx: Any) -> Any:
        """Handles are hashable values (adapters.api); a remote adapter may hand back an equal
        but distinct object in the callback, so they are keyed by value, not identity."""
        try:
            hash(ctx)
        except TypeError:
            return id(ctx)
        return ctx

    def _label(self, ctx: Any) -> str:
        if ctx is None:
            return "null"
        return self._labels.get(self._key(ctx), "foreign")

    def _note(self, op: str, ctx: Any, **values: Any) -> Observation:
        index, line, summary = _current_step()
        obs = Observation(op, self._label(ctx), index, line, summary, **values)
        with self._lock:
            self.observations.append(obs)
        return obs

    def _queued(self, op: str, ctx: Any, outputs: CallOutputs | None, call: Callable[[], int]) -> int:
        index, line, summary = _current_step()
        obs = Observation(op, self._label(ctx), index, line, summary)
        with self._lock:
            self.observations.append(obs)
            if ctx is not None:
                # Registered before the call: an inline callback fires before it returns (OQ-2).
                self._pending[self._key(ctx)] = (obs, outputs)
        status = call()
        obs.status = status
        if status != st.SEC_E_OK and ctx is not None:
            with self._lock:
                self._pending.pop(self._key(ctx), None)
        return status

    def _wrap(self, callback: Callback) -> Callback:
        def recorded(ctx: Any, data: Any) -> None:
            with self._lock:
                pending = self._pending.pop(self._key(ctx), None)
            if pending is not None:
                obs, outputs = pending
                obs.completion = self.inner.get_async_call_status(ctx)
                obs.outputs = _present(outputs) if outputs is not None else ()
            callback(ctx, data)

        return recorded

    # ---- introspection ------------------------------------------------------------------
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities()

    @property
    def control(self) -> CompletionControl | None:
        return self.inner.control

    def diagnostics(self) -> list[Violation]:
        return self.inner.diagnostics()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, name: str) -> Any:  # adapter-specific extras pass straight through
        return getattr(self.inner, name)

    # ---- async context management -------------------------------------------------------
    def create_async_context(self) -> Handle | None:
        handle = self.inner.create_async_context()
        if handle is not None:
            self._labels.setdefault(self._key(handle), f"a{len(self._labels) + 1}")
        self._note("create_async_context", handle, value="handle" if handle is not None else "null")
        return handle

    def free_async_context(self, ctx: Handle | None) -> None:
        self._note("free_async_context", ctx)
        self.inner.free_async_context(ctx)

    def reinit_async_context(self, ctx: Handle | None) -> int:
        status = self.inner.reinit_async_context(ctx)
        self._note("reinit_async_context", ctx, status=status)
        return status

    def set_async_notify_callback(self, ctx: Handle | None, callback: Callback | None, data: Any = None) -> int:
        if callback is not None:
            callback = self._wrap(callback)
        status = self.inner.set_async_notify_callback(ctx, callback, data)
        self._note("set_async_notify_callback", ctx, value="set" if callback is not None else "clear",
                   status=status)
        return status

    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        answer = self.inner.async_context_requires_notify(ctx)
        self._note("async_context_requires_notify", ctx, value=str(bool(answer)).lower())
        return answer

    def get_async_call_status(self, ctx: Handle | None) -> int:
        status = self.inner.get_async_call_status(ctx)
        if status != st.SEC_I_ASYNC_CALL_PENDING:  # a poll: how many there are is timing
            last = self.observations[-1] if self.observations else None
            label = self._label(ctx)
            if not (last and last.op == "get_async_call_status" and last.ctx == label and last.status == status):
                self._note("get_async_call_status", ctx, status=status)
        return status

    # ---- async operations ---------------------------------------------------------------
    def acquire_credentials_handle_async(self, ctx: Handle | None, principal: str | None, package: str,
                                         credential_use: int, auth_data: Mapping[str, Any] | None,
                                         outputs: CallOutputs) -> int:
        return self._queued("acquire_credentials_handle_async", ctx, outputs, lambda: (
            self.inner.acquire_credentials_handle_async(ctx, principal, package, credential_use, auth_data,
                                                        outputs)))

    def initialize_security_context_async(self, ctx: Handle | None, credential: Handle | None,
                                          context: Handle | None, target: str | None, context_req: int,
                                          input: list[SecBuffer] | None, outputs: CallOutputs, *,
                                          reserved1: int = 0, reserved2: int = 0, target_data_rep: int = 0) -> int:
        return self._queued("initialize_security_context_async", ctx, outputs, lambda: (
            self.inner.initialize_security_context_async(ctx, credential, context, target, context_req, input,
                                                         outputs, reserved1=reserved1, reserved2=reserved2,
                                                         target_data_rep=target_data_rep)))

    def accept_security_context_async(self, ctx: Handle | None, credential: Handle | None, context: Handle | None,
                                      input: list[SecBuffer] | None, context_req: int, outputs: CallOutputs, *,
                                      target_data_rep: int = 0) -> int:
        return self._queued("accept_security_context_async", ctx, outputs, lambda: (
            self.inner.accept_security_context_async(ctx, credential, context, input, context_req, outputs,
                                                     target_data_rep=target_data_rep)))

    def delete_security_context_async(self, ctx: Handle | None, context: Handle | None) -> int:
        return self._queued("delete_security_context_async", ctx, None,
                            lambda: self.inner.delete_security_context_async(ctx, context))

    def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int:
        return self._queued("free_credentials_handle_async", ctx, None,
                            lambda: self.inner.free_credentials_handle_async(ctx, credential))

    # ---- synchronous calls --------------------------------------------------------------
    def query_context_attributes(self, context: Handle | None, attribute: int) -> tuple[int, Any]:
        status, value = self.inner.query_context_attributes(context, attribute)
        self._note("query_context_attributes", None, status=status)
        return status, value

    def encrypt_message(self, context: Handle | None, qop: int, buffers: list[SecBuffer], seqno: int = 0) -> int:
        status = self.inner.encrypt_message(context, qop, buffers, seqno)
        self._note("encrypt_message", None, status=status)
        return status

    def decrypt_message(self, context: Handle | None, buffers: list[SecBuffer], seqno: int = 0) -> tuple[int, int]:
        status, qop = self.inner.decrypt_message(context, buffers, seqno)
        self._note("decrypt_message", None, status=status)
        return status, qop

    def apply_control_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        status = self.inner.apply_control_token(context, buffers)
        self._note("apply_control_token", None, status=status)
        return status

    def complete_auth_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        status = self.inner.complete_auth_token(context, buffers)
        self._note("complete_auth_token", None, status=status)
        return status


@dataclass
class Side:
    """One adapter's run of the scenario."""

    adapter: str
    result: ScenarioResult
    observations: list[Observation] = field(default_factory=list)


@dataclass
class Divergence:
    """The first call where the two sides differ (``index`` into the observation lists)."""

    index: int
    left: Observation | None
    right: Observation | None
    reason: str

    def describe(self, left_name: str, right_name: str) -> str:
        anchor = self.left or self.right
        assert anchor is not None
        where = f"step {anchor.step + 1} (line {anchor.line}) {anchor.summary}" if anchor.step is not None \
            else "outside the scenario steps"
        lines = [f"first divergence at call #{self.index + 1}, {where}: {self.reason}"]
        for name, obs in ((left_name, self.left), (right_name, self.right)):
            if obs is None:
                lines.append(f"  {name}: no such call (the run ended earlier)")
                continue
            text = f"  {name}: {obs.op} on {obs.ctx}"
            if obs.value:
                text += f" -> {obs.value}"
            if obs.status is not None:
                text += f"; returned {status_text(obs.status)}"
            if obs.completion is not None or obs.outputs is not None:
                text += f"; completed {status_text(obs.completion)}; outputs: {obs.describe_outputs()}"
            lines.append(text)
        return "\n".join(lines)


@dataclass
class Comparison:
    scenario: str
    left: Side
    right: Side
    divergence: Divergence | None

    @property
    def diverged(self) -> bool:
        return self.divergence is not None or self.left.result.verdict != self.right.result.verdict

    def report(self) -> str:
        head = (f"{self.scenario}: {self.left.adapter} {self.left.result.verdict.value}, "
                f"{self.right.adapter} {self.right.result.verdict.value}")
        if self.divergence is not None:
            return head + "\n" + self.divergence.describe(self.left.adapter, self.right.adapter)
        if self.diverged:
            why = self.right.result.message or self.left.result.message
            return head + f"\n  every call answered alike; the verdicts differ: {why}"
        return head + "\n  no divergence"


def first_divergence(left: Sequence[Observation], right: Sequence[Observation]) -> Divergence | None:
    for index in range(max(len(left), len(right))):
        a = left[index] if index < len(left) else None
        b = right[index] if index < len(right) else None
        if a is None or b is None:
            return Divergence(index, a, b, "one side made no such call")
        if a.op != b.op or a.ctx != b.ctx:
            return Divergence(index, a, b, f"different calls ({a.op} on {a.ctx} vs {b.op} on {b.ctx})")
        if a.key() != b.key():
            parts = []
            if (a.status, a.value) != (b.status, b.value):
                parts.append("return value")
            if a.completion != b.completion:
                parts.append("completion status")
            if a.outputs != b.outputs:
                parts.append("outputs present")
            return Divergence(index, a, b, " and ".join(parts) + " differ")
    return None


def run_side(scenario: Any, adapter_name: str, factory: Callable[[], Adapter]) -> Side:
    """Run ``scenario`` once on a recorded adapter from ``factory``."""
    from conformance.executor import run_scenario

    recorders: list[Recorder] = []

    def recorded() -> Adapter:
        recorder = Recorder(factory())
        recorders.append(recorder)
        return recorder

    result = run_scenario(scenario, recorded, adapter_name=adapter_name)
    observations = list(recorders[0].observations) if recorders else []
    return Side(adapter_name, result, observations)


def compare(scenario: Any, left: tuple[str, Callable[[], Adapter]], right: tuple[str, Callable[[], Adapter]]) -> \
        Comparison:
    """Run ``scenario`` on both sides (left first) and compare them call by call."""
    left_side = run_side(scenario, *left)
    right_side = run_side(scenario, *right)
    return Comparison(scenario.id, left_side, right_side,
                      first_divergence(left_side.observations, right_side.observations))


__all__ = ["Comparison", "Divergence", "Observation", "Recorder", "Side", "compare", "first_divergence",
           "run_side", "status_text"]
