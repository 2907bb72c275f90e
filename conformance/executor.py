"""The step interpreter: runs one scenario against one adapter and judges it.

``run_scenario`` builds the adapter, checks the scenario's needs against its capabilities,
wraps it in the contract monitor, executes the steps in order and always returns a
:class:`~conformance.results.ScenarioResult` -- never raises for anything an adapter or a
scenario does.  Verdicts (docs/ci.md):

* every step met its expectation and the monitor saw no implementation violation: PASS;
* a step failed, a wait timed out, the budget ran out, an implementation violation: FAIL;
* a needed capability is not claimed, or the adapter raised ``Unsupported``: UNSUPPORTED;
* ``ImplementationCrashed`` / ``ImplementationHung``: CRASHED / HUNG;
* anything else raised (a bug in the harness): ERROR, with the exception summary.

The work is split: :mod:`conformance.scenario.runtime` (state, recording callback, waits,
checks, cleanup), :mod:`conformance.scenario.steps` and :mod:`conformance.scenario.composite`
(the step handlers).  Speed matters (the runner benchmark): each step is dispatched through a
table to a handler that reads the pre-parsed, typed arguments of :mod:`conformance.scenario.model`;
nothing is formatted on the pass path except via small caches; waits block on a per-context Event.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from adapters.api import Adapter, Capabilities, ImplementationCrashed, ImplementationHung, Unsupported
from conformance.monitor import ContractMonitor
from conformance.results import ScenarioResult, StepRecord, Verdict
from conformance.scenario import model as m
from conformance.scenario.runtime import BOGUS, ScenarioTimeout
from conformance.scenario.steps import HANDLERS, Run

__all__ = ["BOGUS", "run_scenario"]

_SETTLE_S = 0.2  # how long the monitor may wait for callbacks still owed at the end
_REPORTED = "(reported by the implementation)"  # suffix the monitor gives adapter diagnostics


def _missing(needs: tuple[str, ...], caps: Capabilities) -> list[str]:
    """``Capabilities.supports`` for many needs; package names compare case-insensitively."""
    features, packages = caps.features, caps.packages
    return [need for need in needs
            if need not in features
            and not (need.startswith("package:")
                     and (need[8:] in packages or need[8:].lower() in _lowered(packages)))]


# Lower-cased package sets, by the capability claim they come from: an adapter answers the
# same (hashable, immutable) claim for every scenario, so the set is built once per claim.
_LOWERED: dict[frozenset[str], frozenset[str]] = {}


def _lowered(packages: frozenset[str]) -> frozenset[str]:
    if type(packages) is not frozenset:  # an adapter outside this project may claim a list or set
        return frozenset(p.lower() for p in packages)
    found = _LOWERED.get(packages)
    if found is None:
        if len(_LOWERED) > 64:  # claims are few; bound the cache against a pathological adapter
            _LOWERED.clear()
        found = _LOWERED[packages] = frozenset(p.lower() for p in packages)
    return found


def _exc_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _where(run: Run | None) -> str:
    step = run.current if run is not None else None
    if step is None:
        return ""
    return f" during step {step.index + 1} (line {step.line}) {step.summary}"


def run_scenario(
    scenario: m.Scenario,
    adapter_factory: Callable[[], Adapter] | Adapter,
    *,
    adapter_name: str,
    profile_status_map: dict[int, int] | None = None,
    keep_trace: bool = False,
) -> ScenarioResult:
    """Run ``scenario`` on a fresh adapter from ``adapter_factory`` and judge it.

    ``profile_status_map`` maps statuses the implementation returns to the ones the scenario
    expects (a profile's documented equivalences) before any comparison.  The monitor's trace
    is attached to the result when the verdict is not PASS, or always with ``keep_trace``.
    """
    started = time.perf_counter()
    result = ScenarioResult(id=scenario.id, title=scenario.title, file=str(scenario.file), verdict=Verdict.ERROR,
                            adapter=adapter_name, level=scenario.level, requirements=list(scenario.requirements),
                            tags=list(scenario.tags))
    adapter: Adapter | None = None
    monitor: ContractMonitor | None = None
    run: Run | None = None
    try:
        adapter = adapter_factory if isinstance(adapter_factory, Adapter) else adapter_factory()
        caps = adapter.capabilities()
        result.implementation = f"{caps.name} {caps.version}"
        missing = _missing(scenario.needs, caps)
        if missing:
            result.verdict = Verdict.UNSUPPORTED
            result.message = f"{caps.name} does not claim {', '.join(missing)}"
            return result
        monitor = ContractMonitor(adapter)
        run = Run(scenario, adapter, monitor, profile_status_map)
        try:
            run.execute(HANDLERS)
        except ScenarioTimeout:
            run.note_failure(None, "")
            run.first_failure = f"scenario timed out after {scenario.timeout_ms} ms{_where(run)}"
            step = run.current
            if step is not None:
                run.records.append(StepRecord(step.index, step.line, step.action, step.summary, False, "", "",
                                              run.first_failure))
        settle = _SETTLE_S if time.monotonic() < run.deadline else 0.0
        monitor.finish(settle)
        if scenario.expect_diagnostics:
            # Leak reports come at close (CTX-6, CALL-13, CALL-26): close first, with nothing
            # cleaned up by the harness, so the implementation sees what the scenario left.
            run.closed = True
            monitor.close()
        _judge(run, monitor, scenario, result)
    except Unsupported as exc:
        result.verdict = Verdict.UNSUPPORTED
        result.message = f"unsupported{_where(run)}: {exc}"
    except ImplementationCrashed as exc:
        result.verdict = Verdict.CRASHED
        result.message = f"implementation crashed{_where(run)}: {_exc_text(exc)}"
    except ImplementationHung as exc:
        result.verdict = Verdict.HUNG
        result.message = f"implementation hung{_where(run)}: {_exc_text(exc)}"
    except Exception as exc:  # a bug in the harness (or the adapter wrapper): never a raw traceback
        result.verdict = Verdict.ERROR
        result.message = f"harness error{_where(run)}: {_exc_text(exc)}"
    finally:
        if run is not None:
            result.steps = run.records
        if monitor is not None and (keep_trace or result.verdict is not Verdict.PASS):
            try:
                result.callbacks = run.callback_records() if run is not None else []
                result.trace = monitor.trace
                if not result.violations:
                    result.violations = monitor.violations()
            except Exception:  # the verdict stands without a trace
                pass
        _close(run, adapter, result)
        result.duration_s = time.perf_counter() - started
    return result


def _judge(run: Run, monitor: ContractMonitor, scenario: m.Scenario, result: ScenarioResult) -> None:
    violations = monitor.violations()
    result.violations = violations
    own = [v for v in violations if v.party == "implementation"]
    if scenario.expect_diagnostics:
        reported = {v.requirement for v in violations if v.party == "caller" and v.message.endswith(_REPORTED)}
        lacking = [rid for rid in scenario.expect_diagnostics if rid not in reported]
        if lacking:
            run.note_failure(None, f"the implementation did not report {', '.join(lacking)} (expect_diagnostics)")
    if run.failed:
        result.verdict = Verdict.FAIL
        result.message = run.first_failure
    elif own:
        result.verdict = Verdict.FAIL
        first = own[0]
        result.message = f"contract violation {first.requirement}: {first.message}"
    else:
        result.verdict = Verdict.PASS


def _close(run: Run | None, adapter: Adapter | None, result: ScenarioResult) -> None:
    """Harness cleanup, then close: failures here never blame the implementation."""
    if adapter is None or (run is not None and run.closed):
        return
    try:
        if run is not None and result.verdict not in (Verdict.CRASHED, Verdict.HUNG):
            run.cleanup()
    except Exception:  # cleanup is best effort
        pass
    try:
        adapter.close()
    except Exception:  # a close failure after judging is not the scenario's verdict
        pass
