"""The pytest plugin: every scenario YAML file is a test file, every scenario a test item.

pytest's "non-python tests" pattern: :class:`ScenarioFile` loads one YAML file and yields
one :class:`ScenarioItem`; the item runs the scenario through the executor against the
adapter chosen with ``--adapter`` and turns the verdict into a pytest outcome.  A failure
is shown as the scenario's evidence (steps with expected and actual statuses, violations
with requirement IDs, the callback timeline), never as a Python traceback.

Results: every process (the single pytest process or each xdist worker) appends each
finished result to ``<report-dir>/results.jsonl`` at once, with one O_APPEND write per
line; the controller truncates that file when the run starts to execute scenarios and,
at session end, writes junit.xml, summary.md and report.html from it.

Profiles (``--profile``, conformance/profile.py) are applied per item: a ``skip`` expectation
or a capability the profile does not declare ends the item without running it; otherwise the
scenario runs with the profile's status map and claims, and the profile judges the outcome
(xfail, xpass, pinned xfail).  The session's exit status follows conformance/policy.py when
every failure is a scenario (``--strict-levels`` grades should/may-level failures too).

The plugin stays inert in runs without scenario files (the self-tests load it through the
root conftest.py): nothing is created or written unless a scenario item is collected.
Engine modules are imported lazily so a broken engine cannot break unrelated test runs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from conformance.reports.jsonl import RESULTS_NAME, append_result
from conformance.reports.text import step_trace
from conformance.results import ScenarioResult, Verdict

if TYPE_CHECKING:
    from adapters.api import Adapter
    from conformance.profile import Profile
    from conformance.scenario.model import Scenario

ENTRY_POINT_NAME = "sspi_conformance"
SCENARIO_SUFFIXES = frozenset({".yaml", ".yml"})
SCENARIO_DIR_NAME = "scenarios"
_WORKER_KEY = "sspi_conformance_report_dir"
DEFAULT_ADAPTER = "simulator"


def entry_point_installed() -> bool:
    """True when pytest will auto-load this plugin from the installed ``pytest11`` entry point.

    The root conftest.py and the CLI register the module themselves only when this is
    False; registering it twice (under two names) is an error in pluggy.
    """
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    from importlib.metadata import entry_points

    return any(ep.name == ENTRY_POINT_NAME for ep in entry_points(group="pytest11"))


def plugin_args() -> list[str]:
    """Command-line arguments that make the plugin active in a pytest run."""
    return [] if entry_point_installed() else ["-p", __name__]


# pytest flags for a pure scenario run (the CLI and the benchmark use them).  Scenario items
# need no cache, assertion rewriting, doctests or Hypothesis, and the per-test logging,
# warnings and thread-exception capture of pytest's own plugins costs about a fifth of
# pytest's per-item time while a scenario reports everything through its result instead.
# faulthandler stays: it prints the Python stacks if an in-process implementation crashes.
RUN_FLAGS: tuple[str, ...] = (
    "-p", "no:cacheprovider", "-p", "no:hypothesispytest", "-p", "no:doctest", "-p", "no:logging",
    "-p", "no:warnings", "-p", "no:threadexception", "-p", "no:unraisableexception", "--assert=plain",
)


# ---- settings ------------------------------------------------------------------------------------


@dataclass
class Settings:
    adapter: str
    adapter_options: dict[str, str]
    profile: str | None
    report_dir: Path
    timeout_ms: int | None
    scenario_roots: list[Path]
    keep_trace: bool = False
    repeat: int = 1
    strict: bool = False  # should/may-level failures fail the run too (conformance/policy.py)
    loaded_profile: Profile | None = None
    # Controller state: whether this session runs scenarios (then reports are written).
    prepared: bool = False
    results: list[ScenarioResult] = field(default_factory=list)
    report_error: str = ""
    seen_ids: dict[str, str] = field(default_factory=dict)
    report_dir_made: bool = False
    failed_reports: int = 0  # controller: failed test reports seen (xdist replays workers' here)
    failed_other: int = 0  # ... of which not from a scenario item
    scheduled: int = 0  # controller: scenario items collected to run (0: not known)
    unfinished: int = 0  # ... of which no result came back (the run stopped early)

    def adapter_factory(self) -> Callable[[], Adapter]:
        from adapters.registry import create_adapter

        name, options = self.adapter, dict(self.adapter_options)
        caps = self.loaded_profile.capabilities if self.loaded_profile is not None else None
        if caps is None:
            return lambda: create_adapter(name, options)

        def create() -> Adapter:
            adapter = create_adapter(name, options)
            # The profile's claims replace the adapter's for this run (docs/ci.md): the
            # executor and the monitor ask capabilities(), so answer for the instance.
            setattr(adapter, "capabilities", lambda: caps)  # noqa: B010 - shadowing a method on purpose
            return adapter

        return create


SETTINGS = pytest.StashKey[Settings]()


def settings_of(config: pytest.Config) -> Settings:
    return config.stash[SETTINGS]


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def parse_adapter_options(pairs: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict; UsageError naming the bad one."""
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise pytest.UsageError(f"--adapter-option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sspi-conformance", "async SSPI conformance scenarios")
    group.addoption("--adapter", default=None, metavar="NAME",
                    help="implementation to test: simulator (default, or the profile's adapter), native, remote")
    group.addoption("--adapter-option", action="append", default=[], metavar="KEY=VALUE",
                    help="option passed to the adapter (repeatable)")
    group.addoption("--profile", default=None, metavar="NAME|FILE",
                    help="implementation profile, built-in name or file: claims, status map, expectations")
    group.addoption("--strict-levels", action="store_true",
                    help="should/may-level failures fail the run too (default: only must-level ones)")
    group.addoption("--report-dir", default="reports", metavar="DIR",
                    help="where results.jsonl, junit.xml, summary.md and report.html go (default: reports)")
    group.addoption("--scenario-timeout-ms", type=int, default=None, metavar="MS",
                    help="time budget for every scenario, replacing each scenario's timeout_ms")
    group.addoption("--keep-trace", action="store_true",
                    help="record the call trace of passing scenarios too (default: only of the others)")
    group.addoption("--repeat", type=int, default=1, metavar="N",
                    help="run every scenario N times (items id[1]..id[N]): shakes out completion races")
    group.addoption("--scenarios", action="append", default=[], metavar="PATH",
                    help="collect scenario YAML under PATH even outside a 'scenarios' folder (repeatable)")


