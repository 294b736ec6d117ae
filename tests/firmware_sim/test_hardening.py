"""A real device process on loopback under the attacks of the security review (docs/security.md): management without
a credential, replayed or altered requests, another operator's upload, hostile JSON, idle and half-sent connections."""

import contextlib
import hashlib
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import zlib

import numpy as np
import pytest
from conftest import Served

from metaedge.deploy import wire
from metaedge.deploy.auth import sign_request
from metaedge.deploy.bundle import pack, read_bundle
from metaedge.deploy.client import DeviceClient, DeviceRequestError
from metaedge.deploy.signing import generate, load_private
from metaedge.sdk.cli.main import main
from metaedge.sdk.device_frames import deploy
from metaedge.sdk.device_process import serve_command
from metaedge.sdk.errors import UserError


@pytest.fixture(scope="module")
def operators(tmp_path_factory):
    """Two operators' key pairs: (private path, public path) each."""
    root = tmp_path_factory.mktemp("operators")
    return generate(root, "alice"), generate(root, "bob")


@pytest.fixture
def guarded(tmp_path, signing_keys, operators):
    """A device with operator keys (alice and bob) and the default open classes (reads and frames)."""
    served = Served(tmp_path / "state", signing_keys[1], "--operator", str(operators[0][1]), "--operator", str(operators[1][1]))
    yield served
    served.stop()


def frame_arrays(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"pilots": rng.normal(0, 2, (8, 2)).astype(np.float32), "payload": rng.normal(0, 2, (50, 2)).astype(np.float32)}


def test_management_needs_an_operator_signature_while_reads_and_frames_stay_open(guarded, trained_bundle, operators):
    image = pack(read_bundle(trained_bundle[1]))
    with pytest.raises(UserError, match="'image.upload' needs an operator's signature"):
        deploy(guarded.url, image, confirm=True)
    deploy(guarded.url, image, confirm=True, operator_key=operators[0][0])
    with DeviceClient(guarded.url) as anyone:
        assert anyone.call("info")[0]["mode"] == "confirmed"
        assert anyone.call("frame", frame_arrays())[1]["decisions"].shape == (50,)
        for op in ("reset", "image.confirm", "image.test"):
            with pytest.raises(DeviceRequestError, match="needs an operator's signature"):
                anyone.call(op, sha256="00" * 32)
        assert anyone.call("info")[0]["mode"] == "confirmed"


def test_a_client_without_a_key_cannot_downgrade_to_the_image_in_the_other_slot(guarded, trained_bundle, make_variant, operators):
    first, second = pack(read_bundle(trained_bundle[1])), pack(read_bundle(make_variant(security_counter=1)))
    deploy(guarded.url, first, confirm=True, operator_key=operators[0][0])
    deploy(guarded.url, second, confirm=True, operator_key=operators[0][0])
    with DeviceClient(guarded.url) as attacker:
        old = next(i["sha256"] for i in attacker.call("image.list")[0]["images"] if not i["active"])
        for op, args in (("image.test", {"sha256": old}), ("reset", {}), ("image.confirm", {})):  # the review's 4 requests
            with pytest.raises(DeviceRequestError, match="needs an operator's signature"):
                attacker.call(op, **args)
        images = attacker.call("image.list")[0]["images"]
    assert [i["active"] for i in images] == [False, True] and not any(i["pending"] for i in images)


def test_a_signed_request_cannot_be_replayed_altered_or_signed_by_a_stranger(guarded, operators, tmp_path):
    alice = load_private(operators[0][0])
    with socket.create_connection(("127.0.0.1", guarded.port)) as sock:
        stream = sock.makefile("rwb")

        def send(header, arrays=None):
            stream.write(wire.encode(header, arrays))
            stream.flush()
            return wire.read_message(stream)[0]

        nonce = bytes.fromhex(send({"op": "auth.challenge", "seq": 1})["nonce"])
        request = {"op": "reset"}
        signed = {**request, "seq": 2, "auth": sign_request(alice, nonce, request, None)}
        first = send(signed)
        assert first["ok"] and first["mode"] == "none" and "next_nonce" in first
        replayed = send(signed)
        assert not replayed["ok"] and "nonce is not the one this connection was issued" in replayed["error"]
        nonce = bytes.fromhex(send({"op": "auth.challenge", "seq": 3})["nonce"])
        altered = {"op": "image.test", "sha256": "00" * 32, "seq": 4, "auth": sign_request(alice, nonce, request, None)}
        answer = send(altered)
        assert not answer["ok"] and "signature does not verify" in answer["error"]
        stranger = load_private(generate(tmp_path / "stranger")[0])
        nonce = bytes.fromhex(send({"op": "auth.challenge", "seq": 5})["nonce"])
        answer = send({**request, "seq": 6, "auth": sign_request(stranger, nonce, request, None)})
        assert not answer["ok"] and "is not an operator key of this device" in answer["error"]


