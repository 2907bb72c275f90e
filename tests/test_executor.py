"""The executor: small scenarios run against the simulator (and a few fake adapters).

Every verdict kind is produced here from a real run: pass in each completion mode, each
failure kind with expected/actual printed as ``NAME (0xXXXXXXXX)``, unsupported, a wait that
times out (and the run going on), the scenario budget, the handshake composite, a crash, a
hang and a harness bug.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from adapters import status as st
from adapters.api import Adapter, ImplementationCrashed, ImplementationHung, Unsupported
from adapters.simulator import SimulatorAdapter, create
from conformance.executor import run_scenario
from conformance.results import ScenarioResult, Verdict
from conformance.scenario import Scenario, load_scenario, steps

MODES = ("inline", "deferred", "threaded")
CLIENT = "{user: alice, password: secret}"
SERVER = "{name: server.test, accounts: {alice: secret}}"


def _scenario(tmp_path: Path, steps: str, header: str = "", name: str = "s.yaml") -> Scenario:
    text = "id: test.scenario\ntitle: t\nrequirements: [CTX-1]\n" + textwrap.dedent(header)
    text += "steps:\n" + textwrap.indent(textwrap.dedent(steps), "  ")
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_scenario(path)


def _run(scenario: Scenario, factory: Callable[[], Adapter] | None = None, mode: str = "threaded",
         **kwargs: Any) -> ScenarioResult:
    return run_scenario(scenario, factory or (lambda: create({"completion": mode})), adapter_name="sim", **kwargs)


def _complete(mode: str, ctx: str) -> str:
    return f"- complete: {ctx}\n" if mode == "deferred" else ""


def _acquire_steps(mode: str) -> str:
    return f"""\
- create: a1
- set_callback: a1
  data: 42
- status: a1
  expect: SEC_E_OK
- acquire: {{ctx: a1, cred: c1, package: Sim, use: outbound, auth: {CLIENT}}}
  completes: SEC_E_OK
  outputs: {{credential: present, expiry: present, written: true}}
{_complete(mode, "a1")}- wait: a1
  expect: SEC_E_OK
- callbacks: a1
  expect: 1
- reinit: a1
- free_credentials: {{ctx: a1, cred: c1}}
  completes: SEC_E_OK
{_complete(mode, "a1")}- wait: a1
- reinit: a1
- free: a1
"""


@pytest.mark.parametrize("mode", MODES)
def test_pass_in_each_completion_mode(tmp_path: Path, mode: str) -> None:
    scenario = _scenario(tmp_path, _acquire_steps(mode), f"completion: {mode}\n")
    result = _run(scenario, mode=mode)
    assert result.verdict is Verdict.PASS, result.message
    assert len(result.steps) == len(scenario.steps) and all(s.ok for s in result.steps)
    assert result.steps[0].line == scenario.steps[0].line
    assert result.implementation == "simulator 1"
    assert not [v for v in result.violations if v.party == "implementation"]
    assert result.trace == []  # kept only for non-pass verdicts unless asked
    assert _run(scenario, mode=mode, keep_trace=True).trace


def test_status_mismatch_prints_names_and_hex(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, """\
        - create: a1
        - status: a1
          expect: SEC_I_ASYNC_CALL_PENDING
        - free: a1
        """)
    result = _run(scenario)
    assert result.verdict is Verdict.FAIL
    failed = [s for s in result.steps if not s.ok]
    assert len(failed) == 1 and failed[0].line == scenario.steps[1].line
    assert failed[0].expected == "SEC_I_ASYNC_CALL_PENDING (0x00090368)"
    assert failed[0].actual == "SEC_E_OK (0x00000000)"
    assert result.message == (f"step 2 (line {scenario.steps[1].line}) status a1: expected "
                               "SEC_I_ASYNC_CALL_PENDING (0x00090368), got SEC_E_OK (0x00000000)")
    assert result.trace  # evidence kept for a failure
    assert result.steps[2].ok  # the run went on


def test_queue_status_mismatch(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - acquire: {{ctx: a1, cred: c1, auth: {CLIENT}}}
        - free: a1
        """)
    result = _run(scenario)
    assert result.verdict is Verdict.FAIL
    # No callback registered: the queue is refused (OQ-6), the scenario expected SEC_E_OK.
    assert "queue: expected SEC_E_OK (0x00000000), got SEC_E_INVALID_PARAMETER (0x8009035D)" in result.message


