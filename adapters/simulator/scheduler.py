"""When queued operations complete: inline, deferred or threaded.

* ``inline``: the operation completes (callback included) before the queueing call returns.
* ``deferred``: nothing completes until the caller says so (``complete``/``complete_all``),
  so scenarios can fix any completion order.
* ``threaded``: worker threads complete operations after a seeded random delay, with real
  concurrency against the caller (OQ-2, OQ-11).  The delays are reproducible from the seed;
  thread interleaving is, by nature, not.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from adapters.api import COMPLETION_MODES

Completer = Callable[[Any], None]


class Scheduler:
    """Holds queued async contexts and completes them according to the mode."""

    def __init__(
        self,
        completer: Completer,
        mode: str = "deferred",
        seed: int = 0,
        max_delay_ms: float = 2.0,
        workers: int = 2,
    ) -> None:
        if mode not in COMPLETION_MODES:
            raise ValueError(f"completion mode must be one of {', '.join(COMPLETION_MODES)}, not {mode!r}")
        self._complete = completer
        self.mode = mode
        self._random = random.Random(seed)
        self._max_delay = max_delay_ms / 1000.0
        self._workers_wanted = workers
        # deferred: insertion-ordered dict used as an ordered set of waiting contexts
        self._waiting: dict[Any, None] = {}
        self._lock = threading.Lock()
        # threaded: a heap of (due_time, sequence, actx) served by worker threads
        self._heap: list[tuple[float, int, Any]] = []
        self._sequence = 0
        self._wakeup = threading.Condition(self._lock)
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # ---- queueing ---------------------------------------------------------------------
    def submit(self, actx: Any) -> None:
        mode = self.mode
        if mode == "deferred":
            self._waiting[actx] = None  # dict writes are atomic under the GIL: no lock needed
        elif mode == "inline":
            self._complete(actx)
        else:
            self._submit_threaded(actx)

    def _submit_threaded(self, actx: Any) -> None:
        with self._wakeup:
            if not self._threads:
                self._start_workers()
            delay = self._random.random() * self._max_delay
            self._sequence += 1
            heapq.heappush(self._heap, (time.monotonic() + delay, self._sequence, actx))
            self._wakeup.notify()

    def _start_workers(self) -> None:
        for index in range(self._workers_wanted):
            thread = threading.Thread(target=self._worker, name=f"sim-completion-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _worker(self) -> None:
        while True:
            with self._wakeup:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._wakeup.wait(timeout)
                if self._stopping and not self._heap:
                    return
                _, _, actx = heapq.heappop(self._heap)
            self._complete(actx)

    # ---- caller control (deferred mode) -----------------------------------------------
    def pending(self) -> list[Any]:
        with self._lock:
            return list(self._waiting.copy()) + [entry[2] for entry in sorted(self._heap)]

    def take(self, actx: Any) -> bool:
        """Remove ``actx`` from the deferred queue; True when it was waiting."""
        return self._waiting.pop(actx, 0) is None  # atomic under the GIL

    def take_all(self) -> list[Any]:
        with self._lock:
            waiting = list(self._waiting.copy())
            for actx in waiting:
                self._waiting.pop(actx, None)
            return waiting

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until threaded work is done (True) or ``timeout`` passes (False)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._heap and not self._busy():
                    return True
            time.sleep(0.001)
        return False

    def _busy(self) -> bool:
        return False  # completion runs outside the lock; callers check the context states

    def stop(self) -> None:
        with self._wakeup:
            self._stopping = True
            self._wakeup.notify_all()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=2.0)
        self._threads.clear()
