"""Implementation profiles: what an implementation claims and which outcomes it expects.

A profile is a YAML file (docs/ci.md) with

* ``implementation``: name and version, shown in every report;
* ``adapter`` / ``adapter_options``: the adapter the profile describes and its default options;
* ``capabilities``: the claims that decide applicability.  When the block is given it
  REPLACES the adapter's own claims, and the claims become mandatory: a scenario whose needs
  are all declared runs, and if the adapter then raises ``Unsupported`` that is a failure;
* ``map``: implementation-specific status codes and the documented statuses they stand for,
  applied to every status before it is compared;
* ``expectations``: per scenario id or glob, ``skip`` (not run) or ``xfail`` (expected to
  fail), optionally ``pin``-ned to the failure seen, so that a failure that changes is caught.

Profiles are loaded with the scenario loader's hostile-input-safe YAML reader and checked
against ``conformance/schema/profile.schema.json``; every problem is a
:class:`~conformance.scenario.errors.LoadError` located at ``file:line:col``.  Built-in
profiles live in ``conformance/profiles/NAME.yaml`` and are selected by name.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jsonschema

from adapters.api import COMPLETION_MODES, FEATURES, Capabilities
from adapters.status import describe, parse
from conformance.results import ScenarioResult, Verdict
from conformance.scenario.errors import LoadError
from conformance.scenario.validate import _located  # the scenario loader's error locator, shared
from conformance.scenario.yamlsafe import Locations, parse_yaml

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "profile.schema.json"
MAX_BYTES = 1024 * 1024
GLOB_CHARS = frozenset("*?[")
PIN_VERDICTS = frozenset({Verdict.FAIL, Verdict.CRASHED, Verdict.HUNG})
# Verdicts an xfail expectation absorbs.  ``error`` is not among them: it says the harness or
# the scenario is broken, which no implementation profile can excuse.
XFAIL_ABSORBS = PIN_VERDICTS


class ProfileError(LoadError):
    """A profile that cannot be used; ``str()`` is ``file:line:col: message``."""


@dataclass(frozen=True, slots=True)
class Pin:
    """The failure an xfail expects, as seen by the last bless: any field given must match."""

    verdict: str | None = None
    step: int | None = None  # 1-based, as in failure messages ("step 4 (line 14) wait ac")
    actual: str | int | None = None  # a status (name or number) or the step's actual text

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("verdict", self.verdict), ("step", self.step), ("actual", self.actual))
                if v is not None}


@dataclass(frozen=True, slots=True)
class Expectation:
    pattern: str  # a scenario id or an fnmatch glob
    kind: str  # "skip" | "xfail"
    reason: str
    pin: Pin | None = None
    line: int = 0

    @property
    def is_glob(self) -> bool:
        return any(c in GLOB_CHARS for c in self.pattern)

    def matches(self, scenario_id: str) -> bool:
        return fnmatch.fnmatchcase(scenario_id, self.pattern) if self.is_glob else scenario_id == self.pattern

    def describe(self) -> str:
        return f"{self.kind}: {self.reason}"


@dataclass(frozen=True)
class Observed:
    """How a failing result failed, in the terms a pin uses."""

    verdict: str
    step: int | None
    actual: str  # the failing step's actual, "" when none

    def pin(self) -> Pin:
        actual: str | None = None
        if self.actual:
            status = _status_in(self.actual)
            actual = _name(status) if status is not None else self.actual
        return Pin(self.verdict, self.step, actual)


@dataclass(frozen=True)
class Profile:
    name: str
    file: str
    implementation: str
    version: str = ""
    description: str = ""
    adapter: str | None = None
    adapter_options: dict[str, str] = field(default_factory=dict)
    capabilities: Capabilities | None = None  # None: the adapter's own claims decide
    completion_modes: frozenset[str] | None = None
    status_map: dict[int, int] = field(default_factory=dict)
    expectations: tuple[Expectation, ...] = ()
    header: str = ""  # leading comment block, kept by bless

    @property
    def label(self) -> str:
        return f"{self.implementation} {self.version}".strip()

    @functools.cached_property
    def _exact(self) -> dict[str, Expectation]:
        return {e.pattern: e for e in self.expectations if not e.is_glob}

    @functools.cached_property
    def _globs(self) -> tuple[Expectation, ...]:
        return tuple(e for e in self.expectations if e.is_glob)

    def expectation_for(self, scenario_id: str) -> Expectation | None:
        """The exact-id entry when there is one, else the first glob that matches (file order)."""
        exact = self._exact.get(scenario_id)
        if exact is not None:
            return exact
        for entry in self._globs:
            if entry.matches(scenario_id):
                return entry
        return None

    def missing(self, needs: tuple[str, ...], completion: tuple[str, ...] = ()) -> list[str]:
        """The needs this profile does not declare (empty without a capabilities block)."""
        caps = self.capabilities
        if caps is None:
            return []
        lacking = [need for need in needs if not caps.supports(need)]
        if self.completion_modes is not None:
            lacking += [f"completion mode {mode}" for mode in completion if mode not in self.completion_modes]
        return lacking


def completion_modes(scenario: Any) -> tuple[str, ...]:
    """The completion modes a scenario switches to (its ``completion`` and its ``mode`` steps)."""
    modes = [scenario.completion] if scenario.completion else []
    modes += [str(getattr(step.args, "mode", "")) for step in scenario.steps if step.action == "mode"]
    return tuple(dict.fromkeys(m for m in modes if m))


# ---- finding and loading ---------------------------------------------------------------------------


def builtin_profiles() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PROFILES_DIR.glob("*.yaml"))}


def resolve(name_or_file: str) -> Path:
    """A built-in profile's file by name, or the file given; ValueError when neither exists."""
    builtin = builtin_profiles()
    if name_or_file in builtin:
        return builtin[name_or_file]
    path = Path(name_or_file)
    if path.is_file():
        return path
    raise ValueError(f"no profile {name_or_file!r}: not a file, and not a built-in profile "
                     f"(built-in: {', '.join(builtin) or 'none'})")


