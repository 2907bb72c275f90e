"""A budgeted fuzzing campaign: run the state machine until time or examples run out.

Hypothesis has no wall-clock budget, so a campaign runs the state-machine test in chunks of
examples, each chunk with its own seed derived from the campaign seed, until the budget is
spent.  When a chunk fails, Hypothesis has already shrunk the program and replayed the
minimal one last, so the machine's current run is the minimal failing program: it becomes
a scenario.  The requirement is then ignored for the rest of the campaign (a run that hits
it stops quietly) so that later chunks look for different failures.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase
from hypothesis.stateful import get_state_machine_test

from conformance.fuzz.config import FuzzConfig
from conformance.fuzz.emit import reproduce_blob, scenario_document, write_scenario
from conformance.fuzz.findings import ContractFinding
from conformance.fuzz.machine import build_machine

DEFAULT_DATABASE = ".hypothesis"
CHUNK_EXAMPLES = 50


@dataclass
class Failure:
    """One unique failure (by requirement ID) and where its scenario went."""

    requirement: str
    message: str
    seed: int
    blob: str | None
    steps: list[dict[str, Any]]
    scenario: dict[str, Any]
    path: Path | None = None
    seconds: float = 0.0  # campaign time when it was found


@dataclass
class CampaignResult:
    examples: int = 0
    calls: int = 0
    seconds: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # the machine itself broke (not a finding)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0


def open_database(spec: str | None) -> ExampleDatabase | None:
    """A directory (default ``.hypothesis/``), ``redis://HOST:PORT[/DB]``, or ``none``.

    The redis client is imported only when asked for; ValueError explains a missing
    package or a malformed URL.
    """
    if spec is not None and spec.lower() == "none":
        return None
    if spec is not None and spec.startswith("redis://"):
        try:
            import redis
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError:
            raise ValueError(
                "a redis:// example database needs the 'redis' package (pip install redis)"
            ) from None
        try:
            client = redis.Redis.from_url(spec)
        except ValueError as exc:
            raise ValueError(f"bad redis URL {spec!r}: {exc}") from None
        return RedisExampleDatabase(client)
    return DirectoryBasedExampleDatabase(spec or DEFAULT_DATABASE)


def machine_test(config: FuzzConfig, fuzz_settings: settings, seed: int | None) -> Callable[[], None]:
    """The Hypothesis test function for ``config`` (what HypoFuzz would call)."""
    test = get_state_machine_test(build_machine(config), settings=fuzz_settings)
    if seed is not None:
        # Same effect as @hypothesis.seed(seed), which cannot wrap an already-given test.
        test._hypothesis_internal_use_seed = seed  # type: ignore[attr-defined]
    # One database key per adapter, options and ignored set: replaying an example saved for a
    # different configuration would only waste time, and it must not be discarded either.
    key = repr((config.adapter, sorted(config.options.items()), sorted(config.ignore), config.package))
    test._hypothesis_internal_database_key = hashlib.sha256(key.encode()).digest()  # type: ignore[attr-defined]
    return test


def run_campaign(
    adapter: str,
    options: dict[str, str] | None = None,
    *,
    seconds: float = 60.0,
    max_examples: int | None = None,
    seed: int = 0,
    emit: str | Path | None = None,
    database: ExampleDatabase | None = None,
    stop_on_first: bool = False,
    step_count: int = 50,
    threaded: bool = True,
    shrink: bool = True,
    shrink_seconds: float = 60.0,
    progress: Callable[[str], None] | None = None,
) -> CampaignResult:
    """Fuzz ``adapter`` for ``seconds`` (and at most ``max_examples`` examples)."""
    result = CampaignResult()
    started = time.perf_counter()
    ignore: set[str] = set()
    chunk = 0
    say = progress or (lambda _text: None)
    while True:
        spent = time.perf_counter() - started
        left = None if max_examples is None else max_examples - result.examples
        if spent >= seconds or (left is not None and left <= 0):
            break
        config = FuzzConfig(adapter=adapter, options=dict(options or {}), ignore=frozenset(ignore),
                            threaded=threaded)
        # Growing chunks (10, 20, 40, 50, 50...): the budget is checked often early on, and the
        # schedule does not depend on timing, so a seed always replays the same programs.
        size = min(CHUNK_EXAMPLES, 10 * 2**chunk)
        if left is not None:
            size = min(size, left)
        chunk_seed = seed * 1_000_003 + chunk
        chunk += 1
        fuzz_settings = settings(
            max_examples=size,
            deadline=None,
            database=database,
            suppress_health_check=list(HealthCheck),
            stateful_step_count=step_count,
            report_multiple_bugs=False,
            print_blob=True,
            phases=[Phase.reuse, Phase.generate, Phase.shrink] if shrink else [Phase.reuse, Phase.generate],
        )
        try:
            # Shrinking may overrun the time budget, but by no more than what was left of it.
            with _shrink_budget(min(shrink_seconds, max(2.0, seconds - spent))):
                machine_test(config, fuzz_settings, chunk_seed)()
        except ContractFinding as finding:
            failure = _failure(finding, config, chunk_seed, emit, time.perf_counter() - started)
            result.failures.append(failure)
            ignore.add(finding.requirement)
            where = f" -> {failure.path}" if failure.path else ""
            say(f"FAILURE [{finding.requirement}] {finding.message} ({len(failure.steps)} steps){where}")
            if stop_on_first:
                result.examples += config.runs
                result.calls += config.total_calls
                break
        except Exception as exc:  # the harness itself (or a crashing adapter factory) broke
            result.errors.append(f"{type(exc).__name__}: {exc}")
            say(f"ERROR {type(exc).__name__}: {exc}")
            result.examples += config.runs
            result.calls += config.total_calls
            break
        result.examples += config.runs
        result.calls += config.total_calls
        result.seconds = time.perf_counter() - started
        say(
            f"{result.seconds:6.1f}s  {result.examples} examples  {result.calls} calls "
            f"({result.calls_per_s:.0f}/s)  {len(result.failures)} failure(s)"
        )
    result.seconds = time.perf_counter() - started
    return result


@contextlib.contextmanager
def _shrink_budget(seconds: float) -> Iterator[None]:
    """Bound Hypothesis' shrinking time (its own bound is 300 s, too long for a campaign).

    Hypothesis has no public setting for it, so the engine's module constant is set for the
    duration of one run and restored; on a Hypothesis without it, nothing changes.
    """
    from hypothesis.internal.conjecture import engine

    if not hasattr(engine, "MAX_SHRINKING_SECONDS"):
        yield
        return
    saved = engine.MAX_SHRINKING_SECONDS
    engine.MAX_SHRINKING_SECONDS = max(1, int(seconds))
    try:
        yield
    finally:
        engine.MAX_SHRINKING_SECONDS = saved


def _failure(
    finding: ContractFinding, config: FuzzConfig, seed: int, emit: str | Path | None, at: float
) -> Failure:
    run = config.current
    steps = list(run.steps)
    blob = reproduce_blob(finding)
    doc = scenario_document(
        run,
        requirement=finding.requirement,
        message=finding.message,
        adapter=config.adapter,
        options=config.options,
        seed=seed,
        blob=blob,
        controlled=run.controlled,
        package=run.package,
    )
    path = write_scenario(doc, emit) if emit is not None else None
    return Failure(finding.requirement, finding.message, seed, blob, steps, doc, path, at)
