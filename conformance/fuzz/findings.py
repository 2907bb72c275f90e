"""What the fuzzer reports: a divergence from the contract, attributed to a requirement.

A :class:`ContractFinding` is an ``AssertionError`` so that Hypothesis treats it as a test
failure and shrinks the program that produced it.  ``requirement`` is the contract ID the
implementation broke (``OQ-13``, ``NOTIFY-8``...): campaigns count unique failures by it and
the mutation tests check that a faulty variant is caught for the right reason.
"""

from __future__ import annotations

from adapters import status as st
from adapters.async_state import COMPLETION_STATUSES, TABLE, Event, State


class ContractFinding(AssertionError):
    """The implementation under test broke ``requirement`` at step ``step``."""

    def __init__(self, requirement: str, message: str, step: int | None = None) -> None:
        super().__init__(f"[{requirement}] {message}" + (f" (step {step})" if step is not None else ""))
        self.requirement = requirement
        self.message = message
        self.step = step


def rule_requirement(state: State, event: Event, default: str) -> str:
    """The requirement the table cites for ``event`` in ``state``, else ``default``.

    When the reference refuses a misuse (queue while pending: CTX-4; reinit while pending:
    REINIT-4...) a different answer from the implementation breaks the rule the table names.
    """
    requirement = TABLE[state, event].requirement
    return requirement if requirement is not None else default


def status_requirement(state: State) -> str:
    """Which rule fixes what SspiGetAsyncCallStatus reads in ``state``."""
    if state is State.IDLE:
        return "OQ-1"
    if state in (State.PENDING_NOTIFY, State.PENDING_SILENT):
        return "CTX-7"
    if state is State.COMPLETED:
        return "CTX-8"
    return "FREE-1"


def callback_requirement(expected: int, got: int, state_before: State | None, reinitialised: bool = False) -> str:
    """Attribute a wrong number of callbacks after a completion."""
    if got > expected:
        if state_before is State.ZOMBIE:
            return "FREE-3"  # freed while pending: no callback may run (OQ-12)
        if state_before is State.PENDING_SILENT:
            return "NOTIFY-5"  # opted out of the delete notification
        return "OQ-13"  # more than once per queued call
    if reinitialised:
        return "NOTIFY-7"  # the registration did not survive a reinit
    return "OQ-13"  # the callback owed for the call never came


def completion_requirement(op: str | None, got: int) -> str | None:
    """The requirement listing ``op``'s completion statuses when ``got`` is not among them."""
    if op is None or op not in COMPLETION_STATUSES:
        return None
    requirement, allowed = COMPLETION_STATUSES[op]
    return None if got in allowed or got == st.SEC_I_ASYNC_CALL_PENDING else requirement


def mismatch(what: str, expected: object, got: object) -> str:
    """A one-line description with statuses printed by name."""
    return f"{what}: expected {_show(expected)}, implementation gave {_show(got)}"


def _show(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return st.describe(value)
    return repr(value)
