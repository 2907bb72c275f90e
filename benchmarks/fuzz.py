"""Fuzzer throughput and mutation score: ``python -m benchmarks fuzz``.

* ``calls_per_s``: API calls on the implementation under test per second of a campaign
  against the correct simulator (reference calls and Hypothesis' own work not counted as
  calls, but their time is included);
* for every mutant of adapters/simulator/mutants.py: a campaign with ``--stop-on-first``,
  no shrinking (time to *detect*, not to minimise), at most 60 s; detected means the first
  finding names the mutant's requirement.

Targets: variants_detected == variants_total, median_s_to_detect <= 5, max_s_to_detect <= 60,
calls_per_s >= 2000.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from adapters.simulator.mutants import MUTANTS
from conformance.fuzz.campaign import run_campaign

THROUGHPUT_SECONDS = 10.0
DETECT_BUDGET_S = 60.0


def throughput(seconds: float = THROUGHPUT_SECONDS, seed: int = 0) -> dict[str, Any]:
    result = run_campaign("simulator", {}, seconds=seconds, seed=seed)
    return {
        "calls_per_s": round(result.calls_per_s, 1),
        "examples": result.examples,
        "calls": result.calls,
        "seconds": round(result.seconds, 2),
        "false_positives": [f.message for f in result.failures],
    }


def detection(seed: int = 0) -> dict[str, Any]:
    times: dict[str, float] = {}
    wrong: dict[str, str] = {}
    missed: list[str] = []
    for name in sorted(MUTANTS):
        started = time.perf_counter()
        result = run_campaign("simulator", {"mutant": name}, seconds=DETECT_BUDGET_S, seed=seed,
                              stop_on_first=True, shrink=False)
        spent = time.perf_counter() - started
        if not result.failures:
            missed.append(name)
        elif result.failures[0].requirement != MUTANTS[name].requirement:
            wrong[name] = result.failures[0].requirement
        else:
            times[name] = round(spent, 2)
    found = sorted(times.values())
    return {
        "variants_total": len(MUTANTS),
        "variants_detected": len(times),
        "median_s_to_detect": round(statistics.median(found), 2) if found else None,
        "max_s_to_detect": max(found) if found else None,
        "s_to_detect": times,
        "missed": missed,
        "wrong_requirement": wrong,
    }


def main() -> dict[str, Any]:
    result = throughput()
    result.update(detection())
    return result