def test_completion_status_mismatch_is_reported_at_the_wait(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - set_callback: a1
        - acquire: {{ctx: a1, cred: c1, package: NoSuchPackage, auth: {CLIENT}}}
          completes: SEC_E_OK
        - wait: a1
        - reinit: a1
        - free: a1
        """)
    result = _run(scenario)
    assert result.verdict is Verdict.FAIL
    wait = result.steps[3]
    assert not wait.ok and wait.action == "wait"
    assert wait.actual == "SEC_E_SECPKG_NOT_FOUND (0x80090305)" and wait.expected == "SEC_E_OK (0x00000000)"
    assert f"line {scenario.steps[2].line}" in wait.message


def test_outputs_callbacks_and_requires_notify_mismatches(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - requires_notify: a1
          expect: true
        - set_callback: a1
        - acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
          outputs: {{credential: absent}}
        - wait: a1
        - callbacks: a1
          expect: 2
        - reinit: a1
        - free_credentials: {{ctx: a1, cred: c1}}
        - wait: a1
        - reinit: a1
        - free: a1
        """)
    result = _run(scenario)
    assert result.verdict is Verdict.FAIL
    bad = {s.action: s for s in result.steps if not s.ok}
    assert bad["requires_notify"].message == "expected TRUE, got FALSE"
    assert "credential: expected absent, got present" in bad["wait"].message
    assert bad["callbacks"].message == "expected 2 callback(s), got 1"
    assert result.message.startswith(f"step 2 (line {scenario.steps[1].line}) requires_notify a1")


def test_unimplemented_capability_is_unsupported(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "- create: a1\n- free: a1\n", "requires: [package:Kerberos, user-mode]\n")
    result = _run(scenario)
    assert result.verdict is Verdict.UNSUPPORTED
    assert result.message == "simulator does not claim package:Kerberos, user-mode"


def test_unsupported_raised_mid_run(tmp_path: Path) -> None:
    class NoRequiresNotify(SimulatorAdapter):
        def async_context_requires_notify(self, ctx: Any) -> bool:
            raise Unsupported("SspiAsyncContextRequiresNotify is not exported (GEN-7)")

    scenario = _scenario(tmp_path, "- create: a1\n- requires_notify: a1\n  expect: false\n- free: a1\n")
    result = _run(scenario, NoRequiresNotify)
    assert result.verdict is Verdict.UNSUPPORTED
    assert "step 2" in result.message and "GEN-7" in result.message


def test_wait_without_completion_times_out_and_the_run_goes_on(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - set_callback: a1
        - acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
        - wait: a1
          timeout_ms: 40
        - status: a1
          expect: SEC_I_ASYNC_CALL_PENDING
        - complete: a1
        - callbacks: a1
          expect: 1
        """, "completion: deferred\n")
    started = time.monotonic()
    result = _run(scenario, mode="deferred")
    assert time.monotonic() - started < 2.0
    assert result.verdict is Verdict.FAIL
    assert result.message == f"step 4 (line {scenario.steps[3].line}) wait a1: no callback within 40 ms"
    assert [s.ok for s in result.steps] == [True, True, True, False, True, True, True]


def test_scenario_budget(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "- create: a1\n- sleep_ms: 500\n- free: a1\n", "timeout_ms: 60\n")
    started = time.monotonic()
    result = _run(scenario)
    assert time.monotonic() - started < 0.4
    assert result.verdict is Verdict.FAIL
    assert result.message.startswith("scenario timed out after 60 ms during step 2")


def test_budget_cuts_a_long_wait(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - set_callback: a1
        - acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
        - wait: a1
          timeout_ms: 5000
        """, "timeout_ms: 80\ncompletion: deferred\n")
    started = time.monotonic()
    result = _run(scenario, mode="deferred")
    assert time.monotonic() - started < 1.0
    assert result.verdict is Verdict.FAIL and result.message.startswith("scenario timed out after 80 ms")


