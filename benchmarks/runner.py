"""Runner throughput and interpreter overhead.

* ``scenarios_per_s_1_worker`` / ``scenarios_per_s_2_workers``: the full pytest path (a
  ``python -m pytest`` subprocess with the plugin, against the simulator, results written
  to results.jsonl and the reports) over a generated corpus of distinct copies (unique ids)
  of a few typical scenarios, repeated with ``--repeat`` to reach at least 2000 scenario
  executions.  Wall time of the whole subprocess, start-up and collection included.  The
  simulator runs with threaded completion but without its random per-call delay (see
  HEADLINE_OPTIONS); a 2-worker run with the default delay is reported alongside.
* ``interpreter_overhead_ratio``: one scenario run through ``run_scenario`` (loading done
  once, the contract monitor included) against the same calls written by hand in Python on
  the same adapter, both with a fresh simulator per run, inline completion so no scheduler
  delay hides the interpreter's own cost.  Ratio of the median times.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from adapters import status as st
from adapters.api import Adapter, CallOutputs
from adapters.constants import SECPKG_CRED_OUTBOUND
from adapters.registry import create_adapter

REPO = Path(__file__).resolve().parent.parent
MIN_EXECUTIONS = 2000
COPIES = 10  # distinct files per template (unique ids)

# Typical corpus shapes: a context lifecycle, an acquire/free cycle with reinit, and a
# two-leg handshake through the Sim package (threaded completion, the simulator default).
TEMPLATES: dict[str, str] = {
    "lifecycle": """\
id: bench.lifecycle-{n}
title: Fresh context, callback registration, free
requirements: [CTX-1, CTX-7]
steps:
  - create: a1
  - status: a1
    expect: SEC_E_OK
  - set_callback: a1
  - status: a1
    expect: SEC_E_OK
  - free: a1
""",
    "acquire": """\
id: bench.acquire-{n}
title: Acquire, wait, reinit, free the credential, free
requirements: [CALL-1, CTX-8, REINIT-1]
requires: [package:Sim]
steps:
  - create: a1
  - set_callback: a1
  - acquire: {{ctx: a1, cred: c1, package: Sim, use: outbound, auth: {{user: alice, password: secret}}}}
    completes: SEC_E_OK
  - wait: a1
    expect: SEC_E_OK
  - reinit: a1
  - free_credentials: {{ctx: a1, cred: c1}}
    completes: SEC_E_OK
  - wait: a1
    expect: SEC_E_OK
  - reinit: a1
  - free: a1
""",
    "handshake": """\
id: bench.handshake-{n}
title: Two-leg Sim handshake with reinit between legs
requirements: [CALL-5, REINIT-6]
requires: [package:Sim, client, server]
steps:
  - create: ac
  - set_callback: ac
  - create: as
  - set_callback: as
  - acquire: {{ctx: ac, cred: cc, package: Sim, use: outbound, auth: {{user: alice, password: secret, legs: 2}}}}
  - wait: ac
    expect: SEC_E_OK
  - reinit: ac
  - acquire:
      ctx: as
      cred: sc
      package: Sim
      use: inbound
      auth: {{name: server.test, accounts: {{alice: secret}}, legs: 2}}
  - wait: as
    expect: SEC_E_OK
  - reinit: as
  - handshake:
      client: {{ctx: ac, cred: cc, context: cs, target: server.test, req: [CONNECTION]}}
      server: {{ctx: as, cred: sc, context: ss, req: [CONNECTION]}}
  - free: ac
  - free: as
