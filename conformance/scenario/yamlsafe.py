"""Hostile-input-safe YAML: plain data plus the line and column of every key and value.

* Only the safe scalar types are constructed (``yaml.SafeLoader`` resolution).
* Aliases are rejected outright (and, with the pure-Python composer, anchors too), so an
  alias bomb never expands.
* Duplicate mapping keys are an error (PyYAML silently keeps the last one).
* Nesting is bounded, so a deeply nested document cannot exhaust the stack.
* Every error is raised as :class:`LoadError` at the offending node.

The result is ``(value, Locations)``.  ``Locations`` maps a path (the same tuple of keys and
indices that ``jsonschema`` reports as ``absolute_path``) to the node's position; keys have
their own table so "unknown key" errors can point at the key itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from conformance.scenario.errors import LoadError

MAX_DEPTH = 64
_NO_ALIASES = "YAML anchors and aliases are not allowed in scenarios"
Path = tuple[Any, ...]
Position = tuple[int, int]


@dataclass(slots=True)
class Locations:
    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def of(self, path: Path) -> Position:
        """The position of the node at ``path``, or of its nearest located ancestor."""
        path = tuple(path)
        while path:
            found = self.values.get(path)
            if found is not None:
                return found
            path = path[:-1]
        return self.values.get((), (1, 1))

    def key(self, path: Path) -> Position:
        """The position of the mapping key that ends ``path`` (its value's when unknown)."""
        return self.keys.get(tuple(path)) or self.of(path)


class _Located(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark is not None else 1
        self.column = mark.column + 1 if mark is not None else 1
        self.message = message


class _Loader(yaml.SafeLoader):
    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise _Located(event.start_mark, f"{_NO_ALIASES} (alias *{event.anchor})")
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            raise _Located(event.start_mark, f"{_NO_ALIASES} (anchor &{anchor})")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Located(event.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# libyaml when PyYAML was built with it: about ten times faster than the pure-Python composer.
# It bounds nesting itself (1000 levels); aliases are caught in _convert by node identity.
_FastLoader: Any = getattr(yaml, "CSafeLoader", None) if getattr(yaml, "__with_libyaml__", False) else None


def _position(node: yaml.Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("null", "bool", "int", "float", "str", "map", "seq"))


def _convert(loader: Any, node: yaml.Node, path: Path, locs: Locations, seen: set[int], depth: int) -> Any:
    if id(node) in seen:
        # libyaml's composer shares the anchored node with every alias: refuse the reuse
        # before walking it again (which is how an alias bomb would expand).
        raise _Located(node.start_mark, f"{_NO_ALIASES} (this anchored node is reused)")
    seen.add(id(node))
    if depth > MAX_DEPTH:
        raise _Located(node.start_mark, f"nesting deeper than {MAX_DEPTH} levels")
    locs.values[path] = _position(node)
    if node.tag not in _TAGS:
        raise _Located(node.start_mark, f"YAML tag {node.tag!r} is not allowed in scenarios")
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Located(key_node.start_mark, "mapping keys must be plain scalars")
            key = loader.construct_object(key_node)
            if not isinstance(key, (str, int, bool)) and key is not None:
                raise _Located(key_node.start_mark, f"mapping key {key!r} must be a string")
            if key is None or isinstance(key, bool):
                key = key_node.value  # `null:`/`yes:` as a key means the word, not the value
            child = (*path, key)
            if key in result:
                first = locs.keys.get(child, (0, 0))[0]
                raise _Located(key_node.start_mark, f"duplicate key {key!r} (first at line {first})")
            locs.keys[child] = _position(key_node)
            result[key] = _convert(loader, value_node, child, locs, seen, depth + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(loader, item, (*path, i), locs, seen, depth + 1) for i, item in enumerate(node.value)]
    return loader.construct_object(node)


def _offset_position(text: bytes, offset: int) -> Position:
    line = text.count(b"\n", 0, offset) + 1
    return line, offset - (text.rfind(b"\n", 0, offset) + 1) + 1


def parse_yaml(data: bytes, file: str) -> tuple[Any, Locations]:
    """Parse one YAML document; LoadError (located) for anything unsafe or malformed."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, column = _offset_position(data, exc.start)
        raise LoadError(file, line, column, "file is not valid UTF-8") from None
    locs = Locations()
    loader = _FastLoader(text) if _FastLoader is not None else _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise LoadError(file, 1, 1, "the file is empty; a scenario is a mapping")
        value = _convert(loader, node, (), locs, set(), 1)
    except _Located as exc:
        raise LoadError(file, exc.line, exc.column, exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        problem = exc.problem or exc.context or "malformed YAML"
        if exc.problem and exc.context:
            at = f" at line {exc.context_mark.line + 1}" if exc.context_mark is not None else ""
            problem = f"{exc.problem} ({exc.context}{at})"
        raise LoadError(file, line, column, f"YAML syntax error: {problem}") from None
    except yaml.reader.ReaderError as exc:
        prefix = text[: exc.position].encode("utf-8")
        line, column = _offset_position(prefix, len(prefix))
        raise LoadError(file, line, column, f"YAML syntax error: unacceptable character {exc.character!r}") from None
    except (yaml.YAMLError, RecursionError, ValueError, OverflowError) as exc:
        raise LoadError(file, 1, 1, f"YAML error: {type(exc).__name__}: {exc}".splitlines()[0]) from None
    finally:
        dispose = getattr(loader, "dispose", None)
        if dispose is not None:
            dispose()
    return value, locs
