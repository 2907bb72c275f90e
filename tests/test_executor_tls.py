"""The executor's TLS-facing features: the C.2/C.3 handshake loop, delivery modes, the stream
steps' token bindings, CompleteAuthToken, data_rep and SCHANNEL_ALERT_TOKEN shutdown.

Each feature is checked both ways: a scenario that uses it correctly passes, and one whose
expectation is wrong fails with a message that names what differed.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from adapters import status as st
from adapters.api import SecBuffer
from adapters.simulator import SimulatorAdapter, create
from conformance.executor import run_scenario
from conformance.results import ScenarioResult, Verdict
from conformance.scenario import Scenario, load_scenario
from conformance.scenario import model as m
from conformance.scenario.errors import LoadError

CREQ = "[CONNECTION, STREAM, ALLOCATE_MEMORY, EXTENDED_ERROR]"
SREQ = "[STREAM, ALLOCATE_MEMORY, EXTENDED_ERROR]"


def _scenario(tmp_path: Path, steps: str, package: str = "Schannel") -> Scenario:
    text = f"id: test.tls\ntitle: t\nrequirements: [SCH-20]\npackage: {package}\nsteps:\n"
    text += textwrap.indent(textwrap.dedent(steps), "  ")
    path = tmp_path / "s.yaml"
    path.write_text(text, encoding="utf-8")
    return load_scenario(path)


def _run(scenario: Scenario, profile: str = "kernel", mode: str = "inline", adapter: Any = None) -> ScenarioResult:
    factory = adapter if adapter is not None else (lambda: create({"completion": mode, "profile": profile}))
    return run_scenario(scenario, factory, adapter_name="sim")


def _setup(client: str = "{protocols: [tls1.2]}", server: str = "{certificate: server}", extra: str = "") -> str:
    return f"""\
- create: ac
- set_callback: ac
- create: as
- set_callback: as
- acquire: {{ctx: ac, cred: cc, use: outbound, auth: {client}}}
- wait: ac
- reinit: ac
- acquire: {{ctx: as, cred: sc, use: inbound, auth: {server}}}
- wait: as
- reinit: as
{extra}"""


def _handshake(client: str = "", server: str = "", extra: str = "", expect: str = "SEC_E_OK") -> str:
    c = f"{{ctx: ac, cred: cc, context: cs, target: server.test, req: {CREQ}{', ' + client if client else ''}}}"
    s = f"{{ctx: as, cred: sc, context: ss, req: {SREQ}{', ' + server if server else ''}}}"
    text = f"- handshake:\n    client: {c}\n    server: {s}\n"
    text += "".join(f"    {line}\n" for line in extra.splitlines() if line)
    return text + f"  expect: {expect}\n"


def _failed(result: ScenarioResult) -> list[str]:
    return [s.message for s in result.steps if not s.ok]


def _legs(result: ScenarioResult) -> list[str]:
    return [s.summary for s in result.steps if s.action == "leg"]


# ---- delivery modes -----------------------------------------------------------------------------------
def test_byte_by_byte_delivery_collapses_incomplete_legs(tmp_path: Path) -> None:
    steps = _setup() + _handshake("rest: rc", extra="delivery: byte-by-byte\nexpect_incomplete: true")
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.PASS, result.message
    legs = _legs(result)
    # Every flight was cut at every byte: runs of incomplete legs, each collapsed into one record.
    runs = [text for text in legs if "x" in text.split("->")[0] and "INCOMPLETE" in text]
    assert runs and all("last missing=1" in text for text in runs)
    assert legs[0].endswith("client ISC no input -> SEC_I_CONTINUE_NEEDED out=" + legs[0].split("out=")[1])
    assert legs[-1].split(": ", 1)[1].startswith("client ISC") and "SEC_E_OK" in legs[-1]


def test_expect_incomplete_count_is_checked(tmp_path: Path) -> None:
    steps = _setup() + _handshake(extra="delivery: byte-by-byte\nexpect_incomplete: 3")
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.FAIL
    assert "incomplete legs: expected 3, got" in result.message
    whole = _setup() + _handshake(extra="expect_incomplete: true")
    assert "incomplete legs: expected at least one, got none" in _run(_scenario(tmp_path, whole)).message


def test_chunked_delivery_reports_extra_and_legs_skip_incomplete(tmp_path: Path) -> None:
    steps = _setup() + _handshake(extra="delivery: {chunk: 100}\nexpect_extra: true\nexpect_incomplete: true")
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.PASS, result.message
    assert any("extra=" in text and "SEC_I_CONTINUE_NEEDED" in text for text in _legs(result))
    none_expected = _setup() + _handshake(extra="delivery: {chunk: 100}\nexpect_extra: false")
    assert "legs with EXTRA: expected none, got" in _run(_scenario(tmp_path, none_expected)).message


def test_legs_count_every_call_but_incomplete_ones(tmp_path: Path) -> None:
    five = "[SEC_I_CONTINUE_NEEDED, SEC_I_CONTINUE_NEEDED, SEC_I_CONTINUE_NEEDED, SEC_E_OK, SEC_E_OK]"
    ok = _setup() + _handshake(extra=f"legs: {five}")
    assert _run(_scenario(tmp_path, ok)).verdict is Verdict.PASS
    wrong = _setup() + _handshake(extra="legs: [SEC_I_CONTINUE_NEEDED, SEC_E_OK]")
    result = _run(_scenario(tmp_path, wrong))
    assert result.verdict is Verdict.FAIL and result.message.split(": ", 1)[1].startswith("legs: expected [")


def test_coalesced_send_after_gives_extra_on_the_final_leg(tmp_path: Path) -> None:
    steps = _setup() + _handshake("rest: rc", 'send_after: "behind finished"',
                                  "delivery: coalesced\nexpect_extra: 1") + """\