""",
}


def write_corpus(root: Path) -> int:
    """Distinct scenario files under ``root/scenarios``; returns how many."""
    count = 0
    for area, template in TEMPLATES.items():
        folder = root / "scenarios" / area
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(COPIES):
            (folder / f"{area}-{n}.yaml").write_text(template.format(n=n))
            count += 1
    return count


def _children_cpu() -> float:
    """User + system CPU seconds of waited-for child processes (0.0 where unavailable)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pytest(root: Path, files: int, workers: int, options: dict[str, str]) -> dict[str, Any]:
    """One pytest subprocess over the corpus; executions per second of wall time."""
    from conformance.pytest_plugin import RUN_FLAGS, plugin_args
    from conformance.reports.jsonl import read_results

    repeat = -(-MIN_EXECUTIONS // files)
    report_dir = root / f"reports-{workers}"
    # The same pytest flags as `sspi-conformance run` (conformance/cli.py).
    argv = [sys.executable, "-m", "pytest", *plugin_args(), *RUN_FLAGS, "-q", "--repeat", str(repeat),
            "--report-dir", str(report_dir), "scenarios"]
    for key, value in options.items():
        argv += ["--adapter-option", f"{key}={value}"]
    if workers > 1:
        argv += ["-n", str(workers)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    before = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    # CPU seconds of pytest and its workers: less sensitive than wall time to a shared machine.
    cpu = _children_cpu() - before
    results = read_results(report_dir / "results.jsonl")
    verdicts: dict[str, int] = {}
    for r in results:
        verdicts[r.verdict.value] = verdicts.get(r.verdict.value, 0) + 1
    if proc.returncode != 0 or len(results) != files * repeat:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise RuntimeError(f"pytest exit {proc.returncode}, {len(results)} results of {files * repeat}:\n{tail}")
    executing = sum(r.duration_s for r in results)
    return {"executions": len(results), "wall_s": round(wall, 3), "per_s": round(len(results) / wall, 1),
            "cpu_s": round(cpu, 3), "cpu_ms_per_scenario": round(cpu * 1000 / len(results), 3),
            "run_scenario_s": round(executing, 3), "adapter_options": options, "verdicts": verdicts}


def pytest_floor(root: Path, workers: int) -> dict[str, Any]:
    """The same number of empty Python tests with the same flags: pytest's (and xdist's) own
    per-item cost on this machine, the floor under any scenarios-per-second figure."""
    from conformance.pytest_plugin import RUN_FLAGS

    folder = root / "floor"
    folder.mkdir(exist_ok=True)
    (folder / "test_empty.py").write_text(
        f"import pytest\n\n\n@pytest.mark.parametrize('i', range({MIN_EXECUTIONS}))\ndef test_empty(i):\n    pass\n")
    argv = [sys.executable, "-m", "pytest", *RUN_FLAGS, "-q", "-p", "no:sspi_conformance", "test_empty.py"]
    if workers > 1:
        argv += ["-n", str(workers)]
    before = _children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, cwd=folder, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    cpu = _children_cpu() - before
    if proc.returncode != 0:
        raise RuntimeError(f"empty-test floor run failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    return {"tests": MIN_EXECUTIONS, "wall_s": round(wall, 3), "per_s": round(MIN_EXECUTIONS / wall, 1),
            "cpu_ms_per_test": round(cpu * 1000 / MIN_EXECUTIONS, 3)}


# ---- interpreter overhead --------------------------------------------------------------------------


def hand_written(adapter: Adapter) -> None:
    """The ``acquire`` template's calls, written directly against the adapter."""
    done = threading.Event()

    def callback(ctx: Any, data: Any) -> None:
        done.set()

    def wait_ok(ctx: Any) -> None:
        if not done.wait(2.0):
            raise RuntimeError("no callback")
        done.clear()
        if adapter.get_async_call_status(ctx) != st.SEC_E_OK:
            raise RuntimeError("unexpected status")

    a1 = adapter.create_async_context()
    if adapter.set_async_notify_callback(a1, callback, "a1") != st.SEC_E_OK:
        raise RuntimeError("set callback")
    outputs = CallOutputs()
    queued = adapter.acquire_credentials_handle_async(
        a1, None, "Sim", SECPKG_CRED_OUTBOUND, {"user": "alice", "password": "secret"}, outputs)
    if queued != st.SEC_E_OK:
        raise RuntimeError("acquire")
    wait_ok(a1)
    if not st.nt_success(adapter.reinit_async_context(a1)):
        raise RuntimeError("reinit")
    if adapter.free_credentials_handle_async(a1, outputs.credential) != st.SEC_E_OK:
        raise RuntimeError("free credentials")
    wait_ok(a1)
    if not st.nt_success(adapter.reinit_async_context(a1)):
        raise RuntimeError("reinit")
    adapter.free_async_context(a1)


def overhead(root: Path, options: dict[str, str], rounds: int = 300) -> dict[str, Any]:
    from conformance.executor import run_scenario
    from conformance.results import Verdict
    from conformance.scenario.loader import load_scenario

    scenario = load_scenario(root / "scenarios" / "acquire" / "acquire-0.yaml")

    def factory() -> Adapter:
        return create_adapter("simulator", options)

    def by_hand() -> None:
        adapter = factory()
        try:
            hand_written(adapter)
        finally:
            adapter.close()

    def by_interpreter() -> None:
        result = run_scenario(scenario, factory, adapter_name="simulator")
        if result.verdict is not Verdict.PASS:
            raise RuntimeError(f"benchmark scenario did not pass: {result.message}")

    for fn in (by_hand, by_interpreter):  # warm caches and imports
        for _ in range(20):
            fn()
    hand: list[float] = []
    interp: list[float] = []
    for _ in range(rounds):  # interleaved so machine noise hits both alike
        t0 = time.perf_counter()
        by_hand()
        t1 = time.perf_counter()
        by_interpreter()
        t2 = time.perf_counter()
        hand.append(t1 - t0)
        interp.append(t2 - t1)
    hand_med, interp_med = statistics.median(hand), statistics.median(interp)
    return {"hand_written_us": round(hand_med * 1e6, 1), "run_scenario_us": round(interp_med * 1e6, 1),
            "ratio": round(interp_med / hand_med, 3)}


# Threaded completion (callbacks on the simulator's worker threads, as by default) without
# the simulator's random per-call delay (max_delay_ms, 2 ms by default): that delay imitates
# implementation latency and would measure the simulator's sleeps, not the runner.
HEADLINE_OPTIONS = {"max_delay_ms": "0"}


def main() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="sspi-bench-runner-") as tmp:
        root = Path(tmp)
        files = write_corpus(root)
        # Inline completion: no scheduler latency to hide the interpreter's own cost.
        ratio = overhead(root, {"completion": "inline"})
        ratio_threaded = overhead(root, HEADLINE_OPTIONS, rounds=100)
        one = run_pytest(root, files, 1, HEADLINE_OPTIONS)
        two = run_pytest(root, files, 2, HEADLINE_OPTIONS)
        default_two = run_pytest(root, files, 2, {})
        floor_one = pytest_floor(root, 1)
        floor_two = pytest_floor(root, 2)
    return {
        "scenarios_per_s_1_worker": one["per_s"],
        "scenarios_per_s_2_workers": two["per_s"],
        "interpreter_overhead_ratio": ratio["ratio"],
        "details": {
            "corpus_files": files,
            "one_worker": one,
            "two_workers": two,
            "two_workers_default_simulator_delays": default_two,
            "empty_pytest_tests_1_worker": floor_one,
            "empty_pytest_tests_2_workers": floor_two,
            "overhead": ratio,
            "overhead_threaded_completion": ratio_threaded,
            "load_average_1min": round(os.getloadavg()[0], 2),
            "targets": {"scenarios_per_s_2_workers": ">= 300", "interpreter_overhead_ratio": "<= 2.0"},
        },
    }
