"""The device's protocol server: TCP on loopback, or stdio (docs/device-protocol.md §2–3).

Every request gets exactly one response. A request the device refuses — unknown operation,
bad arguments, a malformed frame, a corrupt message — gets ``{"ok": false, "error": ...}``
and the device keeps serving; only a message whose length field breaks the framing closes
that connection (the stream cannot be resynchronised), never the device.
"""

from __future__ import annotations

import signal
import socketserver
import sys
import threading
import traceback
from typing import BinaryIO

from metaedge.deploy import wire
from metaedge.firmware_sim.device import Device, DeviceError


def handle(device: Device, header: dict, arrays: dict) -> tuple[dict, dict]:
    """Dispatch one request to the device; returns (response header, response arrays)."""
    op = header.get("op")
    if op == "info":
        return device.info(), {}
    if op == "image.list":
        return device.list_images(), {}
    if op == "image.upload":
        chunk = arrays.get("chunk")
        if not isinstance(chunk, bytes):
            raise DeviceError("image.upload needs the chunk as a 'bytes' attachment named 'chunk'")
        return device.upload(header.get("offset"), header.get("length"), header.get("sha256"), chunk), {}
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


def serve_stream(device: Device, rfile: BinaryIO, wfile: BinaryIO, lock: threading.Lock) -> None:
    """Answer requests from one byte stream until it closes or its framing breaks."""
    while True:
        seq = None
        try:
            header, arrays = wire.read_message(rfile)
            seq = header.get("seq")
            with lock:
                result, out = handle(device, header, arrays)
            response = wire.encode({"seq": seq, "ok": True, **result}, out)
        except wire.WireError as e:
            if str(e) == "connection closed":  # the client hung up between messages: not an error
                return
            device.stats.errors += 1
            if e.fatal:
                _reply_error(wfile, None, f"{e}; closing the connection")
                return
            response = wire.encode({"seq": seq, "ok": False, "error": str(e)})
        except DeviceError as e:
            device.stats.errors += 1
            response = wire.encode({"seq": seq, "ok": False, "error": str(e)})
        except Exception as e:  # a bug must not stop the device: report it and keep serving
            device.stats.errors += 1
            traceback.print_exc(file=sys.stderr)
            response = wire.encode({"seq": seq, "ok": False, "error": f"internal error: {type(e).__name__}: {e}"})
        try:
            wfile.write(response)
            wfile.flush()
        except (BrokenPipeError, ConnectionError):
            return


def _reply_error(wfile: BinaryIO, seq, message: str) -> None:
    try:
        wfile.write(wire.encode({"seq": seq, "ok": False, "error": message}))
        wfile.flush()
    except (BrokenPipeError, ConnectionError):
        pass


def serve_tcp(device: Device, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; prints 'listening on HOST:PORT' (port 0 picks a free one)."""
    lock = threading.Lock()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            serve_stream(device, self.rfile, self.wfile, lock)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    with socketserver.ThreadingTCPServer((host, port), Handler) as server:
        stop = lambda *_: threading.Thread(target=server.shutdown, daemon=True).start()  # noqa: E731
        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        print(f"listening on {server.server_address[0]}:{server.server_address[1]}", flush=True)
        try:
            server.serve_forever(poll_interval=0.1)
        finally:
            with lock:
                device.close()


def serve_stdio(device: Device) -> None:
    try:
        serve_stream(device, sys.stdin.buffer, sys.stdout.buffer, threading.Lock())
    finally:
        device.close()
