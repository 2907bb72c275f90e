"""When queued operations complete: inline, deferred or threaded.

* ``inline``: the operation completes (callback included) before the queueing call returns.
* ``deferred``: nothing completes until the caller says so (``complete``/``complete_all``),
  so scenarios can fix any completion order.
* ``threaded``: worker threads complete operations after a seeded random delay, with real
  concurrency against the caller (OQ-2, OQ-11).  The delays are reproducible from the seed;
  thread interleaving is, by nature, not.

Threaded completions run on one process-wide pool of worker threads shared by every
scheduler: a run creates one simulator per scenario, and starting and joining threads for
each of them cost more than the scenario itself.  A stopped scheduler's calls are dropped
by the pool, so nothing completes for an adapter after it was closed.
"""

from __future__ import annotations

import heapq
import random
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from adapters.api import COMPLETION_MODES

Completer = Callable[[Any], None]
_MAX_WORKERS = 8


class _WorkerPool:
    """Due-time ordered completions served by daemon threads, grown on demand."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wakeup = threading.Condition(self.lock)
        # (due, sequence, scheduler, actx); the sequence keeps submission order among equals
        self.heap: list[tuple[float, int, Scheduler, Any]] = []
        self.sequence = 0
        self.threads: list[threading.Thread] = []
        self.running: dict[Scheduler, int] = {}  # completions being run, per scheduler

    def push(self, due: float, scheduler: Scheduler, actx: Any, workers: int) -> None:
        with self.wakeup:
            while len(self.threads) < min(workers, _MAX_WORKERS):
                thread = threading.Thread(
                    target=self._worker, name=f"sim-completion-{len(self.threads)}", daemon=True
                )
                thread.start()
                self.threads.append(thread)
            self.sequence += 1
            heapq.heappush(self.heap, (due, self.sequence, scheduler, actx))
            self.wakeup.notify()

    def _worker(self) -> None:
        while True:
            with self.wakeup:
                while not self.heap or self.heap[0][0] > time.monotonic():
                    self.wakeup.wait(self.heap[0][0] - time.monotonic() if self.heap else None)
                _, _, scheduler, actx = heapq.heappop(self.heap)
                if scheduler._stopping:
                    continue  # its adapter was closed: drop the call
                self.running[scheduler] = self.running.get(scheduler, 0) + 1
            try:
                scheduler._complete(actx)
            except Exception:  # a simulator bug must not kill a worker the whole process shares
                traceback.print_exc()
            finally:
                with self.lock:
                    left = self.running[scheduler] - 1
                    if left:
                        self.running[scheduler] = left
                    else:
                        del self.running[scheduler]

    def entries(self, scheduler: Scheduler) -> list[tuple[float, int, Any]]:
        """(due, sequence, actx) of one scheduler's waiting calls; caller holds the lock."""
        return [(due, seq, actx) for due, seq, owner, actx in self.heap if owner is scheduler]

    def busy(self, scheduler: Scheduler) -> bool:
        with self.lock:
            return scheduler in self.running or any(entry[2] is scheduler for entry in self.heap)


_POOL = _WorkerPool()


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
        self._lock = _POOL.lock
        self._stopping = False

    # The pool's view of this scheduler, for callers and tests that inspect it.
    @property
    def _heap(self) -> list[tuple[float, int, Any]]:
        return _POOL.entries(self)

    @property
    def _threads(self) -> list[threading.Thread]:
        return list(_POOL.threads)

    # ---- queueing ---------------------------------------------------------------------
    def submit(self, actx: Any) -> None:
        mode = self.mode
        if mode == "deferred":
            self._waiting[actx] = None  # dict writes are atomic under the GIL: no lock needed
        elif mode == "inline":
            self._complete(actx)
        else:
            delay = self._random.random() * self._max_delay
            _POOL.push(time.monotonic() + delay, self, actx, self._workers_wanted)

    # ---- caller control (deferred mode) -----------------------------------------------
    def pending(self) -> list[Any]:
        with self._lock:
            return list(self._waiting.copy()) + [entry[2] for entry in sorted(_POOL.entries(self))]

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
        """Wait until this scheduler's threaded work is done (True) or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _POOL.busy(self):
                return True
            time.sleep(0.001)
        return False

    def stop(self) -> None:
        """No completion runs for this scheduler after this returns (bounded wait for a running one)."""
        self._stopping = True
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            with self._lock:
                if self not in _POOL.running or threading.current_thread() in _POOL.threads:
                    break
            time.sleep(0.0005)
