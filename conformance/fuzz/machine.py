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

from typing import Any, ClassVar

from hypothesis import strategies as hs
from hypothesis.control import current_build_context
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from adapters import status as st
from adapters.api import Adapter, CallOutputs, SecBuffer
from adapters.async_state import TABLE, Event, Party, State, queue_event
from adapters.constants import ISC_REQ, SECBUFFER_TOKEN, SECPKG_CRED_INBOUND, SECPKG_CRED_OUTBOUND
from adapters.registry import create_adapter
from adapters.simulator import SimulatorAdapter
from conformance.fuzz.config import FuzzConfig, Run
from conformance.fuzz.findings import (
    ContractFinding,
    callback_requirement,
    completion_requirement,
    mismatch,
    rule_requirement,
    status_requirement,
)
from conformance.fuzz.side import PENDING, Outstanding, Side
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


class AsyncSspiMachine(RuleBasedStateMachine):
    """Random call sequences over async contexts, credentials and security contexts."""

    config: ClassVar[FuzzConfig] = FuzzConfig()

    actxs = Bundle("async_contexts")
    freed = Bundle("freed_async_contexts")
    client_creds = Bundle("client_credentials")
    server_creds = Bundle("server_credentials")
    contexts = Bundle("security_contexts")

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

    # ---- optional set-up: credentials acquired and completed before the program proper ---------
    @initialize(target=contexts, prepare=hs.sampled_from((False, True, True)))
    def prepared_session(self, prepare: bool) -> Any:
        """Optionally start with a client and a server credential and a session on them."""
        if not prepare:
            return multiple()
        client = self._prepared_credential("outbound")
        server = self._prepared_credential("inbound")
        return self.start_session(client, server)

    def _prepared_credential(self, use: str) -> Any:
        """create + set callback + ACH + completion: handshakes can start at once."""
        a = str(self.create(("name", "")))
        cred = self._acquire(a, use, self.package)
        if self.mode == "deferred" and a in self._pending_names():
            self._complete_in_order([a], step=a)
        return cred

    # ---- async context management ------------------------------------------------------------
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

    @precondition(lambda self: self._can_complete() and bool(self._pending_names()))
    @rule(target=freed, index=hs.integers(0, 7))
    def free_pending(self, index: int) -> str:
        """Free a context whose call is pending: FREE-3 misuse, or FREE-5 for a silent delete."""
        pending = self._pending_names()
        a = pending[index % len(pending)]
        self._free(a)
        return a

    @rule(a=freed, call=hs.sampled_from(("free", "free", "status", "set_callback", "reinit", "queue")))
    def use_after_free(self, a: str, call: str) -> None:
        """Double free and use after free (FREE-1): refused, never a crash."""
        if call == "free":
            self._free(a)
        elif call == "status":
            self._status(a)
        elif call == "set_callback":
            self._set_callback(a, "name", "")
        elif call == "reinit":
            self._reinit(a)
        else:
            self._acquire(a, "outbound", self.package)

    # ---- async operations --------------------------------------------------------------------
    @rule(target=client_creds, a=actxs, aim=AIM, package=hs.sampled_from(("own", "own", "own", "NoSuchPackage")))
    def acquire_client(self, a: str, aim: int, package: str) -> str:
        return self._acquire(self._aim(a, aim, False), "outbound", self.package if package == "own" else package)

    @rule(target=server_creds, a=actxs, aim=AIM)
    def acquire_server(self, a: str, aim: int) -> str:
        return self._acquire(self._aim(a, aim, False), "inbound", self.package)

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

    def _acquire(self, a: str, use: str, package: str) -> str:
        cred = self._name("c")
        flag = SECPKG_CRED_OUTBOUND if use == "outbound" else SECPKG_CRED_INBOUND
        spec = {"ctx": a, "cred": cred, "package": package, "use": use}

        def call(side: Side) -> Any:
            outputs = CallOutputs()
            status = side.adapter.acquire_credentials_handle_async(side.actx[a], None, package, flag, None, outputs)
            return status, Outstanding("acquire", outputs, cred=cred)

        self._queue(a, "acquire", spec, call, is_delete=False)
        return cred

    @rule(target=contexts, client=client_creds, server=server_creds)
    def start_session(self, client: str, server: str) -> Any:
        """Name a client/server pair of security contexts; legs bind them at completion."""
        c, s = self._name("s"), self._name("s")
        self.roles[c] = ("client", s, client)
        self.roles[s] = ("server", c, server)
        return multiple(c, s)

    @rule(c=contexts, a=actxs, aim=AIM)
    def handshake_leg(self, c: str, a: str, aim: int) -> None:
        """The next ISC or ASC leg of a session, fed with the peer's latest token."""
        a = self._aim(a, aim, False)
        role, peer, cred = self.roles[c]
        if aim and role == "server" and self.last_token.get(peer) not in self.r.tokens:
            c = peer  # the client speaks first: a server leg with nothing to read only fails
            role, peer, cred = self.roles[c]
        if self._busy(c):
            return  # CALL-6: overlapping calls on one CtxtHandle have no fixed outcome
        token = self._name("t")
        peer_token = self.last_token.get(peer)
        if peer_token is not None and peer_token not in self.r.tokens:
            peer_token = None  # not produced (yet): the leg gets no input
        cred_name = cred if cred in self.r.creds else None
        context_bound = c in self.r.contexts
        spec: dict[str, Any] = {"ctx": a, "cred": cred_name, "context": c}
        if role == "client":
            spec.update(target=_TARGET, req=["CONNECTION"])
        else:
            spec.update(req=[])
        spec.update(input=peer_token, output={"size": _OUTPUT_SIZE}, token=token)
        self.last_token[c] = token

        def call(side: Side) -> Any:
            outputs = CallOutputs(output=[SecBuffer(SECBUFFER_TOKEN, b"", _OUTPUT_SIZE)])
            handle = side.contexts.get(c) if context_bound else None
            credential = side.creds.get(cred_name) if cred_name else None
            data = Side.token_input(side.tokens.get(peer_token) if peer_token else None)
            if role == "client":
                status = side.adapter.initialize_security_context_async(
                    side.actx[a], credential, handle, _TARGET, ISC_REQ["CONNECTION"], data, outputs
                )
            else:
                status = side.adapter.accept_security_context_async(
                    side.actx[a], credential, handle, data, 0, outputs
                )
            return status, Outstanding(role, outputs, context=c, token=token)

        self._queue(a, "initialize" if role == "client" else "accept", spec, call, is_delete=False)

    @rule(a=actxs, aim=AIM)
    def delete_no_context(self, a: str, aim: int) -> None:
        """DeleteSecurityContext of a NULL handle: completes with SEC_E_INVALID_HANDLE (CALL-25)."""
        a = self._aim(a, aim, True)

        def call(side: Side) -> Any:
            return side.adapter.delete_security_context_async(side.actx[a], None), Outstanding("delete", None)

        self._queue(a, "delete_context", {"ctx": a, "context": None}, call, is_delete=True)

    @rule(c=consumes(contexts), a=actxs, aim=AIM)
    def delete_context(self, c: str, a: str, aim: int) -> None:
        a = self._aim(a, aim, True)
        if self._busy(c):
            return
        bound = c in self.r.contexts
        spec = {"ctx": a, "context": c if bound else None}

        def call(side: Side) -> Any:
            handle = side.contexts.get(c) if bound else None
            return side.adapter.delete_security_context_async(side.actx[a], handle), Outstanding("delete", None)

        self._queue(a, "delete_context", spec, call, is_delete=True)

    @rule(c=consumes(client_creds), a=actxs, aim=AIM)
    def free_client_credentials(self, c: str, a: str, aim: int) -> None:
        self._free_credentials(c, self._aim(a, aim, False))

    @rule(c=consumes(server_creds), a=actxs, aim=AIM)
    def free_server_credentials(self, c: str, a: str, aim: int) -> None:
        self._free_credentials(c, self._aim(a, aim, False))

    def _free_credentials(self, c: str, a: str) -> None:
        bound = c in self.r.creds
        spec = {"ctx": a, "cred": c if bound else None}

        def call(side: Side) -> Any:
            handle = side.creds.get(c) if bound else None
            return side.adapter.free_credentials_handle_async(side.actx[a], handle), Outstanding("free", None)

        self._queue(a, "free_credentials", spec, call, is_delete=False)

    def _busy(self, c: str) -> bool:
        handle = self.r.contexts.get(c)
        return bool(handle is not None and handle.busy)  # type: ignore[attr-defined]

    def _queue(self, a: str, op: str, spec: dict[str, Any], call: Any, *, is_delete: bool) -> None:
        """Queue one operation on both sides and compare the queue status (CALL-1/2)."""
        if self.diverged:
            return
        ref = self.r.actx[a]
        state: State = ref.state  # type: ignore[attr-defined]
        event = queue_event(is_delete, ref.callback is not None)  # type: ignore[attr-defined]
        if not self._allowed(state, event):
            return
        requirement = rule_requirement(state, event, "NOTIFY-7" if a in self.reinit_since_register else "CALL-2")
        result = self._call(f"the {op} queueing call", call, self.t)
        want, r_entry = call(self.r)
        self._record({op: spec, "expect": st.name_of(want)})
        if self.crash is not None and self.mode == "inline" and self.behaviour.get(a) == "free":
            requirement = "OQ-3"  # inline completion ran a callback that freed the context
        self._crashed(requirement)
        got, t_entry = result
        if got != want:
            self._fail(requirement, mismatch(f"queue {op} on {a} ({state.value})", want, got))
            return
        if want != st.SEC_E_OK:
            self.failed_queue.add(a)
            return
        self.failed_queue.discard(a)
        self.last_op[a] = op
        self.t.outstanding[a] = t_entry
        self.r.outstanding[a] = r_entry
        after: State = ref.state  # type: ignore[attr-defined]
        if self.mode == "inline":
            self._complete_reference([a])
        elif self.mode in ("threaded", "auto"):
            self._await_target(a, after)

    # ---- completion ------------------------------------------------------------------------------
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


def _is_final() -> bool:
    try:
        return bool(current_build_context().is_final)
    except Exception:  # outside a Hypothesis test (direct instantiation)
        return False


def build_machine(config: FuzzConfig) -> type[AsyncSspiMachine]:
    """A machine class bound to ``config`` (Hypothesis instantiates it once per example)."""
    return type("AsyncSspiMachine", (AsyncSspiMachine,), {"config": config})