def load_profile_option(value: str | None) -> Profile | None:
    """The ``--profile`` value loaded; UsageError (with the located problem) when unusable."""
    if not value:
        return None
    from conformance.profile import ProfileError, load

    try:
        return load(value)
    except (ProfileError, ValueError) as exc:
        raise pytest.UsageError(f"--profile: {exc}") from None


def resolve_adapter(explicit: str | None, profile: Profile | None) -> str:
    """``--adapter`` when given, else the profile's adapter, else the simulator."""
    if profile is not None and profile.adapter and explicit and explicit != profile.adapter:
        raise pytest.UsageError(f"--profile {profile.name} describes adapter {profile.adapter!r}, "
                                f"not {explicit!r} (drop --adapter or pick another profile)")
    return explicit or (profile.adapter if profile is not None and profile.adapter else DEFAULT_ADAPTER)


def pytest_configure(config: pytest.Config) -> None:
    from adapters.registry import ADAPTERS

    profile = load_profile_option(config.getoption("profile"))
    adapter = resolve_adapter(config.getoption("adapter"), profile)
    if adapter not in ADAPTERS:
        raise pytest.UsageError(f"--adapter: unknown adapter {adapter!r} (known: {', '.join(ADAPTERS)})")
    timeout = config.getoption("scenario_timeout_ms")
    if timeout is not None and timeout <= 0:
        raise pytest.UsageError(f"--scenario-timeout-ms must be positive, got {timeout}")
    base = config.invocation_params.dir
    if is_worker(config) and _WORKER_KEY in config.workerinput:  # type: ignore[attr-defined]
        report_dir = Path(config.workerinput[_WORKER_KEY])  # type: ignore[attr-defined]
    else:
        report_dir = (base / config.getoption("report_dir")).resolve()
    repeat = config.getoption("repeat")
    if repeat < 1:
        raise pytest.UsageError(f"--repeat must be at least 1, got {repeat}")
    roots = [(base / p).resolve() for p in config.getoption("scenarios")]
    for root in roots:
        if not root.exists():
            raise pytest.UsageError(f"--scenarios: no such file or directory: {root}")
    options = dict(profile.adapter_options) if profile is not None else {}
    options.update(parse_adapter_options(config.getoption("adapter_option")))  # the command line wins
    config.stash[SETTINGS] = Settings(
        adapter=adapter,
        adapter_options=options,
        profile=profile.name if profile is not None else None,
        report_dir=report_dir,
        timeout_ms=timeout,
        scenario_roots=roots,
        keep_trace=config.getoption("keep_trace"),
        repeat=repeat,
        strict=config.getoption("strict_levels"),
        loaded_profile=profile,
    )
    _add_scenario_roots(config, roots)
    if not is_worker(config):
        config.pluginmanager.register(FailureCounter(config.stash[SETTINGS]), "sspi-conformance-failures")
        if config.pluginmanager.hasplugin("xdist"):
            config.pluginmanager.register(CrashRecorder(config), "sspi-conformance-crash-recorder")


