"""The verdict policy: which results fail a run, and the exit code that follows (docs/ci.md).

This is the one place that decides.  The CLI (``sspi-conformance run``), the pytest plugin
(its session exit status), the reports (the summary headline) and the matrix all call
:func:`fails_run` / :func:`exit_code`, so a verdict can never mean "failed" in one place and
"passed" in another.

Each verdict has one rule:

* ``never``: the result never fails a run (pass, xfail, unsupported, skip);
* ``graded``: it fails the run for a ``must`` scenario, and for a ``should``/``may``
  scenario only with ``--strict`` (a plain ``fail``);
* ``always``: it fails the run whatever the level (xpass -- the profile is stale --, crashed,
  hung, and error -- the harness or the scenario is broken).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from conformance.results import Verdict

EXIT_OK = 0
EXIT_FAILURES = 1

NEVER = "never"
GRADED = "graded"
ALWAYS = "always"

LEVELS = ("must", "should", "may")


@dataclass(frozen=True, slots=True)
class Rule:
    verdict: Verdict
    grading: str  # NEVER | GRADED | ALWAYS
    meaning: str


# Report order (worst first) is VERDICT_ORDER in conformance.reports.text; this is doc order.
RULES: tuple[Rule, ...] = (
    Rule(Verdict.PASS, NEVER, "every step met its expectation, no contract violation"),
    Rule(Verdict.FAIL, GRADED, "a step, a completion or the contract monitor found non-conformance"),
    Rule(Verdict.UNSUPPORTED, NEVER, "the implementation (or its profile) does not claim a needed capability"),
    Rule(Verdict.SKIP, NEVER, "skipped by a profile expectation"),
    Rule(Verdict.XFAIL, NEVER, "failed as the profile expects (and as pinned, when pinned)"),
    Rule(Verdict.XPASS, ALWAYS, "passed although the profile expects a failure: the profile is stale"),
    Rule(Verdict.CRASHED, ALWAYS, "the implementation died"),
    Rule(Verdict.HUNG, ALWAYS, "the implementation stopped answering"),
    Rule(Verdict.ERROR, ALWAYS, "the scenario or the harness is broken (not the implementation)"),
)
RULE_OF: dict[Verdict, Rule] = {rule.verdict: rule for rule in RULES}

# Verdicts that count as failing in reports (coverage, "failing" tallies), before grading.
FAILING: frozenset[Verdict] = frozenset(rule.verdict for rule in RULES if rule.grading != NEVER)


class Graded(Protocol):
    """What grading reads from a result (a ScenarioResult, or a row rebuilt from JSON)."""

    @property
    def verdict(self) -> Verdict: ...

    @property
    def level(self) -> str: ...


def is_failing(result: Graded) -> bool:
    """The verdict is a failure of some kind (whether or not it fails the run)."""
    return result.verdict in FAILING


def fails_run(result: Graded, strict: bool = False) -> bool:
    """Whether this result makes the run fail (exit code 1)."""
    rule = RULE_OF[result.verdict]
    if rule.grading == ALWAYS:
        return True
    if rule.grading == GRADED:
        return strict or result.level not in ("should", "may")
    return False


def is_graded_out(result: Graded, strict: bool = False) -> bool:
    """A failing result that does not fail the run: a should/may ``fail`` without --strict."""
    return is_failing(result) and not fails_run(result, strict)


def exit_code(results: Iterable[Graded], strict: bool = False) -> int:
    """0 when no result fails the run, else 1 (usage and internal errors are the CLI's: 2, 3)."""
    return EXIT_FAILURES if any(fails_run(r, strict) for r in results) else EXIT_OK


def policy_table() -> list[tuple[str, str, str, str, str]]:
    """(verdict, meaning, must, should/may, should/may with --strict) rows for docs/ci.md."""

    def word(fails: bool) -> str:
        return "fails the run" if fails else "-"

    rows = []
    for rule in RULES:
        must = fails_run(_Row(rule.verdict, "must"))
        should = fails_run(_Row(rule.verdict, "should"))
        strict = fails_run(_Row(rule.verdict, "should"), strict=True)
        rows.append((rule.verdict.value, rule.meaning, word(must), word(should), word(strict)))
    return rows


@dataclass(frozen=True, slots=True)
class _Row:
    verdict: Verdict
    level: str


__all__ = [
    "ALWAYS",
    "EXIT_FAILURES",
    "EXIT_OK",
    "FAILING",
    "GRADED",
    "LEVELS",
    "NEVER",
    "RULES",
    "RULE_OF",
    "Rule",
    "exit_code",
    "fails_run",
    "is_failing",
    "is_graded_out",
    "policy_table",
]
