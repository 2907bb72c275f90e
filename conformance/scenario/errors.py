"""The one error type the loader reports: a message pinned to ``file:line:col``."""

from __future__ import annotations


class LoadError(Exception):
    """A malformed scenario, located at the YAML node that is wrong (1-based line/column)."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{column}: {message}")
        self.file = file
        self.line = line
        self.column = column
        self.message = message

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"

    def __reduce__(self) -> tuple[type[LoadError], tuple[str, int, int, str]]:
        # Pickled across pytest-xdist workers / multiprocessing: keep all four fields.
        return (LoadError, (self.file, self.line, self.column, self.message))
