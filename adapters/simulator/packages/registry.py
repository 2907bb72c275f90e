"""Which security packages the simulator knows, by module, imported on first use.

Optional packages (TLS needs ``cryptography``/``trustme``, NTLM needs ``pyspnego``) are
skipped when their dependencies are missing; the simulator then simply does not claim them.
"""

from __future__ import annotations

import importlib

from adapters.simulator.packages.base import SecurityPackage

# module path, class name
AVAILABLE: tuple[tuple[str, str], ...] = (
    ("adapters.simulator.packages.sim", "HandshakePackage"),
    ("adapters.simulator.packages.tls", "TlsPackage"),
    ("adapters.simulator.packages.ntlm", "NtlmPackage"),
)


def package_classes() -> list[type[SecurityPackage]]:
    classes: list[type[SecurityPackage]] = []
    for module_name, class_name in AVAILABLE:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        classes.append(getattr(module, class_name))
    return classes
