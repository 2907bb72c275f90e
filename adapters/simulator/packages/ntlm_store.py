"""In-memory NTLM account tables for pyspnego's acceptor, one per credential, thread-safe.

pyspnego's pure-Python NTLM acceptor looks accounts up in a flat file named by the
process-wide environment variable ``NTLM_USER_FILE``: once when the acceptor is built (it
refuses to start without one) and again when the AUTHENTICATE message arrives.  A process
global cannot serve two server credentials with different accounts at the same time, and a
file would have to be written, protected and removed for every credential.

Instead, :func:`serving` installs (once) a thin wrapper around pyspnego's two lookup
functions.  The wrapper consults a :class:`contextvars.ContextVar` holding the account table
of the ASC call running on *this* thread; when none is set it defers to pyspnego's own code,
so other users of pyspnego in the process are unaffected.  No file is ever written and the
environment is never touched.

The hook relies on two private names of pyspnego (checked at import, tested against 0.12);
if they disappear the import fails and the simulator simply does not offer NTLM.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass

import spnego._ntlm as _pyntlm
from spnego._ntlm_raw.crypto import lmowfv1, ntowfv1

_HOOKED = "_async_sspi_conformance_hook"
# Returned as the "credential file path" while a table is active: pyspnego only tests it for
# truth and hands it back to the lookup function, which recognises it.
_STORE_MARKER = "<in-memory NTLM account table>"

if not callable(getattr(_pyntlm, "_get_credential_file", None)) or not callable(
    getattr(_pyntlm, "_get_credential", None)
):
    raise ImportError("this pyspnego has no _get_credential_file/_get_credential to hook")


class UnknownAccount(Exception):
    """The client named an account the server credential does not hold."""


@dataclass(frozen=True, slots=True)
class Account:
    domain: str
    username: str
    lm_hash: bytes
    nt_hash: bytes

    @classmethod
    def from_password(cls, domain: str, username: str, password: str) -> Account:
        return cls(domain, username, lmowfv1(password), ntowfv1(password))


class AccountTable:
    """Accounts a server credential accepts; user and domain compare case-insensitively.

    An account with an empty domain matches a client of any domain (a local account).
    """

    def __init__(self, accounts: list[Account]) -> None:
        self._by_key = {(a.domain.upper(), a.username.upper()): a for a in accounts}

    def __len__(self) -> int:
        return len(self._by_key)

    def lookup(self, domain: str | None, username: str | None) -> Account:
        user = (username or "").upper()
        found = self._by_key.get(((domain or "").upper(), user)) or self._by_key.get(("", user))
        if found is None:
            raise UnknownAccount(f"no account {domain or ''}\\{username or ''}")
        return found


_ACTIVE: contextvars.ContextVar[AccountTable | None] = contextvars.ContextVar("ntlm_account_table", default=None)


def _install() -> None:
    if getattr(_pyntlm._get_credential, _HOOKED, False):
        return
    original_file = _pyntlm._get_credential_file
    original_get = _pyntlm._get_credential

    def credential_file() -> str | None:
        return _STORE_MARKER if _ACTIVE.get() is not None else original_file()

    def get_credential(
        store: str | None, domain: str | None = None, username: str | None = None
    ) -> tuple[str | None, str | None, bytes, bytes]:
        table = _ACTIVE.get()
        if table is None or store != _STORE_MARKER:
            return original_get(store, domain, username)
        account = table.lookup(domain, username)
        return account.domain or None, account.username, account.lm_hash, account.nt_hash

    setattr(get_credential, _HOOKED, True)
    _pyntlm._get_credential_file = credential_file
    _pyntlm._get_credential = get_credential


_install()


@contextlib.contextmanager
def serving(table: AccountTable) -> Iterator[None]:
    """Make ``table`` the account store of pyspnego acceptor calls on this thread."""
    token = _ACTIVE.set(table)
    try:
        yield
    finally:
        _ACTIVE.reset(token)
