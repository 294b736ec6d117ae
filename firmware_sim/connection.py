"""Network connections of the device server, with the limits that keep abusive clients from exhausting it
(docs/device-protocol.md §1.1): a cap on open connections (the longest-idle one makes room for a new one), an idle
timeout between messages, a deadline for each message once its length has arrived, and a budget of buffered bytes
shared by all connections for messages above a small free size."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import Iterator

from metaedge.deploy.wire import WireError

IDLE = "idle timeout"  # the WireError message of a connection that went quiet between messages
RECV_CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_connections: int = 128
    idle_timeout_s: float = 60.0  # between messages
    message_timeout_s: float = 10.0  # from a message's length field to its last byte
    free_message_bytes: int = 256 << 10  # messages up to this size need no share of the budget
    buffer_budget: int = 32 << 20  # bytes of larger messages being received at once, all connections together


class Budget:
    """Bytes of large messages buffered at once; a message that does not fit is refused, not queued."""

    def __init__(self, total: int) -> None:
        self.total, self.used, self.lock = total, 0, threading.Lock()

    @contextlib.contextmanager
    def reserve(self, n: int) -> Iterator[None]:
        with self.lock:
            if self.used + n > self.total:
                raise WireError(f"device busy: {n:,} more bytes would exceed its {self.total:,}-byte receive buffer; retry later", fatal=True)
            self.used += n
        try:
            yield
        finally:
            with self.lock:
                self.used -= n


class Connection:
    """One client socket as the byte stream ``serve_stream`` reads and writes, with its timeouts."""

    def __init__(self, sock: socket.socket, limits: Limits, budget: Budget) -> None:
        self.sock, self.limits, self.budget = sock, limits, budget
        self.deadline: float | None = None  # while a message is being received
        self.last_active = time.monotonic()
        self.waiting = False  # a request was received and its response not yet sent: busy, not idle
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def read(self, n: int) -> bytes:
        timeout = self.limits.idle_timeout_s if self.deadline is None else self.deadline - time.monotonic()
        if timeout <= 0:
            raise WireError(f"message not completed within {self.limits.message_timeout_s:g} s", fatal=True)
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(min(n, RECV_CHUNK))
        except TimeoutError:
            if self.deadline is None:
                raise WireError(IDLE, fatal=True) from None
            raise WireError(f"message not completed within {self.limits.message_timeout_s:g} s", fatal=True) from None
        except OSError:
            return b""  # reset by the peer, or shut down to make room for another connection
        self.last_active = time.monotonic()
        return data

    @contextlib.contextmanager
    def hold(self, length: int) -> Iterator[None]:
        """Receiving one message of ``length`` bytes: its deadline, and its share of the budget if it is large."""
        reserved = self.budget.reserve(length) if length > self.limits.free_message_bytes else contextlib.nullcontext()
        with reserved:
            self.deadline = time.monotonic() + self.limits.message_timeout_s
            try:
                yield
                self.waiting = True
            finally:
                self.deadline = None

    def write(self, data: bytes) -> None:
        self.sock.settimeout(self.limits.message_timeout_s)  # a client that never reads its responses is dropped
        self.sock.sendall(data)
        self.waiting, self.last_active = False, time.monotonic()

    def flush(self) -> None:
        pass

    def drop(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)


class Connections:
    """The open connections; at the cap, the one idle longest is dropped to admit a new one (a connection waiting for
    the answer to its request is not idle)."""

    def __init__(self, cap: int) -> None:
        self.cap, self.open, self.lock = cap, set(), threading.Lock()

    def admit(self, connection: Connection) -> None:
        with self.lock:
            if len(self.open) >= self.cap:
                oldest = min(self.open, key=lambda c: (c.waiting, c.last_active))
                self.open.discard(oldest)
                oldest.drop()
            self.open.add(connection)

    def leave(self, connection: Connection) -> None:
        with self.lock:
            self.open.discard(connection)

    def drop_all(self) -> None:
        with self.lock:
            for connection in self.open:
                connection.drop()
