"""``sspi-conformance bless``: rewrite a profile's expectations from the last run.

The profile file is rewritten in one canonical layout so the change reads well as a diff:
the leading comment block is kept, then the known keys in a fixed order, then the
expectations -- existing entries first, in their order and with the comment lines just above
each kept, then new entries sorted by scenario id.  (ruamel is not a dependency, so comments
elsewhere in the file are not kept; the layout here is the one ``bless`` always writes.)

What changes:

* a failing result (``fail``, ``crashed``, ``hung``) no entry covers gets an ``xfail``
  entry, pinned to the failure seen unless ``pin_new`` is off;
* an exact-id ``xfail`` whose failure changed is re-pinned to the new failure;
* stale entries are removed and reported: an entry that matches no scenario in the results,
  and an ``xfail`` whose scenarios all pass now;
* ``error`` results are listed but never blessed: they mean a broken scenario or harness.

Entries for scenarios the run did not decide (``skip``, ``unsupported``) are kept as they are.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from conformance.profile import (
    XFAIL_ABSORBS,
    Expectation,
    Profile,
    ProfileError,
    load_profile,
    observed,
    pin_mismatch,
)
from conformance.reports.text import VERDICT_ORDER, reason
from conformance.results import ScenarioResult, Verdict
from conformance.scenario.yamlsafe import parse_yaml

TOP_KEYS = ("profile", "description", "implementation", "adapter", "adapter_options", "capabilities", "map")
MAX_REASON = 140
_RANK = {v: i for i, v in enumerate(VERDICT_ORDER)}  # lower = worse


@dataclass
class BlessReport:
    added: list[str] = field(default_factory=list)
    repinned: list[str] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)  # (pattern, why)
    not_blessed: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    kept: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.repinned or self.stale)

    def lines(self) -> list[str]:
        out = [f"added xfail: {sid}" for sid in self.added]
        out += [f"re-pinned: {sid}" for sid in self.repinned]
        out += [f"removed stale entry {pattern}: {why}" for pattern, why in self.stale]
        out += [f"not blessed: {sid}: {why}" for sid, why in self.not_blessed]
        out.append(f"{self.kept} entr{'y' if self.kept == 1 else 'ies'} kept, {len(self.added)} added, "
                   f"{len(self.repinned)} re-pinned, {len(self.stale)} removed")
        return out


@dataclass
class _Entry:
    expectation: Expectation
    comments: list[str]


def worst_by_id(results: Sequence[ScenarioResult]) -> dict[str, ScenarioResult]:
    """One result per scenario id: the worst verdict when a scenario ran several times."""
    found: dict[str, ScenarioResult] = {}
    for result in results:
        seen = found.get(result.id)
        if seen is None or _RANK[result.verdict] < _RANK[seen.verdict]:
            found[result.id] = result
    return found


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


def plan(
    profile: Profile, results: Sequence[ScenarioResult], text: str, *, pin_new: bool = True
) -> tuple[list[_Entry], BlessReport]:
    """The new expectation list and what changed (nothing is written)."""
    by_id = worst_by_id(results)
    report = BlessReport()
    source = text.splitlines()
    entries: list[_Entry] = []
    for expectation in profile.expectations:
        matched = [r for sid, r in by_id.items() if expectation.matches(sid)]
        if not matched:
            report.stale.append((expectation.pattern, "no such scenario in the results"))
            continue
        if expectation.kind == "xfail" and all(r.verdict in (Verdict.PASS, Verdict.XPASS) for r in matched):
            report.stale.append((expectation.pattern, "now passing"))
            continue
        if expectation.kind == "xfail" and not expectation.is_glob:
            expectation = _repin(expectation, matched[0], report)
        entries.append(_Entry(expectation, _comments_above(source, expectation.line)))
        report.kept += 1
    covered = {sid for sid in by_id for e in entries if e.expectation.matches(sid)}
    for sid in sorted(by_id):
        result = by_id[sid]
        if result.verdict is Verdict.ERROR:
            report.not_blessed.append((sid, f"harness or scenario error, fix it: {_short(reason(result))}"))
            continue
        if sid in covered or result.verdict not in XFAIL_ABSORBS:
            continue
        pin = observed(result).pin() if pin_new else None
        why = _short(reason(result)) or result.verdict.value
        entries.append(_Entry(Expectation(sid, "xfail", f"blessed: {why}", pin), []))
        report.added.append(sid)
    return entries, report


def _repin(expectation: Expectation, result: ScenarioResult, report: BlessReport) -> Expectation:
    """An exact xfail whose failure changed gets the new failure as its pin."""
    if expectation.pin is None or result.verdict not in XFAIL_ABSORBS:
        return expectation
    seen = observed(result)
    if not pin_mismatch(expectation.pin, seen):
        return expectation
    report.repinned.append(expectation.pattern)
    return Expectation(expectation.pattern, "xfail", expectation.reason, seen.pin(), expectation.line)


def _comments_above(source: list[str], line: int) -> list[str]:
    """The comment lines directly above ``line`` (1-based, the entry's ``- id:`` line), in order."""
    found: list[str] = []
    index = line - 2
    while 0 <= index < len(source) and source[index].strip().startswith("#"):
        found.append(source[index].strip())
        index -= 1
    return found[::-1]


# ---- writing -------------------------------------------------------------------------------------------

_INDICATORS = set("-?:,[]{}#&*!|>'\"%@`")


def scalar(value: Any) -> str:
    """A YAML scalar that reads back as ``value``: plain when unambiguous, else double-quoted."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    plain = (
        text
        and text == text.strip()
        and "\n" not in text
        and text[0] not in _INDICATORS
        and ": " not in text
        and " #" not in text
        and not text.endswith(":")
        and all(c.isprintable() for c in text)
    )
    if plain:
        try:
            if yaml.safe_load(text) == text:
                return text
        except yaml.YAMLError:
            pass
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(text, ensure_ascii=False)


def _flow(items: list[Any]) -> str:
    return "[" + ", ".join(scalar(i) for i in items) + "]"


def _block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    out = []
    for key, item in value.items():
        if isinstance(item, dict):
            out.append(f"{pad}{scalar(key)}:" + (" {}" if not item else ""))
            out += _block(item, indent + 2)
        elif isinstance(item, list):
            out.append(f"{pad}{scalar(key)}: {_flow(item)}")
        else:
            out.append(f"{pad}{scalar(key)}: {scalar(item)}")
    return out


def render(profile: Profile, document: dict[str, Any], entries: list[_Entry]) -> str:
    """The canonical text of a profile with these expectation entries."""
    out: list[str] = []
    if profile.header:
        out += [profile.header, ""]
    for key in TOP_KEYS:
        if key in document:
            out += _block({key: document[key]}, 0)
    if not entries:
        out.append("expectations: []")
    else:
        out.append("expectations:")
        for entry in entries:
            e = entry.expectation
            out += [f"  {c}" for c in entry.comments]
            out.append(f"  - id: {scalar(e.pattern)}")
            out.append(f"    {e.kind}: {scalar(e.reason)}")
            if e.pin is not None and e.pin.as_dict():
                pin = ", ".join(f"{k}: {scalar(v)}" for k, v in e.pin.as_dict().items())
                out.append(f"    pin: {{{pin}}}")
    return "\n".join(out) + "\n"


def bless(profile_path: str | os.PathLike[str], results: Sequence[ScenarioResult], *, pin_new: bool = True,
          dry_run: bool = False) -> BlessReport:
    """Rewrite the profile file from ``results``; ProfileError when the profile is unusable."""
    profile = load_profile(profile_path)
    data = Path(profile_path).read_bytes()
    text = data.decode("utf-8")
    document, _ = parse_yaml(data, os.fspath(profile_path))
    entries, report = plan(profile, results, text, pin_new=pin_new)
    rendered = render(profile, document, entries)
    if not dry_run:
        tmp = Path(f"{os.fspath(profile_path)}.bless-tmp")
        tmp.write_text(rendered, encoding="utf-8")
        try:
            load_profile(tmp)  # never leave a profile behind that would not load
        except ProfileError:
            tmp.unlink()
            raise
        os.replace(tmp, profile_path)
    return report


__all__ = ["BlessReport", "bless", "plan", "render", "scalar", "worst_by_id"]
