"""The plug-in interface of the simulator's security packages.

A package is synchronous and knows nothing about async contexts: the simulator calls it
at *completion* time of an async operation (so outputs are written at completion, GEN-10)
or directly for the synchronous stream calls.  Package state objects (credential state,
context state) are opaque to the simulator, which wraps them in handles.

Statuses are the values of :mod:`adapters.status`.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adapters import status as st
from adapters.api import SecBuffer
from adapters.constants import SECBUFFER_EMPTY, SECBUFFER_EXTRA, SECBUFFER_MISSING

# TimeStamp value meaning "never expires" (the maximum time, SCH-2).
NEVER = 0x7FFFFFFFFFFFFFFF


@dataclass(slots=True)
class AcquireResult:
    status: int
    credential: Any = None  # package credential state; None unless status is SEC_E_OK
    expiry: int | None = NEVER


@dataclass(slots=True)
class StepResult:
    """The result of one ISC/ASC leg.

    ``context`` is the package context state to attach to the (new or existing) handle.
    It is None when no handle must be created (first leg incomplete or failed, OQ-20).
    """

    status: int
    context: Any = None
    attributes: int = 0
    expiry: int | None = None


@dataclass(frozen=True, slots=True)
class PackageProfile:
    """Simulator-wide settings a package may need."""

    kernel_mode: bool = True  # OQ-17/OQ-18 behaviour


class SecurityPackage(abc.ABC):
    """One security package (``sim``, ``ntlm``, ``schannel``...)."""

    #: Names accepted by ACH, compared case-insensitively (first is canonical).
    names: tuple[str, ...] = ()
    #: Features this package adds to the simulator's capabilities (e.g. "tls1.3").
    features: frozenset[str] = frozenset()

    def __init__(self, profile: PackageProfile) -> None:
        self.profile = profile

    @abc.abstractmethod
    def acquire(
        self, principal: str | None, credential_use: int, auth_data: Mapping[str, Any] | None
    ) -> AcquireResult: ...

    @abc.abstractmethod
    def initialize(
        self,
        credential: Any,
        context: Any,
        target: str | None,
        context_req: int,
        input: list[SecBuffer] | None,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        """One ISC leg.  ``credential`` may be None on later legs (SCH-4)."""

    @abc.abstractmethod
    def accept(
        self,
        credential: Any,
        context: Any,
        input: list[SecBuffer] | None,
        context_req: int,
        output: list[SecBuffer] | None,
    ) -> StepResult:
        """One ASC leg."""

    def delete(self, context: Any) -> int:
        """Release a context's package state."""
        return st.SEC_E_OK

    def free_credentials(self, credential: Any) -> int:
        """Release a credential's package state."""
        return st.SEC_E_OK

    def query_attributes(self, context: Any, attribute: int) -> tuple[int, Any]:
        return st.SEC_E_UNSUPPORTED_FUNCTION, None

    def encrypt(self, context: Any, qop: int, buffers: list[SecBuffer]) -> int:
        return st.SEC_E_UNSUPPORTED_FUNCTION

    def decrypt(self, context: Any, buffers: list[SecBuffer]) -> tuple[int, int]:
        return st.SEC_E_UNSUPPORTED_FUNCTION, 0

    def apply_control_token(self, context: Any, buffers: list[SecBuffer]) -> int:
        return st.SEC_E_UNSUPPORTED_FUNCTION

    def complete_auth_token(self, context: Any, buffers: list[SecBuffer]) -> int:
        """CompleteAuthToken after SEC_I_COMPLETE_NEEDED: nothing to finish by default."""
        return st.SEC_E_OK


# ---- helpers packages share ---------------------------------------------------------------


def first_buffer(buffers: list[SecBuffer] | None, buffer_type: int) -> SecBuffer | None:
    """The first buffer of a type (attribute flags such as READONLY ignored)."""
    if not buffers:
        return None
    for buf in buffers:
        if buf.type & 0x0FFFFFFF == buffer_type:
            return buf
    return None


def write_output(
    output: list[SecBuffer] | None, buffer_type: int, data: bytes, allocate: bool
) -> bool:
    """Write ``data`` into the caller's first output buffer of ``buffer_type``.

    With ``allocate`` (ISC_REQ_ALLOCATE_MEMORY) the package owns the memory, so any size
    fits.  Otherwise the caller's capacity (``size``) must hold the data; False when it
    does not (the caller maps that to SEC_E_INSUFFICIENT_MEMORY / BUFFER_TOO_SMALL).
    A missing output buffer is fine when there is nothing to write.
    """
    buf = first_buffer(output, buffer_type)
    if buf is None:
        return not data
    capacity = buf.cb
    if not allocate and len(data) > capacity:
        return False
    buf.data = bytes(data)
    buf.size = len(data)
    return True


def report_extra(input: list[SecBuffer] | None, unconsumed: int) -> None:
    """Put SECBUFFER_EXTRA(unconsumed) into the input's first EMPTY slot (SCH-23/25)."""
    if not input or unconsumed <= 0:
        return
    for buf in input[1:]:
        if buf.type == SECBUFFER_EMPTY:
            buf.type, buf.data, buf.size = SECBUFFER_EXTRA, b"", unconsumed
            return


def report_missing(input: list[SecBuffer] | None, missing: int) -> None:
    """Put SECBUFFER_MISSING(missing) into the input's first EMPTY slot (SCH-21)."""
    if not input:
        return
    for buf in input[1:]:
        if buf.type == SECBUFFER_EMPTY:
            buf.type, buf.data, buf.size = SECBUFFER_MISSING, b"", max(0, missing)
            return