def test_an_upload_belongs_to_the_operator_who_started_it(guarded, trained_bundle, operators):
    image = pack(read_bundle(trained_bundle[1]))
    digest = hashlib.sha256(image).hexdigest()
    with DeviceClient(guarded.url, operator_key=load_private(operators[0][0])) as alice:
        alice.call("image.upload", {"chunk": image[:4096]}, offset=0, length=len(image), sha256=digest)
    with DeviceClient(guarded.url, operator_key=load_private(operators[1][0])) as bob:
        with pytest.raises(DeviceRequestError, match="belongs to operator key"):
            bob.call("image.upload", {"chunk": image[4096:8192]}, offset=4096, length=len(image), sha256=digest)
    with DeviceClient(guarded.url, operator_key=load_private(operators[0][0])) as alice:  # alice resumes, on a new connection
        status = alice.call("image.upload_status")[0]
        assert status["received"] == 4096
        alice.call("image.upload", {"chunk": image[4096:]}, offset=4096, length=len(image), sha256=digest)


def test_with_nothing_open_even_reads_and_frames_need_a_signature(tmp_path, signing_keys, operators):
    served = Served(tmp_path / "state", signing_keys[1], "--operator", str(operators[0][1]), "--open", "none")
    try:
        with DeviceClient(served.url) as anyone:
            for op in ("info", "stats", "image.list", "frame"):
                with pytest.raises(DeviceRequestError, match="needs an operator's signature"):
                    anyone.call(op)
        with DeviceClient(served.url, operator_key=load_private(operators[0][0])) as alice:
            assert alice.call("info")[0]["mode"] == "none" and alice.call("stats")[0]["errors"] == 4
    finally:
        served.stop()


def test_listening_beyond_loopback_needs_operator_keys(tmp_path, signing_keys, capsys):
    argv = ["device", "serve", "--state", str(tmp_path / "s"), "--listen", "0.0.0.0:0", "--trusted-key", str(signing_keys[1])]
    assert main(argv) == 2
    assert "must authenticate its operators; add --operator PUB" in capsys.readouterr().err


def test_a_second_process_on_the_same_state_is_refused(tmp_path, signing_keys):
    first = Served(tmp_path / "state", signing_keys[1])
    try:
        second = subprocess.run(
            serve_command("onnx", tmp_path / "state", "--trusted-key", str(signing_keys[1])), capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 2 and "another device process is using this state directory" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        first.stop()


# -- protocol limits -----------------------------------------------------------------------------------------------
@pytest.fixture
def limited(tmp_path, signing_keys):
    served = Served(tmp_path / "state", signing_keys[1], "--idle-timeout", "1", "--max-connections", "8")
    yield served
    served.stop()


def raw_message(header_bytes: bytes) -> bytes:
    payload = struct.pack("<I", len(header_bytes)) + header_bytes
    return struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload))


@pytest.mark.parametrize(
    "header, fragment",
    [
        (b"[" * 20000 + b"]" * 20000, "nested more than 32 levels"),
        (b'{"op":"info","seq":' + b"9" * 5000 + b"}", "an integer of 5000 digits"),
        (b'{"op":"info","seq":NaN}', "non-standard literal NaN"),
        (
            json.dumps({"op": "frame", "seq": 1, "blobs": [{"name": "pilots", "dtype": "f4", "shape": [2**31 - 1] * 4 + [0]}]}).encode(),
            "a shape of more than 8388608 elements",
        ),
        (
            json.dumps({"op": "frame", "seq": 1, "blobs": [{"name": "p", "dtype": "f4", "shape": [2**16] * 4}]}).encode(),
            "a shape of more than",
        ),  # 2^64 wraps to 0
        # device-protocol §2's other bounds and descriptor rules
        (b'{"op":"info","seq":1,"pad":"' + b"x" * (70 << 10) + b'"}', "exceeds the payload or the 65536-byte limit"),
        (b'{"op":"info","seq":1.' + b"0" * 70 + b"}", "a number literal of 72 characters"),
        (json.dumps({"op": "frame", "seq": 1, "blobs": [{"name": "p", "dtype": "f4", "shape": [1] * 9}]}).encode(), "at most 8"),
        (json.dumps({"op": "frame", "seq": 1, "blobs": [{"name": "p", "dtype": "f4", "shape": [2**31, 0]}]}).encode(), "shape"),
        (json.dumps({"op": "frame", "seq": 1, "blobs": [{"name": "p", "dtype": "f8", "shape": [1]}]}).encode(), "dtype|blob"),
        (json.dumps({"op": "frame", "seq": 1, "blobs": [{"dtype": "f4", "shape": [1]}]}).encode(), "name|blob"),
    ],
)
def test_hostile_headers_get_typed_errors_never_internal_ones(limited, header, fragment):
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        stream = sock.makefile("rwb")
        stream.write(raw_message(header))
        stream.flush()
        answer = wire.read_message(stream)[0]
    assert not answer["ok"] and "internal error" not in answer["error"]
    assert re.search(fragment, answer["error"]), answer["error"]
    with DeviceClient(limited.url) as client:
        assert client.call("info")[0]["target"] == "onnx"


