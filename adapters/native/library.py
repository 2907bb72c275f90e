"""Finding, loading and binding an SSPI library (secur32.dll or a drop-in like libsspi).

Search order: an explicit path (adapter option ``library=``), then the environment
variable ``SSPI_CONFORMANCE_LIBRARY``, then secur32.dll on Windows, else the libsspi that
ships inside the installed ``sspilib`` wheel (``sspilib.libs/libsspi*.so`` next to the
package; located without importing sspilib).  Failure lists every path tried.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os
import sys
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adapters.native import ffi

ENV_VAR = "SSPI_CONFORMANCE_LIBRARY"

# The synchronous twins of the five async operations (GEN-5): required.
REQUIRED = (
    "AcquireCredentialsHandleW",
    "InitializeSecurityContextW",
    "AcceptSecurityContext",
    "DeleteSecurityContext",
    "FreeCredentialsHandle",
    "FreeContextBuffer",
)
OPTIONAL = (
    "QueryContextAttributesW",
    "EncryptMessage",
    "DecryptMessage",
    "ApplyControlToken",
    "QuerySecurityPackageInfoW",
    "EnumerateSecurityPackagesW",
    "CompleteAuthToken",
)
# The kernel-mode async surface (GEN-7).  A user-mode library is not expected to export
# it; the adapter records which of these it finds so reports can say so.
ASYNC_SYMBOLS = (
    "SspiCreateAsyncContext",
    "SspiFreeAsyncContext",
    "SspiReinitAsyncContext",
    "SspiSetAsyncNotifyCallback",
    "SspiAsyncContextRequiresNotify",
    "SspiGetAsyncCallStatus",
    "SspiAcquireCredentialsHandleAsyncW",
    "SspiInitializeSecurityContextAsyncW",
    "SspiAcceptSecurityContextAsync",
    "SspiDeleteSecurityContextAsync",
    "SspiFreeCredentialsHandleAsync",
)

_P = ctypes.c_void_p
_PROTOTYPES: dict[str, tuple[Any, ...]] = {
    # pszPrincipal, pszPackage, fCredentialUse, pvLogonId, pAuthData, pGetKeyFn,
    # pvGetKeyArgument, phCredential, ptsExpiry
    "AcquireCredentialsHandleW": (_P, _P, ffi.ULONG, _P, _P, _P, _P, ffi.PSecHandle, ffi.PTimeStamp),
    # phCredential, phContext, pszTargetName, fContextReq, Reserved1, TargetDataRep,
    # pInput, Reserved2, phNewContext, pOutput, pfContextAttr, ptsExpiry
    "InitializeSecurityContextW": (
        ffi.PSecHandle, ffi.PSecHandle, _P, ffi.ULONG, ffi.ULONG, ffi.ULONG,
        ffi.PSecBufferDesc, ffi.ULONG, ffi.PSecHandle, ffi.PSecBufferDesc, ffi.PULONG, ffi.PTimeStamp,
    ),
    # phCredential, phContext, pInput, fContextReq, TargetDataRep, phNewContext, pOutput,
    # pfContextAttr, ptsExpiry
    "AcceptSecurityContext": (
        ffi.PSecHandle, ffi.PSecHandle, ffi.PSecBufferDesc, ffi.ULONG, ffi.ULONG,
        ffi.PSecHandle, ffi.PSecBufferDesc, ffi.PULONG, ffi.PTimeStamp,
    ),
    "DeleteSecurityContext": (ffi.PSecHandle,),
    "FreeCredentialsHandle": (ffi.PSecHandle,),
    "FreeContextBuffer": (_P,),
    "QueryContextAttributesW": (ffi.PSecHandle, ffi.ULONG, _P),
    "EncryptMessage": (ffi.PSecHandle, ffi.ULONG, ffi.PSecBufferDesc, ffi.ULONG),
    "DecryptMessage": (ffi.PSecHandle, ffi.PSecBufferDesc, ffi.ULONG, ffi.PULONG),
    "ApplyControlToken": (ffi.PSecHandle, ffi.PSecBufferDesc),
    "CompleteAuthToken": (ffi.PSecHandle, ffi.PSecBufferDesc),
    "QuerySecurityPackageInfoW": (_P, ctypes.POINTER(ctypes.POINTER(ffi.SecPkgInfoW))),
    "EnumerateSecurityPackagesW": (ffi.PULONG, ctypes.POINTER(ctypes.POINTER(ffi.SecPkgInfoW))),
}


class LibraryNotFound(RuntimeError, ValueError):
    """No SSPI library could be loaded; the message lists the paths tried."""


Function = Callable[..., int]


class EntryPoints(MutableMapping[str, Function | None]):
    """The bound entry points by name (``lib.functions``): each with its C prototype as
    ``argtypes``, so any caller's arguments are converted and type-checked.

    ``direct`` maps the same names to the adapter's hot-path twins: the same symbols bound
    a second time with ``restype`` but without ``argtypes``.  ctypes then converts each
    argument from what it is instead of calling the prototype's ``from_param`` per
    argument, which costs more than 1 us for InitializeSecurityContextW's twelve.  A twin
    is only safe for a caller that passes every argument already in its C form: ``byref``
    / arrays for pointers, ``None`` for NULL, and ULONGs as ints already masked to 32 bits
    (which ctypes passes as a 32-bit int: the same bits in the same register or stack
    slot as an unsigned ULONG on the ABIs sspi-rs ships for; see
    tests/test_native_layout.py).  The adapter's calls do exactly that.

    Assigning an entry (a test's fake with the same prototype) replaces it in ``direct``
    too, so the hot path calls the fake; assigning the original back restores its twin.
    """

    def __init__(self, checked: Mapping[str, Function | None], twins: Mapping[str, Function | None] | None = None):
        self._entries: dict[str, Function | None] = dict(checked)
        self._original = dict(checked)
        self._twins = dict(twins if twins is not None else checked)
        self.direct: dict[str, Function | None] = {name: self._twins.get(name, fn) for name, fn in checked.items()}

    def __getitem__(self, name: str) -> Function | None:
        return self._entries[name]

    def __setitem__(self, name: str, function: Function | None) -> None:
        self._entries[name] = function
        original = self._original.get(name)
        restored = function is original and original is not None
        self.direct[name] = self._twins.get(name, function) if restored else function

    def __delitem__(self, name: str) -> None:
        del self._entries[name]
        self.direct.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"EntryPoints({self._entries!r})"


@dataclass
class SspiLibrary:
    """The bound entry points of one loaded library.

    Functions are swappable entries of ``functions`` so that a test can replace one with
    a fake with the same C prototype (e.g. one that overruns its output buffer); the
    adapter's hot path follows the swap (:class:`EntryPoints`).  Optional functions the
    library does not export are None.
    """

    path: str
    handle: Any = None
    functions: MutableMapping[str, Function | None] = field(default_factory=dict)
    async_exports: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.functions, EntryPoints):
            self.functions = EntryPoints(self.functions)

    @property
    def direct(self) -> dict[str, Function | None]:
        """The hot-path twins (see :class:`EntryPoints`), following any swap."""
        functions = self.functions
        assert isinstance(functions, EntryPoints)
        return functions.direct

    def __getattr__(self, name: str) -> Any:
        functions = self.__dict__.get("functions", {})
        if name in functions:
            return functions[name]
        raise AttributeError(name)

    def has(self, name: str) -> bool:
        return self.functions.get(name) is not None

    def call(self, name: str, *args: Any) -> int:
        """Call ``name`` and return its status as an unsigned 32-bit value."""
        function = self.functions.get(name)
        if function is None:
            raise AttributeError(f"{self.path} does not export {name}")
        return ffi.as_status(function(*args))


def sspilib_candidates() -> list[str]:
    """libsspi*.so / .dylib shipped next to the installed sspilib package (may be empty)."""
    try:
        spec = importlib.util.find_spec("sspilib")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    found: list[str] = []
    for location in spec.submodule_search_locations:
        site = Path(location).parent
        for pattern in ("sspilib.libs/libsspi*.so*", "sspilib/.dylibs/libsspi*.dylib", "sspilib.libs/libsspi*"):
            found.extend(sorted(glob.glob(str(site / pattern))))
    return list(dict.fromkeys(found))


def candidate_paths(explicit: str | None = None) -> list[str]:
    """Where to look, in order (the first that loads wins)."""
    if explicit:
        return [explicit]
    env = os.environ.get(ENV_VAR)
    if env:
        return [env]
    if sys.platform == "win32":
        return ["secur32.dll"]
    return sspilib_candidates()


def _bind(handle: Any, name: str) -> tuple[Function | None, Function | None]:
    """(the entry point with its prototype, its hot-path twin without argtypes)."""
    try:
        function = getattr(handle, name)
    except AttributeError:
        return None, None
    function.argtypes = list(_PROTOTYPES[name])
    function.restype = ffi.SECURITY_STATUS
    twin = handle[name]  # indexing binds a new function object (attribute access caches one)
    twin.restype = ffi.SECURITY_STATUS
    return function, twin


def bind(handle: Any, path: str) -> SspiLibrary:
    """Bind the entry points of an already loaded ctypes library."""
    bound = {name: _bind(handle, name) for name in (*REQUIRED, *OPTIONAL)}
    missing = [name for name in REQUIRED if bound[name][0] is None]
    if missing:
        raise LibraryNotFound(f"{path} is not an SSPI library: missing {', '.join(missing)}")
    exports = tuple(name for name in ASYNC_SYMBOLS if hasattr(handle, name))
    functions = EntryPoints({name: pair[0] for name, pair in bound.items()},
                            {name: pair[1] for name, pair in bound.items()})
    return SspiLibrary(path=path, handle=handle, functions=functions, async_exports=exports)


def load(explicit: str | None = None) -> SspiLibrary:
    """Load and bind the first candidate that works; LibraryNotFound lists what was tried."""
    tried: list[str] = []
    for path in candidate_paths(explicit):
        try:
            loader = ctypes.WinDLL if sys.platform == "win32" else ctypes.CDLL  # type: ignore[attr-defined]
            handle = loader(path)
        except OSError as exc:
            tried.append(f"{path} ({exc})")
            continue
        return bind(handle, path)
    if not tried:
        tried.append(
            f"no candidate: pass library=PATH, set {ENV_VAR}, or install sspilib (pip install sspilib)"
        )
    raise LibraryNotFound("could not load an SSPI library; tried: " + "; ".join(tried))