- decrypt: {context: cs, input: rc, plaintext: "behind finished"}
"""
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.PASS, result.message
    final = _legs(result)[-1]
    assert "client ISC" in final and "SEC_E_OK" in final and "extra=" in final
    # whole delivery: the record is a separate read, so the final ISC has no EXTRA
    whole = _setup() + _handshake("rest: rc", 'send_after: "x"', "expect_extra: 0") + """\
- decrypt: {context: cs, input: rc, plaintext: "x"}
"""
    assert _run(_scenario(tmp_path, whole)).verdict is Verdict.PASS


def test_rest_binds_the_tls13_tickets_for_decrypt(tmp_path: Path) -> None:
    steps = _setup("{protocols: [tls1.3]}") + _handshake("rest: rc") + f"""\
- decrypt: {{context: cs, input: rc, data: nst, extra: more}}
  expect: SEC_I_RENEGOTIATE
- encrypt: {{context: cs, data: "x"}}
  expect: SEC_E_CONTEXT_EXPIRED
- reinit: ac
- initialize: {{ctx: ac, context: cs, target: server.test, req: {CREQ}, input: nst}}
  completes: SEC_E_OK
- wait: ac
- encrypt: {{context: cs, data: "again", record: r1}}
- decrypt: {{context: ss, input: r1, plaintext: "again"}}
"""
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.PASS, result.message
    # Feeding something other than the ticket's DATA: the leg is still SEC_E_OK (any input
    # releases the stall), but a wrong expectation on it is reported.
    wrong = steps.replace("  completes: SEC_E_OK\n", "  completes: SEC_I_CONTINUE_NEEDED\n")
    assert "completed with SEC_E_OK" in _run(_scenario(tmp_path, wrong)).message


# ---- SEC_I_INCOMPLETE_CREDENTIALS ------------------------------------------------------------------------
def _mutual(retry: str, final: str) -> str:
    extra = "- acquire: {ctx: ac, cred: cc2, use: outbound, auth: {certificate: client}}\n- wait: ac\n- reinit: ac\n"
    server = f"final: {final}"
    text = _setup(extra=extra) + _handshake("", server, retry)
    return text.replace(f"req: {SREQ}", "req: [STREAM, MUTUAL_AUTH, ALLOCATE_MEMORY]")


@pytest.mark.parametrize("retry,final", [
    ("client_certificate_retry: cc2", "{attributes: {has: [MUTUAL_AUTH]}}"),
    ("client_certificate_retry: null", "{attributes: {lacks: [MUTUAL_AUTH]}}"),
])
def test_incomplete_credentials_retried_with_the_named_credential(tmp_path: Path, retry: str, final: str) -> None:
    result = _run(_scenario(tmp_path, _mutual(retry, final)))
    assert result.verdict is Verdict.PASS, result.message
    legs = _legs(result)
    retried = [i for i, text in enumerate(legs) if "SEC_I_INCOMPLETE_CREDENTIALS" in text]
    assert len(retried) == 1
    same_input = legs[retried[0]].split("in=")[1].split()[0]
    assert legs[retried[0] + 1].split("in=")[1].split()[0] == same_input  # the same input again


def test_wrong_final_attributes_fail_and_name_the_side(tmp_path: Path) -> None:
    result = _run(_scenario(tmp_path, _mutual("client_certificate_retry: null", "{attributes: {has: [MUTUAL_AUTH]}}")))
    assert result.verdict is Verdict.FAIL
    assert "server final attributes: missing MUTUAL_AUTH" in result.message


def test_without_retry_option_incomplete_credentials_ends_the_handshake(tmp_path: Path) -> None:
    steps = _mutual("", "{attributes: {lacks: [MUTUAL_AUTH]}}")
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.FAIL
    assert "the client ended with SEC_I_INCOMPLETE_CREDENTIALS" in result.message


# ---- alerts and failures ----------------------------------------------------------------------------------
def test_alert_is_checked_and_the_alert_record_reaches_the_peer(tmp_path: Path) -> None:
    ok = _setup(server="{certificate: untrusted}") + _handshake(
        "expect: SEC_E_UNTRUSTED_ROOT, alert: [2, 48]", "expect: SEC_E_UNTRUSTED_ROOT, alert: none", expect="failure")
    result = _run(_scenario(tmp_path, ok))
    assert result.verdict is Verdict.PASS, result.message
    assert "server ASC in=7 -> SEC_E_UNTRUSTED_ROOT" in _legs(result)[-1]
    wrong = ok.replace("alert: [2, 48]", "alert: [2, 42]")
    message = _run(_scenario(tmp_path, wrong)).message
    assert "client alert: expected (2, 42), got (2, 48)" in message and "(legs: ISC SEC_I_CONTINUE_NEEDED" in message


def test_failure_message_names_the_side_that_failed_first(tmp_path: Path) -> None:
    steps = _setup(server="{certificate: expired}") + _handshake()
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.FAIL
    assert "the client ended with SEC_E_CERT_EXPIRED" in result.message


# ---- CompleteAuthToken ---------------------------------------------------------------------------------------
class _CountingSimulator(SimulatorAdapter):
    def __init__(self, answer: int = st.SEC_E_OK) -> None:
        super().__init__(completion="inline")
        self.completed: list[Any] = []
        self.answer = answer

    def complete_auth_token(self, context: Any, buffers: list[SecBuffer]) -> int:
        self.completed.append(context)
        status = super().complete_auth_token(context, buffers)
        return status if self.answer == st.SEC_E_OK else self.answer


_SIM_COMPLETE = """\
- create: ac
- set_callback: ac
- create: as
- set_callback: as
- acquire: {ctx: ac, cred: cc, use: outbound,
           auth: {user: alice, password: secret, inject: {"2": SEC_I_COMPLETE_NEEDED}}}
