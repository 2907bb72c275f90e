"""Line framing over a non-blocking byte stream, with deadlines and a size bound.

The client never trusts the agent: every read and write takes a deadline (a hung agent
must not hang the run), and a line is never buffered beyond ``max_bytes`` (an agent
writing a 100 MB line costs us at most max_bytes + one chunk of memory).

Two transports: the pipes of a child process (stdio) and a loopback TCP socket.  Both
are used through non-blocking file descriptors and ``select.poll`` (POSIX); on a host
without poll the TCP transport still works through ``select.select``.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import Callable
from typing import IO

CHUNK = 1 << 16
SPIN_FLOOR_S = 0.00002  # a busy-wait budget below this is not worth its CPU: switch off
SPIN_PROBE_S = 0.00005  # budget of a probe, and the least budget after a catch
SPIN_PROBE_EVERY = 32  # waits between probes while switched off


class StreamTimeout(Exception):
    """The deadline passed before a whole line (or a whole write) got through."""


class StreamClosed(Exception):
    """The peer closed the stream (EOF, broken pipe, reset)."""


class LineTooLong(Exception):
    """A line grew past the size bound before its newline arrived."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"a message line exceeded {limit} bytes without a newline")
        self.limit = limit


def _wait(fd: int, for_write: bool, timeout: float) -> bool:
    """True when ``fd`` is ready (or in error: the next read/write reports it)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLOUT if for_write else select.POLLIN)
        return bool(poller.poll(max(0.0, timeout) * 1000.0))
    if for_write:
        _, w, x = select.select([], [fd], [fd], max(0.0, timeout))
        return bool(w or x)
    r, _, x = select.select([fd], [], [fd], max(0.0, timeout))
    return bool(r or x)


class Transport:
    """A bidirectional byte stream with separate read and write descriptors."""

    def __init__(
        self, read_fd: int, write_fd: int, sock: socket.socket | None = None, owners: tuple[IO[bytes], ...] = ()
    ) -> None:
        self._owners = owners  # file objects owning the descriptors (a child's pipes)
        self.read_fd = read_fd
        self.write_fd = write_fd
        self._sock = sock
        if sock is None:  # a socket is made non-blocking by for_socket (fds differ on Windows)
            os.set_blocking(read_fd, False)
            if write_fd != read_fd:
                os.set_blocking(write_fd, False)
        self._read_poll = select.poll() if hasattr(select, "poll") else None
        if self._read_poll is not None:
            self._read_poll.register(read_fd, select.POLLIN)

    @classmethod
    def for_socket(cls, sock: socket.socket) -> Transport:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        return cls(sock.fileno(), sock.fileno(), sock)

    def wait_readable(self, timeout: float | None) -> bool:
        """None waits for ever (the agent waiting for its next request)."""
        if self._read_poll is not None:
            return bool(self._read_poll.poll(None if timeout is None else max(0.0, timeout) * 1000.0))
        if timeout is None:
            while not _wait(self.read_fd, False, 3600.0):
                pass
            return True
        return _wait(self.read_fd, False, timeout)

    def readiness_waiter(self) -> Callable[[float], bool]:
        """A ``wait_readable`` for a second thread: its own poll object, because one
        ``select.poll`` object cannot be polled by two threads at once."""
        if not hasattr(select, "poll"):
            fd = self.read_fd
            return lambda timeout: _wait(fd, False, timeout)
        poller = select.poll()
        poller.register(self.read_fd, select.POLLIN)
        return lambda timeout: bool(poller.poll(max(0.0, timeout) * 1000.0))

    def read(self) -> bytes:
        """Whatever is available (b"" at EOF); BlockingIOError when nothing is."""
        try:
            if self._sock is not None:
                return self._sock.recv(CHUNK)
            return os.read(self.read_fd, CHUNK)
        except (ConnectionResetError, BrokenPipeError):
            return b""

    def write_all(self, data: bytes, deadline: float | None) -> None:
        """Write everything before ``deadline`` (None: no limit)."""
        if self._sock is None:
            try:  # the usual case: a pipe with room takes the whole line in one call
                n = os.write(self.write_fd, data)
            except BlockingIOError:
                n = 0
            except OSError as exc:
                raise StreamClosed(f"write failed: {exc}") from None
            if n == len(data):
                return
            data = data[n:]
        view = memoryview(data)
        while view:
            try:
                n = self._sock.send(view) if self._sock is not None else os.write(self.write_fd, view)
            except BlockingIOError:
                n = 0
            except (BrokenPipeError, ConnectionResetError, OSError) as exc:
                raise StreamClosed(f"write failed: {exc}") from None
            view = view[n:]
            if view:
                remaining = 3600.0 if deadline is None else deadline - time.monotonic()
                if remaining <= 0:
                    raise StreamTimeout("the peer stopped reading")
                _wait(self.write_fd, True, remaining)

    def shutdown(self) -> None:
        """Wake any reader of this stream (used before close when another thread polls)."""
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            return
        if self._owners:
            for f in self._owners:
                try:
                    f.close()
                except OSError:
                    pass
            return
        for fd in {self.read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


class LineReader:
    """Bounded readline with a deadline over a Transport."""

    def __init__(self, transport: Transport, max_bytes: int, spin_s: float = 0.0) -> None:
        self._t = transport
        self._max = max_bytes
        self._spin_max = spin_s
        self._spin_s = spin_s
        self._skips = 0
        self._buf = bytearray()
        self._start = 0  # consumed prefix of _buf, compacted lazily

    def _spin(self) -> bytes | None:
        """Try non-blocking reads for a short while before sleeping in poll().

        Over a pipe an answer comes back within tens of microseconds when both processes
        have a CPU, while sleeping costs a wake-up on each side (tens of microseconds more
        per message, far more on a virtual machine).  On a loaded machine the opposite
        holds: spinning takes the CPU the peer needs.  So the busy-wait adapts: it grows
        while it catches answers it had to wait for, halves when it does not, switches off
        below SPIN_FLOOR_S, and then probes again every SPIN_PROBE_EVERY waits.
        None when nothing arrived.
        """
        budget = self._spin_s
        if budget <= 0.0:
            self._skips += 1
            if self._skips < SPIN_PROBE_EVERY:
                return None
            self._skips = 0
            budget = SPIN_PROBE_S
        read = self._t.read
        clock = time.perf_counter
        end = clock() + budget
        waited = False
        while True:
            try:
                chunk = read()
            except BlockingIOError:
                if clock() < end:
                    waited = True
                    continue
                budget *= 0.5
                self._spin_s = budget if budget >= SPIN_FLOOR_S else 0.0
                return None
            if waited:  # caught an answer we would otherwise have slept for
                self._spin_s = min(self._spin_max, max(budget * 1.5, SPIN_PROBE_S))
            return chunk

    def has_line(self) -> bool:
        """A whole line is already buffered (reading it needs no I/O)."""
        return self._buf.find(b"\n", self._start) >= 0

    def read_line(self, deadline: float | None) -> bytes:
        """The next line without its newline (``deadline`` None: wait for ever).

        Raises StreamTimeout, StreamClosed, LineTooLong.
        """
        buf = self._buf
        scan = self._start
        while True:
            i = buf.find(b"\n", scan)
            if i >= 0:
                line = bytes(buf[self._start : i])
                self._start = i + 1
                if self._start > CHUNK and self._start * 2 > len(buf):
                    del buf[: self._start]
                    self._start = 0
                if len(line) > self._max:
                    raise LineTooLong(self._max)
                return line
            if len(buf) - self._start > self._max:
                raise LineTooLong(self._max)
            scan = len(buf)
            chunk = self._spin() if self._spin_max else None
            if chunk is None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if not self._t.wait_readable(remaining):
                    raise StreamTimeout("no complete message before the deadline")
                try:
                    chunk = self._t.read()
                except BlockingIOError:
                    continue
            if not chunk:
                raise StreamClosed("end of stream")
            if self._start and self._start == len(buf):
                buf.clear()
                self._start = 0
                scan = 0
            buf += chunk
