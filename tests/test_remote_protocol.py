"""Pieces of the remote protocol on their own: framing, value encoding, options, the agent's
command line, and the documented transcripts against the JSON Schema."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest

from adapters.api import CallOutputs, ContextSizes, SecBuffer, StreamSizes
from adapters.remote import agent, codec, jsonfast, options
from adapters.remote.framing import LineReader, LineTooLong, StreamClosed, StreamTimeout, Transport

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "adapters/remote/schema/protocol.schema.json").read_text())


def validator(ref: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$ref": f"#/$defs/{ref}", "$defs": SCHEMA["$defs"]})


# ---- framing ---------------------------------------------------------------------------------------


@pytest.fixture
def pipe() -> Iterator[tuple[LineReader, int]]:
    r, w = os.pipe()
    yield LineReader(Transport(r, r), 64), w
    os.close(r)
    try:
        os.close(w)
    except OSError:
        pass


def test_lines_split_across_writes_and_several_per_write(pipe: tuple[LineReader, int]) -> None:
    reader, w = pipe
    os.write(w, b'{"a":1}\n{"b"')
    deadline = time.monotonic() + 1
    assert reader.read_line(deadline) == b'{"a":1}'
    os.write(w, b':2}\n\n')
    assert reader.read_line(deadline) == b'{"b":2}'
    assert reader.read_line(deadline) == b""


def test_a_line_over_the_limit_stops_reading(pipe: tuple[LineReader, int]) -> None:
    reader, w = pipe
    os.write(w, b"x" * 200)
    with pytest.raises(LineTooLong):
        reader.read_line(time.monotonic() + 1)


def test_deadline_and_eof(pipe: tuple[LineReader, int]) -> None:
    reader, w = pipe
    started = time.monotonic()
    with pytest.raises(StreamTimeout):
        reader.read_line(started + 0.05)
    assert time.monotonic() - started < 0.5
    os.write(w, b"partial")
    os.close(w)
    with pytest.raises(StreamClosed):
        reader.read_line(time.monotonic() + 1)


def test_fast_json_rejects_what_json_rejects() -> None:
    assert jsonfast.loads(b' {"x": [1, "\\u00e9"]} ') == {"x": [1, "é"]}
    for bad in (b"", b"{", b'{"a":1} trailing', b"\xff", b"NaN-ish", b"[" * 100000 + b"]" * 100000):
        with pytest.raises(ValueError):
            jsonfast.loads(bad)
    assert jsonfast.dumps({"k": "é", "n": None}) == '{"k":"\\u00e9","n":null}'
    with pytest.raises(TypeError):
        jsonfast.dumps({"k": object()})


# ---- data types -------------------------------------------------------------------------------------


def test_values_round_trip_through_their_tags() -> None:
    value = {
        "bytes": b"\x00\xff", "tuple": (1, "a"), "set": frozenset({1, 2}), "keys": {1: "one"},
        "sizes": StreamSizes(5, 36, 16384, 4, 16), "ctx": ContextSizes(12000, 16, 0, 16),
        "buf": SecBuffer(5, b"", 7), "plain": [None, True, 1.5, "s"], "$odd": 1,
    }
    wire = json.loads(json.dumps(codec.encode_value(value)))
    assert codec.decode_value(wire) == value
    with pytest.raises(TypeError, match="no wire form"):
        codec.encode_value(object())
    with pytest.raises(codec.WireError):
        codec.decode_value({"$nope": 1})


def test_buffers_and_outputs_are_validated_before_anything_is_written() -> None:
    out = CallOutputs(output=[SecBuffer(2, b"", 10)])
    keep = out.output[0] if out.output else None
    with pytest.raises(codec.WireError):
        codec.apply_outputs({"credential": 5, "output": None}, out)
    with pytest.raises(codec.WireError):
        codec.decode_buffer({"type": 2, "data": "***", "size": None})
    with pytest.raises(codec.WireError):
        codec.decode_buffer({"type": -1, "data": "", "size": None})
    assert not out.written
    codec.apply_outputs({"credential": "c1", "new_context": None, "output": [{"type": 2, "data": "AAE=", "size": 2}],
                         "context_attr": 4, "expiry": None, "written": True}, out)
    assert out.output is not None and out.output[0] is keep and keep.data == b"\x00\x01" and out.written


# ---- options and the agent's command line -----------------------------------------------------------


def test_options_parse_commands_without_a_shell() -> None:
    assert options.parse_command('["agent", "a b"]') == ("agent", "a b")
    assert options.parse_command("agent 'a b' --x") == ("agent", "a b", "--x")
    parsed = options.parse({"agent_adapter": "native", "call_timeout_ms": "250", "dll": "C:/x.dll"})
    assert parsed.command is not None and parsed.command[-2:] == ("--option", "dll=C:/x.dll")
    assert "--adapter" in parsed.command and "native" in parsed.command
    assert parsed.call_timeout == 0.25 and parsed.forwarded == {"dll": "C:/x.dll"}
    assert options.parse({"connect": "127.0.0.1:9"}).connect == ("127.0.0.1", 9)
    for bad in ({"command": "[1]"}, {"command": ""}, {"connect": "nohost"}, {"call_timeout_ms": "-1"},
                {"max_message_bytes": "many"}, {"command": "x", "connect": "h:1"}):
        with pytest.raises(ValueError):
            options.parse(bad)


def test_agent_refuses_non_loopback_without_allow_remote(capsys: pytest.CaptureFixture[str]) -> None:
    assert agent.main(["--listen", "tcp:0.0.0.0:0"]) == 2
    assert "--allow-remote" in capsys.readouterr().err
    assert agent.main(["--listen", "udp:1"]) == 2
    assert agent.main(["--option", "novalue"]) == 2
    assert agent.is_loopback("127.0.0.1") and agent.is_loopback("::1") and not agent.is_loopback("10.0.0.1")


# ---- the document's transcripts are real protocol -------------------------------------------------------


def test_documented_transcripts_validate_against_the_schema() -> None:
    text = (ROOT / "docs/protocol.md").read_text()
    lines = re.findall(r"^([<>]) (\{.*\})$", text, re.MULTILINE)
    assert len(lines) > 40
    methods: dict[int, str] = {}
    for direction, raw in lines:
        msg = json.loads(raw)
        if direction == ">" and "id" not in msg:  # the client's one notification (held-callbacks)
            ref = "notification.callback_returned"
        elif direction == ">":
            methods[msg["id"]] = msg["method"]
            ref = f"request.{msg['method']}" if f"request.{msg['method']}" in SCHEMA["$defs"] else "request"
        elif "method" in msg:
            ref = "notification.callback"
        else:
            ref = "response"
        errors = list(validator(ref).iter_errors(msg))
        assert not errors, f"{raw[:120]}: {errors[0].message}"
        if direction == "<" and "result" in msg:
            errors = list(validator(f"result.{methods[msg['id']]}").iter_errors(msg["result"]))
            assert not errors, f"{raw[:120]}: {errors[0].message}"
    assert "callback" in text and "-32601" in text
    assert '"method":"callback_returned"' in text and '"hold":1' in text


def test_schema_names_every_interface_method() -> None:
    from adapters.api import OPERATIONS
    from adapters.remote.protocol import CONTROL_METHODS
    from adapters.remote.session import Session

    for method in (*OPERATIONS, *CONTROL_METHODS, "initialize", "close", "shutdown", "diagnostics"):
        assert f"request.{method}" in SCHEMA["$defs"] and f"result.{method}" in SCHEMA["$defs"], method
    assert set(OPERATIONS) <= set(Session.__dict__)


def test_agent_entry_point_is_importable_for_the_cli() -> None:
    assert callable(agent.main)
    assert sys.modules["adapters.remote.agent"] is agent


def test_windows_stdio_fallback_reads_bounded_lines() -> None:
    import io

    read_line = agent._blocking_reader(io.BytesIO(b'{"a":1}\n' + b"y" * 50 + b"\n"), 20)
    assert read_line() == b'{"a":1}'
    with pytest.raises(LineTooLong):
        read_line()
    read_line = agent._blocking_reader(io.BytesIO(b"cut"), 20)
    with pytest.raises(StreamClosed):
        read_line()
    r, w = os.pipe()
    agent._BlockingFds(r, w).write_all(b"line\n", None)
    assert os.read(r, 10) == b"line\n"
    os.close(r)
    os.close(w)


def test_busy_wait_switches_off_when_it_catches_nothing_and_probes_back() -> None:
    from adapters.remote import framing

    r, w = os.pipe()
    reader = LineReader(Transport(r, r), 64, spin_s=0.0002)
    for _ in range(5):  # nothing arrives: each failed spin halves the budget, then it stops
        with pytest.raises(StreamTimeout):
            reader.read_line(time.monotonic() + 0.001)
    assert reader._spin_s == 0.0
    reader._skips = 0
    for _ in range(framing.SPIN_PROBE_EVERY - 1):  # switched off: plain waits
        os.write(w, b"x\n")
        assert reader.read_line(time.monotonic() + 1) == b"x"
    assert reader._skips == framing.SPIN_PROBE_EVERY - 1
    os.write(w, b"y\n")  # the next wait probes (data already there: caught without waiting)
    assert reader.read_line(time.monotonic() + 1) == b"y"
    assert reader._skips == 0
    os.close(r)
    os.close(w)
