"""The Hypothesis state machine over the adapter interface.

Every rule makes the same named call on two sides: the implementation under test and a
reference simulator that is always in deferred mode and completed by the machine in the
order the implementation was completed.  Wherever the contract fixes the answer (the
async-context table of :mod:`adapters.async_state`; completion statuses of the
deterministic ``Sim`` package; callback counts, data and in-callback status) the two must
agree, and a difference is a :class:`~conformance.fuzz.findings.ContractFinding` naming
the broken requirement.  Rules that would commit caller misuse run only when the config
allows it, and calls whose outcome the contract leaves open (overlapping calls on one
CtxtHandle, CALL-6) are not made at all.

Each call is recorded as a scenario step with the reference's answer as expectation
(:class:`~conformance.fuzz.config.Run`), so a shrunk failing run is a regression scenario.
"""

from __future__ import annotations

from hypothesis.stateful import invariant

from adapters.async_state import State
from conformance.fuzz.config import FuzzConfig
from conformance.fuzz.core import _READABLE
from conformance.fuzz.rules_operations import OperationRules
from conformance.fuzz.side import PENDING


class AsyncSspiMachine(OperationRules):
    """Random call sequences over async contexts, credentials and security contexts."""

    # ---- oracle on every step ----------------------------------------------------------------------
    @invariant()
    def implementation_kept_the_contract(self) -> None:
        if self.t.errors and not self.diverged:
            # A callback that frees its own context relies on OQ-3; any other call from inside
            # a callback relies on OQ-11.
            self._fail("OQ-3" if "SspiFreeAsyncContext" in self.t.errors[0] else "OQ-11", self.t.errors[0])
        if self.diverged:
            return
        found = [v for v in self.monitor.violations() if v.party == "implementation"]
        if found:
            self._fail(found[0].requirement, f"contract monitor: {found[0].message}")

    @invariant()
    def every_live_context_reads_as_the_reference(self) -> None:
        """Observe every readable async context after each step (CTX-7/8, OQ-1, OQ-4).

        Reads change nothing, so only a read that disagrees is recorded as a step: the
        emitted scenario stays as short as the program Hypothesis shrank.
        """
        if self.diverged:
            return
        t_status, r_status = self.t.adapter.get_async_call_status, self.r.adapter.get_async_call_status
        t_notify, r_notify = self.t.adapter.async_context_requires_notify, self.r.adapter.async_context_requires_notify
        for name, ref in self.r.actx.items():
            state = ref.state  # type: ignore[attr-defined]
            if state not in _READABLE:
                continue
            handle = self.t.actx[name]
            self.run.calls += 1
            try:
                got, want = t_status(handle), r_status(ref)
                same = got == want or (
                    not self.compare_completions and state is State.COMPLETED and got != PENDING
                )
                same_notify = not self.has_notify or bool(t_notify(handle)) == bool(r_notify(ref))
            except Exception:  # the recorded re-read below turns the crash into a finding
                same = False
            if not same:
                self._status(name)  # records the step and raises the finding
                return
            if self.has_notify:
                self.run.calls += 1
                if not same_notify:
                    self._requires_notify(name)
                    return

    def teardown(self) -> None:
        """Complete what is still queued and check it, then release both sides."""
        try:
            self._finish()
        finally:
            self._release()

    def _finish(self) -> None:
        """The end of the program completes every pending call: a lost callback shows here."""
        if self.diverged or not self.controlled or not self._pending_names():
            return
        if self.mode != "deferred":
            self.switch_mode("deferred")
        self.complete_all()
        self.implementation_kept_the_contract()

    def _release(self) -> None:
        self.config.total_calls += self.run.calls
        for side in (self.t, self.r):
            try:
                control = side.adapter.control
                if control is not None and self.controlled:
                    control.set_mode("deferred")
                    control.complete_all()
                side.adapter.close()
            except Exception:
                pass



def build_machine(config: FuzzConfig) -> type[AsyncSspiMachine]:
    """A machine class bound to ``config`` (Hypothesis instantiates it once per example)."""
    return type("AsyncSspiMachine", (AsyncSspiMachine,), {"config": config})