def _add_scenario_roots(config: pytest.Config, roots: list[Path]) -> None:
    """Make ``--scenarios`` paths collection arguments (replacing the default testpaths)."""
    if not roots:
        return
    explicit = config.args_source == pytest.Config.ArgsSource.ARGS
    current = list(config.args) if explicit else []
    present = {str((config.invocation_params.dir / a.split("::")[0]).resolve()) for a in current}
    current += [str(r) for r in roots if str(r) not in present]
    config.args[:] = current


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist controller: workers write into the controller's resolved report directory."""
    node.workerinput[_WORKER_KEY] = str(settings_of(node.config).report_dir)


# ---- collection ----------------------------------------------------------------------------------


def _is_scenario_file(file_path: Path, session: pytest.Session, settings: Settings) -> bool:
    if file_path.suffix not in SCENARIO_SUFFIXES:
        return False
    if session.isinitpath(file_path):
        return True
    if any(file_path.is_relative_to(root) for root in settings.scenario_roots):
        return True
    # Only folders named "scenarios" hold the corpus: YAML elsewhere (tests/malformed/,
    # CI files) is never collected by accident.  Judge the path below rootdir so the
    # checkout's own location does not matter.
    rootpath = session.config.rootpath
    parts = file_path.relative_to(rootpath).parts if file_path.is_relative_to(rootpath) else file_path.parts
    return SCENARIO_DIR_NAME in parts[:-1]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> ScenarioFile | None:
    if file_path.suffix not in SCENARIO_SUFFIXES:
        return None
    if not _is_scenario_file(file_path, parent.session, settings_of(parent.config)):
        return None
    node: ScenarioFile = ScenarioFile.from_parent(parent, path=file_path)
    return node


class ScenarioFile(pytest.File):
    """One scenario YAML file."""

    def collect(self) -> Iterator[ScenarioItem]:
        try:
            from conformance.scenario.loader import LoadError, load_scenario
        except ImportError as exc:
            raise self.CollectError(f"{self.path}: the scenario loader is unavailable: {exc}") from None
        try:
            scenario = load_scenario(self.path)
        except LoadError as exc:
            raise self.CollectError(str(exc)) from None
        except Exception as exc:  # a loader defect must still name the file, not dump a traceback
            raise self.CollectError(f"{self.path}:1:1: cannot load scenario: {type(exc).__name__}: {exc}") from None
        seen = settings_of(self.config).seen_ids
        other = seen.setdefault(scenario.id, str(self.path))
        if other != str(self.path):
            where = f"{self.path}:{scenario.line}:{scenario.column}"
            raise self.CollectError(f"{where}: duplicate scenario id {scenario.id!r} (also in {other})")
        repeat = settings_of(self.config).repeat
        if repeat == 1:
            yield ScenarioItem.from_parent(self, name=scenario.id, scenario=scenario)
            return
        for round_ in range(1, repeat + 1):
            yield ScenarioItem.from_parent(self, name=f"{scenario.id}[{round_}]", scenario=scenario)


class ScenarioFailure(Exception):
    """Raised by a scenario item whose verdict fails the test; carries the result."""

    def __init__(self, result: ScenarioResult) -> None:
        super().__init__(result.message or result.verdict.value)
        self.result = result