def test_idle_connections_are_closed(limited):
    quiet = socket.create_connection(("127.0.0.1", limited.port))
    quiet.settimeout(5)
    start = time.monotonic()
    assert quiet.recv(1) == b""  # closed by the device after the 1 s idle timeout
    assert 0.8 < time.monotonic() - start < 4


def test_at_the_connection_cap_one_idle_connection_makes_room(tmp_path, signing_keys):
    device = Served(tmp_path / "state", signing_keys[1], "--max-connections", "8")  # the default idle timeout: 60 s
    try:
        crowd = [socket.create_connection(("127.0.0.1", device.port)) for _ in range(8)]
        time.sleep(0.3)
        for sock in crowd[1:]:  # every connection but the first speaks: the first is the one idle longest
            sock.sendall(wire.encode({"op": "info", "seq": 1}))
            wire.read_message(sock.makefile("rb"))
        time.sleep(0.1)
        with DeviceClient(device.url) as client:  # the 9th connection: an idle one is dropped for it
            assert client.call("info")[0]["target"] == "onnx"
        closed, deadline = set(), time.monotonic() + 5

        def look() -> None:
            for k, sock in enumerate(crowd):
                sock.settimeout(0.02)
                try:
                    if k not in closed and sock.recv(1) == b"":
                        closed.add(k)
                except TimeoutError:
                    continue

        while not closed and time.monotonic() < deadline:
            look()
        time.sleep(0.2)
        look()  # and once more: no second connection was dropped
        assert closed == {0}  # exactly the connection idle longest made room; the others stay open
        for sock in crowd:
            sock.close()
    finally:
        device.stop()


def test_half_sent_large_messages_cannot_exhaust_the_receive_buffer(limited):
    """Each holder declares an 8 MiB message and sends 64 KiB of it; the shared 32 MiB budget admits four."""
    holders, answers = [], {}
    for _ in range(6):
        sock = socket.create_connection(("127.0.0.1", limited.port))
        sock.sendall(struct.pack("<I", wire.MAX_MESSAGE) + bytes(64 << 10))
        holders.append(sock)
    deadline = time.monotonic() + 8  # a loaded machine may take a while to read six connections
    while len(answers) < 2 and time.monotonic() < deadline:
        for k, sock in enumerate(holders):
            if k in answers:
                continue
            sock.settimeout(0.05)
            try:
                answers[k] = sock.recv(4096)
            except TimeoutError:
                continue
    assert len(answers) == 2 and all(b"device busy" in data for data in answers.values()), answers
    with DeviceClient(limited.url) as client:  # small messages need no share of the budget
        assert client.call("info")[0]["target"] == "onnx"
    for sock in holders:
        sock.close()


def test_sigterm_stops_the_device_within_seconds_while_a_message_is_half_received(limited):
    sock = socket.create_connection(("127.0.0.1", limited.port))
    sock.sendall(struct.pack("<I", 1000) + bytes(10))
    start = time.monotonic()
    limited.proc.send_signal(signal.SIGTERM)
    assert limited.proc.wait(10) == 0 and time.monotonic() - start < 5
    sock.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))


def test_a_stream_that_ends_inside_a_message_gets_an_error_and_the_device_serves_on(limited):
    """device-protocol §2: the stream closing inside a message is answered (seq unknown) and costs nothing else."""
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        sock.sendall(struct.pack("<I", 1000) + bytes(10))
        sock.shutdown(socket.SHUT_WR)
        answer = wire.read_message(sock.makefile("rb"))[0]
    assert not answer["ok"] and answer.get("seq") is None
    with DeviceClient(limited.url) as client:
        assert client.call("info")[0]["target"] == "onnx"


