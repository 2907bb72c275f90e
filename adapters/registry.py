"""Adapters by name.  Each adapter package exposes ``create(options) -> Adapter``.

Options arrive as strings (``--adapter-option KEY=VALUE``); each adapter parses its own
and raises ValueError with a clear message for an unknown key or a bad value.
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