class ScenarioItem(pytest.Item):
    """One scenario, run through the executor against the configured adapter."""

    def __init__(self, *, scenario: Scenario, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scenario = scenario
        self.result: ScenarioResult | None = None
        # -k matches tags, requirement IDs and the level as well as the id.
        self.extra_keyword_matches.update(scenario.tags)
        self.extra_keyword_matches.update(scenario.requirements)
        self.extra_keyword_matches.add(scenario.level)

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, max(self.scenario.line - 1, 0), f"scenario {self.scenario.id}"

    def _execute(self, settings: Settings) -> ScenarioResult:
        profile = settings.loaded_profile
        if profile is None:
            return self._run(settings, None)
        from conformance.profile import apply, completion_modes, skipped, unsupported

        scenario = self.scenario
        expectation = profile.expectation_for(scenario.id)
        if expectation is not None and expectation.kind == "skip":
            return skipped(self._blank(settings, Verdict.SKIP), profile, expectation)
        missing = profile.missing(scenario.needs, completion_modes(scenario))
        if missing:
            return unsupported(self._blank(settings, Verdict.UNSUPPORTED), profile, missing)
        return apply(profile, self._run(settings, profile.status_map or None), scenario.needs)

    def _blank(self, settings: Settings, verdict: Verdict) -> ScenarioResult:
        scenario = self.scenario
        return ScenarioResult(id=scenario.id, title=scenario.title, file=str(scenario.file), verdict=verdict,
                              adapter=settings.adapter, level=scenario.level,
                              requirements=list(scenario.requirements), tags=list(scenario.tags))

    def _run(self, settings: Settings, status_map: dict[int, int] | None) -> ScenarioResult:
        scenario = self.scenario
        if settings.timeout_ms is not None:
            scenario = replace(scenario, timeout_ms=settings.timeout_ms)
        started = time.perf_counter()
        try:
            from conformance.executor import run_scenario

            extra: dict[str, Any] = {"keep_trace": True} if settings.keep_trace else {}
            return run_scenario(
                scenario,
                settings.adapter_factory(),
                adapter_name=settings.adapter,
                profile_status_map=status_map,
                **extra,
            )
        except Exception as exc:  # run_scenario must not raise; if it does, it is a harness error
            return ScenarioResult(
                id=scenario.id,
                title=scenario.title,
                file=str(scenario.file),
                verdict=Verdict.ERROR,
                adapter=settings.adapter,
                level=scenario.level,
                requirements=list(scenario.requirements),
                tags=list(scenario.tags),
                duration_s=time.perf_counter() - started,
                message=f"harness error: {type(exc).__name__}: {exc}",
            )

    def runtest(self) -> None:
        settings = settings_of(self.config)
        result = self.result = self._execute(settings)
        _record(self.config, settings, result, self.nodeid)
        verdict = result.verdict
        if verdict is Verdict.PASS:
            return
        why = result.expectation or result.message or verdict.value
        if verdict in (Verdict.SKIP, Verdict.UNSUPPORTED):
            raise pytest.skip.Exception(f"{verdict.value}: {why}", _use_item_location=True)
        if verdict is Verdict.XFAIL:
            pytest.xfail(why)
        raise ScenarioFailure(result)

    def repr_failure(
        self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None
    ) -> str:
        if isinstance(excinfo.value, ScenarioFailure):
            return step_trace(excinfo.value.result)
        if self.config.getoption("fulltrace", False):
            return str(super().repr_failure(excinfo, style))
        return f"harness error in scenario {self.scenario.id}: {excinfo.type.__name__}: {excinfo.value}"


# ---- results and reports -------------------------------------------------------------------------


def _record(config: pytest.Config, settings: Settings, result: ScenarioResult, nodeid: str) -> None:
    """Append the finished result to results.jsonl now, so a killed run keeps it."""
    if not settings.report_dir_made:
        settings.report_dir.mkdir(parents=True, exist_ok=True)
        settings.report_dir_made = True
    worker = config.workerinput.get("workerid", "") if is_worker(config) else ""  # type: ignore[attr-defined]
    append_result(settings.report_dir / RESULTS_NAME, result, nodeid=nodeid, worker=worker,
                  profile=settings.profile or "")


def _prepare(settings: Settings) -> None:
    """Controller, once per run that executes scenarios: start a fresh results.jsonl."""
    if settings.prepared:
        return
    settings.prepared = True
    settings.report_dir.mkdir(parents=True, exist_ok=True)
    settings.report_dir_made = True
    (settings.report_dir / RESULTS_NAME).write_bytes(b"")


def pytest_collection_finish(session: pytest.Session) -> None:
    # Single process: runs after deselection, before any item runs.
    if is_worker(session.config) or session.config.option.collectonly:
        return
    if session.testsfailed and not session.config.getoption("continue_on_collection_errors"):
        return  # pytest stops before running anything: keep the previous results
    scheduled = sum(isinstance(item, ScenarioItem) for item in session.items)
    if scheduled:
        settings = settings_of(session.config)
        settings.scheduled = scheduled
        _prepare(settings)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: Any, ids: list[str]) -> None:
    # xdist controller: called for each worker's collection before any test is scheduled.
    scheduled = sum(".yaml::" in i or ".yml::" in i for i in ids)
    if not node.config.option.collectonly and scheduled:
        settings = settings_of(node.config)
        settings.scheduled = max(settings.scheduled, scheduled)  # every worker collects them all
        _prepare(settings)


