"""The whole scenario corpus against the reference simulator, in both of its profiles.

Every scenario under ``scenarios/`` runs in-process through ``run_scenario`` on the default
(kernel) profile.  A scenario may be ``unsupported`` there only because that profile does not
claim something it needs (``user-mode`` for the SCHANNEL_SHUTDOWN flow, OQ-17); it then runs
again with ``profile=user`` and must pass there.  A scenario that neither profile can run
(it names a package the simulator does not have, e.g. ``native.*`` scenarios for Negotiate)
is listed by :func:`test_scenarios_no_profile_can_run_are_only_missing_packages`.

One test per scenario file, so xdist spreads them; the simulator's default threaded
completion is used, as on the command line.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest

from adapters.api import Capabilities
from adapters.simulator import create
from conformance.executor import run_scenario
from conformance.results import ScenarioResult, Verdict
from conformance.scenario import Scenario
from conformance.scenario.loader import expand_paths, load_corpus

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "scenarios"
PROFILES = ("kernel", "user")
FILES = [path.relative_to(CORPUS).as_posix() for path in expand_paths([CORPUS])]


@lru_cache(maxsize=1)
def _corpus() -> dict[str, Scenario]:
    scenarios, errors = load_corpus([CORPUS])
    assert not errors, "\n".join(str(e) for e in errors)
    return {Path(s.file).resolve().relative_to(CORPUS).as_posix(): s for s in scenarios}


@lru_cache(maxsize=2)
def _capabilities(profile: str) -> Capabilities:
    adapter = create({"profile": profile})
    try:
        return adapter.capabilities()
    finally:
        adapter.close()


def _unmet(scenario: Scenario, profile: str) -> list[str]:
    caps = _capabilities(profile)
    return [need for need in scenario.needs if not caps.supports(need)]


def _run(scenario: Scenario, profile: str) -> ScenarioResult:
    return run_scenario(scenario, lambda: create({"profile": profile}), adapter_name=f"simulator-{profile}")


def _explain(result: ScenarioResult) -> str:
    failed = [f"  step {s.index + 1} (line {s.line}) {s.summary}: {s.message}" for s in result.steps if not s.ok]
    return f"{result.id}: {result.verdict.value}: {result.message}\n" + "\n".join(failed[:10])


def test_corpus_loads_and_is_large() -> None:
    corpus = _corpus()
    assert len(corpus) == len(FILES)
    assert sum(1 for name in corpus if name.startswith(("tls/", "ntlm/"))) >= 60


@pytest.mark.parametrize("name", FILES)
def test_scenario_passes_in_a_profile_that_can_run_it(name: str) -> None:
    scenario = _corpus()[name]
    outcomes: dict[str, Verdict] = {}
    for profile in PROFILES:
        unmet = _unmet(scenario, profile)
        result = _run(scenario, profile)
        outcomes[profile] = result.verdict
        if unmet:
            # Unsupported is right only because the profile lacks what the scenario needs.
            assert result.verdict is Verdict.UNSUPPORTED, _explain(result)
            assert "does not claim" in result.message, _explain(result)
            continue
        assert result.verdict is Verdict.PASS, f"[profile={profile}] " + _explain(result)
        break  # passed: the second profile is needed only for what the first cannot run
    if Verdict.PASS not in outcomes.values():
        missing = {need for profile in PROFILES for need in _unmet(scenario, profile)}
        assert missing and all(need.startswith("package:") for need in missing), (
            f"{name} passes in no simulator profile (needs {sorted(missing)})")


def test_scenarios_no_profile_can_run_are_only_missing_packages() -> None:
    """Only scenarios written for packages the simulator lacks may be unrunnable in both profiles."""
    unrunnable = {name: sorted({n for p in PROFILES for n in _unmet(s, p)})
                  for name, s in _corpus().items() if all(_unmet(s, p) for p in PROFILES)}
    for name, needs in unrunnable.items():
        assert all(need.startswith("package:") for need in needs), (name, needs)
    # The TLS and NTLM scenarios are all runnable by the simulator.
    assert not [name for name in unrunnable if name.startswith(("tls/", "ntlm/"))]


def test_profiles_split_the_shutdown_scenarios() -> None:
    """user-mode scenarios are unsupported on the kernel profile and the reverse (OQ-17)."""
    corpus = _corpus()
    user_only = [n for n, s in corpus.items() if "user-mode" in s.needs]
    kernel_only = [n for n, s in corpus.items() if "kernel-mode" in s.needs]
    assert user_only and kernel_only
    assert all(_unmet(corpus[n], "kernel") == ["user-mode"] for n in user_only)
    assert all(_unmet(corpus[n], "user") == ["kernel-mode"] for n in kernel_only)
