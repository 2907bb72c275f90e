"""The committed JSON Schema must agree with the Python tables it mirrors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_

from adapters import constants
from adapters.api import COMPLETION_MODES, FEATURES
from adapters.status import BY_NAME
from conformance.scenario import load_scenario
from conformance.scenario import validate as validate_module
from conformance.scenario.compile import _BUILDERS
from conformance.scenario.errors import LoadError
from conformance.scenario.fastcheck import compile_check
from conformance.scenario.validate import _quick_valid, load_schema
from conformance.scenario.yamlsafe import parse_yaml


def test_schema_is_valid_draft_2020_12() -> None:
    schema = load_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


def test_status_names_match_adapters_status() -> None:
    assert load_schema()["$defs"]["status_name"]["enum"] == list(BY_NAME)


def test_flag_names_match_adapters_constants() -> None:
    defs = load_schema()["$defs"]
    assert defs["isc_req_names"]["enum"] == list(constants.ISC_REQ)
    assert defs["isc_ret_names"]["enum"] == list(constants.ISC_RET)
    assert defs["asc_req_names"]["enum"] == list(constants.ASC_REQ)
    assert defs["asc_ret_names"]["enum"] == list(constants.ASC_RET)


def test_features_and_modes_match_adapters_api() -> None:
    schema = load_schema()
    assert schema["$defs"]["feature"]["enum"] == list(FEATURES)
    assert schema["properties"]["completion"]["enum"] == list(COMPLETION_MODES)
    assert schema["$defs"]["step_mode"]["properties"]["mode"]["enum"] == list(COMPLETION_MODES)


def test_every_step_has_a_definition_and_a_builder() -> None:
    defs = load_schema()["$defs"]
    actions = defs["step"]["x-actions"]
    assert set(actions) == set(_BUILDERS)
    assert [ref["$ref"] for ref in defs["step"]["anyOf"]] == [f"#/$defs/step_{a}" for a in actions]
    for action in actions:
        assert defs[f"step_{action}"]["required"][0] == action


def test_whole_schema_accepts_a_full_scenario() -> None:
    # The editor-facing schema (steps as an anyOf) must accept what the loader accepts.
    scenario = {
        "id": "x.y", "title": "t", "requirements": ["CTX-1"], "completion": "deferred",
        "steps": [{"create": "a1"}, {"set_callback": "a1", "data": 1}, {"wait": "a1", "timeout_ms": 5},
                  {"status": "a1", "expect": ["SEC_E_OK", "0x00090368", 5, "success"]}, {"free": None}],
    }
    jsonschema.Draft202012Validator(load_schema()).validate(scenario)
    bad = dict(scenario, steps=[{"status": "a1", "expect": "SEC_E_NOPE"}])
    assert not jsonschema.Draft202012Validator(load_schema()).is_valid(bad)


# ---- the fast checker agrees with jsonschema ----------------------------------------------------

REPO = Path(__file__).resolve().parent.parent
DOCS = [parse_yaml(p.read_bytes(), str(p))[0] for p in sorted(REPO.glob("scenarios/**/*.yaml"))[::4]]
MALFORMED_DOCS = []
for _path in sorted((REPO / "tests" / "malformed").rglob("*.yaml")):
    try:
        MALFORMED_DOCS.append(parse_yaml(_path.read_bytes(), str(_path))[0])
    except LoadError:
        pass  # not YAML-level valid: never reaches the schema


_REFERENCE = jsonschema.Draft202012Validator(load_schema())


def _reference_valid(document: Any) -> bool:
    return bool(_REFERENCE.is_valid(document))


def test_fast_check_agrees_on_corpus_and_malformed_files() -> None:
    assert DOCS, "the scenario corpus is missing"
    for document in DOCS + MALFORMED_DOCS:
        assert _quick_valid(document) == _reference_valid(document), document.get("id")


_LEAVES = st_.one_of(
    st_.none(), st_.booleans(), st_.integers(-5, 70000), st_.floats(allow_nan=False, allow_infinity=False),
    st_.sampled_from(["SEC_E_OK", "0x80090301", "success", "nope", "a1", "c1", "", "null", "all", "CONNECTION",
                      "present", "inbound", "deferred", "reinit", "create-oom", "0xZZ", "package:Sim"]),
)
_VALUES = st_.recursive(_LEAVES, lambda inner: st_.one_of(
    st_.lists(inner, max_size=3), st_.dictionaries(st_.sampled_from(["ctx", "cred", "size", "token", "x"]), inner,
                                                   max_size=3)), max_leaves=6)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st_.data())
def test_fast_check_agrees_on_mutations(data: Any) -> None:
    document = copy.deepcopy(data.draw(st_.sampled_from(DOCS)))
    path = data.draw(st_.sampled_from(_paths(document)[1:]))
    parent = document
    for part in path[:-1]:
        parent = parent[part]
    action = data.draw(st_.sampled_from(["replace", "delete", "add"]))
    if action == "replace":
        parent[path[-1]] = data.draw(_VALUES)
    elif action == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[data.draw(st_.sampled_from(["expect", "note", "x", "timeout_ms", "data", "completes"]))] = \
            data.draw(_VALUES)
    else:
        parent.append(data.draw(_VALUES))
    assert _quick_valid(document) == _reference_valid(document)


def test_fast_checker_refuses_keywords_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="oneOf"):
        compile_check({"oneOf": [{"type": "string"}]}, {})


def test_a_fast_check_false_positive_still_gives_the_located_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # Should the fast checker ever accept a bad document, compiling it fails and the loader
    # falls back to jsonschema for the located message.
    monkeypatch.setattr(validate_module, "_quick_valid", lambda document: True)
    with pytest.raises(LoadError) as info:
        load_scenario(REPO / "tests" / "malformed" / "wrong_type.yaml")
    assert info.value.line == 9 and "wrong type: expected an integer" in info.value.message