def crash_result(nodeid: str, settings: Settings, rootpath: Path, detail: str) -> ScenarioResult:
    """A ``crashed`` result for a scenario whose process died before it could record one."""
    file_part, _, name = nodeid.partition("::")
    path = rootpath / file_part
    result = ScenarioResult(id=name.split("[")[0] or nodeid, title="", file=str(path), verdict=Verdict.CRASHED,
                            adapter=settings.adapter,
                            message=f"the test process died while running this scenario ({detail})")
    try:  # best effort: the reports group results by requirement
        from conformance.scenario.loader import load_scenario

        scenario = load_scenario(path)
    except Exception:
        return result
    result.title, result.level = scenario.title, scenario.level
    result.requirements, result.tags = list(scenario.requirements), list(scenario.tags)
    return result


class FailureCounter:
    """Controller: counts failed reports, so the exit status may follow level grading only
    when every failure came from a scenario item (see pytest_sessionfinish)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.failed:
            self.settings.failed_reports += 1
            if ".yaml::" not in report.nodeid and ".yml::" not in report.nodeid:
                self.settings.failed_other += 1


class CrashRecorder:
    """xdist controller: a worker that dies mid-scenario (an in-process implementation that
    crashed) leaves no result line; record the scenario as ``crashed`` so reports show it."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config

    @pytest.hookimpl(optionalhook=True)
    def pytest_handlecrashitem(self, crashitem: str, report: Any, sched: Any) -> None:
        settings = settings_of(self.config)
        if not settings.prepared or not (".yaml::" in crashitem or ".yml::" in crashitem):
            return
        result = crash_result(crashitem, settings, self.config.rootpath, str(report.longrepr))
        profile = settings.loaded_profile
        if profile is not None:
            # A crash the profile expects (xfail pinned to ``crashed``) is judged like any other
            # result; xdist logs ``report`` after this hook, so it shows the same outcome.
            from conformance.profile import apply

            result = apply(profile, result)
            if result.verdict is Verdict.XFAIL:
                report.outcome = "skipped"
                report.wasxfail = result.expectation
        settings.report_dir.mkdir(parents=True, exist_ok=True)
        append_result(settings.report_dir / RESULTS_NAME, result, nodeid=crashitem, worker="",
                      profile=settings.profile or "")


def pytest_sessionfinish(session: pytest.Session) -> None:
    config = session.config
    if is_worker(config) or SETTINGS not in config.stash:
        return
    settings = settings_of(config)
    if not settings.prepared:
        return
    from conformance.policy import exit_code
    from conformance.reports import write_reports
    from conformance.reports.jsonl import read_results

    try:
        settings.results = read_results(settings.report_dir / RESULTS_NAME)
        write_reports(settings.report_dir, settings.results, strict=settings.strict)
    except Exception as exc:  # a reporting problem must not hide the run's own outcome
        settings.report_error = f"{type(exc).__name__}: {exc}"
        return
    # Level grading (conformance/policy.py): when every failed test is a scenario, the exit
    # status is the policy's, so a should/may-level failure alone leaves it 0 without
    # --strict-levels.  Any other failure (a collection error, a self-test) keeps pytest's.
    # session.testsfailed also counts collection errors, which never reach the counter.
    only_scenarios = settings.failed_other == 0 and session.testsfailed == settings.failed_reports
    if session.exitstatus == pytest.ExitCode.TESTS_FAILED and only_scenarios and settings.results:
        session.exitstatus = pytest.ExitCode(exit_code(settings.results, settings.strict))
    # Scenarios that never reported (xdist gave up restarting crashed workers, say) are
    # results lost: the run is incomplete, so it cannot pass.
    settings.unfinished = max(0, settings.scheduled - len(settings.results))
    if settings.unfinished and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    if is_worker(config) or SETTINGS not in config.stash:
        return
    settings = settings_of(config)
    if not settings.prepared:
        return
    if settings.report_error:
        terminalreporter.write_line(f"sspi-conformance: reports not written: {settings.report_error}", red=True)
        return
    from conformance.policy import is_graded_out

    terminalreporter.write_line(f"sspi-conformance: {len(settings.results)} results, reports in {settings.report_dir}")
    if settings.unfinished:
        terminalreporter.write_line(
            f"sspi-conformance: {settings.unfinished} of {settings.scheduled} scenarios never reported a result "
            "(the run stopped early); the run fails", red=True)
    graded = sum(is_graded_out(r, settings.strict) for r in settings.results)
    if graded:
        terminalreporter.write_line(f"sspi-conformance: {graded} should/may-level failure(s) do not fail the run "
                                    "(--strict-levels makes them)")
