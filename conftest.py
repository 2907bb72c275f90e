"""Root conftest: make the conformance pytest plugin active in a checkout that is not installed.

An installed package (``pip install -e .``) registers the plugin through its ``pytest11``
entry point; registering the same module again here would be an error, so this only
names the plugin when no such entry point will be loaded.
"""

from __future__ import annotations

import os
from importlib.metadata import entry_points


def _entry_point_active() -> bool:
    # Same rule as conformance.pytest_plugin.entry_point_installed(), repeated here so that
    # importing this conftest never imports the engine.
    if os.environ.get("PYTEST_DISABLE_PLUGIN_AUTOLOAD"):
        return False
    return any(ep.name == "sspi_conformance" for ep in entry_points(group="pytest11"))


pytest_plugins = [] if _entry_point_active() else ["conformance.pytest_plugin"]
