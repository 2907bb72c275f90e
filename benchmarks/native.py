"""Native adapter throughput: async NTLM handshakes against sspi-rs' libsspi.

One handshake = client and server credentials, four legs (ISC, ASC, ISC, ASC), the
server's CompleteAuthToken (sspi-rs checks the password there), both contexts deleted and
both credentials freed.  The same handshake runs through sspilib's own Python API; the
two are measured in alternating rounds in one run, and the ratio is
(time per handshake through NativeAdapter in process) / (time through sspilib), for the
``inline`` completion mode (the adapter's own cost) and the ``threaded`` one (plus one
thread wake-up per queued call).  The caller reuses one async context with reinit.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable
from typing import Any

from adapters import status as st
from adapters.api import Adapter, SecBuffer
from adapters.constants import SECBUFFER_TOKEN

AUTH = {"username": "user", "domain": "DOMAIN", "password": "Password01"}
ROUNDS = 5
PER_ROUND = 40


def _adapter_handshake(adapter: Adapter) -> tuple[Callable[[], None], Callable[[], None]]:
    """(one handshake, release the async context it reuses)."""
    from adapters.native.driver import AsyncCaller, handshake

    # One async context for the whole run, reinitialised between calls (REINIT-1), as a
    # C caller would do; the callback is registered once.
    caller = AsyncCaller(adapter)

    def run() -> None:
        result = handshake(adapter, AUTH, AUTH, caller=caller)
        if result.statuses[-1] == st.SEC_I_COMPLETE_NEEDED:
            if adapter.complete_auth_token(result.server_ctx, [SecBuffer(SECBUFFER_TOKEN)]) != st.SEC_E_OK:
                raise RuntimeError("CompleteAuthToken failed")
        elif st.failed(result.statuses[-1]):
            raise RuntimeError(f"handshake failed: {st.describe(result.statuses[-1])}")
        result.release(adapter, caller)

    return run, caller.close


def _sspilib_handshake() -> Callable[[], None]:
    import sspilib

    def run() -> None:
        ccred = sspilib.UserCredential(AUTH["username"], AUTH["password"], AUTH["domain"], "NTLM", "initiate")
        scred = sspilib.UserCredential(AUTH["username"], AUTH["password"], AUTH["domain"], "NTLM", "accept")
        client = sspilib.ClientSecurityContext(ccred, "host/server")
        server = sspilib.ServerSecurityContext(scred)
        message = client.step()
        message = server.step(message)
        message = client.step(message)
        server.step(message)
        if not (client.complete and server.complete):
            raise RuntimeError("sspilib handshake did not complete")

    return run


def _time(run: Callable[[], None], count: int) -> float:
    start = time.perf_counter()
    for _ in range(count):
        run()
    return time.perf_counter() - start


def _hop_us(count: int = 400) -> float:
    """Cost of one queue -> worker -> callback -> wake-up round trip with no work in it:
    the floor each of the ten async operations of a handshake pays."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=2) as pool:
        def hop() -> None:
            done = threading.Event()
            pool.submit(done.set)
            done.wait()

        hop()
        return _time(hop, count) / count * 1e6


def _isolated() -> tuple[float | None, str | None]:
    remote = importlib.import_module("adapters.remote")
    if getattr(remote, "create", None) is None:
        return None, "adapters.remote.create is not available yet: no isolated measurement"
    from adapters.native import create

    adapter = create({})
    try:
        run, done = _adapter_handshake(adapter)
        run()  # warm-up (child start-up is not part of the rate)
        count = PER_ROUND
        rate = count / _time(run, count)
        done()
        return rate, None
    except Exception as exc:  # report rather than lose the in-process numbers
        return None, f"isolated run failed: {exc!r}"
    finally:
        adapter.close()


def _side_by_side(completion: str) -> tuple[float, float, int]:
    """(adapter seconds, sspilib seconds, handshakes per side), alternating rounds."""
    from adapters.native import create_inprocess

    adapter = create_inprocess({"workers": "2", "completion": completion})
    try:
        native, done = _adapter_handshake(adapter)
        reference = _sspilib_handshake()
        native()
        reference()  # warm both paths (library initialisation, imports)
        native_total = reference_total = 0.0
        for _ in range(ROUNDS):  # alternate so drift hits both sides alike
            native_total += _time(native, PER_ROUND)
            reference_total += _time(reference, PER_ROUND)
        done()
    finally:
        adapter.close()
    leaks = adapter.diagnostics()
    if leaks:
        raise RuntimeError(f"the benchmark leaked or misused handles: {leaks[:3]}")
    return native_total, reference_total, ROUNDS * PER_ROUND


def main() -> dict[str, Any]:
    inline, inline_ref, count = _side_by_side("inline")
    threaded, threaded_ref, _ = _side_by_side("threaded")
    isolated, note = _isolated()
    result: dict[str, Any] = {
        "handshakes_per_s_inprocess": round(count / inline, 1),
        "handshakes_per_s_inprocess_threaded": round(count / threaded, 1),
        "handshakes_per_s_sspilib": round(count / inline_ref, 1),
        "handshakes_per_s_isolated": None if isolated is None else round(isolated, 1),
        "inprocess_ratio_vs_sspilib": round(inline / inline_ref, 3),
        "inprocess_threaded_ratio_vs_sspilib": round(threaded / threaded_ref, 3),
        "target_ratio": 1.5,
        "handshakes_per_side": count,
        "async_ops_per_handshake": 10,
        "empty_thread_hop_us": round(_hop_us(), 1),
    }
    if note:
        result["note"] = note
    return result
