"""``python -m benchmarks NAME``: run benchmarks/NAME.py's main() and print its JSON."""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys

import benchmarks


def _names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_"))


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in _names():
        print(f"usage: python -m benchmarks NAME   (NAME one of: {', '.join(_names())})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{argv[0]}")
    result = module.main()
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
