"""``sspi-conformance fuzz``: arguments, progress and the final summary.

Exit codes: 0 nothing found, 1 at least one failure found, 2 usage errors (bad adapter,
option, budget or database), 3 the fuzzer itself broke (reported with its error).
conformance/cli.py registers :func:`add_arguments` and :func:`run` as the ``fuzz`` subcommand.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import TextIO

from conformance.fuzz.campaign import DEFAULT_DATABASE, CampaignResult, open_database, run_campaign

EXIT_OK, EXIT_FOUND, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 3


class FuzzUsageError(ValueError):
    """A bad command line: printed as one line, exit code 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--adapter", default="simulator", help="implementation to fuzz (default: simulator)")
    parser.add_argument("--adapter-option", action="append", default=[], metavar="K=V",
                        help="adapter option (repeatable), e.g. mutant=lost-callback")
    parser.add_argument("--seconds", type=float, default=60.0, metavar="N", help="time budget (default: 60)")
    parser.add_argument("--max-examples", type=int, metavar="N", help="stop after N programs (default: no limit)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="campaign seed (default: 0)")
    parser.add_argument("--emit", metavar="DIR", help="write each failure as a regression scenario into DIR")
    parser.add_argument("--database", metavar="DIR|redis://HOST:PORT",
                        help=f"Hypothesis example database (default: {DEFAULT_DATABASE}/; 'none' for no database)")
    parser.add_argument("--steps", type=int, default=50, metavar="N", help="calls per program (default: 50)")
    parser.add_argument("--no-threaded", action="store_true", help="never switch to threaded completion")
    parser.add_argument("--stop-on-first", action="store_true", help="end the campaign at the first failure")
    parser.add_argument("-q", "--quiet", action="store_true", help="only the final summary")


def parse_options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise FuzzUsageError(f"--adapter-option expects KEY=VALUE, got {pair!r}")
        options[key.strip()] = value
    return options


def _check(args: argparse.Namespace, options: dict[str, str]) -> None:
    from adapters.api import AdapterError
    from adapters.registry import create_adapter

    if args.seconds <= 0:
        raise FuzzUsageError("--seconds must be positive")
    if args.max_examples is not None and args.max_examples <= 0:
        raise FuzzUsageError("--max-examples must be positive")
    if not 1 <= args.steps <= 1000:
        raise FuzzUsageError("--steps must be between 1 and 1000")
    try:
        probe = create_adapter(args.adapter, options)
    except (ValueError, AdapterError, ImportError, OSError) as exc:
        raise FuzzUsageError(f"adapter {args.adapter!r}: {exc}") from None
    try:
        probe.close()
    except Exception:  # closing the probe is best effort; every program builds its own
        pass


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one campaign as the command line asked; returns the exit code."""
    out = out or sys.stdout
    try:
        options = parse_options(args.adapter_option)
        _check(args, options)
        database = open_database(args.database)
    except (FuzzUsageError, ValueError) as exc:
        print(f"sspi-conformance fuzz: {exc}", file=sys.stderr)
        return EXIT_USAGE
    shown = " ".join(f"{k}={v}" for k, v in sorted(options.items()))
    print(f"fuzzing {args.adapter}{' ' + shown if shown else ''} for {args.seconds:g}s"
          f"{f' or {args.max_examples} programs' if args.max_examples else ''} (seed {args.seed})", file=out)
    result = run_campaign(
        args.adapter,
        options,
        seconds=args.seconds,
        max_examples=args.max_examples,
        seed=args.seed,
        emit=args.emit,
        database=database,
        stop_on_first=args.stop_on_first,
        step_count=args.steps,
        threaded=not args.no_threaded,
        progress=None if args.quiet else (lambda line: print(line, file=out, flush=True)),
    )
    print_summary(result, out)
    if result.failures:
        return EXIT_FOUND
    return EXIT_INTERNAL if result.errors else EXIT_OK


def print_summary(result: CampaignResult, out: TextIO) -> None:
    print("", file=out)
    print(f"{result.examples} programs, {result.calls} API calls in {result.seconds:.1f}s "
          f"({result.calls_per_s:.0f} calls/s)", file=out)
    if result.errors:
        for error in result.errors:
            print(f"fuzzer error: {error}", file=out)
    if not result.failures:
        print("no failure found", file=out)
        return
    counts = Counter(f.requirement for f in result.failures)
    print(f"{len(counts)} unique failure(s) by requirement:", file=out)
    for failure in result.failures:
        where = f"  -> {failure.path}" if failure.path else ""
        print(f"  {failure.requirement:10s} {failure.message} ({len(failure.steps)} steps, "
              f"after {failure.seconds:.1f}s){where}", file=out)
        if failure.blob:
            print(f"             {failure.blob}", file=out)
