"""``sspi-conformance``: run, list and validate the scenario corpus; serve the remote agent.

Each subcommand is one ``add_*`` function (its arguments) and one ``cmd_*`` function (its
work) registered in :data:`COMMANDS`, so later subcommands (fuzz, bless, report) slot in
without touching the others.  Exit codes (docs/cli.md): 0 everything passed or only
expected outcomes, 1 failures, 2 usage or input errors, 3 internal error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from conformance import __version__

EXIT_OK = 0
EXIT_FAILURES = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3
MAX_WORKER_RESTARTS = 100_000  # in effect unbounded: one restart per crashing scenario at most


class UsageError(Exception):
    """Bad command-line input or unusable input files: exit code 2 with this message."""


# ---- shared helpers ------------------------------------------------------------------------------


def default_corpus() -> Path:
    """``scenarios/`` under the current directory, else next to the installed package."""
    candidates = [Path.cwd() / "scenarios", Path(__file__).resolve().parent.parent / "scenarios"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise UsageError("no scenario corpus found: give PATHS, or run from a folder that has scenarios/")


def corpus_paths(paths: Sequence[str]) -> list[Path]:
    resolved = [Path(p) for p in paths] if paths else [default_corpus()]
    missing = [str(p) for p in resolved if not p.exists()]
    if missing:
        raise UsageError(f"no such file or directory: {', '.join(missing)}")
    return resolved


def parse_options(pairs: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--adapter-option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def check_adapter(name: str, options: dict[str, str]) -> None:
    """Build the adapter once so a bad name or option is a usage error, not N failed scenarios."""
    from adapters.api import AdapterError
    from adapters.registry import create_adapter

    try:
        adapter = create_adapter(name, options)
    except (ValueError, AdapterError, ImportError, OSError) as exc:
        raise UsageError(f"adapter {name!r}: {exc}") from None
    try:
        adapter.close()
    except Exception:  # closing a probe adapter is best effort; the run builds its own
        pass


def print_load_errors(errors: Sequence[Any], out: TextIO) -> None:
    for error in errors:
        print(str(error), file=out)


# ---- run -----------------------------------------------------------------------------------------


def add_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATHS", help="scenario files or folders (default: scenarios/)")
    parser.add_argument("--adapter", default=None,
                        help="implementation to test (default: the profile's adapter, else simulator)")
    parser.add_argument("--adapter-option", action="append", default=[], metavar="K=V",
                        help="adapter option (repeatable)")
    parser.add_argument("--profile", metavar="P",
                        help="implementation profile: a built-in name (simulator-kernel, simulator-user, "
                             "sspi-rs) or a file")
    parser.add_argument("-k", dest="keyword", metavar="EXPR", help="select scenarios by id, tag or requirement")
    parser.add_argument("-n", dest="workers", metavar="N", help="parallel workers (pytest-xdist), or 'auto'")
    parser.add_argument("--report-dir", default="reports", metavar="DIR", help="report folder (default: reports)")
    parser.add_argument("--scenario-timeout-ms", type=int, metavar="MS", help="budget for every scenario")
    # People read report.html for every scenario's timeline, so `run` keeps traces by default;
    # --lean drops those of passing scenarios (smaller reports, a little faster).
    parser.add_argument("--keep-trace", dest="keep_trace", action="store_true", default=True,
                        help="keep the call trace of passing scenarios too (default)")
    parser.add_argument("--lean", dest="keep_trace", action="store_false",
                        help="keep traces of non-passing scenarios only")
    parser.add_argument("--repeat", type=int, default=1, metavar="N", help="run every scenario N times")
    parser.add_argument("--strict", action="store_true",
                        help="should/may-level failures fail the run too (default: only must-level)")


@dataclass
class RunOutcome:
    code: int
    results: list[Any]


def pytest_args(args: argparse.Namespace, paths: Sequence[Path]) -> list[str]:
    # The plugin goes in as "-p MODULE" (not pytest.main(plugins=...)) so that pytest-xdist
    # workers, which re-parse these arguments, load it too.
    from conformance.pytest_plugin import RUN_FLAGS, plugin_args

    argv = [*plugin_args(), *RUN_FLAGS, "-q", "--report-dir", str(args.report_dir)]
    if args.adapter:
        argv += ["--adapter", args.adapter]
    for pair in args.adapter_option:
        argv += ["--adapter-option", pair]
    if args.profile:
        argv += ["--profile", str(args.profile)]
    if getattr(args, "strict", False):
        argv.append("--strict-levels")
    if args.keyword:
        argv += ["-k", args.keyword]
    if args.workers is not None:
        # xdist stops replacing crashed workers after 4 per worker by default, and the
        # scenarios left unrun would be results lost: each crash is a verdict, so keep going.
        argv += ["-n", str(args.workers), "--max-worker-restart", str(MAX_WORKER_RESTARTS)]
    if args.scenario_timeout_ms is not None:
        argv += ["--scenario-timeout-ms", str(args.scenario_timeout_ms)]
    if args.keep_trace:
        argv.append("--keep-trace")
    if args.repeat != 1:
        argv += ["--repeat", str(args.repeat)]
    for path in paths:
        # Positional so pytest derives rootdir from the corpus; --scenarios so YAML there is
        # collected even when the folder is not called "scenarios".
        argv += ["--scenarios", str(path)]
    argv += [str(p) for p in paths]
    return argv


def counts_as_failure(result: Any, strict: bool) -> bool:
    """Level grading, as conformance/policy.py decides (docs/ci.md)."""
    from conformance.policy import fails_run

    return fails_run(result, strict)


def load_profile_arg(value: str | None) -> Any:
    """``--profile`` loaded, or None; a missing or malformed profile is a usage error (located)."""
    if not value:
        return None
    from conformance.profile import ProfileError, load

    try:
        return load(value)
    except (ProfileError, ValueError) as exc:
        raise UsageError(f"--profile: {exc}") from None


def run_adapter(explicit: str | None, profile: Any) -> str:
    if profile is not None and profile.adapter and explicit and explicit != profile.adapter:
        raise UsageError(f"--profile {profile.name} describes adapter {profile.adapter!r}, not {explicit!r} "
                         "(drop --adapter or pick another profile)")
    return explicit or (profile.adapter if profile is not None and profile.adapter else "simulator")


def print_summary(results: Sequence[Any], strict: bool, elapsed: float, report_dir: Path, out: TextIO) -> None:
    from conformance.reports.text import counts, reason

    adapters = ", ".join(sorted({r.adapter for r in results})) or "-"
    print(f"\nsspi-conformance: {len(results)} scenarios on {adapters} in {elapsed:.2f} s", file=out)
    tally = counts(results)
    width = max(len(v) for v in tally)
    print(f"  {'verdict':<{width}}  count", file=out)
    for verdict, n in tally.items():
        if n:
            print(f"  {verdict:<{width}}  {n:>5}", file=out)
    failing = [r for r in results if counts_as_failure(r, strict)]
    from conformance.policy import is_graded_out

    graded = [r for r in results if is_graded_out(r, strict)]
    if failing:
        print("failures:", file=out)
        for r in failing:
            print(f"  {r.id} [{r.verdict.value}] {reason(r)}", file=out)
    if graded:
        print("should/may-level failures (not failing the run without --strict):", file=out)
        for r in graded:
            print(f"  {r.id} [{r.level}] {reason(r)}", file=out)
    print(f"reports: {report_dir}/ (results.jsonl, junit.xml, summary.md, report.html)", file=out)


def execute_run(args: argparse.Namespace, out: TextIO) -> RunOutcome:
    """Check the inputs, run pytest in-process with the plugin, grade the results.

    The corpus is loaded once, by pytest's collection: a load error there is a collection
    error, which pytest reports with its location and which maps to exit code 2.
    """
    import pytest

    from adapters.registry import loads_foreign_code
    from conformance.reports.jsonl import RESULTS_NAME, read_results

    paths = corpus_paths(args.paths)
    profile = load_profile_arg(args.profile)
    if profile is not None:
        args.profile = str(Path(profile.file).resolve())  # workers load the same file, whatever the working directory
    adapter = run_adapter(args.adapter, profile)
    options = dict(profile.adapter_options) if profile is not None else {}
    options.update(parse_options(args.adapter_option))
    if args.workers is not None and args.workers != "auto" and not str(args.workers).isdigit():
        raise UsageError(f"-n expects a number of workers or 'auto', got {args.workers!r}")
    if args.scenario_timeout_ms is not None and args.scenario_timeout_ms <= 0:
        raise UsageError("--scenario-timeout-ms must be positive")
    if args.repeat < 1:
        raise UsageError("--repeat must be at least 1")
    check_adapter(adapter, options)
    if args.workers is None and loads_foreign_code(adapter, options):
        # The implementation would run inside this process, where a crash ends the run and
        # loses the reports.  One xdist worker keeps a process in between: a crash kills the
        # worker, xdist starts another, the scenario gets the verdict ``crashed``, the run goes on.
        args.workers = "1"
        print(f"sspi-conformance: adapter {adapter!r} runs the implementation in process; scenarios run in "
              "one worker process so that a crash becomes a verdict (-n 0 runs them here)", file=sys.stderr)
    report_dir = Path(args.report_dir).resolve()
    args.report_dir = report_dir
    results_path = report_dir / RESULTS_NAME
    started = time.perf_counter()
    code = int(pytest.main(pytest_args(args, paths)))
    elapsed = time.perf_counter() - started
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        raise UsageError("no scenario selected")
    if code == pytest.ExitCode.USAGE_ERROR:
        raise UsageError("invalid arguments (see above)")
    if code == pytest.ExitCode.INTERRUPTED:
        print("sspi-conformance: run interrupted (scenario load errors are listed above)", file=sys.stderr)
        return RunOutcome(EXIT_USAGE, [])
    if code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        return RunOutcome(EXIT_INTERNAL, [])
    results = read_results(results_path)
    print_summary(results, args.strict, elapsed, report_dir, out)
    if not results:
        print("sspi-conformance: no result recorded", file=sys.stderr)
        return RunOutcome(EXIT_INTERNAL, results)
    from conformance.policy import exit_code

    return RunOutcome(exit_code(results, args.strict), results)


def cmd_run(args: argparse.Namespace) -> int:
    return execute_run(args, sys.stdout).code


# ---- list ----------------------------------------------------------------------------------------


def add_list(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATHS", help="scenario files or folders (default: scenarios/)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (docs/cli.md)")
    parser.add_argument("--requirements", action="store_true",
                        help="the coverage matrix: every catalogue ID and the scenarios citing it")
    parser.add_argument("--profile", metavar="P",
                        help="show what a profile does with each scenario (run, skip, xfail, unsupported)")


def profile_disposition(profile: Any, scenario: Any) -> str:
    """``run``, ``skip: why``, ``xfail: why`` or ``unsupported: ...`` under ``profile``."""
    from conformance.profile import completion_modes

    expectation = profile.expectation_for(scenario.id)
    if expectation is not None and expectation.kind == "skip":
        return expectation.describe()
    missing = profile.missing(scenario.needs, completion_modes(scenario))
    if missing:
        return f"unsupported: profile does not declare {', '.join(missing)}"
    return expectation.describe() if expectation is not None else "run"


def scenario_entry(scenario: Any) -> dict[str, Any]:
    return {
        "id": scenario.id,
        "title": scenario.title,
        "file": str(scenario.file),
        "line": scenario.line,
        "level": scenario.level,
        "requirements": list(scenario.requirements),
        "tags": list(scenario.tags),
        "requires": list(getattr(scenario, "requires", ())),
    }


def requirement_matrix(scenarios: Sequence[Any]) -> dict[str, Any]:
    """{"requirements": {ID: [scenario ids]}, "uncatalogued": {...}, "total": n, "covered": n}."""
    from conformance.requirements import load_catalogue

    catalogue = load_catalogue()
    matrix: dict[str, list[str]] = {rid: [] for rid in catalogue}
    uncatalogued: dict[str, list[str]] = {}
    for scenario in scenarios:
        for rid in scenario.requirements:
            (matrix if rid in matrix else uncatalogued).setdefault(rid, []).append(scenario.id)
    return {
        "requirements": matrix,
        "uncatalogued": uncatalogued,
        "total": len(matrix),
        "covered": sum(1 for ids in matrix.values() if ids),
    }


def cmd_list(args: argparse.Namespace) -> int:
    from conformance.scenario.loader import load_corpus

    profile = load_profile_arg(args.profile)
    scenarios, errors = load_corpus(corpus_paths(args.paths))
    scenarios = sorted(scenarios, key=lambda s: s.id)
    if args.requirements:
        matrix = requirement_matrix(scenarios)
        if args.json:
            print(json.dumps(matrix, indent=2))
        else:
            for rid, ids in matrix["requirements"].items():
                print(f"{rid:<10} {len(ids):>3}  {', '.join(ids)}")
            for rid, ids in matrix["uncatalogued"].items():
                print(f"{rid:<10} {len(ids):>3}  {', '.join(ids)}  (not in the catalogue)")
            print(f"{matrix['covered']} of {matrix['total']} requirements covered", file=sys.stderr)
    elif args.json:
        entries = [scenario_entry(s) for s in scenarios]
        if profile is not None:
            for entry, scenario in zip(entries, scenarios, strict=True):
                entry["profile"] = profile_disposition(profile, scenario)
        print(json.dumps({"scenarios": entries}, indent=2))
    else:
        width = max((len(s.id) for s in scenarios), default=2)
        for s in scenarios:
            extra = f"  [{profile_disposition(profile, s)}]" if profile is not None else ""
            print(f"{s.id:<{width}}  {s.level:<6}  {','.join(s.requirements):<24}  {s.title}{extra}")
        print(f"{len(scenarios)} scenarios", file=sys.stderr)
    print_load_errors(errors, sys.stderr)
    return EXIT_USAGE if errors else EXIT_OK


# ---- validate ------------------------------------------------------------------------------------


def add_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATHS", help="scenario files or folders (default: scenarios/)")


def cmd_validate(args: argparse.Namespace) -> int:
    from conformance.scenario.loader import expand_paths, validate_paths

    paths = corpus_paths(args.paths)
    errors = validate_paths(paths)
    print_load_errors(errors, sys.stdout)
    files = len(expand_paths(paths))
    if errors:
        print(f"{len(errors)} error(s) in {files} file(s)", file=sys.stderr)
        return EXIT_USAGE
    print(f"{files} scenario file(s) valid", file=sys.stderr)
    return EXIT_OK


# ---- serve ---------------------------------------------------------------------------------------

AGENT_MODULE = "adapters.remote.agent"


def add_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("agent_args", nargs=argparse.REMAINDER, help="arguments for the remote agent")


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        found = importlib.util.find_spec(AGENT_MODULE) is not None
    except ImportError:
        found = False
    if not found:
        print(f"sspi-conformance serve: the remote agent ({AGENT_MODULE}) is not available", file=sys.stderr)
        return EXIT_USAGE
    agent = importlib.import_module(AGENT_MODULE)
    try:
        code = agent.main(list(args.agent_args))
    except SystemExit as exc:  # the agent's argparse: --help or a usage error
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
    return int(code or 0)


# ---- diff ----------------------------------------------------------------------------------------


def add_diff(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="SCENARIO", help="scenario files or folders")
    parser.add_argument("--left", default="simulator", help="first adapter (default: simulator)")
    parser.add_argument("--right", default="native", help="second adapter (default: native)")
    parser.add_argument("--left-option", action="append", default=[], metavar="K=V", help="left adapter option")
    parser.add_argument("--right-option", action="append", default=[], metavar="K=V", help="right adapter option")


def cmd_diff(args: argparse.Namespace) -> int:
    """Exit 0: no divergence; 1: at least one scenario diverged; 2: usage or input errors."""
    from adapters.registry import create_adapter
    from conformance.differential import compare
    from conformance.scenario.loader import load_corpus

    sides = []
    for name, pairs in ((args.left, args.left_option), (args.right, args.right_option)):
        options = parse_options(pairs)
        check_adapter(name, options)
        sides.append((name, lambda n=name, o=options: create_adapter(n, o)))
    scenarios, errors = load_corpus(corpus_paths(args.paths))
    print_load_errors(errors, sys.stderr)
    if errors:
        return EXIT_USAGE
    if not scenarios:
        raise UsageError("no scenario found")
    diverged = 0
    for scenario in sorted(scenarios, key=lambda s: s.id):
        comparison = compare(scenario, sides[0], sides[1])
        diverged += comparison.diverged
        print(comparison.report())
    print(f"{diverged} of {len(scenarios)} scenario(s) diverged", file=sys.stderr)
    return EXIT_FAILURES if diverged else EXIT_OK


# ---- fuzz ----------------------------------------------------------------------------------------


def add_fuzz(parser: argparse.ArgumentParser) -> None:
    from conformance.fuzz.command import add_arguments

    add_arguments(parser)


def cmd_fuzz(args: argparse.Namespace) -> int:
    """Exit 0: nothing found; 1: a failure was found; 2: usage errors (conformance/fuzz/command.py)."""
    from conformance.fuzz.command import run

    return run(args)


# ---- bless ---------------------------------------------------------------------------------------


def add_bless(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", required=True, metavar="FILE",
                        help="the profile to rewrite (a file, or a built-in name)")
    parser.add_argument("--results", default="reports/results.jsonl", metavar="FILE",
                        help="results of the last run (default: reports/results.jsonl)")
    parser.add_argument("--no-pin", action="store_true", help="add new xfail entries without pinning their failure")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when the profile is not up to date with the results")


def cmd_bless(args: argparse.Namespace) -> int:
    """Exit 0: rewritten (or already current); 1: --check found changes; 2: usage or input errors."""
    from conformance.bless import bless
    from conformance.profile import ProfileError, resolve
    from conformance.reports.jsonl import JsonlError, read_results

    try:
        path = resolve(args.profile)
    except ValueError as exc:
        raise UsageError(f"--profile: {exc}") from None
    results_path = Path(args.results)
    if not results_path.is_file():
        raise UsageError(f"--results: no such file: {results_path} (run the suite first)")
    try:
        results = read_results(results_path)
    except (JsonlError, OSError) as exc:
        raise UsageError(f"--results: {exc}") from None
    if not results:
        raise UsageError(f"--results: {results_path} holds no result")
    try:
        report = bless(path, results, pin_new=not args.no_pin, dry_run=args.check)
    except ProfileError as exc:
        raise UsageError(f"--profile: {exc}") from None
    for line in report.lines():
        print(line)
    if args.check:
        return EXIT_FAILURES if report.changed else EXIT_OK
    print(f"{'rewrote' if report.changed else 'unchanged:'} {path}", file=sys.stderr)
    return EXIT_OK


# ---- report --------------------------------------------------------------------------------------


def add_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", nargs="+", metavar="RESULTS",
                        help="results.jsonl files (or report folders holding one), one per implementation run")
    parser.add_argument("--out", default="matrix", metavar="DIR", help="output folder (default: matrix)")
    parser.add_argument("--strict", action="store_true", help="grade should/may-level failures as failing")


def cmd_report(args: argparse.Namespace) -> int:
    """Exit 0: matrix written; 2: unreadable input."""
    from conformance.matrix import MatrixError, build_matrix, write_matrix

    try:
        matrix = build_matrix([Path(p) for p in args.results], strict=args.strict)
    except MatrixError as exc:
        raise UsageError(str(exc)) from None
    paths = write_matrix(matrix, Path(args.out))
    print(f"{len(matrix.scenarios)} scenarios x {len(matrix.runs)} runs: "
          f"{', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return EXIT_OK


# ---- entry point ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = [
    Command("run", "run scenarios against an adapter and write reports", add_run, cmd_run),
    Command("list", "list scenarios, or the requirement coverage matrix", add_list, cmd_list),
    Command("validate", "check scenario files; print load errors as file:line:col: message", add_validate,
            cmd_validate),
    Command("serve", "run the remote adapter agent (adapters.remote.agent)", add_serve, cmd_serve),
    Command("diff", "run scenarios on two adapters and report the first divergence", add_diff, cmd_diff),
    Command("fuzz", "property-based fuzzing of call order and completion timing (docs/fuzzing.md)", add_fuzz,
            cmd_fuzz),
    Command("bless", "rewrite a profile's expectations from the last run's results (docs/ci.md)", add_bless,
            cmd_bless),
    Command("report", "merge several runs into one scenario x implementation matrix (HTML, Markdown)", add_report,
            cmd_report),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sspi-conformance",
        description="Conformance suite for implementations of the asynchronous SSPI API.",
        epilog="exit codes: 0 passed, 1 failures, 2 usage or input errors, 3 internal error",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        sub_parser = sub.add_parser(command.name, help=command.help, description=command.help)
        command.add_arguments(sub_parser)
        sub_parser.set_defaults(handler=command.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        # Everything after "serve" belongs to the agent, options included.
        return _guarded(cmd_serve, argparse.Namespace(agent_args=argv[1:]))
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: 0 for --help/--version, 2 for a usage error
        return int(exc.code or 0) if isinstance(exc.code, int) else EXIT_USAGE
    return _guarded(args.handler, args)


def _guarded(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return handler(args)
    except UsageError as exc:
        print(f"sspi-conformance: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sspi-conformance: interrupted", file=sys.stderr)
        return EXIT_USAGE
    except Exception:  # anything else is our bug: say so, with the evidence
        print("sspi-conformance: internal error", file=sys.stderr)
        traceback.print_exc()
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
