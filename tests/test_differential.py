"""Differential mode: the same scenario on two adapters, compared call by call."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters import status as st
from adapters.registry import create_adapter
from conformance.cli import main
from conformance.differential import Observation, compare, first_divergence, status_text
from conformance.scenario.loader import load_corpus

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "scenarios" / "native"


def _scenario(name: str):
    scenarios, errors = load_corpus([NATIVE / f"{name}.yaml"])
    assert not errors and len(scenarios) == 1
    return scenarios[0]


def _simulator(completion: str):
    return (f"simulator-{completion}", lambda: create_adapter("simulator", {"completion": completion}))


def test_inline_and_threaded_simulators_do_not_diverge() -> None:
    comparison = compare(_scenario("ntlm-handshake-explicit"), _simulator("inline"), _simulator("threaded"))
    assert comparison.divergence is None and not comparison.diverged
    left = comparison.left.observations
    assert len(left) == len(comparison.right.observations) > 20
    accepts = [o for o in left if o.op == "accept_security_context_async"]
    assert [o.completion for o in accepts] == [st.SEC_I_CONTINUE_NEEDED, st.SEC_E_OK]
    assert accepts[0].outputs == ("new_context", "token")
    assert accepts[0].step is not None and accepts[0].summary.startswith("accept")
    assert "no divergence" in comparison.report()


def test_status_difference_is_located_at_its_step() -> None:
    pytest.importorskip("sspilib")
    native = ("native", lambda: create_adapter("native", {"isolate": "false", "completion": "inline"}))
    comparison = compare(_scenario("delete-null-context"), _simulator("inline"), native)
    divergence = comparison.divergence
    assert divergence is not None and divergence.left is not None and divergence.right is not None
    assert divergence.left.op == "delete_security_context_async"
    assert divergence.left.completion == st.SEC_E_INVALID_HANDLE
    assert divergence.right.completion == st.SEC_E_INVALID_PARAMETER  # sspi-rs, finding F-2
    text = comparison.report()
    assert "step 3 (line 12)" in text and "0x80090301" in text and "0x8009035D" in text


def test_output_presence_difference() -> None:
    left = [Observation("accept_security_context_async", "a2", 5, 30, "accept", status=0,
                        completion=st.SEC_E_INVALID_TOKEN, outputs=())]
    right = [Observation("accept_security_context_async", "a2", 5, 30, "accept", status=0,
                         completion=st.SEC_E_INVALID_TOKEN, outputs=("new_context",))]
    divergence = first_divergence(left, right)
    assert divergence is not None and divergence.reason == "outputs present differ"
    assert "outputs: new_context" in divergence.describe("l", "r")
    assert first_divergence(left, left) is None


def test_a_run_that_ends_early_diverges_where_it_stopped() -> None:
    calls = [Observation("create_async_context", "a1", 0, 1, "create", value="handle"),
             Observation("free_async_context", "a1", 1, 2, "free")]
    divergence = first_divergence(calls, calls[:1])
    assert divergence is not None and divergence.index == 1 and divergence.right is None
    assert "no such call" in divergence.describe("l", "r")


def test_status_text() -> None:
    assert status_text(st.SEC_E_OK) == "SEC_E_OK (0x00000000)"
    assert status_text(None) == "-"


def test_cli_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    path = str(NATIVE / "silent-delete.yaml")
    same = ["diff", path, "--left", "simulator", "--right", "simulator", "--left-option", "completion=inline"]
    assert main(same) == 0
    assert "no divergence" in capsys.readouterr().out
    assert main(["diff", path, "--right", "nope"]) == 2
    assert main(["diff", str(NATIVE / "missing.yaml"), "--right", "simulator"]) == 2
    assert main(["diff", path, "--right", "simulator", "--right-option", "bogus"]) == 2


def test_cli_reports_a_divergence() -> None:
    pytest.importorskip("sspilib")
    path = str(NATIVE / "package-name-lowercase.yaml")
    assert main(["diff", path, "--right-option", "isolate=false", "--right-option", "completion=inline"]) == 1