def _handshake_steps(reuse: str, legs: str) -> str:
    return f"""\
- create: ac
- set_callback: ac
- create: as
- set_callback: as
- acquire: {{ctx: ac, cred: cc, package: Sim, use: outbound, auth: {CLIENT}}}
- wait: ac
- reinit: ac
- acquire: {{ctx: as, cred: sc, package: Sim, use: inbound, auth: {SERVER}}}
- wait: as
- reinit: as
- handshake:
    client: {{ctx: ac, cred: cc, context: cs, target: server.test, req: [CONNECTION], token: last}}
    server: {{ctx: as, cred: sc, context: ss, req: []}}
    reuse: {reuse}
    legs: {legs}
  expect: SEC_E_OK
- callbacks: as
  expect: 2
- reinit: ac
- reinit: as
- delete_context: {{ctx: ac, context: cs}}
  completes: SEC_E_OK
- wait: ac
- reinit: ac
- delete_context: {{ctx: as, context: ss}}
  completes: SEC_E_OK
- wait: as
- reinit: as
- free_credentials: {{ctx: ac, cred: cc}}
- wait: ac
- reinit: ac
- free_credentials: {{ctx: as, cred: sc}}
- wait: as
- reinit: as
- free: ac
- free: as
"""


@pytest.mark.parametrize("mode", ("inline", "threaded"))
@pytest.mark.parametrize("reuse", ("reinit", "fresh"))
def test_handshake_composite(tmp_path: Path, mode: str, reuse: str) -> None:
    steps = _handshake_steps(reuse, "[SEC_I_CONTINUE_NEEDED, SEC_E_OK, SEC_E_OK]")
    result = _run(_scenario(tmp_path, steps), mode=mode)
    assert result.verdict is Verdict.PASS, result.message
    creates = [e for e in _run(_scenario(tmp_path, steps), mode=mode, keep_trace=True).trace
               if e.op == "create_async_context"]
    # fresh: one new async context before the second leg of each side (client 1 + 0 server)
    assert len(creates) == (3 if reuse == "fresh" else 2)


def test_handshake_legs_mismatch(tmp_path: Path) -> None:
    steps = _handshake_steps("reinit", "[SEC_I_CONTINUE_NEEDED, SEC_I_CONTINUE_NEEDED, SEC_E_OK]")
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.FAIL
    assert ("legs: expected [SEC_I_CONTINUE_NEEDED (0x00090312), SEC_I_CONTINUE_NEEDED (0x00090312), "
            "SEC_E_OK (0x00000000)], got [SEC_I_CONTINUE_NEEDED, SEC_E_OK, SEC_E_OK]") in result.message


def test_handshake_failure_names_the_side(tmp_path: Path) -> None:
    steps = _handshake_steps("reinit", "[SEC_I_CONTINUE_NEEDED, SEC_E_OK, SEC_E_OK]").replace(
        "accounts: {alice: secret}", "accounts: {alice: other}")
    result = _run(_scenario(tmp_path, steps))
    assert result.verdict is Verdict.FAIL
    assert "ended with SEC_E_LOGON_DENIED (0x8009030C), expected SEC_E_OK (0x00000000)" in result.message


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("action", ("free", "reinit"))
def test_on_callback_actions(tmp_path: Path, mode: str, action: str) -> None:
    after = "- free: a1\n" if action == "reinit" else ""
    steps = f"""\
- create: a1
- set_callback: a1
  on_callback: {action}
- acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
  completes: SEC_E_OK
{_complete(mode, "a1")}- wait: a1
  expect: SEC_E_OK
- create: a2
- set_callback: a2
- free_credentials: {{ctx: a2, cred: c1}}
{_complete(mode, "a2")}- wait: a2
- reinit: a2
- free: a2
{after}"""
    result = _run(_scenario(tmp_path, steps, f"completion: {mode}\n"), mode=mode)
    assert result.verdict is Verdict.PASS, result.message


