"""The fuzzer (conformance/fuzz/): it finds every mutant for the right reason, its shrunk
failures replay as scenarios, the correct simulator survives a campaign, and the ``fuzz``
subcommand's exit codes."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from adapters.simulator import SimulatorAdapter
from adapters.simulator.mutants import MUTANTS
from conformance.cli import main as cli_main
from conformance.fuzz.campaign import open_database, run_campaign
from conformance.fuzz.command import add_arguments, run
from conformance.fuzz.config import FuzzConfig
from conformance.fuzz.hypofuzz_target import config_from_env
from conformance.fuzz.machine import build_machine
from conformance.results import Verdict
from conformance.scenario.loader import load_scenario

# Per-mutant budget: the brief's "max 300 examples / 20 s", without shrinking (speed).
BUDGET = {"seconds": 20.0, "max_examples": 300, "seed": 0, "stop_on_first": True, "shrink": False}


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_fuzzer_finds_every_mutant_for_its_requirement(name: str) -> None:
    result = run_campaign("simulator", {"mutant": name}, **BUDGET)  # type: ignore[arg-type]
    assert not result.errors, result.errors
    assert result.failures, f"{name} survived {result.examples} programs"
    assert result.failures[0].requirement == MUTANTS[name].requirement, result.failures[0].message


def test_emitted_scenario_fails_on_the_mutant_and_passes_on_the_simulator(tmp_path: Path) -> None:
    name = "reverse-order-lost-callback"  # an ordering bug: two contexts completed out of order
    result = run_campaign("simulator", {"mutant": name}, seconds=30, max_examples=300, seed=0,
                          stop_on_first=True, emit=tmp_path, step_count=20, shrink_seconds=20)
    failure = result.failures[0]
    assert failure.path is not None and failure.path.parent == tmp_path
    scenario = load_scenario(failure.path)  # loads with the corpus loader (schema + names)
    assert scenario.requirements == (MUTANTS[name].requirement,)
    assert "@reproduce_failure(" in scenario.description and "Seed:" in scenario.description
    assert len(scenario.steps) <= 30, "Hypothesis should have shrunk the program"
    assert any(step.action in ("complete", "mode", "wait") for step in scenario.steps)  # completion order kept
    from conformance.executor import run_scenario

    mutant = MUTANTS[name].cls
    bad = run_scenario(scenario, lambda: mutant(completion="threaded"), adapter_name=name)
    good = run_scenario(scenario, lambda: SimulatorAdapter(completion="threaded"), adapter_name="simulator")
    assert bad.verdict is Verdict.FAIL, bad.message
    assert good.verdict is Verdict.PASS, good.message


def test_a_crash_replays_as_a_crash(tmp_path: Path) -> None:
    name = "zombie-double-free-crashes"
    result = run_campaign("simulator", {"mutant": name}, seconds=30, max_examples=300, seed=0,
                          stop_on_first=True, emit=tmp_path, step_count=20, shrink_seconds=4)
    failure = result.failures[0]
    assert failure.requirement == "FREE-1" and "raised" in failure.message
    assert failure.path is not None
    scenario = load_scenario(failure.path)
    assert list(scenario.steps)[-1].action == "free"  # the crashing call is the last step
    from conformance.executor import run_scenario

    bad = run_scenario(scenario, lambda: MUTANTS[name].cls(completion="threaded"), adapter_name=name)
    assert bad.verdict is Verdict.CRASHED, bad.message
    good = run_scenario(scenario, lambda: SimulatorAdapter(completion="threaded"), adapter_name="simulator")
    assert good.verdict is Verdict.PASS, good.message


def test_correct_simulator_survives_a_short_campaign() -> None:
    result = run_campaign("simulator", {}, seconds=3.0, seed=7)
    assert not result.errors, result.errors
    assert result.failures == [], [f.message for f in result.failures]
    assert result.examples > 0 and result.calls > 10 * result.examples


def test_campaign_keeps_searching_after_a_finding() -> None:
    """A found requirement is ignored afterwards, so other failures can still surface."""
    result = run_campaign("simulator", {"mutant": "double-callback"}, seconds=4.0, seed=1, shrink=False)
    found = [f.requirement for f in result.failures]
    assert found and found[0] == "OQ-13"
    assert len(found) == len(set(found)), "each requirement is reported once"


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_fuzz_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = io.StringIO()
    db = str(tmp_path / "db")
    assert run(_args("--seconds", "1", "--database", db), out) == 0
    assert "no failure found" in out.getvalue() and "calls/s" in out.getvalue()
    out = io.StringIO()
    code = run(_args("--seconds", "20", "--max-examples", "300", "--adapter-option", "mutant=lost-callback",
                     "--stop-on-first", "--database", db, "--emit", str(tmp_path / "found")), out)
    assert code == 1
    assert "OQ-13" in out.getvalue() and "unique failure" in out.getvalue()
    assert list((tmp_path / "found").glob("fuzz.oq-13.*.yaml"))
    assert (tmp_path / "db").is_dir()  # the example database was written
    assert run(_args("--adapter", "no-such-adapter"), io.StringIO()) == 2
    assert run(_args("--adapter-option", "completion=sideways"), io.StringIO()) == 2
    assert run(_args("--adapter-option", "novalue"), io.StringIO()) == 2
    assert run(_args("--seconds", "0"), io.StringIO()) == 2
    assert cli_main(["fuzz", "--seconds", "abc"]) == 2
    assert "fuzz" in capsys.readouterr().err


def test_redis_database_is_lazy_and_explained() -> None:
    try:
        import redis  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="redis"):
            open_database("redis://localhost:6379")
    else:
        assert type(open_database("redis://localhost:6379")).__name__ == "RedisExampleDatabase"
    assert open_database("none") is None


def test_hypofuzz_target_is_an_ordinary_hypothesis_test() -> None:
    import unittest

    from conformance.fuzz import hypofuzz_target

    assert issubclass(hypofuzz_target.TestAsyncSspi, unittest.TestCase)
    cfg = config_from_env({"SSPI_FUZZ_ADAPTER": "simulator", "SSPI_FUZZ_OPTIONS": "mutant=lost-callback, seed=3"})
    assert cfg.adapter == "simulator" and cfg.options == {"mutant": "lost-callback", "seed": "3"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        config_from_env({"SSPI_FUZZ_OPTIONS": "oops"})
    machine = build_machine(FuzzConfig(options={"mutant": "lost-callback"}))
    quick = settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    with pytest.raises(AssertionError, match="OQ-13"):
        run_state_machine_as_test(machine, settings=quick)
