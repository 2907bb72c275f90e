"""async-sspi-conformance: the engine (scenarios, runner, monitor, fuzzing, reports)."""

__version__ = "0.1.0"
