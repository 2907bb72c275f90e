"""The adapter interface: the only thing the engine knows about an implementation.

One :class:`Adapter` object stands for one implementation instance (one "process" of
it).  Its methods mirror the C API of Section D of the contract:

* the six async-context management functions (create, free, reinit, set callback,
  requires-notify, get status);
* the five async operations (ACH, ISC, ASC, DeleteSecurityContext, FreeCredentialsHandle),
  each returning the *queue* status (CALL-1) and writing its outputs into a caller-owned
  :class:`CallOutputs` (and, for EXTRA/MISSING, into the caller's input buffers) at
  completion time, as C writes through the pointers it was given (GEN-10, OQ-10);
* the synchronous calls a TLS user needs after the handshake (QueryContextAttributes,
  EncryptMessage, DecryptMessage, ApplyControlToken).

Conventions that hold for every adapter:

* Handles (async contexts, credentials, security contexts) are opaque hashable values
  minted by the implementation.  ``None`` is the NULL handle.
* Statuses are the real 32-bit values of :mod:`adapters.status` (unsigned ints).
* Callbacks are ``callback(async_context, callback_data)`` and may run on any thread,
  including inline before the queueing call returns (OQ-2).
* An adapter that cannot do something the caller asked for raises :class:`Unsupported`;
  the engine turns that into the verdict ``unsupported``, never a failure.  An
  implementation that dies or stops answering is reported with :class:`ImplementationCrashed`
  or :class:`ImplementationHung`.

Nothing here knows about YAML, pytest or scenarios.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

Handle = Hashable
Callback = Callable[[Any, Any], None]

# Feature names an adapter may claim in Capabilities.features.  Scenarios list the ones
# they need; a scenario needing an unclaimed feature is ``unsupported``.
FEATURES: dict[str, str] = {
    "completion-control": "the caller decides when queued calls complete (CompletionControl)",
    "fault-injection": "CompletionControl.inject_fault() can force documented failures",
    "misuse-detection": "caller misuse is reported as structured violations (diagnostics())",
    "requires-notify": "SspiAsyncContextRequiresNotify is available (GEN-7: absent from ksecdd)",
    "client": "InitializeSecurityContext (client role)",
    "server": "AcceptSecurityContext (server role)",
    "stream": "QueryContextAttributes/EncryptMessage/DecryptMessage after a handshake",
    "kernel-mode": "kernel-mode semantics (OQ-17: ApplyControlToken unsupported)",
    "user-mode": "user-mode Schannel semantics (full SCHANNEL_SHUTDOWN flow)",
    "tls1.2": "TLS 1.2 can be negotiated",
    "tls1.3": "TLS 1.3 can be negotiated",
}

COMPLETION_MODES = ("inline", "deferred", "threaded")


class AdapterError(Exception):
    """Base of the errors an adapter may raise instead of returning a status."""


class Unsupported(AdapterError):
    """The implementation does not offer this call, option or feature."""


class ImplementationCrashed(AdapterError):
    """The implementation died (signal, exit, broken pipe) during or between calls."""


class ImplementationHung(AdapterError):
    """The implementation did not answer within its per-call time limit."""


@dataclass(slots=True)
class SecBuffer:
    """One SecBuffer.  ``size`` is cbBuffer when it differs from ``len(data)``.

    For an output buffer the caller sets ``size`` to the capacity it offers (0 with
    ISC_REQ_ALLOCATE_MEMORY) and the implementation replaces ``data`` and ``size`` with
    what it wrote.  EXTRA and MISSING carry only a count in ``size``.
    """

    type: int
    data: bytes = b""
    size: int | None = None

    @property
    def cb(self) -> int:
        return len(self.data) if self.size is None else self.size


@dataclass(slots=True)
class CallOutputs:
    """The out-parameters of one async operation, written by the implementation at
    completion (never at queue time, GEN-10).  ``written`` tells that it happened."""

    credential: Handle | None = None  # ACH: phCredential
    new_context: Handle | None = None  # ISC/ASC: phNewContext
    output: list[SecBuffer] | None = None  # ISC/ASC: pOutput, caller-provided slots
    context_attr: int = 0  # ISC/ASC: *pfContextAttr
    expiry: int | None = None  # ptsExpiry (100 ns ticks), None when not written
    written: bool = False


@dataclass(frozen=True, slots=True)
class StreamSizes:
    """SecPkgContext_StreamSizes (MSG-1)."""

    header: int
    trailer: int
    maximum_message: int
    buffers: int
    block_size: int


@dataclass(frozen=True, slots=True)
class ContextSizes:
    """SecPkgContext_Sizes (SECPKG_ATTR_SIZES): message-protection sizes of non-stream packages."""

    max_token: int
    max_signature: int
    block_size: int
    security_trailer: int


@dataclass(frozen=True, slots=True)
class Violation:
    """A broken rule, attributed to whoever broke it.

    ``party`` is ``"implementation"`` (a conformance failure) or ``"caller"`` (misuse by
    the program driving the API, which an implementation may detect and report).
    """

    requirement: str
    message: str
    party: str = "implementation"
    call: str | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an implementation claims.  Package names are compared case-insensitively."""

    name: str
    version: str
    packages: frozenset[str] = frozenset()
    features: frozenset[str] = frozenset()

    def supports(self, requirement: str) -> bool:
        """``package:NAME`` or a feature name from :data:`FEATURES`."""
        if requirement.startswith("package:"):
            return requirement[8:].lower() in {p.lower() for p in self.packages}
        return requirement in self.features


