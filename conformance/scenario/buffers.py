"""Runtime helpers for steps: token specs to bytes, SecBuffer descriptors, ``outputs`` checks.

Kept apart from the executor so they can be tested and reused (the fuzzer builds inputs the
same way).  Nothing here formats strings unless a check fails.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.api import CallOutputs, SecBuffer
from adapters.constants import (
    ASC_RET,
    ISC_RET,
    SECBUFFER_DATA,
    SECBUFFER_EMPTY,
    SECBUFFER_EXTRA,
    SECBUFFER_MISSING,
    SECBUFFER_TOKEN,
    flag_names,
)
from conformance.scenario.model import OutputChecks, OutputSpec, TokenSpec


class UnboundToken(LookupError):
    """A token name whose producing call did not (yet) produce bytes."""


def garbage(count: int) -> bytes:
    """``count`` deterministic bytes that start like no known token format (not SIM1, NTLMSSP, TLS)."""
    return bytes((0xA5 + 151 * i) & 0xFF for i in range(count))


def token_bytes(spec: TokenSpec, tokens: Mapping[str, bytes]) -> bytes:
    kind = spec.kind
    if kind == "ref":
        try:
            data = tokens[spec.name]
        except KeyError:
            raise UnboundToken(spec.name) from None
        if spec.truncate is not None:
            data = data[: spec.truncate]
        if spec.slice is not None:
            data = data[spec.slice[0] : spec.slice[1]]
        if spec.flip is not None and 0 <= spec.flip < len(data):
            mutable = bytearray(data)
            mutable[spec.flip] ^= 0xFF
            data = bytes(mutable)
        return data
    if kind == "hex":
        return spec.data
    if kind == "garbage":
        return garbage(spec.count)
    if kind == "concat":
        return b"".join(token_bytes(part, tokens) for part in spec.parts)
    return b""


def input_descriptor(spec: TokenSpec | None, tokens: Mapping[str, bytes]) -> list[SecBuffer] | None:
    """``[TOKEN(bytes), EMPTY]`` (SCH-5, SCH-16), or None for a NULL input."""
    if spec is None:
        return None
    return [SecBuffer(SECBUFFER_TOKEN, token_bytes(spec, tokens)), SecBuffer(SECBUFFER_EMPTY)]


def output_descriptor(spec: OutputSpec) -> list[SecBuffer] | None:
    if spec.kind == "none":
        return None
    return [SecBuffer(SECBUFFER_TOKEN, b"", spec.size if spec.kind == "size" else 0)]


def first_of(buffers: list[SecBuffer] | None, buffer_type: int) -> SecBuffer | None:
    if buffers:
        for buf in buffers:
            if buf.type & 0x0FFFFFFF == buffer_type:
                return buf
    return None


def output_token(outputs: CallOutputs) -> bytes | None:
    buf = first_of(outputs.output, SECBUFFER_TOKEN)
    return None if buf is None else buf.data[: buf.cb] if buf.size is not None else buf.data


def data_buffer(buffers: list[SecBuffer]) -> bytes | None:
    buf = first_of(buffers, SECBUFFER_DATA)
    return None if buf is None else buf.data


def _count_check(what: str, want: str | int, buf: SecBuffer | None) -> str | None:
    if want == "present":
        return None if buf is not None else f"{what}: expected a buffer, none came back"
    if want == "absent":
        return None if buf is None else f"{what}: expected none, got one of {buf.cb} bytes"
    if buf is None:
        return f"{what}: expected {want} bytes, no buffer came back"
    return None if buf.cb == want else f"{what}: expected {want} bytes, got {buf.cb}"


def check_outputs(
    checks: OutputChecks, outputs: CallOutputs | None, input_buffers: list[SecBuffer] | None
) -> list[str]:
    """What does not match ``outputs:`` (empty list when everything does)."""
    problems: list[str] = []
    if outputs is not None:
        if checks.written is not None and outputs.written != checks.written:
            problems.append(f"written: expected {checks.written}, got {outputs.written}")
        if checks.token is not None or checks.token_min is not None or checks.token_max is not None:
            buf = first_of(outputs.output, SECBUFFER_TOKEN)
            size = 0 if buf is None else len(buf.data)
            if checks.token == "present" and size == 0:
                problems.append("token: expected an output token, none was written")
            elif checks.token == "empty" and (buf is None or size):
                problems.append(f"token: expected an empty output buffer, got {size} bytes"
                                if buf is not None else "token: expected an empty output buffer, there is none")
            elif checks.token == "absent" and size:
                problems.append(f"token: expected no output token, got {size} bytes")
            if checks.token_min is not None and size < checks.token_min:
                problems.append(f"token_size: expected at least {checks.token_min} bytes, got {size}")
            if checks.token_max is not None and size > checks.token_max:
                problems.append(f"token_size: expected at most {checks.token_max} bytes, got {size}")
        presence: tuple[tuple[str, str | None, object], ...] = (
            ("new_context", checks.new_context, outputs.new_context),
            ("credential", checks.credential, outputs.credential),
            ("expiry", checks.expiry, outputs.expiry),
        )
        for what, want, have in presence:
            if want is not None and (have is not None) != (want == "present"):
                problems.append(f"{what}: expected {want}, got {'present' if have is not None else 'absent'}")
        if checks.has or checks.lacks:
            table = ISC_RET if checks.flag_table == "ISC_RET" else ASC_RET
            missing = checks.has & ~outputs.context_attr
            unwanted = checks.lacks & outputs.context_attr
            if missing:
                problems.append(f"attributes: missing {', '.join(flag_names(missing, table))}")
            if unwanted:
                problems.append(f"attributes: unexpected {', '.join(flag_names(unwanted, table))}")
    counts: tuple[tuple[str, str | int | None, int], ...] = (
        ("extra", checks.extra, SECBUFFER_EXTRA),
        ("missing", checks.missing, SECBUFFER_MISSING),
    )
    for label, count, kind in counts:
        if count is not None:
            problem = _count_check(label, count, first_of(input_buffers, kind))
            if problem:
                problems.append(problem)
    return problems
