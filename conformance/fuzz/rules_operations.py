"""Rules that queue the five async operations, with the Sim package's sessions.

A session names a client and a server security context; each leg feeds the peer's latest
token so handshakes really progress.  Every queue goes through :meth:`_queue`, which compares
the queue status with the reference and then completes the call as the current mode says.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as hs
from hypothesis.stateful import consumes, initialize, multiple, rule

from adapters import status as st
from adapters.api import CallOutputs, SecBuffer
from adapters.async_state import State, queue_event
from adapters.constants import ISC_REQ, SECBUFFER_TOKEN, SECPKG_CRED_INBOUND, SECPKG_CRED_OUTBOUND
from conformance.fuzz.core import (
    _OUTPUT_SIZE,
    _TARGET,
    AIM,
    actxs,
    client_creds,
    contexts,
    freed,
    server_creds,
)
from conformance.fuzz.findings import mismatch, rule_requirement
from conformance.fuzz.rules_completion import CompletionRules
from conformance.fuzz.side import Outstanding, Side


class OperationRules(CompletionRules):
    """ACH, ISC/ASC legs, Delete, FreeCredentials, and use after free."""

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

