"""The async-context state machine of the contract, as one table.

This table is the single source of truth for the rules of Section A that concern the
``SspiAsyncContext`` object.  The reference simulator *executes* it (it decides what a
call returns and what state follows); the contract monitor *checks* any implementation
against it (it predicts what a call must return and flags the difference).

Rules, in our words:

1. A new context is IDLE; its status reads as SEC_E_OK, never as pending (OQ-1).
2. Queueing needs a registered callback, except for DeleteSecurityContext, which may be
   queued silently (NOTIFY-4, NOTIFY-5).  A non-delete queue without a callback is
   refused with SEC_E_INVALID_PARAMETER and changes nothing (OQ-6, OQ-5).
3. A successful queue moves the context to PENDING (notified, or silent for a no-callback
   delete); its status reads SEC_I_ASYNC_CALL_PENDING until completion (CTX-7).
4. While PENDING the context cannot be queued on again, re-registered or reinitialised;
   each attempt is refused and changes nothing (CALL-6/OQ-7, OQ-9, REINIT-4).
5. Completion sets the final status first, then (if notified) invokes the callback exactly
   once with the same context and data (CTX-8, CTX-10, NOTIFY-2, NOTIFY-8, OQ-13).
6. A COMPLETED context may be reinitialised (back to IDLE, callback kept: REINIT-1/2,
   NOTIFY-7), reused without reinit (accepted, but a caller diagnostic: CTX-5/OQ-7), or freed.
7. Freeing is legal when not pending, and for a silent pending delete (FREE-5); freeing a
   notified pending context is caller misuse (FREE-3) and, per OQ-12, destruction is
   deferred until completion and the callback is *not* run.  Either way the pending
   context becomes a ZOMBIE that dies at completion.
8. A freed context may not be used again; freeing it again is a double free (FREE-1).

Events are named with their guard resolved (``QUEUE`` vs ``QUEUE_SILENT_DELETE`` vs
``QUEUE_SILENT``) so that the table needs no conditions.  Use :func:`queue_event` to
classify a queue.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

from adapters import status as st


class State(enum.Enum):
    # Identity hashing: Enum's default hashes the member name in Python code, which costs
    # more than the rest of a table lookup on the simulator's hot path.
    __hash__ = object.__hash__

    IDLE = "idle"
    PENDING_NOTIFY = "pending"  # queued, callback registered: callback due at completion
    PENDING_SILENT = "pending-silent"  # queued delete with no callback
    COMPLETED = "completed"
    ZOMBIE = "zombie"  # freed while pending; dies silently at completion
    FREED = "freed"


class Event(enum.Enum):
    __hash__ = object.__hash__

    SET_CALLBACK = "set_callback"
    CLEAR_CALLBACK = "clear_callback"
    QUEUE = "queue"  # any operation, callback registered
    QUEUE_SILENT_DELETE = "queue_silent_delete"  # delete with no callback (NOTIFY-4)
    QUEUE_SILENT = "queue_silent"  # non-delete with no callback (OQ-6)
    COMPLETE = "complete"  # implementation side: the operation finished
    REINIT = "reinit"
    FREE = "free"
    READ = "read"  # GetAsyncCallStatus / RequiresNotify


class Party(enum.Enum):
    CALLER = "caller"
    IMPLEMENTATION = "implementation"


class Rule(NamedTuple):
    """What happens when ``event`` arrives in a state.

    ``accept``: the call takes effect (queue accepted, reinit done, ...).  When False
    the implementation must refuse it with ``refusal`` and change nothing.
    ``next``: the state after the event (ignored when refused).
    ``requirement``/``party``: set when the event is a breach of the contract by that
    party; ``requirement`` names the rule it breaks.
    """

    accept: bool
    next: State
    refusal: int = st.SEC_E_OK
    requirement: str | None = None
    party: Party | None = None
    note: str = ""


_OK = Rule
_INVALID = st.SEC_E_INVALID_PARAMETER
_BUSY_NT = st.STATUS_INVALID_DEVICE_STATE
_BAD_NT = st.STATUS_INVALID_PARAMETER


def _misuse(requirement: str, refusal: int, note: str, state: State) -> Rule:
    return Rule(False, state, refusal, requirement, Party.CALLER, note)


def _use_after_free(state: State, refusal: int) -> Rule:
    return Rule(False, state, refusal, "FREE-1", Party.CALLER, "use of a freed async context")


def _build() -> dict[tuple[State, Event], Rule]:
    S, E = State, Event
    t: dict[tuple[State, Event], Rule] = {}

    for s in (S.IDLE, S.COMPLETED):
        reuse = s is S.COMPLETED
        t[s, E.SET_CALLBACK] = _OK(True, s)
        t[s, E.CLEAR_CALLBACK] = _OK(True, s)
        if reuse:
            diag = ("CTX-5", Party.CALLER, "context reused without SspiReinitAsyncContext (OQ-7)")
            t[s, E.QUEUE] = Rule(True, S.PENDING_NOTIFY, st.SEC_E_OK, *diag)
            t[s, E.QUEUE_SILENT_DELETE] = Rule(True, S.PENDING_SILENT, st.SEC_E_OK, *diag)
        else:
            t[s, E.QUEUE] = _OK(True, S.PENDING_NOTIFY)
            t[s, E.QUEUE_SILENT_DELETE] = _OK(True, S.PENDING_SILENT)
        t[s, E.QUEUE_SILENT] = _misuse(
            "NOTIFY-4", _INVALID, "only DeleteSecurityContext may be queued without a callback (OQ-6)", s
        )
        t[s, E.COMPLETE] = Rule(
            False, s, st.SEC_E_OK, "OQ-13", Party.IMPLEMENTATION, "completion with no call queued"
        )
        t[s, E.REINIT] = _OK(True, S.IDLE)
        t[s, E.FREE] = _OK(True, S.FREED)
        t[s, E.READ] = _OK(True, s)

    for s in (S.PENDING_NOTIFY, S.PENDING_SILENT):
        t[s, E.SET_CALLBACK] = _misuse("OQ-9", _INVALID, "callback changed while a call is pending", s)
        t[s, E.CLEAR_CALLBACK] = _misuse("OQ-9", _INVALID, "callback changed while a call is pending", s)
        for q in (E.QUEUE, E.QUEUE_SILENT_DELETE, E.QUEUE_SILENT):
            t[s, q] = _misuse("CTX-4", _INVALID, "queued on an async context whose call is pending (OQ-7)", s)
        t[s, E.COMPLETE] = _OK(True, S.COMPLETED)
        t[s, E.REINIT] = _misuse("REINIT-4", _BUSY_NT, "reinit while the call is pending", s)
        t[s, E.READ] = _OK(True, s)
    t[S.PENDING_NOTIFY, E.FREE] = Rule(
        True, S.ZOMBIE, st.SEC_E_OK, "FREE-3", Party.CALLER,
        "freed before its notified call completed (OQ-12: destruction deferred, no callback)",
    )
    t[S.PENDING_SILENT, E.FREE] = _OK(True, S.ZOMBIE, note="silent delete in flight (FREE-5)")

    for s, refusal in ((S.ZOMBIE, _INVALID), (S.FREED, _INVALID)):
        for e in (E.SET_CALLBACK, E.CLEAR_CALLBACK, E.QUEUE, E.QUEUE_SILENT_DELETE, E.QUEUE_SILENT, E.READ):
            t[s, e] = _use_after_free(s, refusal)
        t[s, E.REINIT] = _use_after_free(s, _BAD_NT)
        t[s, E.FREE] = Rule(False, s, st.SEC_E_OK, "FREE-1", Party.CALLER, "double free of an async context")
    t[S.ZOMBIE, E.COMPLETE] = _OK(True, S.FREED, note="deferred destruction at completion")
    t[S.FREED, E.COMPLETE] = Rule(
        False, S.FREED, st.SEC_E_OK, "FREE-3", Party.IMPLEMENTATION, "completion after the context was freed"
    )
    return t


TABLE: dict[tuple[State, Event], Rule] = _build()

PENDING_STATES = frozenset({State.PENDING_NOTIFY, State.PENDING_SILENT, State.ZOMBIE})
DEAD_STATES = frozenset({State.ZOMBIE, State.FREED})


def queue_event(is_delete: bool, has_callback: bool) -> Event:
    """Resolve the NOTIFY-4 guard of a queue into its table event."""
    if has_callback:
        return Event.QUEUE
    return Event.QUEUE_SILENT_DELETE if is_delete else Event.QUEUE_SILENT


def rule(state: State, event: Event) -> Rule:
    """The rule for ``event`` in ``state`` (every pair is defined)."""
    return TABLE[state, event]


# Completion statuses each operation may report through SspiGetAsyncCallStatus, and the
# requirement that lists them.  CALL-27 lists only SEC_E_OK; we also allow
# SEC_E_INVALID_HANDLE for a handle that is not valid, as the synchronous twin documents
# (GEN-5), since otherwise a freed or garbage handle would have no possible answer.
# "Non-fatal" and "fatal" together; package-specific codes
# beyond these are allowed only where a profile maps them.
COMPLETION_STATUSES: dict[str, tuple[str, frozenset[int]]] = {
    "acquire_credentials_handle_async": ("CALL-7", frozenset({
        st.SEC_E_OK, st.SEC_E_INSUFFICIENT_MEMORY, st.SEC_E_INTERNAL_ERROR, st.SEC_E_NO_CREDENTIALS,
        st.SEC_E_NOT_OWNER, st.SEC_E_SECPKG_NOT_FOUND, st.SEC_E_UNKNOWN_CREDENTIALS,
    })),
    "accept_security_context_async": ("CALL-17", frozenset({
        st.SEC_E_OK, st.SEC_E_INCOMPLETE_MESSAGE, st.SEC_I_COMPLETE_AND_CONTINUE, st.SEC_I_COMPLETE_NEEDED,
        st.SEC_I_CONTINUE_NEEDED, st.SEC_E_INSUFFICIENT_MEMORY, st.SEC_E_INTERNAL_ERROR,
        st.SEC_E_INVALID_HANDLE, st.SEC_E_INVALID_TOKEN, st.SEC_E_LOGON_DENIED,
        st.SEC_E_NO_AUTHENTICATING_AUTHORITY, st.SEC_E_NO_CREDENTIALS, st.SEC_E_UNSUPPORTED_FUNCTION,
        # Schannel alert mappings (Section B.1) and shutdown (SHUT-2) are also ASC results.
        st.SEC_I_CONTEXT_EXPIRED, st.SEC_E_ILLEGAL_MESSAGE, st.SEC_E_CERT_UNKNOWN, st.SEC_E_CERT_EXPIRED,
        st.SEC_E_UNTRUSTED_ROOT, st.SEC_E_ALGORITHM_MISMATCH, st.SEC_E_DECRYPT_FAILURE,
        st.SEC_E_MESSAGE_ALTERED, st.SEC_E_UNFINISHED_CONTEXT_DELETED, st.CRYPT_E_REVOKED,
        st.SEC_E_APPLICATION_PROTOCOL_MISMATCH,
    })),
    "initialize_security_context_async": ("CALL-22", frozenset({
        st.SEC_E_OK, st.SEC_I_CONTINUE_NEEDED, st.SEC_I_COMPLETE_AND_CONTINUE, st.SEC_I_COMPLETE_NEEDED,
        st.SEC_I_INCOMPLETE_CREDENTIALS, st.SEC_E_INCOMPLETE_MESSAGE, st.SEC_E_INSUFFICIENT_MEMORY,
        st.SEC_E_INTERNAL_ERROR, st.SEC_E_INVALID_HANDLE, st.SEC_E_INVALID_TOKEN, st.SEC_E_LOGON_DENIED,
        st.SEC_E_NO_AUTHENTICATING_AUTHORITY, st.SEC_E_NO_CREDENTIALS, st.SEC_E_TARGET_UNKNOWN,
        st.SEC_E_UNSUPPORTED_FUNCTION, st.SEC_E_WRONG_PRINCIPAL,
        st.SEC_I_CONTEXT_EXPIRED, st.SEC_E_ILLEGAL_MESSAGE, st.SEC_E_CERT_UNKNOWN, st.SEC_E_CERT_EXPIRED,
        st.SEC_E_UNTRUSTED_ROOT, st.SEC_E_ALGORITHM_MISMATCH, st.SEC_E_DECRYPT_FAILURE,
        st.SEC_E_MESSAGE_ALTERED, st.SEC_E_UNFINISHED_CONTEXT_DELETED, st.CRYPT_E_REVOKED,
        st.SEC_E_APPLICATION_PROTOCOL_MISMATCH,
    })),
    "delete_security_context_async": ("CALL-25", frozenset({st.SEC_E_OK, st.SEC_E_INVALID_HANDLE})),
    "free_credentials_handle_async": ("CALL-27", frozenset({st.SEC_E_OK, st.SEC_E_INVALID_HANDLE})),
}
