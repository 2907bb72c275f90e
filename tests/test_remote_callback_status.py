"""The status a callback reads is the status at the moment of the callback (NOTIFY-8).

In-process, a caller's callback runs inside the implementation's callback: its
``SspiGetAsyncCallStatus`` sees what the implementation stored before calling back.  Through
the remote adapter the caller's callback runs later, after the agent's callback returned;
a status read sent to the agent then would see the implementation's state *after* its
callback.  An implementation that stores the result only after its callback returned (a
NOTIFY-8 breach, the ``callback-before-status`` mutant) looked correct remotely.  The agent
now reads the status inside the implementation's callback and sends it with the
notification; the caller's first call in its callback, when it is that read, gets it.
"""

from __future__ import annotations

from typing import Any

import pytest

import adapters.simulator
from adapters import status as st
from adapters.api import Adapter
from adapters.remote import create as remote_create


def make(kind: str, options: dict[str, str]) -> Adapter:
    if kind == "inprocess":
        return adapters.simulator.create(options)
    return remote_create({**options, "call_timeout_ms": "5000"})


def status_seen_by_callbacks(a: Adapter, first_call: str) -> list[Any]:
    """Deferred completion of a delete (of NULL: completes SEC_E_INVALID_HANDLE); the callback
    makes ``first_call`` first, then reads the status."""
    assert a.control is not None
    seen: list[Any] = []

    def callback(ctx: Any, data: Any) -> None:
        if first_call == "reinit":  # a reinit inside the callback: the status reads idle after it
            seen.append(("reinit", st.name_of(a.reinit_async_context(ctx))))
        seen.append(("status", st.name_of(a.get_async_call_status(ctx))))
        seen.append(("again", st.name_of(a.get_async_call_status(ctx))))

    for _ in range(2):
        ctx = a.create_async_context()
        a.set_async_notify_callback(ctx, callback, None)
        assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
        assert a.control.complete(ctx)
        seen.append(("after", st.name_of(a.get_async_call_status(ctx))))
        a.free_async_context(ctx)
    a.close()
    return seen


# (A callback that calls in before it reads, e.g. a reinit, reaches the implementation after
# the implementation's callback returned, as docs/protocol.md section 5 says: with the mutant
# that differs from in-process whatever the status read does, so that case is not compared.)
@pytest.mark.parametrize(("mutant", "first_call"), [
    (None, "status"), (None, "reinit"), ("callback-before-status", "status"),
])
def test_callback_reads_the_status_of_its_own_moment(mutant: str | None, first_call: str) -> None:
    options = {"completion": "deferred"}
    if mutant:
        options["mutant"] = mutant
    expected = status_seen_by_callbacks(make("inprocess", options), first_call)
    got = status_seen_by_callbacks(make("remote", options), first_call)
    if mutant and first_call == "status":
        # In-process the breach is plain: pending inside the callback, twice.  Remotely the
        # first read is the moment of the callback; a second one reaches the agent after the
        # implementation's callback returned (the status is stored by then).
        assert expected[:2] == [("status", "SEC_I_ASYNC_CALL_PENDING"), ("again", "SEC_I_ASYNC_CALL_PENDING")]
        assert got[0] == ("status", "SEC_I_ASYNC_CALL_PENDING")
        assert [x for x in got if x[0] != "again"] == [x for x in expected if x[0] != "again"]
        return
    assert got == expected
    if first_call == "reinit":
        assert ("status", "SEC_E_OK") in got  # OQ-1 after the reinit: never the snapshot
    elif mutant is None:
        assert got[0] == ("status", "SEC_E_INVALID_HANDLE")  # the delete's own result (CTX-8)


def test_a_callback_with_no_status_read_leaves_no_snapshot_behind() -> None:
    """The snapshot lives only while its callback runs: a read after it goes to the agent."""
    a = make("remote", {"completion": "deferred", "mutant": "callback-before-status"})
    assert a.control is not None
    ctx = a.create_async_context()
    a.set_async_notify_callback(ctx, lambda c, d: None, None)
    assert a.delete_security_context_async(ctx, None) == st.SEC_E_OK
    assert a.control.complete(ctx)
    assert a.get_async_call_status(ctx) == st.SEC_E_INVALID_HANDLE  # stored after the callback
    a.free_async_context(ctx)
    a.close()
