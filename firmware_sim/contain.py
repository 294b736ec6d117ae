"""Contained execution: the receiver runs in a child process under a time limit per call and a memory cap.

A signed bundle is trusted to come from its signer, not to be harmless: a graph can loop for
hours or allocate gigabytes on a trigger input. ``Contained`` is a ``Backend`` that forwards
``load``, ``selftest`` and ``frame`` to a child process through a pipe; the parent waits at
most the stated time, and the child's address space is capped (``RLIMIT_AS``) at what its
runtime needed when it started plus ``memory``. A call that runs over its time is killed, a
child that runs out of memory or dies is discarded; either is a ``Violation``, and the next
call starts a fresh child with the same bundle. The device process itself never runs
receiver code, so it keeps answering management requests, and SIGTERM stops it at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Mapping

from metaedge.backends import registry
from metaedge.backends.base import BackendError, Frame, FrameResult, Resources, SelftestReport
from metaedge.deploy.bundle import Bundle


@dataclass(frozen=True)
class Containment:
    frame_s: float | None = None  # wall-clock limit of one frame; None: the target's (registry.frame_limit_s)
    start_s: float = 60.0  # of loading an image, and of its self-test
    memory: int = 512 << 20  # bytes of address space a receiver may add to what its runtime holds at start


ORPHAN_CHECK_S = 0.5
CLOSE_WAIT_S = 10.0  # a receiver asked to close gets this long to release its runtime


class Violation(BackendError):
    """The receiver ran over its time, out of its memory, or died; its process was discarded."""


def _address_space() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmSize in /proc/self/status")


def _exit_when_orphaned(parent: int) -> None:
    """A receiver whose device process died (a power cut) must not go on running, even inside a hanging call; its
    process group (the receiver and any processes its runtime started, such as Lava's) goes with it."""
    while os.getppid() == parent:
        time.sleep(ORPHAN_CHECK_S)
    os.killpg(os.getpgid(0), signal.SIGKILL)


def _child(conn, target: str, threads: int, options: Mapping, memory: int) -> None:
    """The receiver's process: build the backend, cap the address space, then answer calls until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the device decides when its receiver stops
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    try:
        backend = registry.create(target, threads, options)
    except BackendError as e:
        conn.send(("refused", str(e)))
        return
    limit = _address_space() + memory
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        _serve(conn, backend, memory)
    except (BrokenPipeError, EOFError):  # the device went away mid-call (a reset, a shutdown)
        backend.close()


def _serve(conn, backend, memory: int) -> None:
    conn.send(("ok", None))
    while True:
        try:
            op, arg = conn.recv()
        except EOFError:
            op, arg = "close", ()
        if op == "close":  # release the runtime (Lava stops its processes and frees its shared memory)
            backend.close()
            return
        try:
            conn.send(("ok", getattr(backend, op)(*arg)))
        except BackendError as e:
            conn.send(("refused", str(e)))
        except MemoryError:
            conn.send(("violation", f"the receiver ran out of its {memory >> 20} MiB memory cap"))
            os._exit(1)
        except Exception as e:  # noqa: BLE001 — a runtime failure (an allocation refused inside onnxruntime, …)
            conn.send(("violation", f"the receiver failed: {type(e).__name__}: {str(e)[:200]}"))
            os._exit(1)


class Contained:
    """A ``Backend`` for ``target`` whose receiver runs in a child process under ``limits``."""

    def __init__(self, target: str, threads: int, options: Mapping | None, limits: Containment) -> None:
        registry.backend_class(target)  # a missing runtime is refused here, in the device's words
        self.target, self.threads, self.options = target, threads, dict(options or {})
        self.limits = limits if limits.frame_s is not None else dataclasses.replace(limits, frame_s=registry.frame_limit_s(target))
        self.process: subprocess.Popen | None = None
        self.conn: Connection | None = None
        self.bundle: Bundle | None = None
        self.busy = False  # a call is waiting for the receiver

    # -- Backend -------------------------------------------------------------------------------
    def load(self, bundle: Bundle) -> Resources:
        self.bundle = bundle
        return self._call("load", (bundle,), self.limits.start_s)

    def selftest(self) -> SelftestReport:
        return self._call("selftest", (), self.limits.start_s)

    def frame(self, frame: Frame) -> FrameResult:
        return self._call("frame", (frame,), self.limits.frame_s)

    def close(self) -> None:
        """Ask an idle receiver to release its runtime, then stop its process group (at once if a call is running)."""
        if not self.busy and self.conn is not None and self.process is not None and self.process.poll() is None:
            try:
                self.conn.send(("close", ()))
                self.process.wait(CLOSE_WAIT_S)
            except (OSError, subprocess.TimeoutExpired):
                pass  # stopped below
        self._stop()
        self.bundle = None

    # -- the child -----------------------------------------------------------------------------
    def _call(self, op: str, args: tuple, timeout: float) -> Any:
        if self.process is None:
            self._start()
            if op != "load" and self.bundle is not None:  # a fresh child after a violation: the same image again
                self._exchange("load", (self.bundle,), self.limits.start_s)
        return self._exchange(op, args, timeout)

    def _exchange(self, op: str, args: tuple, timeout: float) -> Any:
        self.busy = True
        try:
            self.conn.send((op, args))
            ready = self.conn.poll(timeout)
            status, value = self.conn.recv() if ready else ("timeout", None)
        except (EOFError, OSError, AttributeError):  # AttributeError: closed meanwhile by a reset or shutdown
            status, value = "died", None
        finally:
            self.busy = False
        if status == "ok":
            return value
        if status == "refused":
            raise BackendError(value)
        exit_code = self._stop()
        if status == "timeout":
            raise Violation(f"the receiver ran over its {timeout:g} s limit ({op}); its process was stopped")
        if status == "died":
            raise Violation(f"the receiver's process died during {op} (exit code {exit_code})")
        raise Violation(value)

    def _start(self) -> None:
        """A fresh interpreter for the receiver (not a fork: the device's threads and sockets stay behind)."""
        parent, child = os.pipe(), os.pipe()  # device → receiver, receiver → device
        config = json.dumps({"target": self.target, "threads": self.threads, "options": self.options, "memory": self.limits.memory})
        command = [sys.executable, "-m", __name__, str(parent[0]), str(child[1]), config]
        # glibc reserves 64 MiB of address space per thread arena; two arenas keep the cap about memory, not reservations
        env = {**os.environ, "MALLOC_ARENA_MAX": "2"}
        self.process = subprocess.Popen(
            command,
            pass_fds=(parent[0], child[1]),
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # its own group
        )
        os.close(parent[0])
        os.close(child[1])
        self.conn = _Duplex(Connection(child[0], writable=False), Connection(parent[1], readable=False))
        if not self.conn.poll(self.limits.start_s):
            self._stop()
            raise Violation(f"the receiver's process did not start within {self.limits.start_s:g} s")
        status, value = self.conn.recv()
        if status != "ok":
            self._stop()
            raise BackendError(value)

    def _stop(self) -> int | None:
        """Kill the child and whatever its runtime started (it may be stuck in native code); its exit code."""
        process, self.process = self.process, None
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if process is None:
            return None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        return process.wait(5)


class _Duplex:
    """The two one-way pipes to a receiver as one connection."""

    def __init__(self, incoming: Connection, outgoing: Connection) -> None:
        self.incoming, self.outgoing = incoming, outgoing

    def send(self, value: Any) -> None:
        self.outgoing.send(value)

    def poll(self, timeout: float) -> bool:
        return self.incoming.poll(timeout)

    def recv(self) -> Any:
        return self.incoming.recv()

    def close(self) -> None:
        self.incoming.close()
        self.outgoing.close()


def _main(argv: list[str]) -> None:
    incoming, outgoing, config = int(argv[0]), int(argv[1]), json.loads(argv[2])
    conn = _Duplex(Connection(incoming, writable=False), Connection(outgoing, readable=False))
    _child(conn, config["target"], config["threads"], config["options"], config["memory"])


if __name__ == "__main__":
    _main(sys.argv[1:])
