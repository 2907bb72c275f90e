"""Rules over the async context itself: create, callbacks, reads, reinit, free (Section A)."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as hs
from hypothesis.stateful import consumes, rule

from adapters import status as st
from adapters.async_state import Event, State
from conformance.fuzz.core import _OPS, AIM, BEHAVIOURS, CRASHED, DATA, SETUPS, MachineCore, actxs, freed
from conformance.fuzz.findings import completion_requirement, mismatch, rule_requirement, status_requirement
from conformance.fuzz.side import PENDING


class ContextRules(MachineCore):
    """SspiCreate/Free/ReinitAsyncContext, SspiSetAsyncNotifyCallback, the two reads."""

    @rule(target=actxs, setup=hs.sampled_from(SETUPS))
    def create(self, setup: tuple[Any, str] | None) -> str:
        """SspiCreateAsyncContext, usually followed by registering a callback (NOTIFY-6)."""
        name = self._name("a")
        if self.diverged:
            return name
        handle = self._call("SspiCreateAsyncContext", self.t.adapter.create_async_context)
        self.r.actx[name] = self.r.adapter.create_async_context()
        self._record({"create": name})
        self._crashed("CTX-1")
        if handle is None:
            self._fail("CTX-1", "SspiCreateAsyncContext returned NULL with no memory pressure")
        self.t.actx[name] = handle
        self.monitor.name(handle, name)
        if setup is not None:
            self._set_callback(name, *setup)
        return name

    @rule(a=actxs, data=hs.sampled_from(DATA), behaviour=hs.sampled_from(BEHAVIOURS))
    def set_callback(self, a: str, data: Any, behaviour: str) -> None:
        self._set_callback(a, data, behaviour)

    def _set_callback(self, a: str, data: Any, behaviour: str) -> None:
        state = self._ref_state(a)
        if self.diverged or not self._allowed(state, Event.SET_CALLBACK):
            return
        value = a if data == "name" else data
        got = self._call(
            "SspiSetAsyncNotifyCallback",
            self.t.adapter.set_async_notify_callback,
            self.t.actx[a],
            self.t.make_callback(a, behaviour),
            value,
        )
        want = self.r.adapter.set_async_notify_callback(self.r.actx[a], self.r.make_callback(a, behaviour), value)
        step: dict[str, Any] = {"set_callback": a, "data": value}
        if behaviour:
            step["on_callback"] = behaviour
        step["expect"] = st.name_of(want)
        self._record(step)
        if want == st.SEC_E_OK:
            self.reinit_since_register.discard(a)
            self.behaviour[a] = behaviour
        if got != want:
            requirement = rule_requirement(state, Event.SET_CALLBACK, "NOTIFY-9")
            self._fail(requirement, mismatch(f"set callback on {a} ({state.value})", want, got))

    @rule(a=actxs, aim=AIM)
    def clear_callback(self, a: str, aim: int) -> None:
        self._clear_callback(self._aim(a, aim, False))

    def _clear_callback(self, a: str) -> None:
        state = self._ref_state(a)
        if self.diverged or not self._allowed(state, Event.CLEAR_CALLBACK):
            return
        got = self._call(
            "SspiSetAsyncNotifyCallback(NULL)",
            self.t.adapter.set_async_notify_callback,
            self.t.actx[a],
            None,
            None,
        )
        want = self.r.adapter.set_async_notify_callback(self.r.actx[a], None, None)
        self._record({"clear_callback": a, "expect": st.name_of(want)})
        if got != want:
            requirement = rule_requirement(state, Event.CLEAR_CALLBACK, "NOTIFY-5")
            self._fail(requirement, mismatch(f"clear callback on {a} ({state.value})", want, got))

    @rule(a=actxs)
    def requires_notify(self, a: str) -> None:
        self._requires_notify(a)

    def _requires_notify(self, a: str) -> None:
        state = self._ref_state(a)
        if self.diverged or not self.has_notify or not self._allowed(state, Event.READ):
            return
        got = self._call(
            "SspiAsyncContextRequiresNotify",
            self.t.adapter.async_context_requires_notify,
            self.t.actx[a],
        )
        want = self.r.adapter.async_context_requires_notify(self.r.actx[a])
        self._record({"requires_notify": a, "expect": bool(want)})
        if got is CRASHED or bool(got) != bool(want):
            requirement = "NOTIFY-7" if a in self.reinit_since_register else rule_requirement(state, Event.READ, "OQ-4")
            self._fail(requirement, mismatch(f"requires-notify of {a}", want, got))

    @rule(a=actxs)
    def status(self, a: str) -> None:
        self._status(a)

    def _status(self, a: str) -> None:
        state = self._ref_state(a)
        if self.diverged or not self._allowed(state, Event.READ):
            return
        requirement = status_requirement(state)
        if a in self.failed_queue and state in (State.IDLE, State.COMPLETED):
            requirement = "OQ-5"  # a refused queue must leave the context as it was
        got = self._call("SspiGetAsyncCallStatus", self.t.adapter.get_async_call_status, self.t.actx[a])
        want = self.r.adapter.get_async_call_status(self.r.actx[a])
        if state is State.COMPLETED and not self.compare_completions:
            # Another package's result is not the reference's to predict: only "not pending".
            self._record({"status": a, "expect": "any"})
            if got == PENDING or got is CRASHED:
                self._fail("CTX-8", mismatch(f"status of completed {a}", "a final status", got))
            return
        self._record({"status": a, "expect": st.name_of(want)})
        if got != want:
            if state is State.COMPLETED and isinstance(got, int):
                requirement = completion_requirement(_OPS.get(self.last_op.get(a, "")), got) or requirement
            # A final status while the reference is still pending is CTX-7 whatever else it implies.
            precise = state in (State.PENDING_NOTIFY, State.PENDING_SILENT)
            self._fail(requirement, mismatch(f"status of {a} ({state.value})", want, got), precise)

    @rule(a=actxs)
    def reinit(self, a: str) -> None:
        self._reinit(a)

    def _reinit(self, a: str) -> None:
        state = self._ref_state(a)
        if self.diverged or not self._allowed(state, Event.REINIT):
            return
        requirement = rule_requirement(state, Event.REINIT, "REINIT-1")
        got = self._call("SspiReinitAsyncContext", self.t.adapter.reinit_async_context, self.t.actx[a])
        want = self.r.adapter.reinit_async_context(self.r.actx[a])
        self._record({"reinit": a, "expect": st.name_of(want)})
        if st.nt_success(want):
            self.reinit_since_register.add(a)
            self.failed_queue.discard(a)
        if got != want:
            self._fail(requirement, mismatch(f"reinit of {a} ({state.value})", want, got))

    @rule(target=freed, a=consumes(actxs))
    def free(self, a: str) -> str:
        self._free(a)
        return a

    def _free(self, a: str) -> None:
        state = self._ref_state(a)
        if self.diverged or not self._allowed(state, Event.FREE):
            return
        requirement = rule_requirement(state, Event.FREE, "FREE-1")
        self._call("SspiFreeAsyncContext", self.t.adapter.free_async_context, self.t.actx[a])
        self.r.adapter.free_async_context(self.r.actx[a])
        self._record({"free": a})
        self._crashed(requirement)

    def _aim(self, a: str, aim: int, is_delete: bool) -> str:
        """Usually redirect a queue to a context that accepts it (programs that progress)."""
        if aim == 0 or a not in self.r.actx:
            return a
        ok = (State.IDLE, State.COMPLETED)
        ref = self.r.actx[a]
        if ref.state in ok and (is_delete or ref.callback is not None):  # type: ignore[attr-defined]
            return a
        for name, handle in self.r.actx.items():
            if handle.state in ok and (is_delete or handle.callback is not None):  # type: ignore[attr-defined]
                return name
        return a