def test_fault_injection_and_status_map(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, f"""\
        - inject_fault: {{fault: create-oom}}
        - create: a0
          expect: null
        - create: a1
        - set_callback: a1
        - inject_fault: {{fault: complete-status, op: acquire, status: SEC_E_INTERNAL_ERROR}}
        - acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
          completes: SEC_E_INSUFFICIENT_MEMORY
        - wait: a1
        - reinit: a1
        - free: a1
        """)
    assert _run(scenario).verdict is Verdict.FAIL
    # A profile mapping the implementation's status onto the expected one makes it pass.
    mapped = _run(scenario, profile_status_map={st.SEC_E_INTERNAL_ERROR: st.SEC_E_INSUFFICIENT_MEMORY})
    assert mapped.verdict is Verdict.PASS, mapped.message


def test_expect_diagnostics(tmp_path: Path) -> None:
    leak = _scenario(tmp_path, "- create: a1\n", "expect_diagnostics: [CTX-6]\n")
    assert _run(leak).verdict is Verdict.PASS
    clean = _scenario(tmp_path, "- create: a1\n- free: a1\n", "expect_diagnostics: [CTX-6]\n", "c.yaml")
    result = _run(clean)
    assert result.verdict is Verdict.FAIL and "did not report CTX-6" in result.message


def test_implementation_violation_fails(tmp_path: Path) -> None:
    class TwoCallbacks(SimulatorAdapter):
        def _invoke(self, callback: Any, actx: Any, data: Any) -> None:
            super()._invoke(callback, actx, data)
            super()._invoke(callback, actx, data)

    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - set_callback: a1
        - acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
        - wait: a1
        - reinit: a1
        - free: a1
        """)
    result = _run(scenario, lambda: TwoCallbacks(completion="inline"))
    assert result.verdict is Verdict.FAIL
    assert result.message.startswith("contract violation OQ-13")


class _Fake(SimulatorAdapter):
    """Raises ``error`` from the first acquire; records close()."""

    error: Exception = ImplementationCrashed("broken pipe")
    closed = 0

    def acquire_credentials_handle_async(self, *args: Any, **kwargs: Any) -> int:
        raise self.error

    def close(self) -> None:
        _Fake.closed += 1
        super().close()


def test_crash_and_hang_verdicts_close_the_adapter(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - set_callback: a1
        - acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
        - free: a1
        """)
    line = scenario.steps[2].line
    _Fake.closed = 0
    crashed = _run(scenario, _Fake)
    assert crashed.verdict is Verdict.CRASHED
    assert crashed.message == (f"implementation crashed during step 3 (line {line}) acquire c1 (Sim, outbound) "
                               "on a1: ImplementationCrashed: broken pipe")

    class Hung(_Fake):
        error = ImplementationHung("no answer within 5 s")

    hung = _run(scenario, Hung)
    assert hung.verdict is Verdict.HUNG and "no answer within 5 s" in hung.message
    assert _Fake.closed == 2


def test_factory_failure_is_a_verdict(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "- create: a1\n- free: a1\n")

    def crash() -> Adapter:
        raise ImplementationCrashed("could not start")

    assert _run(scenario, crash).verdict is Verdict.CRASHED


def test_executor_bug_is_an_error_not_a_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(run: Any, step: Any) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setitem(steps.HANDLERS, "status", broken)
    scenario = _scenario(tmp_path, "- create: a1\n- status: a1\n  expect: SEC_E_OK\n- free: a1\n")
    _Fake.closed = 0
    result = _run(scenario, lambda: _Fake(completion="inline"))
    assert result.verdict is Verdict.ERROR
    assert result.message == (f"harness error during step 2 (line {scenario.steps[1].line}) status a1: "
                              "ZeroDivisionError: division by zero")
    assert _Fake.closed == 1


def test_harness_cleans_up_what_the_scenario_left(tmp_path: Path) -> None:
    # The scenario leaks a credential and an async context; cleanup is not the implementation's
    # fault, and the simulator sees nothing left at close (no leak diagnostics).
    seen: list[Any] = []

    class Recording(SimulatorAdapter):
        def close(self) -> None:
            super().close()
            seen.extend(self.diagnostics())

    scenario = _scenario(tmp_path, f"""\
        - create: a1
        - set_callback: a1
        - acquire: {{ctx: a1, cred: c1, package: Sim, auth: {CLIENT}}}
        - wait: a1
        """)
    result = _run(scenario, lambda: Recording(completion="threaded"))
    assert result.verdict is Verdict.PASS, result.message
    assert seen == []


