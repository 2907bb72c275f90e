"""Native adapter: Windows data layout of the ctypes mirrors, library loading, options.

The layouts are the Windows (LLP64) ones on every host: ULONG is 4 bytes even where the
host's ``unsigned long`` is 8, and SEC_WCHAR is 2 bytes even where ``wchar_t`` is 4.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import warnings

import pytest

from adapters.native import create, ffi, library

P = ctypes.sizeof(ctypes.c_void_p)


def _layout(struct: type[ctypes.Structure]) -> tuple[int, list[tuple[str, int]]]:
    fields = [(name, getattr(struct, name).offset) for name, *_ in struct._fields_]
    return ctypes.sizeof(struct), fields


def _align(offset: int, to: int) -> int:
    return (offset + to - 1) // to * to


# Expected layouts computed from the Windows C declarations for this pointer size.
EXPECTED = {
    "SecHandle": (2 * P, [("dwLower", 0), ("dwUpper", P)]),
    "SecBuffer": (_align(8 + P, P), [("cbBuffer", 0), ("BufferType", 4), ("pvBuffer", 8)]),
    "SecBufferDesc": (_align(8 + P, P), [("ulVersion", 0), ("cBuffers", 4), ("pBuffers", 8)]),
    "SEC_WINNT_AUTH_IDENTITY_W": (
        _align(_align(_align(P + 4, P) + P + 4, P) + P + 8, P),
        [
            ("User", 0),
            ("UserLength", P),
            ("Domain", _align(P + 4, P)),
            ("DomainLength", _align(P + 4, P) + P),
            ("Password", _align(_align(P + 4, P) + P + 4, P)),
            ("PasswordLength", _align(_align(P + 4, P) + P + 4, P) + P),
            ("Flags", _align(_align(P + 4, P) + P + 4, P) + P + 4),
        ],
    ),
    "SecPkgContext_Sizes": (
        16, [("cbMaxToken", 0), ("cbMaxSignature", 4), ("cbBlockSize", 8), ("cbSecurityTrailer", 12)]
    ),
    "SecPkgContext_StreamSizes": (
        20,
        [("cbHeader", 0), ("cbTrailer", 4), ("cbMaximumMessage", 8), ("cBuffers", 12), ("cbBlockSize", 16)],
    ),
    "SecPkgInfoW": (
        _align(12, P) + 2 * P,
        [("fCapabilities", 0), ("wVersion", 4), ("wRPCID", 6), ("cbMaxToken", 8), ("Name", _align(12, P)),
         ("Comment", _align(12, P) + P)],
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_struct_layout_matches_windows(name: str) -> None:
    assert _layout(ffi.STRUCTURES[name]) == EXPECTED[name]


def test_every_shared_structure_is_checked() -> None:
    assert set(ffi.STRUCTURES) == set(EXPECTED)


def test_ulong_is_32_bit_and_handles_pointer_sized() -> None:
    assert ctypes.sizeof(ffi.ULONG) == 4
    assert ctypes.sizeof(ffi.SEC_WCHAR) == 2
    assert ctypes.sizeof(ffi.TimeStamp) == 8
    assert ctypes.sizeof(ffi.ULONG_PTR) == P
    assert ffi.INVALID_HANDLE_PART == 2 ** (8 * P) - 1


@pytest.mark.parametrize("text", ["", "NTLM", "Négociation", "emoji \U0001f600 outside the BMP"])
def test_wide_strings_are_utf16le_and_nul_terminated(text: str) -> None:
    array = ffi.wide(text)
    encoded = text.encode("utf-16-le")
    assert bytes(array)[: len(encoded)] == encoded
    assert array[len(array) - 1] == 0
    assert ffi.wide_length(text) == len(encoded) // 2  # code units, surrogates count twice
    assert ffi.read_wide(array) == text
    assert ffi.read_wide(None) is None


def test_status_is_unsigned_32_bit() -> None:
    assert ffi.as_status(-2146893052) == 0x80090304
    assert ffi.as_status(0x00090312) == 0x00090312


# ---- loading -----------------------------------------------------------------------------
def test_missing_library_lists_what_was_tried() -> None:
    bogus = "/nonexistent/libsspi-missing.so"
    with pytest.raises(library.LibraryNotFound) as info:
        library.load(bogus)
    assert bogus in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, RuntimeError)


def test_env_var_is_used_before_sspilib(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(library.ENV_VAR, "/nonexistent/from-env.so")
    assert library.candidate_paths() == ["/nonexistent/from-env.so"]
    assert library.candidate_paths("/explicit.so") == ["/explicit.so"]
    with pytest.raises(library.LibraryNotFound, match=r"from-env\.so"):
        library.load()


def test_non_sspi_library_is_rejected() -> None:
    libc = ctypes.util.find_library("c")
    if libc is None:
        pytest.skip("no libc to load")
    with pytest.raises(library.LibraryNotFound, match="missing AcquireCredentialsHandleW"):
        library.bind(ctypes.CDLL(libc), libc)


def test_sspilib_candidates_point_at_libsspi() -> None:
    pytest.importorskip("sspilib", reason="sspilib (which ships libsspi) is not installed")
    found = library.sspilib_candidates()
    assert found and all("libsspi" in path for path in found)


# ---- options -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options, message",
    [
        ({"bogus": "1"}, "unknown native adapter option"),
        ({"isolate": "maybe"}, "expected true or false"),
        ({"call_timeout_ms": "-5"}, "positive integer"),
        ({"workers": "many"}, "positive integer"),
    ],
)
def test_bad_options_are_value_errors(options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create(options)


def test_isolation_goes_through_remote_create(monkeypatch: pytest.MonkeyPatch) -> None:
    remote = importlib.import_module("adapters.remote")
    seen: list[dict[str, str]] = []
    sentinel = object()

    def fake_create(options: dict[str, str]) -> object:
        seen.append(options)
        return sentinel

    monkeypatch.setattr(remote, "create", fake_create, raising=False)
    assert create({"library": "/x.so", "call_timeout_ms": "500"}) is sentinel
    assert seen == [{"agent_adapter": "native", "library": "/x.so", "call_timeout_ms": "500"}]


def test_isolation_falls_back_in_process_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("sspilib", reason="sspilib (which ships libsspi) is not installed")
    remote = importlib.import_module("adapters.remote")
    monkeypatch.delattr(remote, "create", raising=False)
    with pytest.warns(RuntimeWarning, match="IN PROCESS"):
        adapter = create({})
    try:
        assert type(adapter).__name__ == "NativeAdapter"
    finally:
        adapter.close()


def test_isolate_false_is_in_process_and_silent() -> None:
    pytest.importorskip("sspilib", reason="sspilib (which ships libsspi) is not installed")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adapter = create({"isolate": "false", "workers": "2"})
    try:
        caps = adapter.capabilities()
        assert caps.name == "sspi-rs"
        assert caps.supports("package:ntlm")  # the interface compares case-insensitively
        assert {"client", "server", "requires-notify"} <= caps.features
    finally:
        adapter.close()


# ---- hot-path twins (library.EntryPoints) -------------------------------------------------
_ISC_PROTOTYPE = (
    ffi.PSecHandle, ffi.PSecHandle, ctypes.c_void_p, ffi.ULONG, ffi.ULONG, ffi.ULONG,
    ffi.PSecBufferDesc, ffi.ULONG, ffi.PSecHandle, ffi.PSecBufferDesc, ffi.PULONG, ffi.PTimeStamp,
)


def test_arguments_in_c_form_reach_a_c_prototype_unchanged_without_argtypes() -> None:
    """The adapter calls the library's twins (no argtypes) with byref/None/arrays for
    pointers and masked ints for ULONGs; a C function with the real prototype (a ctypes
    thunk, reached through a bare function pointer as libffi reaches the library) must see
    the same values, including ULONGs with the top bit set and those passed on the stack."""
    seen: list[tuple[object, ...]] = []

    def isc(*args: object) -> int:
        seen.append(args)
        return st_continue

    st_continue = 0x00090312
    thunk = ctypes.CFUNCTYPE(ffi.SECURITY_STATUS, *_ISC_PROTOTYPE)(isc)
    address = ctypes.cast(thunk, ctypes.c_void_p).value
    assert address is not None
    bare = ctypes.CFUNCTYPE(ffi.SECURITY_STATUS)(address)
    credential, new = ffi.SecHandle(7, 9), ffi.SecHandle()
    target = ffi.wide("host/server")
    status = bare(ctypes.byref(credential), None, target, 0xFFFFFFFF, 0x80000000, 0x10, None, 0xFFFFFFFE,
                  ctypes.byref(new), None, None, None)
    assert status & 0xFFFFFFFF == st_continue
    (p_cred, p_ctxt, p_target, req, reserved1, rep, p_in, reserved2, p_new, p_out, p_attr, p_expiry), = seen
    assert (req, reserved1, rep, reserved2) == (0xFFFFFFFF, 0x80000000, 0x10, 0xFFFFFFFE)
    assert p_cred.contents.pair() == (7, 9)  # type: ignore[attr-defined]
    assert ctypes.addressof(p_new.contents) == ctypes.addressof(new)  # type: ignore[attr-defined]
    assert p_target == ctypes.addressof(target)
    assert not any((p_ctxt, p_in, p_out, p_attr, p_expiry))


def test_entry_points_have_argtype_free_twins_that_follow_swaps() -> None:
    pytest.importorskip("sspilib", reason="sspilib (which ships libsspi) is not installed")
    lib = library.load()
    functions = lib.functions
    checked = functions["InitializeSecurityContextW"]
    twin = lib.direct["InitializeSecurityContextW"]
    assert checked is not None and twin is not None and twin is not checked
    assert checked.argtypes and twin.argtypes is None  # type: ignore[attr-defined]
    assert twin.restype is ffi.SECURITY_STATUS  # type: ignore[attr-defined]

    def fake(*args: object) -> int:
        return 0

    functions["InitializeSecurityContextW"] = fake  # a test's stand-in reaches the hot path
    assert lib.direct["InitializeSecurityContextW"] is fake
    functions["InitializeSecurityContextW"] = checked  # putting the original back restores the twin
    assert lib.direct["InitializeSecurityContextW"] is twin
    assert lib.has("InitializeSecurityContextW") and lib.InitializeSecurityContextW is checked


def test_a_library_built_from_a_plain_dict_gets_entry_points() -> None:
    def delete(handle: object) -> int:
        return 0

    lib = library.SspiLibrary(path="fake", functions={"DeleteSecurityContext": delete})
    assert isinstance(lib.functions, library.EntryPoints)
    assert lib.direct == {"DeleteSecurityContext": delete}
    assert lib.call("DeleteSecurityContext", None) == 0