- wait: ac
- reinit: ac
- acquire: {ctx: as, cred: sc, use: inbound, auth: {accounts: {alice: secret}}}
- wait: as
- reinit: as
- handshake:
    client: {ctx: ac, cred: cc, context: cs, target: server.test, req: [CONNECTION]}
    server: {ctx: as, cred: sc, context: ss, req: [CONNECTION]}
    legs: [SEC_I_CONTINUE_NEEDED, SEC_E_OK, SEC_I_COMPLETE_NEEDED]
"""


def test_complete_needed_calls_complete_auth_token_then_counts_as_done(tmp_path: Path) -> None:
    adapter = _CountingSimulator()
    result = _run(_scenario(tmp_path, _SIM_COMPLETE, package="Sim"), adapter=adapter)
    assert result.verdict is Verdict.PASS, result.message
    assert len(adapter.completed) == 1 and adapter.completed[0] is not None
    failing = _CountingSimulator(st.SEC_E_INVALID_TOKEN)
    result = _run(_scenario(tmp_path, _SIM_COMPLETE, package="Sim"), adapter=failing)
    assert result.verdict is Verdict.FAIL
    assert "CompleteAuthToken on the client context after SEC_I_COMPLETE_NEEDED returned SEC_E_INVALID_TOKEN" \
        in result.message


def test_complete_auth_token_step(tmp_path: Path) -> None:
    steps = _SIM_COMPLETE + "- complete_auth_token: {context: cs}\n- complete_auth_token: {context: bogus}\n" \
        "  expect: SEC_E_INVALID_HANDLE\n"
    adapter = _CountingSimulator()
    assert _run(_scenario(tmp_path, steps, package="Sim"), adapter=adapter).verdict is Verdict.PASS
    assert len(adapter.completed) == 3  # the handshake's, the step's, and the bogus one
    wrong = steps.replace("  expect: SEC_E_INVALID_HANDLE\n", "  expect: SEC_E_OK\n")
    assert "got SEC_E_INVALID_HANDLE" in _run(_scenario(tmp_path, wrong, package="Sim")).message


# ---- stream steps ------------------------------------------------------------------------------------------------
def test_decrypt_binds_extra_tail_and_data(tmp_path: Path) -> None:
    steps = _setup() + _handshake() + """\
- encrypt: {context: cs, data: "one", record: r1}
- encrypt: {context: cs, data: "two", record: r2}
- decrypt: {context: ss, input: {concat: [r1, r2]}, plaintext: "one", data: d1, extra: x1}
- decrypt: {context: ss, input: x1, plaintext: "two", extra: x2}
  outputs: {extra: absent}
