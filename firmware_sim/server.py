"""The device's protocol server: TCP on loopback, or stdio (docs/device-protocol.md §2–3).

Every request gets exactly one response. A request the device refuses — unknown operation,
bad arguments, a malformed frame, a corrupt message — gets ``{"ok": false, "error": ...}``
and the device keeps serving; only a message whose length field breaks the framing closes
that connection (the stream cannot be resynchronised), never the device.
"""

from __future__ import annotations

import contextlib
import signal
import socketserver
import sys
import threading
import traceback

from metaedge.deploy import wire
from metaedge.deploy.auth import CHALLENGE
from metaedge.firmware_sim.access import AccessError, Policy, Session
from metaedge.firmware_sim.connection import IDLE, Budget, Connection, Connections, Limits
from metaedge.firmware_sim.device import Device, DeviceError

STOP_WAIT_S = 3.0


def handle(device: Device, header: dict, arrays: dict, session: Session, operator: str | None = None) -> tuple[dict, dict]:
    """Dispatch one request to the device; returns (response header, response arrays). ``operator``: the key id
    that signed it, if any."""
    op = header.get("op")
    if op == CHALLENGE:
        return {"nonce": session.challenge().hex()}, {}
    if op == "info":
        return device.info(), {}
    if op == "image.list":
        return device.list_images(), {}
    if op == "image.upload":
        chunk = arrays.get("chunk")
        if not isinstance(chunk, bytes):
            raise DeviceError("image.upload needs the chunk as a 'bytes' attachment named 'chunk'")
        return device.upload(header.get("offset"), header.get("length"), header.get("sha256"), chunk, owner=operator), {}
    if op == "image.upload_status":
        return device.upload_status(), {}
    if op == "image.test":
        return device.test(header.get("sha256", "")), {}
    if op == "image.confirm":
        return device.confirm(), {}
    if op == "reset":
        return device.reset(), {}
    if op == "frame":
        return device.frame(arrays)
    if op == "stats":
        return device.stats_report(), {}
    raise DeviceError(f"unknown operation {op!r}; see docs/device-protocol.md")


def serve_stream(device: Device, reader, writer, lock: threading.Lock, hold=None, policy: Policy = Policy()) -> None:
    """Answer requests from one byte stream until it closes, times out or its framing breaks. ``reader.read(n)`` and
    ``writer.write``/``flush`` carry the bytes; ``hold`` is ``Connection.hold`` on a network connection; ``policy``
    says which requests need an operator's signature."""
    session = Session()
    while True:
        try:
            header, arrays = wire.read_message(reader, hold)
        except wire.WireError as e:
            if str(e) in ("connection closed", IDLE):  # the client hung up or went quiet between messages: not an error
                return
            device.stats.errors += 1
            if e.fatal:
                _reply_error(writer, None, f"{e}; closing the connection")
                return
            response = wire.encode({"seq": None, "ok": False, "error": str(e)})
        else:
            response = respond(device, header, arrays, session, lock, policy)
        try:
            writer.write(response)
            writer.flush()
        except OSError:
            return


def respond(device: Device, header: dict, arrays: dict, session: Session, lock: threading.Lock, policy: Policy) -> bytes:
    """The encoded response to one decoded request, whatever carried it (a byte stream, or a broker's message).
    Never raises."""
    seq = header.get("seq")
    try:
        operator, granted = policy.authorise(session, header, arrays)
        # a contained receiver's frames run beside management requests, which a slow frame must not hold up
        with contextlib.nullcontext() if header.get("op") == "frame" and device.concurrent_frames else lock:
            result, out = handle(device, header, arrays, session, operator)
        return wire.encode({"seq": seq, "ok": True, **result, **granted}, out)
    except (DeviceError, AccessError, wire.WireError) as e:
        device.stats.errors += 1
        return wire.encode({"seq": seq, "ok": False, "error": str(e)})
    except Exception as e:  # a bug must not stop the device: report it and keep serving
        device.stats.errors += 1
        traceback.print_exc(file=sys.stderr)
        return wire.encode({"seq": seq, "ok": False, "error": f"internal error: {type(e).__name__}: {e}"})


def _reply_error(writer, seq, message: str) -> None:
    try:
        writer.write(wire.encode({"seq": seq, "ok": False, "error": message}))
        writer.flush()
    except OSError:
        pass


def serve_tcp(device: Device, host: str, port: int, limits: Limits = Limits(), policy: Policy = Policy()) -> None:
    """Serve until SIGTERM/SIGINT; prints 'listening on HOST:PORT' (port 0 picks a free one)."""
    lock = threading.Lock()
    budget = Budget(limits.buffer_budget)
    connections = Connections(limits.max_connections)

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            connection = Connection(self.request, limits, budget)
            connections.admit(connection)
            try:
                serve_stream(device, connection, connection, lock, connection.hold, policy)
            finally:
                connections.leave(connection)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True
        request_queue_size = limits.max_connections

    with Server((host, port), Handler) as server:
        stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()  # noqa: E731
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(f"listening on {server.server_address[0]}:{server.server_address[1]}", flush=True)
        try:
            server.serve_forever(poll_interval=0.1)
        finally:
            connections.drop_all()
            stopped = lock.acquire(timeout=STOP_WAIT_S)  # a request still running gets a few seconds, then the process ends
            device.close()
            if stopped:
                lock.release()


class _Stdout:
    def write(self, data: bytes) -> None:
        sys.stdout.buffer.write(data)

    def flush(self) -> None:
        sys.stdout.buffer.flush()


def serve_stdio(device: Device, policy: Policy = Policy()) -> None:
    try:
        serve_stream(device, sys.stdin.buffer, _Stdout(), threading.Lock(), policy=policy)
    finally:
        device.close()
