"""The catalogue of faulty simulators, and the monitor's power to tell them apart.

Every mutant is driven by the same generic workload (tests/section_a_workload.py); the
monitor must report exactly the mutant's requirement as implementation violations, and the
correct simulator must produce none under the same workload.
"""

from __future__ import annotations

import inspect

import pytest
from section_a_workload import implementation_ids, run_workload

from adapters.simulator import create
from adapters.simulator.adapter import SimulatorAdapter
from adapters.simulator.mutants import MUTANTS
from conformance.monitor import ContractMonitor
from conformance.requirements import load_catalogue

NAMES = sorted(MUTANTS)


def _flagged(name: str | None, mode: str) -> set[str]:
    options = {"completion": mode, "max_delay_ms": "0.5"}
    if name is not None:
        options["mutant"] = name
    sim = create(options)
    monitor = ContractMonitor(sim)
    try:
        run_workload(monitor, settle_s=0.05)
    finally:
        sim.close()
    return implementation_ids(monitor)


def test_catalogue_has_at_least_twelve_distinct_bugs() -> None:
    assert len(MUTANTS) >= 12
    assert len({m.cls for m in MUTANTS.values()}) == len(MUTANTS)
    assert len({m.requirement for m in MUTANTS.values()}) >= 12


@pytest.mark.parametrize("name", NAMES)
def test_mutant_shape(name: str) -> None:
    """Each mutant is the simulator with one overridden method and a known requirement."""
    mutant = MUTANTS[name]
    assert mutant.name == name
    assert mutant.description
    assert issubclass(mutant.cls, SimulatorAdapter) and mutant.cls is not SimulatorAdapter
    overridden = [k for k, v in vars(mutant.cls).items() if inspect.isfunction(v)]
    assert overridden, "a mutant changes behaviour by overriding a simulator method"
    assert all(hasattr(SimulatorAdapter, name) for name in overridden), overridden
    assert mutant.requirement in load_catalogue(), mutant.requirement


def test_create_selects_the_mutant_class() -> None:
    for name in NAMES[:3]:
        assert type(create({"mutant": name, "completion": "deferred"})) is MUTANTS[name].cls
    with pytest.raises(ValueError, match="unknown mutant"):
        create({"mutant": "no-such-bug"})


@pytest.mark.parametrize("mode", ["deferred", "inline", "threaded"])
def test_reference_simulator_is_clean_under_the_workload(mode: str) -> None:
    assert _flagged(None, mode) == set()


@pytest.mark.parametrize("name", NAMES)
def test_monitor_flags_exactly_the_mutants_requirement(name: str) -> None:
    """Deferred and inline runs together must flag the mutant's ID and nothing else; a bug that
    only shows with real concurrency (nothing found there) must show in a threaded run."""
    found = _flagged(name, "deferred") | _flagged(name, "inline")
    if not found:
        found = _flagged(name, "threaded")
    assert found == {MUTANTS[name].requirement}


def test_requirement_is_reported_by_the_first_violation() -> None:
    """The first implementation violation of a mutant run names its requirement (diagnosis)."""
    for name in ("double-callback", "callback-before-status", "reinit-drops-callback"):
        sim = MUTANTS[name].cls(completion="deferred")
        monitor = ContractMonitor(sim)
        run_workload(monitor, settle_s=0.05)
        first = next(v for v in monitor.violations() if v.party == "implementation")
        assert first.requirement == MUTANTS[name].requirement
        assert first.seq is not None and any(e.seq == first.seq for e in monitor.trace)