- decrypt: {context: ss, input: x2}
  expect: SEC_E_INCOMPLETE_MESSAGE
  note: nothing was left, so the bound tail is empty
"""
    assert _run(_scenario(tmp_path, steps)).verdict is Verdict.PASS
    wrong = steps.replace('plaintext: "two"', 'plaintext: "one"')
    assert "plaintext: expected b'one', got b'two'" in _run(_scenario(tmp_path, wrong)).message


def test_shutdown_alert_token_in_both_profiles(tmp_path: Path) -> None:
    steps = _setup() + _handshake() + """\
- shutdown: {context: cs, alert: [2, 40]}
  expect: SEC_E_UNSUPPORTED_FUNCTION
- shutdown: {context: cs, alert: [1, 0]}
  expect: SEC_E_OK
"""
    scenario = _scenario(tmp_path, steps)
    assert scenario.steps[-1].summary == "shutdown (alert 1, 0)"
    assert _run(scenario, profile="user").verdict is Verdict.PASS
    kernel = _run(scenario, profile="kernel")  # OQ-17: every token is unsupported in kernel mode
    assert kernel.verdict is Verdict.FAIL and "got SEC_E_UNSUPPORTED_FUNCTION" in kernel.message


def test_data_rep_words_and_schema(tmp_path: Path) -> None:
    steps = _setup() + _handshake("data_rep: native", "data_rep: network") + f"""\
- reinit: ac
- initialize: {{ctx: ac, context: cs, target: server.test, req: {CREQ}, input: {{empty: true}}, data_rep: 16}}
  completes: SEC_E_UNSUPPORTED_FUNCTION
"""
    scenario = _scenario(tmp_path, steps)
    handshake: m.Handshake = scenario.steps[10].args  # type: ignore[assignment]
    assert (handshake.client.data_rep, handshake.server.data_rep) == (0x10, 0)
    leg: m.Handshake1 = scenario.steps[12].args  # type: ignore[assignment]
    assert leg.data_rep == 0x10
    assert _run(scenario).verdict is Verdict.PASS
    with pytest.raises(LoadError, match="data_rep"):
        _scenario(tmp_path, steps.replace("data_rep: native", "data_rep: host"))


@pytest.mark.parametrize("mode", ["deferred", "threaded"])
def test_handshake_drives_deferred_and_threaded_completion(tmp_path: Path, mode: str) -> None:
    steps = _setup().replace("- wait: ac\n", "- complete: ac\n- wait: ac\n" if mode == "deferred" else "- wait: ac\n")
    steps = steps.replace("- wait: as\n", "- complete: as\n- wait: as\n" if mode == "deferred" else "- wait: as\n")
    steps += _handshake(extra="delivery: {chunk: 300}") + """\
- encrypt: {context: cs, data: "hello", record: r1}
- decrypt: {context: ss, input: r1, plaintext: "hello"}
"""
    result = _run(_scenario(tmp_path, steps), mode=mode)
    assert result.verdict is Verdict.PASS, result.message


# ---- the corpus catches broken packages ---------------------------------------------------------------------
CORPUS = Path(__file__).resolve().parent.parent / "scenarios"


def _corpus_verdict(name: str, profile: str = "kernel") -> ScenarioResult:
    return _run(load_scenario(CORPUS / name), profile=profile)


@pytest.mark.parametrize("target,replacement,scenarios", [
    # ISC/ASC stop reporting SECBUFFER_MISSING (SCH-21) / SECBUFFER_EXTRA (SCH-23)
    ("adapters.simulator.packages.tls.report_missing", lambda *a: None,
     ["tls/asc-first-call-incomplete.yaml", "tls/isc-incomplete-keeps-state.yaml"]),
    ("adapters.simulator.packages.tls.report_extra", lambda *a: None,
     ["tls/coalesced-final-flight-tls12.yaml", "tls/chunked-flights-tls13.yaml"]),
    # ApplyControlToken accepted in kernel mode (SHUT-4, OQ-17)
    ("adapters.simulator.packages.tls.TlsPackage.apply_control_token", lambda *a: st.SEC_E_OK,
     ["tls/shutdown-kernel-mode-unsupported-tls12.yaml"]),
])
def test_tls_scenarios_fail_on_a_broken_package(monkeypatch: pytest.MonkeyPatch, target: str, replacement: Any,
                                                scenarios: list[str]) -> None:
    for name in scenarios:
        assert _corpus_verdict(name).verdict is Verdict.PASS, name
    monkeypatch.setattr(target, replacement)
    for name in scenarios:
        result = _corpus_verdict(name)
        assert result.verdict is Verdict.FAIL, (name, result.verdict, result.message)
