"""The core of the fuzzing state machine: two sides, bookkeeping, findings.

The machine (conformance/fuzz/machine.py) is assembled from layers, each a module with one
job: this core (set-up, recording, failing, calling the implementation safely), the
async-context rules (rules_contexts.py), the completion rules (rules_completion.py) and the
operation rules (rules_operations.py).  Each layer uses only the layers below it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import strategies as hs
from hypothesis.control import current_build_context
from hypothesis.stateful import Bundle, RuleBasedStateMachine

from adapters.api import Adapter
from adapters.async_state import TABLE, Event, Party, State
from adapters.registry import create_adapter
from adapters.simulator import SimulatorAdapter
from conformance.fuzz.config import FuzzConfig, Run
from conformance.fuzz.findings import ContractFinding
from conformance.fuzz.side import Side
from conformance.monitor import ContractMonitor

# Scenario operation names -> adapter operation names (for the completion-status tables).
_OPS = {
    "acquire": "acquire_credentials_handle_async",
    "initialize": "initialize_security_context_async",
    "accept": "accept_security_context_async",
    "delete_context": "delete_security_context_async",
    "free_credentials": "free_credentials_handle_async",
}
_READABLE = frozenset({State.IDLE, State.PENDING_NOTIFY, State.PENDING_SILENT, State.COMPLETED})
_TARGET = "server.test"  # the Sim server's default name
_OUTPUT_SIZE = 4096
BEHAVIOURS = ("", "", "free", "reinit")  # what a callback does inside itself (weighted to none)
DATA = ("name", 7, 42)  # callback data: the context's name (scenario default) or a number
PACKAGE_PREFERENCE = ("Sim", "NTLM", "Negotiate", "Kerberos", "Schannel")
# How a new context is prepared: most programs register a callback right away (NOTIFY-6).
SETUPS: tuple[tuple[Any, str] | None, ...] = (None, ("name", ""), (7, ""), ("name", "free"), ("name", "reinit"))
# Queue rules aim at a context that can take the call unless this draw says 0 (misuse).
AIM = hs.integers(0, 3)


class _Crashed:
    def __repr__(self) -> str:
        return "an exception"


CRASHED: Any = _Crashed()



# Hypothesis finds bundles by name, so the rule layers share these objects.
actxs = Bundle("async_contexts")
freed = Bundle("freed_async_contexts")
client_creds = Bundle("client_credentials")
server_creds = Bundle("server_credentials")
contexts = Bundle("security_contexts")


class MachineCore(RuleBasedStateMachine):
    """Both sides of one program and the helpers every rule layer uses."""

    config: ClassVar[FuzzConfig] = FuzzConfig()

    def __init__(self) -> None:
        super().__init__()
        cfg = self.config
        self.run = Run(final=_is_final())
        cfg.current = self.run
        cfg.runs += 1
        inner = create_adapter(cfg.adapter, cfg.target_options())
        # The contract monitor watches every call on the implementation (the step oracle).
        self.monitor = ContractMonitor(inner)
        target: Adapter = self.monitor
        self.t = Side(target, "implementation")
        self.r = Side(SimulatorAdapter(completion="deferred"), "reference")
        caps = target.capabilities()
        self.controlled = target.control is not None and "completion-control" in caps.features
        self.misuse = cfg.misuse if cfg.misuse is not None else "misuse-detection" in caps.features
        self.has_notify = "requires-notify" in caps.features
        self.faults = self.controlled and "fault-injection" in caps.features
        self.run.controlled = self.controlled
        self.mode = "deferred" if self.controlled else "auto"
        if self.controlled:
            assert target.control is not None
            target.control.set_mode("deferred")
        # The package the programs use: the configured one if the implementation has it, else
        # the first it claims.  Completion statuses are compared only for the deterministic
        # Sim package, which the reference runs too; otherwise only pending-or-not is.
        claimed = {p.lower(): p for p in caps.packages}
        self.package = claimed.get(cfg.package.lower()) or next(
            (claimed[p.lower()] for p in PACKAGE_PREFERENCE if p.lower() in claimed), cfg.package
        )
        self.run.package = self.package
        self.compare_completions = self.package.lower() == "sim"
        self.diverged = False
        self.crash: str | None = None  # what the last implementation call raised
        self.counter = 0
        self.roles: dict[str, tuple[str, str, str]] = {}  # context name -> (role, peer, cred)
        self.last_token: dict[str, str] = {}  # context name -> name of its latest output token
        # History that names the rule a later divergence goes back to.
        self.reinit_since_register: set[str] = set()  # NOTIFY-7
        self.failed_queue: set[str] = set()  # OQ-5: the last queue on it was refused
        self.last_op: dict[str, str] = {}  # CALL-7/17/22/25/27: the operation queued last
        self.behaviour: dict[str, str] = {}  # what the callback does inside itself

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def _record(self, step: dict[str, Any]) -> None:
        self.run.steps.append(step)

    def _fail(self, requirement: str, message: str, precise: bool = False) -> None:
        """Stop this run with a finding (or quietly, if the campaign already has this one)."""
        if self.crash is not None:
            message, self.crash = self.crash, None
        # The contract monitor judges single calls against the table; when it saw this
        # divergence too, its requirement ID is the precise one and the campaign reports it.
        seen = [v for v in self.monitor.violations() if v.party == "implementation"] if not precise else []
        if seen:
            requirement = seen[0].requirement
            if seen[0].message not in message:
                message = f"{message} (contract monitor: {seen[0].message})"
        self.diverged = True
        finding = ContractFinding(requirement, message, len(self.run.steps))
        if requirement in self.config.ignore:
            return
        self.run.finding = finding
        raise finding

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        """Call the implementation; an exception gives :data:`CRASHED` (never equal to an answer).

        The rule records its step first and then fails, so the emitted scenario ends with
        the call that crashed.
        """
        self.run.calls += 1
        try:
            return fn(*args)
        except ContractFinding:
            raise
        except Exception as exc:  # an implementation must answer, never raise (or crash)
            self.crash = f"{what} raised {exc!r}"
            return CRASHED

    def _crashed(self, requirement: str) -> None:
        if self.crash is not None:
            self._fail(requirement, "")

    def _ref_state(self, name: str) -> State:
        ref = self.r.actx.get(name)  # absent: named by a rule that ran after the run diverged
        return State.FREED if ref is None else ref.state  # type: ignore[attr-defined]

    def _allowed(self, state: State, event: Event) -> bool:
        """False when the call would be caller misuse and misuse is off."""
        rule_ = TABLE[state, event]
        return self.misuse or rule_.party is not Party.CALLER


def _is_final() -> bool:
    try:
        return bool(current_build_context().is_final)
    except Exception:  # outside a Hypothesis test (direct instantiation)
        return False


