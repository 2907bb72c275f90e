"""Rules that decide completion: which pending call completes when, and in which mode.

After every completion both sides are settled: outputs bound, then callbacks (count, data,
context, status read inside) and the final status compared.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as hs
from hypothesis.stateful import precondition, rule

from adapters.async_state import State
from conformance.fuzz.core import _READABLE, freed
from conformance.fuzz.findings import callback_requirement, mismatch, status_requirement
from conformance.fuzz.rules_contexts import ContextRules
from conformance.fuzz.side import PENDING


class CompletionRules(ContextRules):
    """Complete one, all, in reverse; switch inline/deferred/threaded; inject a queue failure."""

    def _await_target(self, a: str, state: State) -> None:
        """Threaded/uncontrolled completion: wait for the implementation, then mirror it."""
        timeout = self.config.wait_timeout
        expected = len(self.r.callbacks.get(a, ())) + 1
        if state is State.PENDING_NOTIFY:
            arrived = self.t.wait_callbacks(a, expected, timeout)
        else:
            arrived = self.t.wait_not_pending(a, timeout)
        if not arrived:
            self._record({"wait": a, "timeout_ms": int(timeout * 1000)})
            # Notified: the callback never came (OQ-13); silent: the status never became final.
            requirement = "OQ-13" if state is State.PENDING_NOTIFY else "CTX-8"
            self._fail(requirement, f"the call queued on {a} did not complete within {timeout:.1f} s")
            return
        self._complete_reference([a])

    def _complete_reference(self, names: list[str]) -> None:
        before = {name: self._ref_state(name) for name in names}
        control = self.r.adapter.control
        assert control is not None
        for name in names:
            control.complete(self.r.actx[name])
        self._settle(names, before)

    def _pending_names(self) -> list[str]:
        control = self.r.adapter.control
        assert control is not None
        by_handle = {id(h): n for n, h in self.r.actx.items()}
        return [by_handle[id(h)] for h in control.pending() if id(h) in by_handle]

    def _can_complete(self) -> bool:
        return self.controlled and self.mode == "deferred" and not self.diverged

    @precondition(lambda self: self._can_complete() and bool(self._pending_names()))
    @rule(index=hs.integers(0, 7))
    def complete_one(self, index: int) -> None:
        if not self._can_complete():
            return
        pending = self._pending_names()
        if pending:
            self._complete_in_order([pending[index % len(pending)]], step=pending[index % len(pending)])

    @precondition(lambda self: self._can_complete() and bool(self._pending_names()))
    @rule()
    def complete_all(self) -> None:
        if not self._can_complete():
            return
        pending = self._pending_names()
        if not pending:
            return
        before = {name: self._ref_state(name) for name in pending}
        t_control, r_control = self.t.adapter.control, self.r.adapter.control
        assert t_control is not None and r_control is not None
        self._record({"complete": "all"})
        self._call("completing every pending call", t_control.complete_all)
        r_control.complete_all()
        if self.crash is not None:
            named = [self._completion_crash_requirement(name, before[name]) for name in pending]
            specific = [rid for rid in named if rid in ("OQ-3", "FREE-5", "OQ-12")]
            self._crashed(specific[0] if specific else "OQ-13")
        self._settle(pending, before)

    @precondition(lambda self: self._can_complete() and len(self._pending_names()) > 1)
    @rule()
    def complete_reverse(self) -> None:
        if not self._can_complete():
            return
        pending = self._pending_names()[::-1]
        if len(pending) > 1:
            self._complete_in_order(pending, step=pending)

    def _complete_in_order(self, names: list[str], step: Any) -> None:
        before = {name: self._ref_state(name) for name in names}
        t_control, r_control = self.t.adapter.control, self.r.adapter.control
        assert t_control is not None and r_control is not None
        self._record({"complete": step})
        for name in names:
            self._call(f"completing {name}", t_control.complete, self.t.actx[name])
            r_control.complete(self.r.actx[name])
            self._crashed(self._completion_crash_requirement(name, before[name]))
        self._settle(names, before)

    def _completion_crash_requirement(self, name: str, state: State) -> str:
        freed_inside = self.behaviour.get(name) == "free" and self._ref_state(name) is State.FREED
        if state is State.PENDING_NOTIFY and freed_inside:
            return "OQ-3"  # the callback freed its own context, as the sample does
        if state is State.ZOMBIE:
            # Freed while pending: legal for a silent delete (FREE-5), deferred destruction
            # for a notified call (OQ-12).
            return "FREE-5" if self.r.actx[name].callback is None else "OQ-12"  # type: ignore[attr-defined]
        return status_requirement(state)

    @precondition(lambda self: self.faults and not self.diverged)
    @rule()
    def inject_queue_oom(self) -> None:
        """The next queueing call fails with SEC_E_INSUFFICIENT_MEMORY: no callback (OQ-5)."""
        for side in (self.t, self.r):
            control = side.adapter.control
            assert control is not None
            control.inject_fault("queue-oom")
        self._record({"inject_fault": {"fault": "queue-oom"}})

    @precondition(lambda self: self.controlled and not self.diverged)
    @rule(mode=hs.sampled_from(("inline", "deferred", "deferred", "threaded")))
    def switch_mode(self, mode: str) -> None:
        if not self.controlled or self.diverged or mode == self.mode:
            return
        if mode == "threaded" and not self.config.threaded:
            return
        control = self.t.adapter.control
        assert control is not None
        control.set_mode(mode)
        self.mode = mode
        self._record({"mode": mode})

    def _settle(self, names: list[str], before: dict[str, State]) -> None:
        """After completions: bind outputs, then compare callbacks and statuses."""
        for name in names:
            if before[name] is State.ZOMBIE:
                # Freed while pending: the caller can no longer observe this completion (no
                # callback, no status), so the program must not use what it produced.
                self.t.outstanding.pop(name, None)
                self.r.outstanding.pop(name, None)
                continue
            self.t.bind(name)
            self.r.bind(name)
        self._check_completed(names)
        for name in names:
            if self.diverged:
                return
            if before[name] is not State.ZOMBIE:
                # Scenario runners bind a call's outputs (credential, context, token) when they
                # observe its completion: a wait makes that explicit right where it happened
                # (and, in threaded mode, makes the replay wait for the callback).
                self._record({"wait": name, "timeout_ms": 1000})
            self._check_callbacks(name, before[name])
            if self.diverged:
                return
            state = self._ref_state(name)
            if state in _READABLE and self.compare_completions:
                self._status(name)

    def _check_completed(self, names: list[str]) -> None:
        """A call the machine completed must have left the implementation's queue (OQ-13)."""
        control = self.t.adapter.control
        if control is None or not self.controlled or self.diverged:
            return
        still = control.pending()
        for name in names:
            handle = self.t.actx.get(name)
            if handle is not None and any(h is handle for h in still):
                self._fail("OQ-13", f"the call queued on {name} is still pending after it was completed")
                return

    def _check_callbacks(self, name: str, state_before: State) -> None:
        want = self.r.callbacks.get(name, [])
        got = self.t.callbacks.get(name, [])
        self._record({"callbacks": name, "expect": len(want)})
        if len(got) != len(want):
            self._fail(
                callback_requirement(len(want), len(got), state_before, name in self.reinit_since_register),
                f"{name} received {len(got)} callback(s) where the contract gives {len(want)}",
                precise=state_before in (State.PENDING_SILENT, State.ZOMBIE),
            )
            return
        if not want:
            return
        if self.behaviour.get(name) == "reinit":
            self.reinit_since_register.add(name)  # reinitialised from inside its callback
        w, g = want[-1], got[-1]
        if not g.same_handle:
            self._fail("CTX-10", f"the callback of {name} was handed another async context")
        elif g.data != w.data:
            self._fail("NOTIFY-2", mismatch(f"callback data of {name}", w.data, g.data))
        elif g.status != w.status and (self.compare_completions or g.status == PENDING):
            requirement = "NOTIFY-8" if g.status == PENDING else "CTX-8"
            self._fail(requirement, mismatch(f"status read inside the callback of {name}", w.status, g.status))

    @precondition(lambda self: self._can_complete() and bool(self._pending_names()))
    @rule(target=freed, index=hs.integers(0, 7))
    def free_pending(self, index: int) -> str:
        """Free a context whose call is pending: FREE-3 misuse, or FREE-5 for a silent delete."""
        pending = self._pending_names()
        a = pending[index % len(pending)]
        self._free(a)
        return a

