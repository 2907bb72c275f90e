"""One implementation driven by the fuzzer: its handles by scenario name and its callbacks.

The state machine drives two sides in lockstep, the implementation under test and the
reference simulator, with the same named calls.  A side turns names (``a1``, ``c2``,
``s1c``) into that implementation's own handles, registers a recording callback, binds the
out-parameters of a call when it completes, and counts the API calls it made.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from adapters import status as st
from adapters.api import Adapter, CallOutputs, Handle, SecBuffer
from adapters.constants import SECBUFFER_EMPTY, SECBUFFER_TOKEN

PENDING = st.SEC_I_ASYNC_CALL_PENDING


@dataclass(slots=True)
class CallbackRecord:
    """One invocation of a recording callback."""

    data: Any
    status: int  # what SspiGetAsyncCallStatus read inside the callback (NOTIFY-8)
    same_handle: bool  # the callback got the context the call was queued on (CTX-10)


@dataclass(slots=True)
class Outstanding:
    """A queued call whose out-parameters are bound to names once it completes."""

    op: str
    outputs: CallOutputs | None
    cred: str | None = None  # ACH: name bound to the new credential
    context: str | None = None  # ISC/ASC: name bound to phNewContext unless already bound
    token: str | None = None  # ISC/ASC: name bound to the output token


@dataclass
class Side:
    """An adapter plus the fuzzer's bookkeeping for it."""

    adapter: Adapter
    label: str
    actx: dict[str, Handle] = field(default_factory=dict)
    creds: dict[str, Handle] = field(default_factory=dict)
    contexts: dict[str, Handle] = field(default_factory=dict)
    tokens: dict[str, bytes] = field(default_factory=dict)
    callbacks: dict[str, list[CallbackRecord]] = field(default_factory=dict)
    outstanding: dict[str, Outstanding] = field(default_factory=dict)
    calls: int = 0
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._arrived = threading.Condition()

    # ---- callbacks --------------------------------------------------------------------------
    def make_callback(self, name: str, behaviour: str) -> Any:
        """A callback recording into ``callbacks[name]``; ``behaviour`` acts inside it.

        ``free`` frees the context from inside its own callback (FREE-6, OQ-3); ``reinit``
        reinitialises it there (OQ-11).  The status is read first, as NOTIFY-8 describes.
        """
        expected = self.actx.get(name)
        adapter = self.adapter
        records = self.callbacks.setdefault(name, [])

        def callback(handle: Handle, data: Any) -> None:
            what = "SspiGetAsyncCallStatus"
            try:
                status = adapter.get_async_call_status(handle)
                self.calls += 1
                records.append(CallbackRecord(data, status, handle is expected or handle == expected))
                if behaviour == "free":
                    what = "SspiFreeAsyncContext"
                    adapter.free_async_context(handle)
                    self.calls += 1
                elif behaviour == "reinit":
                    what = "SspiReinitAsyncContext"
                    adapter.reinit_async_context(handle)
                    self.calls += 1
            except Exception as exc:  # recorded: an exception must not vanish in a worker thread
                self.errors.append(f"{what} inside the callback of {name} raised {exc!r}")
            finally:
                with self._arrived:
                    self._arrived.notify_all()

        return callback

    def wait_callbacks(self, name: str, count: int, timeout: float) -> bool:
        """Wait until ``name`` has received ``count`` callbacks; False on timeout."""
        deadline = time.monotonic() + timeout
        records = self.callbacks.setdefault(name, [])
        with self._arrived:
            while len(records) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._arrived.wait(min(left, 0.05))
        return True

    def wait_not_pending(self, name: str, timeout: float) -> bool:
        """Poll SspiGetAsyncCallStatus until it stops reading pending (FREE-4)."""
        deadline = time.monotonic() + timeout
        handle = self.actx[name]
        while True:
            self.calls += 1
            if self.adapter.get_async_call_status(handle) != PENDING:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0002)

    # ---- out-parameters -----------------------------------------------------------------------
    def bind(self, name: str) -> None:
        """Bind the out-parameters of the call queued on ``name`` (it has completed)."""
        entry = self.outstanding.pop(name, None)
        if entry is None or entry.outputs is None:
            return
        out = entry.outputs
        if not out.written:
            return
        if entry.cred is not None and out.credential is not None:
            self.creds[entry.cred] = out.credential
        if entry.context is not None and out.new_context is not None and entry.context not in self.contexts:
            self.contexts[entry.context] = out.new_context
        if entry.token is not None:
            token = b""
            for buf in out.output or ():
                if buf.type == SECBUFFER_TOKEN:
                    token = bytes(buf.data[: buf.cb])
                    break
            self.tokens[entry.token] = token

    @staticmethod
    def token_input(token: bytes | None) -> list[SecBuffer] | None:
        """The input descriptor of a leg: TOKEN + EMPTY (SCH-5), or NULL for none."""
        if token is None:
            return None
        return [SecBuffer(SECBUFFER_TOKEN, token), SecBuffer(SECBUFFER_EMPTY)]