class CompletionControl(abc.ABC):
    """Optional: lets the caller decide when queued operations complete."""

    @property
    @abc.abstractmethod
    def mode(self) -> str:
        """One of :data:`COMPLETION_MODES`."""

    @abc.abstractmethod
    def set_mode(self, mode: str) -> None:
        """Switch completion mode for calls queued from now on."""

    @abc.abstractmethod
    def pending(self) -> list[Handle]:
        """Async contexts whose queued call has not completed yet, in queue order."""

    @abc.abstractmethod
    def complete(self, ctx: Handle) -> bool:
        """Complete the call queued on ``ctx`` now (callback included); False if none."""

    @abc.abstractmethod
    def complete_all(self) -> int:
        """Complete every pending call in queue order; returns how many."""

    def inject_fault(self, fault: str, **params: Any) -> None:
        """Arm a documented failure for the next matching call (``fault-injection``)."""
        raise Unsupported(f"fault injection ({fault})")


class Adapter(abc.ABC):
    """One implementation of the async SSPI contract, seen from the caller's side."""

    # ---- introspection -------------------------------------------------------------
    @abc.abstractmethod
    def capabilities(self) -> Capabilities: ...

    @property
    def control(self) -> CompletionControl | None:
        """Completion control when the adapter offers it (``completion-control``)."""
        return None

    def diagnostics(self) -> list[Violation]:
        """Violations the implementation itself detected (misuse, leaks), drained."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the implementation; leaks found here are reported by diagnostics()."""

    # ---- async context management (Section D.2) ---------------------------------------
    @abc.abstractmethod
    def create_async_context(self) -> Handle | None:
        """SspiCreateAsyncContext; None means out of memory (CTX-2)."""

    @abc.abstractmethod
    def free_async_context(self, ctx: Handle | None) -> None:
        """SspiFreeAsyncContext; NULL is a no-op (FREE-2)."""

    @abc.abstractmethod
    def reinit_async_context(self, ctx: Handle | None) -> int:
        """SspiReinitAsyncContext; returns an NTSTATUS (REINIT-3)."""

    @abc.abstractmethod
    def set_async_notify_callback(
        self, ctx: Handle | None, callback: Callback | None, data: Any = None
    ) -> int:
        """SspiSetAsyncNotifyCallback; callback None clears it (NOTIFY-3/5)."""

    @abc.abstractmethod
    def async_context_requires_notify(self, ctx: Handle | None) -> bool:
        """SspiAsyncContextRequiresNotify (raise Unsupported when not exported, GEN-7)."""

    @abc.abstractmethod
    def get_async_call_status(self, ctx: Handle | None) -> int:
        """SspiGetAsyncCallStatus."""

    # ---- async operations (Section D.3); each returns the queue status ------------------
    @abc.abstractmethod
    def acquire_credentials_handle_async(
        self,
        ctx: Handle | None,
        principal: str | None,
        package: str,
        credential_use: int,
        auth_data: Mapping[str, Any] | None,
        outputs: CallOutputs,
    ) -> int: ...

    @abc.abstractmethod
    def initialize_security_context_async(
        self,
        ctx: Handle | None,
        credential: Handle | None,
        context: Handle | None,
        target: str | None,
        context_req: int,
        input: list[SecBuffer] | None,
        outputs: CallOutputs,
        *,
        reserved1: int = 0,
        reserved2: int = 0,
        target_data_rep: int = 0,
    ) -> int: ...

    @abc.abstractmethod
    def accept_security_context_async(
        self,
        ctx: Handle | None,
        credential: Handle | None,
        context: Handle | None,
        input: list[SecBuffer] | None,
        context_req: int,
        outputs: CallOutputs,
        *,
        target_data_rep: int = 0,
    ) -> int: ...

    @abc.abstractmethod
    def delete_security_context_async(self, ctx: Handle | None, context: Handle | None) -> int: ...

    @abc.abstractmethod
    def free_credentials_handle_async(self, ctx: Handle | None, credential: Handle | None) -> int: ...

    # ---- synchronous calls used after the handshake --------------------------------------
    def query_context_attributes(self, context: Handle | None, attribute: int) -> tuple[int, Any]:
        """QueryContextAttributes; returns (status, value)."""
        raise Unsupported("QueryContextAttributes")

    def encrypt_message(
        self, context: Handle | None, qop: int, buffers: list[SecBuffer], seqno: int = 0
    ) -> int:
        """EncryptMessage, in place on ``buffers``."""
        raise Unsupported("EncryptMessage")

    def decrypt_message(
        self, context: Handle | None, buffers: list[SecBuffer], seqno: int = 0
    ) -> tuple[int, int]:
        """DecryptMessage, in place on ``buffers``; returns (status, qop)."""
        raise Unsupported("DecryptMessage")

    def apply_control_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        """ApplyControlToken."""
        raise Unsupported("ApplyControlToken")

    def complete_auth_token(self, context: Handle | None, buffers: list[SecBuffer]) -> int:
        """CompleteAuthToken: what a caller must do after SEC_I_COMPLETE_NEEDED or
        SEC_I_COMPLETE_AND_CONTINUE (Section B.1).  It has no async twin."""
        raise Unsupported("CompleteAuthToken")


# The operation names used in traces, reports and remote messages, in one place.
OPERATIONS: tuple[str, ...] = (
    "create_async_context",
    "free_async_context",
    "reinit_async_context",
    "set_async_notify_callback",
    "async_context_requires_notify",
    "get_async_call_status",
    "acquire_credentials_handle_async",
    "initialize_security_context_async",
    "accept_security_context_async",
    "delete_security_context_async",
    "free_credentials_handle_async",
    "query_context_attributes",
    "encrypt_message",
    "decrypt_message",
    "apply_control_token",
    "complete_auth_token",
)
ASYNC_OPERATIONS: tuple[str, ...] = OPERATIONS[6:11]

__all__ = [
    "ASYNC_OPERATIONS",
    "COMPLETION_MODES",
    "FEATURES",
    "OPERATIONS",
    "Adapter",
    "AdapterError",
    "CallOutputs",
    "Callback",
    "Capabilities",
    "CompletionControl",
    "ContextSizes",
    "Handle",
    "ImplementationCrashed",
    "ImplementationHung",
    "SecBuffer",
    "StreamSizes",
    "Unsupported",
    "Violation",
]
