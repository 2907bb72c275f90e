"""What one fuzzing campaign drives, and the record of the run Hypothesis executed last."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Run:
    """The steps of one state-machine run, in the scenario format (docs/scenarios.md).

    Every API call a rule makes is recorded with the reference simulator's answer as its
    expectation, so the steps of a failing run are a regression scenario as they stand.
    """

    steps: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0  # API calls made on the implementation under test
    finding: Any = None  # the ContractFinding that ended the run, if any
    final: bool = False  # Hypothesis' final replay (the minimal failing example)
    controlled: bool = False  # the implementation let the machine decide completion order
    package: str = "Sim"  # the security package the programs used


@dataclass
class FuzzConfig:
    """Which implementation the state machine drives and how.

    ``misuse``: whether rules may commit caller misuse (queue while pending, double free,
    use after free...).  None means "when the adapter claims misuse-detection": misuse of a
    native implementation is undefined behaviour, not a conformance question.
    ``threaded``: whether the rules may switch the completion mode to threaded.
    ``ignore``: requirement IDs already found in this campaign; a run that hits one stops
    quietly so the campaign can look for different failures.
    """

    adapter: str = "simulator"
    options: dict[str, str] = field(default_factory=dict)
    package: str = "Sim"
    misuse: bool | None = None
    threaded: bool = True
    wait_timeout: float = 1.0  # threaded completion: how long a callback may take to come
    ignore: frozenset[str] = frozenset()
    # Filled in while running: the run in progress (the minimal one after a failure) and totals.
    current: Run = field(default_factory=Run)
    total_calls: int = 0
    runs: int = 0

    def target_options(self) -> dict[str, str]:
        """Adapter options; the simulator starts deferred so the machine owns completion order."""
        options = dict(self.options)
        if self.adapter == "simulator":
            options.setdefault("completion", "deferred")
        return options
