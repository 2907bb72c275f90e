"""Adapters by name.  Each adapter package exposes ``create(options) -> Adapter``.

Options arrive as strings (``--adapter-option KEY=VALUE``); each adapter parses its own
and raises ValueError with a clear message for an unknown key or a bad value.

An adapter package may also expose ``loads_foreign_code(options) -> bool``: True when the
adapter, so configured, runs an implementation's machine code inside the calling process,
where a crash takes the caller down with it (the runner then keeps a process between them).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from adapters.api import Adapter

ADAPTERS: dict[str, str] = {
    "simulator": "adapters.simulator",
    "native": "adapters.native",
    "remote": "adapters.remote",
}


def create_adapter(name: str, options: Mapping[str, str] | None = None) -> Adapter:
    """Build the adapter called ``name``; ValueError for an unknown name or option."""
    try:
        module_name = ADAPTERS[name]
    except KeyError:
        raise ValueError(f"unknown adapter {name!r} (known: {', '.join(ADAPTERS)})") from None
    module = importlib.import_module(module_name)
    adapter: Adapter = module.create(dict(options or {}))
    return adapter


def loads_foreign_code(name: str, options: Mapping[str, str] | None = None) -> bool:
    """Whether adapter ``name`` with ``options`` runs implementation code in this process."""
    module_name = ADAPTERS.get(name)
    if module_name is None:
        return False
    probe = getattr(importlib.import_module(module_name), "loads_foreign_code", None)
    return bool(probe(dict(options or {}))) if probe is not None else False
