"""The scenario loader: typed model on good input, one located error per malformed file.

Each file in tests/malformed/ starts with ``# expect: LINE: fragment``: loading it must give
exactly one LoadError on that line whose message contains the fragment.
"""

from __future__ import annotations

import pickle
import re
import time
from pathlib import Path

import pytest

from adapters import status as st
from adapters.constants import ISC_REQ, ISC_RET
from conformance.requirements import load_catalogue
from conformance.scenario import LoadError, load_corpus, load_scenario, validate_paths, yamlsafe
from conformance.scenario import model as m

HERE = Path(__file__).parent
MALFORMED = HERE / "malformed"
SINGLE = sorted(p for p in MALFORMED.glob("*.yaml"))
EXPECT = re.compile(r"^# expect: (\d+): (.+)$")
SPEC = Path("/work/shared/spec/async-sspi-contract.md")


def _expectation(path: Path) -> tuple[int, str]:
    match = EXPECT.match(path.read_text(encoding="utf-8").splitlines()[0])
    assert match, f"{path} lacks its '# expect: LINE: fragment' header"
    return int(match.group(1)), match.group(2)


def _write(tmp_path: Path, text: str, name: str = "s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


GOOD = """\
id: good.example
title: A valid scenario using most value forms
requirements: [CTX-1, OQ-1]
tags: [lifecycle]
requires: [package:Sim]
completion: deferred
steps:
  - create: a1
  - set_callback: a1
    data: 7
  - acquire: {ctx: a1, cred: c1, use: outbound, auth: {user: alice}}
    completes: [SEC_E_OK, "0x80090300"]
  - complete: a1
  - wait: a1
    timeout_ms: 500
  - reinit: a1
  - initialize: {ctx: a1, cred: c1, context: s1, target: server.test, req: [CONNECTION, STREAM],
                 output: {allocate: true}, token: t1}
    completes: success
    outputs: {token: present, token_size: {min: 1}, attributes: {has: [CONNECTION], lacks: [DELEGATE]}}
  - complete: all
  - wait: a1
  - reinit: a1
  - accept: {ctx: a1, cred: c1, context: s2, input: {concat: [{token: t1, truncate: 3}, {hex: "ff00"}]}}
    expect: any
  - status: a1
    expect: 0x00090368
  - free: a1
"""


@pytest.mark.parametrize("path", SINGLE, ids=[p.stem for p in SINGLE])
def test_malformed_file_gives_one_located_error(path: Path) -> None:
    line, fragment = _expectation(path)
    with pytest.raises(LoadError) as info:
        load_scenario(path)
    error = info.value
    assert error.line == line, str(error)
    assert fragment in error.message, str(error)
    assert re.match(rf"^{re.escape(str(path))}:{line}:\d+: ", str(error))
    assert [str(e) for e in validate_paths([path])] == [str(error)]


def test_duplicate_id_names_both_locations() -> None:
    folder = MALFORMED / "duplicate_id"
    scenarios, errors = load_corpus([folder])
    assert [s.file for s in scenarios] == [str(folder / "first.yaml")]
    assert len(errors) == 1
    line, fragment = _expectation(folder / "second.yaml")
    assert errors[0].file == str(folder / "second.yaml") and errors[0].line == line
    assert fragment in errors[0].message
    assert f"{folder / 'first.yaml'}:1:5" in errors[0].message


def test_oversized_file_is_rejected_before_parsing(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD + "#" * (256 * 1024))
    size = path.stat().st_size
    with pytest.raises(LoadError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}:1:1: file is {size} bytes, over the 262144-byte limit"
    assert load_scenario(_write(tmp_path, GOOD, "small.yaml")).id == "good.example"


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    # A bomb whose anchor is deep in the file: the refusal must not depend on expansion.
    lines = ["id: bomb", "title: t", "requirements: [CTX-1]", "steps: [{create: a1}]", "x:"]
    lines.append('  l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]')
    for i in range(1, 30):
        lines.append(f"  l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * 10) + "]")
    path = _write(tmp_path, "\n".join(lines) + "\n")
    start = time.perf_counter()
    with pytest.raises(LoadError) as info:
        load_scenario(path)
    assert time.perf_counter() - start < 1.0
    assert info.value.line == 6 and "anchors" in info.value.message


@pytest.mark.parametrize(("depth", "message"), [(100, "nesting deeper than 64"), (5000, "nesting depth")])
def test_deep_nesting_is_bounded(tmp_path: Path, depth: int, message: str) -> None:
    path = _write(tmp_path, "id: deep\nx: " + "[" * depth + "]" * depth + "\n")
    with pytest.raises(LoadError) as info:
        load_scenario(path)
    assert info.value.line == 2 and message in info.value.message


@pytest.mark.parametrize("name", ["alias_bomb.yaml", "duplicate_key.yaml", "bad_yaml_syntax.yaml"])
def test_pure_python_composer_gives_the_same_errors(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Without libyaml the loader falls back to PyYAML's composer (anchors refused as they come).
    with pytest.raises(LoadError) as with_libyaml:
        load_scenario(MALFORMED / name)
    monkeypatch.setattr(yamlsafe, "_FastLoader", None)
    with pytest.raises(LoadError) as pure:
        load_scenario(MALFORMED / name)
    assert pure.value.line == with_libyaml.value.line
    # libyaml words syntax errors its own way; the kind of error and its place agree.
    assert pure.value.message.split(" (")[0].split(":")[0] == with_libyaml.value.message.split(" (")[0].split(":")[0]


def test_pure_python_composer_locates_the_same_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, GOOD)
    with_libyaml = yamlsafe.parse_yaml(path.read_bytes(), str(path))
    monkeypatch.setattr(yamlsafe, "_FastLoader", None)
    assert yamlsafe.parse_yaml(path.read_bytes(), str(path)) == with_libyaml


def test_invalid_utf8_is_located(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"id: x\ntitle: \xff\xfe\n")
    with pytest.raises(LoadError) as info:
        load_scenario(path)
    assert (info.value.line, info.value.column) == (2, 8)
    assert "UTF-8" in info.value.message


def test_python_tags_are_not_constructed(tmp_path: Path) -> None:
    path = _write(tmp_path, "id: x\ntitle: !!python/object/apply:os.system ['true']\n")
    with pytest.raises(LoadError) as info:
        load_scenario(path)
    assert info.value.line == 2


def test_good_scenario_is_typed(tmp_path: Path) -> None:
    scenario = load_scenario(_write(tmp_path, GOOD))
    assert scenario.id == "good.example" and scenario.completion == "deferred"
    assert (scenario.line, scenario.column) == (1, 5)
    # completion/complete imply completion-control; initialize/accept imply client/server.
    assert set(scenario.needs) == {"package:Sim", "completion-control", "client", "server"}
    steps = scenario.steps
    assert [s.action for s in steps][:3] == ["create", "set_callback", "acquire"]
    assert [s.line for s in steps][:4] == [8, 9, 11, 13]
    assert isinstance(steps[1].args, m.SetCallback) and steps[1].args.data == 7
    acquire = steps[2]
    assert isinstance(acquire.args, m.Acquire) and acquire.args.package == "Sim" and acquire.args.use == 2
    assert acquire.completes is not None
    assert acquire.completes.values == {st.SEC_E_OK, st.SEC_E_INSUFFICIENT_MEMORY}
    assert acquire.completes.text == "any of SEC_E_OK (0x00000000), SEC_E_INSUFFICIENT_MEMORY (0x80090300)"
    assert steps[4].args == m.Wait("a1", 500)
    init = steps[6]
    assert isinstance(init.args, m.Handshake1)
    assert init.args.req == ISC_REQ["CONNECTION"] | ISC_REQ["STREAM"]
    assert init.args.output == m.OutputSpec("allocate", 0) and init.args.context == "s1"
    assert init.outputs is not None and init.outputs.has == ISC_RET["CONNECTION"]
    assert init.outputs.lacks == ISC_RET["DELEGATE"] and init.outputs.token_min == 1
    assert init.completes is not None and init.completes.matches(st.SEC_I_CONTINUE_NEEDED)
    assert not init.completes.matches(st.SEC_E_INVALID_TOKEN)
    assert steps[7].args == m.Complete(())
    accept = steps[10]
    assert isinstance(accept.args, m.Handshake1) and accept.args.input is not None
    assert accept.args.input.kind == "concat"
    assert accept.args.input.parts[0] == m.TokenSpec("ref", name="t1", truncate=3)
    assert accept.args.input.parts[1] == m.TokenSpec("hex", data=b"\xff\x00")
    assert isinstance(accept.expect, m.StatusSet) and accept.expect.matches(0x80090308)
    assert isinstance(steps[11].expect, m.StatusSet)
    assert steps[11].expect.values == {st.SEC_I_ASYNC_CALL_PENDING}


def test_reinit_success_uses_nt_success() -> None:
    from conformance.scenario.compile import SUCCESS

    assert SUCCESS.matches(st.STATUS_SUCCESS, ntstatus=True)
    assert not SUCCESS.matches(st.STATUS_INVALID_DEVICE_STATE, ntstatus=True)
    # SEC_I_* are informational: success both ways; 0xC... fails NT_SUCCESS.
    assert SUCCESS.matches(st.SEC_I_CONTINUE_NEEDED, ntstatus=True)


def test_doc_example_loads(tmp_path: Path) -> None:
    doc = (HERE.parent / "docs" / "scenarios.md").read_text(encoding="utf-8")
    first = re.search(r"```yaml\n(.*?)```", doc, re.S)
    assert first is not None
    scenario = load_scenario(_write(tmp_path, first.group(1)))
    assert scenario.id == "lifecycle.fresh-context-not-pending"


def test_corpus_keeps_good_files_and_lists_each_bad_one(tmp_path: Path) -> None:
    _write(tmp_path, GOOD, "good.yaml")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", GOOD.replace("good.example", "good.other"), "other.yml")
    _write(tmp_path, "id: bad\n", "bad.yaml")
    _write(tmp_path, "ignored", "notes.txt")
    scenarios, errors = load_corpus([tmp_path])
    assert sorted(s.id for s in scenarios) == ["good.example", "good.other"]
    assert [e.file for e in errors] == [str(tmp_path / "bad.yaml")]


def test_missing_file_is_a_load_error(tmp_path: Path) -> None:
    errors = validate_paths([tmp_path / "absent.yaml"])
    assert len(errors) == 1 and "cannot read" in errors[0].message


def test_load_error_survives_pickling() -> None:
    error = LoadError("f.yaml", 3, 4, "boom")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == "f.yaml:3:4: boom" and again.line == 3


def test_catalogue_is_well_formed() -> None:
    catalogue = load_catalogue()
    assert {"CTX-1", "OQ-23", "SHUT-5", "SCH-29", "MSG-10"} <= set(catalogue)
    assert all(r.level in ("must", "should", "info") and r.summary for r in catalogue.values())
    if SPEC.exists():  # the spec lives outside the repository
        cited = set(re.findall(r"\b(?:GEN|CTX|NOTIFY|CALL|REINIT|FREE|SCH|MSG|SHUT|OQ)-\d+", SPEC.read_text()))
        assert cited == {rid for rid in catalogue if not rid.startswith("PROTO-")}
