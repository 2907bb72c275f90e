"""Scenario files: the typed model and the loader (docs/scenarios.md)."""

from conformance.scenario.errors import LoadError
from conformance.scenario.loader import MAX_BYTES, expand_paths, load_corpus, load_scenario, validate_paths
from conformance.scenario.model import Scenario, StatusSet, Step

__all__ = [
    "MAX_BYTES",
    "LoadError",
    "Scenario",
    "StatusSet",
    "Step",
    "expand_paths",
    "load_corpus",
    "load_scenario",
    "validate_paths",
]