def test_adapter_instance_is_accepted(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, "- create: a1\n- free: a1\n")
    assert run_scenario(scenario, create({"completion": "inline"}), adapter_name="sim").verdict is Verdict.PASS


def test_stream_steps_after_a_tls_handshake(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, """\
        - create: ac
        - set_callback: ac
        - create: as
        - set_callback: as
        - acquire: {ctx: ac, cred: cc, use: outbound, auth: {manual_validation: true}}
        - wait: ac
        - reinit: ac
        - acquire: {ctx: as, cred: sc, use: inbound, auth: {certificate: server}}
        - wait: as
        - reinit: as
        - handshake:
            client: {ctx: ac, cred: cc, context: cs, target: server.test, req: [CONNECTION, STREAM]}
            server: {ctx: as, cred: sc, context: ss, req: [STREAM]}
        - query_sizes: {context: cs}
        - encrypt: {context: cs, data: "hello world", record: r1}
        - decrypt: {context: ss, input: r1, plaintext: "hello world"}
        - decrypt: {context: ss, input: {token: r1, truncate: 5}}
          expect: SEC_E_INCOMPLETE_MESSAGE
          outputs: {missing: present}
        - encrypt: {context: cs, data: {size: 64}, record: r2}
        - decrypt: {context: ss, input: r2, plaintext: "wrong"}
        - shutdown: {context: cs}
          expect: SEC_E_UNSUPPORTED_FUNCTION
        """, "package: Schannel\n")
    assert "stream" in scenario.needs and "package:Schannel" in scenario.needs
    result = _run(scenario, mode="inline")
    assert result.verdict is Verdict.FAIL
    bad = [s for s in result.steps if not s.ok]
    assert len(bad) == 1 and bad[0].action == "decrypt" and bad[0].line == scenario.steps[16].line
    assert bad[0].message.startswith("plaintext: expected b'wrong', got b'\\x00\\x01")


def test_callback_timeline_is_recorded(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, _acquire_steps("threaded"))
    result = _run(scenario, keep_trace=True)
    assert result.verdict is Verdict.PASS
    assert [(c.ctx, c.data, c.status) for c in result.callbacks] == [("a1", 42, 0), ("a1", 42, 0)]
    assert all(c.thread for c in result.callbacks)
    assert result.callbacks[0].t <= result.callbacks[1].t
    assert result.to_json()["callbacks"][0]["ctx"] == "a1"


def test_junk_status_from_the_implementation_fails_the_step(tmp_path: Path) -> None:
    class Junk(SimulatorAdapter):
        def get_async_call_status(self, ctx: Any) -> int:
            return "pending"  # type: ignore[return-value]

    scenario = _scenario(tmp_path, "- create: a1\n- status: a1\n  expect: SEC_E_OK\n- free: a1\n")
    result = _run(scenario, lambda: Junk(completion="inline"))
    assert result.verdict is Verdict.FAIL
    assert "the implementation returned 'pending', which is not a 32-bit status" in result.message


@pytest.mark.parametrize("mode", ["inline", "threaded"])
def test_a_name_used_before_its_wait_is_bound_from_the_completed_call(tmp_path: Path, mode: str) -> None:
    """A credential used right after the ACH that makes it, with no `wait` in between, is the real
    handle once that ACH has completed (inline: always), never NULL (found by the fuzzer)."""
    scenario = _scenario(tmp_path, """\
        - create: a1
        - set_callback: a1
        - create: a2
        - set_callback: a2
        - acquire: {ctx: a1, cred: c1, package: Sim, use: outbound}
        - sleep_ms: 50
        - free_credentials: {ctx: a2, cred: c1}
          completes: SEC_E_OK
        - wait: a2
        - free: a1
        - free: a2
        """, "requires: [package:Sim]\n")
    result = _run(scenario, mode=mode)
    assert result.verdict is Verdict.PASS, result.message