@pytest.mark.slow
def test_a_message_not_completed_within_ten_seconds_is_refused_and_its_connection_closed(limited):
    """device-protocol §1.1: from its length field a message has 10 s to arrive, however slowly it trickles."""
    with socket.create_connection(("127.0.0.1", limited.port)) as sock:
        start = time.monotonic()
        sock.sendall(struct.pack("<I", 1000) + bytes(10))
        sock.settimeout(15)
        stream = sock.makefile("rb")
        for _ in range(5):  # keep it busy (never idle) without finishing it
            time.sleep(0.5)
            sock.sendall(bytes(1))
        answer = wire.read_message(stream)[0]
        assert "not completed within 10 s" in answer["error"] and 9 < time.monotonic() - start < 14
        assert stream.read(1) == b""  # and the connection is closed


def test_open_classes_are_chosen_per_device(tmp_path, signing_keys, operators):
    """device-protocol §3.4: with --open read, reads need no signature but frames do."""
    served = Served(tmp_path / "state", signing_keys[1], "--operator", str(operators[0][1]), "--open", "read")
    try:
        with DeviceClient(served.url) as anyone:
            assert anyone.call("info")[0]["mode"] == "none"
            with pytest.raises(DeviceRequestError, match="'frame' needs an operator's signature"):
                anyone.call("frame", frame_arrays())
    finally:
        served.stop()


def test_a_nonce_is_spent_by_a_failed_attempt_and_belongs_to_its_connection(guarded, operators, tmp_path):
    """device-protocol §3.4: a nonce serves one attempt, good or bad, on the connection that asked for it; a signed
    request is checked even where the operation is open; a signature covers the attachments too."""
    alice = load_private(operators[0][0])
    stranger = load_private(generate(tmp_path / "stranger")[0])
    with socket.create_connection(("127.0.0.1", guarded.port)) as a, socket.create_connection(("127.0.0.1", guarded.port)) as b:
        sa, sb = a.makefile("rwb"), b.makefile("rwb")

        def send(stream, header, arrays=None):
            stream.write(wire.encode(header, arrays))
            stream.flush()
            return wire.read_message(stream)[0]

        request = {"op": "reset"}
        nonce = bytes.fromhex(send(sa, {"op": "auth.challenge", "seq": 1})["nonce"])
        answer = send(sb, {**request, "seq": 1, "auth": sign_request(alice, nonce, request, None)})
        assert not answer["ok"] and "nonce" in answer["error"]  # issued to connection a
        bad = send(sa, {**request, "seq": 2, "auth": sign_request(stranger, nonce, request, None)})
        assert not bad["ok"] and "is not an operator key" in bad["error"]
        again = send(sa, {**request, "seq": 3, "auth": sign_request(alice, nonce, request, None)})
        assert not again["ok"] and "nonce is not the one" in again["error"]  # spent by the failed attempt

        nonce = bytes.fromhex(send(sa, {"op": "auth.challenge", "seq": 4})["nonce"])
        info = {"op": "info"}
        answer = send(sa, {**info, "seq": 5, "auth": sign_request(stranger, nonce, info, None)})
        assert not answer["ok"] and "is not an operator key" in answer["error"]  # open, but a signature is checked

        nonce = bytes.fromhex(send(sa, {"op": "auth.challenge", "seq": 6})["nonce"])
        upload = {"op": "image.upload", "offset": 0, "length": 8, "sha256": "00" * 32}
        auth = sign_request(alice, nonce, upload, {"chunk": b"12345678"})
        answer = send(sa, {**upload, "seq": 7, "auth": auth}, {"chunk": b"87654321"})
        assert not answer["ok"] and "signature does not verify" in answer["error"]


@pytest.mark.slow
def test_a_client_that_never_reads_its_responses_is_dropped(limited):
    """device-protocol §1.1: a response the client leaves unread for 10 s closes its connection; others are served."""
    import threading

    sock = socket.create_connection(("127.0.0.1", limited.port))
    request = wire.encode({"op": "image.list", "seq": 1})

    def flood() -> None:  # requests until the device, blocked on its unread responses, stops reading them
        with contextlib.suppress(OSError):
            while True:
                sock.sendall(request * 64)

    threading.Thread(target=flood, daemon=True).start()
    time.sleep(14)
    with DeviceClient(limited.url) as client:
        assert client.call("info")[0]["target"] == "onnx"
    sock.settimeout(3)
    received, deadline = 0, time.monotonic() + 10
    with contextlib.suppress(TimeoutError):
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            received += len(chunk)
    assert not chunk and received > 0  # what was buffered, then the end: the device closed the connection
    sock.close()
