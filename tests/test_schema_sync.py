"""The committed JSON Schema must agree with the Python tables it mirrors."""

from __future__ import annotations

import jsonschema

from adapters import constants
from adapters.api import COMPLETION_MODES, FEATURES
from adapters.status import BY_NAME
from conformance.scenario.compile import _BUILDERS
from conformance.scenario.validate import load_schema


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
