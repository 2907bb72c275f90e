"""The reference simulator adapter (``--adapter simulator``).

Options (``--adapter-option KEY=VALUE``):

* ``completion``: ``inline`` | ``deferred`` | ``threaded`` (default ``threaded``: completion on
  worker threads after a seeded random delay, OQ-2).
* ``seed``: integer seed of the completion delays (default 0).
* ``max_delay_ms``: upper bound of the threaded completion delay (default 2).
* ``workers``: completion threads in threaded mode (default 2).
* ``profile``: ``kernel`` (default) or ``user`` (OQ-17/OQ-18 behaviour of the TLS package).
* ``detect_misuse``: ``true`` (default) | ``false``.
* ``mutant``: the name of a deliberately faulty variant (``adapters.simulator.mutants``),
  used to measure the suite's power to find bugs.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.api import Adapter
from adapters.simulator.adapter import AsyncContext, Credential, SecurityContext, SimulatorAdapter

__all__ = ["AsyncContext", "Credential", "SecurityContext", "SimulatorAdapter", "create"]

_BOOL = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def create(options: Mapping[str, str] | None = None) -> Adapter:
    """Build a simulator from string options; ValueError names the bad option."""
    opts = dict(options or {})
    try:
        kwargs = {
            "completion": opts.pop("completion", "threaded"),
            "seed": int(opts.pop("seed", "0")),
            "max_delay_ms": float(opts.pop("max_delay_ms", "2")),
            "workers": int(opts.pop("workers", "2")),
            "detect_misuse": _BOOL[str(opts.pop("detect_misuse", "true")).lower()],
        }
        profile = opts.pop("profile", "kernel")
    except (ValueError, KeyError) as exc:
        raise ValueError(f"bad simulator option: {exc}") from None
    if profile not in ("kernel", "user"):
        raise ValueError(f"simulator option profile must be 'kernel' or 'user', not {profile!r}")
    if kwargs["completion"] not in ("inline", "deferred", "threaded"):
        raise ValueError(
            f"simulator option completion must be inline, deferred or threaded, not {kwargs['completion']!r}"
        )
    mutant = opts.pop("mutant", None)
    if opts:
        raise ValueError(f"unknown simulator option(s): {', '.join(sorted(opts))}")
    cls: type[SimulatorAdapter] = SimulatorAdapter
    if mutant:
        from adapters.simulator.mutants import MUTANTS

        if mutant not in MUTANTS:
            raise ValueError(f"unknown mutant {mutant!r} (known: {', '.join(sorted(MUTANTS))})")
        cls = MUTANTS[mutant].cls
    return cls(kernel_mode=(profile == "kernel"), **kwargs)  # type: ignore[arg-type]
