"""The state machine as an ordinary Hypothesis test, for HypoFuzz and plain pytest.

HypoFuzz runs long campaigns across processes and shares what it finds through the
example database::

    SSPI_FUZZ_ADAPTER=simulator SSPI_FUZZ_OPTIONS="mutant=lost-callback" \\
        hypothesis fuzz --numprocesses 2 -- conformance/fuzz/hypofuzz_target.py

Environment: ``SSPI_FUZZ_ADAPTER`` (default ``simulator``), ``SSPI_FUZZ_OPTIONS``
(comma-separated ``KEY=VALUE`` adapter options), ``SSPI_FUZZ_STEPS`` (calls per program,
default 50).  A failure is reported as a :class:`~conformance.fuzz.findings.ContractFinding`
naming the broken requirement; ``sspi-conformance fuzz --emit`` turns it into a scenario.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from conformance.fuzz.config import FuzzConfig
from conformance.fuzz.machine import build_machine


def config_from_env(environ: dict[str, str] | None = None) -> FuzzConfig:
    """The fuzz configuration the environment asks for (ValueError on a malformed option)."""
    env = dict(os.environ if environ is None else environ)
    options: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in env.get("SSPI_FUZZ_OPTIONS", "").split(","))):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"SSPI_FUZZ_OPTIONS: expected KEY=VALUE, got {pair!r}")
        options[key.strip()] = value.strip()
    return FuzzConfig(adapter=env.get("SSPI_FUZZ_ADAPTER", "simulator"), options=options)


AsyncSspiMachine = build_machine(config_from_env())
AsyncSspiMachine.TestCase.settings = settings(
    deadline=None,
    suppress_health_check=list(HealthCheck),
    stateful_step_count=int(os.environ.get("SSPI_FUZZ_STEPS", "50")),
)
TestAsyncSspi = AsyncSspiMachine.TestCase