def load(name_or_file: str) -> Profile:
    """Resolve then load; ProfileError (located) or ValueError (not found)."""
    return load_profile(resolve(name_or_file))


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    with open(SCHEMA_PATH, encoding="utf-8") as handle:
        return jsonschema.Draft202012Validator(json.load(handle))


def _error(file: str, locs: Locations, path: tuple[Any, ...], message: str, at_key: bool = False) -> ProfileError:
    line, column = locs.key(path) if at_key else locs.of(path)
    return ProfileError(file, line, column, message)


def load_profile(path: str | os.PathLike[str]) -> Profile:
    file = os.fspath(path)
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ProfileError(file, 1, 1, f"cannot read the profile: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise ProfileError(file, 1, 1, f"profile is over the {MAX_BYTES}-byte limit")
    try:
        document, locs = parse_yaml(data, file)
    except LoadError as exc:
        raise ProfileError(exc.file, exc.line, exc.column, exc.message.replace("in scenarios", "in profiles")) \
            from None
    if not isinstance(document, dict):
        raise ProfileError(file, 1, 1, "a profile must be a mapping (profile, implementation, expectations, ...)")
    errors = [_located(file, locs, e, ()) for e in _validator().iter_errors(document)]
    if errors:
        first = min(errors, key=lambda e: (e.line, e.column))
        raise ProfileError(first.file, first.line, first.column, first.message)
    return _compile(document, file, locs, data.decode("utf-8"))


def _header(text: str) -> str:
    lines: list[str] = []
    for line in text.splitlines():
        if line.startswith("#") or (not line.strip() and lines):
            lines.append(line)
        else:
            break
    while lines and not lines[-1].strip():
        lines.pop()
    return "\n".join(lines)


def _compile(doc: dict[str, Any], file: str, locs: Locations, text: str) -> Profile:
    impl = doc["implementation"]
    caps_doc = doc.get("capabilities")
    capabilities: Capabilities | None = None
    modes: frozenset[str] | None = None
    if caps_doc is not None:
        features = set(caps_doc.get("roles", []))
        features |= {f"tls{v}" for v in caps_doc.get("tls", [])}
        if "mode" in caps_doc:
            features.add(f"{caps_doc['mode']}-mode")
        for index, feature in enumerate(caps_doc.get("features", [])):
            if feature not in FEATURES:
                raise _error(file, locs, ("capabilities", "features", index),
                             f"capabilities.features[{index}]: unknown feature {feature!r} "
                             f"(known: {', '.join(FEATURES)})")
            features.add(feature)
        if "completion" in caps_doc:
            modes = frozenset(caps_doc["completion"])
            unknown = modes - set(COMPLETION_MODES)
            if unknown:  # the schema already refuses them; kept for a schema edited by hand
                raise _error(file, locs, ("capabilities", "completion"), f"unknown completion mode(s) {unknown}")
        capabilities = Capabilities(
            name=str(impl["name"]),
            version=str(impl.get("version", "")),
            packages=frozenset(caps_doc.get("packages", [])),
            features=frozenset(features),
        )
    status_map: dict[int, int] = {}
    for raw, target in doc.get("map", {}).items():
        where = ("map", raw)
        try:
            key = parse(raw)
        except KeyError:
            raise _error(file, locs, where, f"map: {raw!r} is not a status (a name or 0x... hex)", True) from None
        try:
            status_map[key] = parse(target)
        except KeyError:
            raise _error(file, locs, where, f"map.{raw}: {target!r} is not a status name or number") from None
    expectations: list[Expectation] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(doc.get("expectations", [])):
        where = ("expectations", index)
        kinds = [k for k in ("skip", "xfail") if k in entry]
        if len(kinds) != 1:
            raise _error(file, locs, where, f"expectations[{index}]: give exactly one of skip or xfail "
                         f"(with the reason as its value), found {len(kinds)}")
        kind = kinds[0]
        pin = None
        if "pin" in entry:
            if kind != "xfail":
                raise _error(file, locs, (*where, "pin"), f"expectations[{index}]: pin only applies to xfail", True)
            pin_doc = entry["pin"]
            actual = pin_doc.get("actual")
            if isinstance(actual, int):
                actual = _name(actual)
            pin = Pin(pin_doc.get("verdict"), pin_doc.get("step"), actual)
        pattern = entry["id"]
        line = locs.of((*where, "id"))[0]
        if pattern in seen:
            raise _error(file, locs, (*where, "id"),
                         f"expectations[{index}]: duplicate entry for {pattern!r} (first at line {seen[pattern]})")
        seen[pattern] = line
        expectations.append(Expectation(pattern, kind, str(entry[kind]).strip(), pin, line))
    return Profile(
        name=doc["profile"],
        file=file,
        implementation=str(impl["name"]),
        version=str(impl.get("version", "")),
        description=str(doc.get("description", "")),
        adapter=doc.get("adapter"),
        adapter_options={str(k): _option_text(v) for k, v in doc.get("adapter_options", {}).items()},
        capabilities=capabilities,
        completion_modes=modes,
        status_map=status_map,
        expectations=tuple(expectations),
        header=_header(text),
    )


def _option_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


# ---- statuses in results ----------------------------------------------------------------------------

_DESCRIBED = re.compile(r"^\S+ \((0x[0-9A-Fa-f]{1,8})\)$")  # describe(): "NAME (0x...)"


def _name(value: int) -> str:
    return describe(value).split(" (", 1)[0]


def _status_in(text: str) -> int | None:
    """The status a step's ``actual`` text names (``NAME (0x...)``, a name, or hex), else None."""
    stripped = text.strip()
    found = _DESCRIBED.match(stripped)
    try:
        return parse(found.group(1) if found else stripped)
    except KeyError:
        return None


_DURING = re.compile(r"during step (\d+)\b")


def observed(result: ScenarioResult) -> Observed:
    """The failure signature of a failing result: verdict, step, what that step got.

    A crash or a hang is placed at the step it happened during (as its message says); a
    plain failure at its first failing step, with that step's actual status or text.
    """
    found = _DURING.search(result.message) if result.verdict is not Verdict.FAIL else None
    if found is not None:
        return Observed(result.verdict.value, int(found.group(1)), "")
    for step in result.steps:
        if not step.ok:
            return Observed(result.verdict.value, step.index + 1, step.actual)
    found = _DURING.search(result.message)
    return Observed(result.verdict.value, int(found.group(1)) if found else None, "")


def pin_mismatch(pin: Pin, seen: Observed) -> list[str]:
    """What differs between a pin and the failure seen (empty when the pin holds)."""
    problems = []
    if pin.verdict is not None and pin.verdict != seen.verdict:
        problems.append(f"verdict {seen.verdict} (pinned {pin.verdict})")
    if pin.step is not None and pin.step != seen.step:
        problems.append(f"step {seen.step if seen.step is not None else 'none'} (pinned {pin.step})")
    if pin.actual is not None:
        want = _status_in(str(pin.actual))
        got = _status_in(seen.actual) if seen.actual else None
        same = (want == got) if want is not None else str(pin.actual).strip() == seen.actual.strip()
        if not same:
            problems.append(f"actual {seen.actual or 'none'} (pinned {pin.actual})")
    return problems


# ---- applying a profile to a result -------------------------------------------------------------------


def skipped(result: ScenarioResult, profile: Profile, expectation: Expectation) -> ScenarioResult:
    return replace(result, verdict=Verdict.SKIP, message=f"skipped by profile: {expectation.reason}",
                   expectation=expectation.describe(), implementation=profile.label)


def unsupported(result: ScenarioResult, profile: Profile, missing: list[str]) -> ScenarioResult:
    return replace(result, verdict=Verdict.UNSUPPORTED, implementation=profile.label,
                   message=f"profile {profile.name} does not declare {', '.join(missing)}")


def apply(profile: Profile, result: ScenarioResult, needs: tuple[str, ...] = ()) -> ScenarioResult:
    """The final verdict of a result run under ``profile`` (mandatory claims, then expectations)."""
    result.implementation = profile.label
    if result.verdict is Verdict.UNSUPPORTED and profile.capabilities is not None:
        # The profile claimed everything this scenario needs, or it would not have run.
        declared = ", ".join(needs) or "nothing beyond the basic API"
        result.verdict = Verdict.FAIL
        result.message = (f"the profile declares what this scenario needs ({declared}), so it is mandatory; "
                          f"the implementation said: {result.message}")
    expectation = profile.expectation_for(result.id)
    if expectation is None or expectation.kind != "xfail":
        return result
    result.expectation = expectation.describe()
    if result.verdict is Verdict.PASS:
        result.verdict = Verdict.XPASS
        result.message = f"passed, but the profile expects a failure ({expectation.reason}): the profile is stale"
    elif result.verdict in XFAIL_ABSORBS:
        seen = observed(result)
        problems = pin_mismatch(expectation.pin, seen) if expectation.pin is not None else []
        if problems:
            result.message = (f"expected failure changed: {'; '.join(problems)}; "
                              f"now: {result.message.splitlines()[0] if result.message else seen.verdict}")
            result.expectation = f"{expectation.describe()} [pinned xfail changed]"
        else:
            result.verdict = Verdict.XFAIL
    return result


__all__ = [
    "PROFILES_DIR",
    "Expectation",
    "Observed",
    "Pin",
    "Profile",
    "ProfileError",
    "apply",
    "builtin_profiles",
    "completion_modes",
    "load",
    "load_profile",
    "observed",
    "pin_mismatch",
    "resolve",
    "skipped",
    "unsupported",
]
