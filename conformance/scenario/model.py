"""The parsed, typed form of a scenario (docs/scenarios.md).

Everything the executor needs is decided here, at load time: statuses are integers,
flags are masks, token specs are small trees, each step knows its file position and a
one-line summary.  The executor only dispatches on ``Step.action`` and reads ``Step.args``.
All types are frozen so one loaded scenario can be run many times, from many threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from adapters.status import failed, nt_success

# ---- statuses ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StatusSet:
    """What an expectation accepts: exact values and/or the words success/failure/any."""

    values: frozenset[int]
    words: frozenset[str] = frozenset()
    text: str = ""  # printed as "expected" in reports

    def matches(self, value: int, ntstatus: bool = False) -> bool:
        if value in self.values:
            return True
        words = self.words
        if not words:
            return False
        if "any" in words:
            return True
        ok = nt_success(value) if ntstatus else not failed(value)
        return ("success" in words and ok) or ("failure" in words and not ok)


# ---- buffers and tokens -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TokenSpec:
    """An input token: ``kind`` is ref | hex | garbage | concat | empty."""

    kind: str
    name: str = ""
    data: bytes = b""
    count: int = 0
    truncate: int | None = None
    slice: tuple[int, int] | None = None
    flip: int | None = None
    parts: tuple[TokenSpec, ...] = ()


@dataclass(frozen=True, slots=True)
class OutputSpec:
    """The output descriptor offered: ``kind`` is size | allocate | none."""

    kind: str = "size"
    size: int = 4096


@dataclass(frozen=True, slots=True)
class OutputChecks:
    """``outputs:`` of an operation; None means "not checked"."""

    token: str | None = None  # present | empty | absent
    token_min: int | None = None
    token_max: int | None = None
    new_context: str | None = None
    credential: str | None = None
    extra: str | int | None = None  # present | absent | byte count
    missing: str | int | None = None
    has: int = 0
    lacks: int = 0
    flag_table: str = ""  # ISC_RET | ASC_RET, for printing attribute names
    expiry: str | None = None
    written: bool | None = None


# ---- step arguments, one type per action ----------------------------------------------------------
# A handle reference is a name (str) or None for the NULL handle; "bogus" is a reserved name.


@dataclass(frozen=True, slots=True)
class Create:
    name: str
    expect_null: bool = False


@dataclass(frozen=True, slots=True)
class SetCallback:
    ctx: str | None
    data: Any
    on_callback: str | None = None  # free | reinit


@dataclass(frozen=True, slots=True)
class CtxOnly:
    """clear_callback, requires_notify, status, reinit, free, callbacks."""

    ctx: str | None


@dataclass(frozen=True, slots=True)
class Acquire:
    ctx: str | None
    cred: str
    package: str
    use: int
    principal: str | None
    auth: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Handshake1:
    """One ISC (client=True) or ASC leg."""

    client: bool
    ctx: str | None
    cred: str | None
    context: str | None
    target: str | None
    req: int
    input: TokenSpec | None
    output: OutputSpec
    token: str | None
    reserved1: int = 0
    reserved2: int = 0
    data_rep: int = 0  # TargetDataRep (OQ-19: Schannel ignores it)


@dataclass(frozen=True, slots=True)
class DeleteContext:
    ctx: str | None
    context: str | None


@dataclass(frozen=True, slots=True)
class FreeCredentials:
    ctx: str | None
    cred: str | None


@dataclass(frozen=True, slots=True)
class Wait:
    ctx: str | None
    timeout_ms: int = 2000


@dataclass(frozen=True, slots=True)
class ExpectNoCallback:
    ctx: str | None
    within_ms: int = 50


@dataclass(frozen=True, slots=True)
class Complete:
    names: tuple[str, ...] = ()  # empty = all


@dataclass(frozen=True, slots=True)
class Mode:
    mode: str


@dataclass(frozen=True, slots=True)
class InjectFault:
    fault: str
    params: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Sleep:
    ms: int


@dataclass(frozen=True, slots=True)
class Side:
    ctx: str
    cred: str | None
    context: str
    target: str | None
    req: int
    output: OutputSpec
    token: str | None
    rest: str | None = None  # token bound to the bytes left for this side's DecryptMessage
    send_after: bytes | None = None  # EncryptMessage'd right after this side's final leg
    alert: tuple[int, int] | str | None = None  # expected ALERT output: (level, code), "none", or unchecked
    final: OutputChecks | None = None  # checked against this side's last leg
    data_rep: int = 0
    expect: StatusSet | None = None  # this side's final status (default: the step's expect)


@dataclass(frozen=True, slots=True)
class Handshake:
    client: Side
    server: Side
    reuse: str = "reinit"
    max_legs: int = 12
    legs: tuple[StatusSet, ...] | None = None
    delivery: str = "whole"  # whole | chunk | coalesced (byte-by-byte is chunk 1)
    chunk: int = 0
    retry: bool = False  # SEC_I_INCOMPLETE_CREDENTIALS is answered (client_certificate_retry given)
    retry_cred: str | None = None
    expect_incomplete: bool | int | None = None  # SEC_E_INCOMPLETE_MESSAGE legs: some / exactly N
    expect_extra: bool | int | None = None  # legs that returned SECBUFFER_EXTRA: some / exactly N


@dataclass(frozen=True, slots=True)
class QuerySizes:
    context: str | None


@dataclass(frozen=True, slots=True)
class Encrypt:
    context: str | None
    data: bytes
    record: str | None


@dataclass(frozen=True, slots=True)
class Decrypt:
    context: str | None
    input: TokenSpec | None
    plaintext: bytes | None
    data: str | None = None  # token bound to the DATA buffer (e.g. a post-handshake message, MSG-9)
    extra: str | None = None  # token bound to the last EXTRA-count bytes of the input


@dataclass(frozen=True, slots=True)
class CompleteAuthToken:
    context: str | None


@dataclass(frozen=True, slots=True)
class Shutdown:
    context: str | None
    alert: tuple[int, int] | None = None  # SCHANNEL_ALERT_TOKEN (level, number) instead of SCHANNEL_SHUTDOWN


StepArgs = (
    Create | SetCallback | CtxOnly | Acquire | Handshake1 | DeleteContext | FreeCredentials | Wait
    | ExpectNoCallback | Complete | Mode | InjectFault | Sleep | Handshake | QuerySizes | Encrypt | Decrypt
    | Shutdown | CompleteAuthToken
)


@dataclass(frozen=True, slots=True)
class Step:
    index: int  # 0-based position in ``steps``
    action: str
    args: StepArgs
    file: str
    line: int
    column: int
    summary: str  # one line for reports, e.g. "wait a1"
    # ``expect``: a StatusSet for status-returning calls, a bool for requires_notify,
    # an int for callbacks, None when the step checks nothing itself.
    expect: StatusSet | bool | int | None = None
    completes: StatusSet | None = None
    outputs: OutputChecks | None = None
    note: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    title: str
    file: str
    line: int  # where ``id`` is
    column: int
    requirements: tuple[str, ...]
    steps: tuple[Step, ...]
    level: str = "must"
    tags: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    # ``requires`` plus the capabilities the steps imply (e.g. ``complete`` needs
    # completion-control): what the adapter must claim for the scenario to run.
    needs: tuple[str, ...] = ()
    package: str = "Sim"
    completion: str | None = None
    timeout_ms: int = 10000
    description: str = ""
    expect_diagnostics: tuple[str, ...] = ()
    uses_completes: bool = field(default=False)  # some operation checks completes/outputs
