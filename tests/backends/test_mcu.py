"""The ``mcu`` target (bundle-format.md §17): the image layout, the C firmware under QEMU against ONNX Runtime, its
refusals, a fuzz over the serial line, and a device process serving it through the protocol."""

import dataclasses
import json
import struct
import subprocess
import time

import numpy as np
import pytest
from conftest import Served, tiny_demod_argv

from metaedge.backends.base import BackendError, Frame
from metaedge.backends.mcu import image as mcu_image
from metaedge.backends.mcu.backend import McuBackend
from metaedge.backends.mcu.link import OP_INFO, OP_LOAD, STATUS_RESEND, FirmwareError, request_payload
from metaedge.backends.onnx import OnnxBackend
from metaedge.deploy import manifest as m
from metaedge.deploy.bundle import read_bundle
from metaedge.deploy.client import DeviceClient
from metaedge.deploy.signing import load_private
from metaedge.deploy.wire import frame
from metaedge.sdk.cli.main import main
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks
from metaedge.sdk.targets import export


@pytest.fixture(scope="module")
def receivers(tmp_path_factory, trained_bundle, signing_keys):
    """(run, onnx bundle, mcu bundle) of briefly trained runs: Meta-SGD (per-entry step sizes, one step), iMAML (a
    proximal step toward θ) and the shared CAVIA run (a context vector adapts, two steps); the mcu bundles signed."""
    root = tmp_path_factory.mktemp("mcu")
    assert main(tiny_demod_argv("metasgd", root / "metasgd", iterations=6)) == 0
    assert main(tiny_demod_argv("imaml", root / "imaml")) == 0
    out = {}
    for name, run in (("metasgd", root / "metasgd"), ("imaml", root / "imaml"), ("cavia", trained_bundle[0])):
        export("onnx", run, root / f"{name}-onnx")
        export("mcu", run, root / f"{name}-mcu", key=load_private(signing_keys[0]))
        out[name] = (run, read_bundle(root / f"{name}-onnx"), read_bundle(root / f"{name}-mcu"))
    return out


@pytest.fixture
def firmware(receivers):
    backend = McuBackend()
    backend.load(receivers["metasgd"][2])
    yield backend
    backend.close()


def frames(count: int, symbols: int):
    tasks = DemodTasks(DemodConfig(pilots=8), seed=3)
    return tasks.frames(tasks.devices("test", count), 8, symbols, tasks.rng("test", 1))


@pytest.mark.parametrize("name", ["metasgd", "imaml", "cavia"])
def test_the_firmware_adapts_and_decides_as_onnx_runtime(receivers, name):
    _, onnx_bundle, mcu_bundle = receivers[name]
    onnx, mcu = OnnxBackend(), McuBackend()
    onnx.load(onnx_bundle)
    resources = mcu.load(mcu_bundle)
    try:
        assert mcu.boot_selftest.max_error <= 1e-5 and mcu.selftest().passed
        assert resources.costs["ram_bytes"] <= 32 << 10 and resources.costs["flash_bytes"] <= 128 << 10
        batch = frames(4, 300)
        for i in range(4):
            onnx.reset()
            mcu.reset()
            np.testing.assert_allclose(mcu.log_probs(batch.x_va[i]), onnx.log_probs(batch.x_va[i]), atol=1e-5)
            onnx.adapt(batch.x_tr[i], batch.y_tr[i])
            report = mcu.adapt(batch.x_tr[i], batch.y_tr[i])
            assert report.steps == mcu_bundle.manifest.algorithm.inner_steps
            got = mcu.decisions(batch.x_va[i], log_probs=True)
            expected = onnx.log_probs(batch.x_va[i])
            np.testing.assert_allclose(got.log_probs, expected, atol=1e-5)
            np.testing.assert_array_equal(got.decisions, expected.argmax(-1))
            np.testing.assert_allclose(got.confidence, np.exp(expected.max(-1)), rtol=1e-5)
            assert got.ticks > 0 and mcu.last_adapt.ticks > 0
            fixed = mcu.decisions(batch.x_va[i], log_probs=True, q15=True)  # 16-bit weights and inputs, same adapted φ
            assert (fixed.decisions == got.decisions).mean() >= 0.98 and np.abs(fixed.log_probs - got.log_probs).max() < 0.05
    finally:
        mcu.close()


def test_the_image_round_trips_and_every_layout_rule_is_checked(receivers):
    data = receivers["metasgd"][2].artifacts[m.IMAGE]
    image = mcu_image.decode(data)
    assert mcu_image.encode(image) == data
    assert image.step_sizes is not None and image.adapts == tuple(image.theta)

    def rehash(raw: bytes) -> bytes:
        import hashlib

        return raw[:-32] + hashlib.sha256(raw[:-32]).digest()

    def patched(offset: int, fmt: str, value) -> bytes:
        raw = bytearray(data)
        struct.pack_into(fmt, raw, offset, value)
        return rehash(bytes(raw))

    cases = {
        "magic": patched(0, "<4s", b"XXXX"),
        "byte-order": patched(4, "<I", 0x04030201),
        "SHA-256": data[:-1] + bytes([data[-1] ^ 1]),
        "total length": patched(12, "<I", len(data) + 4),
        "mask": patched(28, "<I", 1 << 12),
        "reserved": patched(52, "<I", 1),
        "not finite": patched(80, "<f", float("nan")),
        "width": patched(56, "<H", 300),
    }
    for rule, bad in cases.items():
        with pytest.raises(mcu_image.ImageError, match=rule.split()[0]):
            mcu_image.decode(bad)
    # the writer refuses what a reader would: arrays of another shape, values that are not finite
    with pytest.raises(mcu_image.ImageError, match="shapes"):
        mcu_image.encode(dataclasses.replace(image, theta={**image.theta, "l0.bias": image.theta["l0.bias"][:-1]}))
    with pytest.raises(mcu_image.ImageError, match="not finite"):
        mcu_image.encode(dataclasses.replace(image, theta={**image.theta, "l0.bias": image.theta["l0.bias"] * np.inf}))


def test_the_firmware_refuses_a_broken_image_with_a_reason_and_keeps_serving(firmware, receivers):
    data = firmware.image
    link = firmware.link
    broken = {"SHA-256": data[:-1] + bytes([data[-1] ^ 1]), "magic": b"XXXX" + data[4:], "total length": data + bytes(4)}
    for reason, bad in broken.items():
        with pytest.raises(FirmwareError, match=reason):
            link.load(bad)
        assert link.info().state == "empty"
    with pytest.raises(FirmwareError, match="no receiver image"):
        link.adapt(np.zeros((2, 2), np.float32), np.zeros(2))
    assert link.load(data).max_error <= 1e-5 and link.info().state == "ready"
    with pytest.raises(FirmwareError, match="not finite"):
        link.adapt(np.full((2, 2), np.nan, np.float32), np.zeros(2))
    with pytest.raises(FirmwareError, match="label"):
        link.adapt(np.zeros((2, 2), np.float32), np.array([0, 99]))
    with pytest.raises(FirmwareError, match="unknown operation"):
        link.request(77)
    with pytest.raises(FirmwareError, match="does not continue"):
        link.request(OP_LOAD, struct.pack("<II", 64, len(data)) + bytes(64))
    with pytest.raises(FirmwareError, match="runs past"):  # a refused start of a new image changes nothing
        link.request(OP_LOAD, struct.pack("<II", 0, 112) + bytes(200))
    assert link.info().state == "ready"
    pilots = np.zeros((3, 2), "<f4").tobytes() + np.zeros(3, "<u2").tobytes()
    with pytest.raises(FirmwareError, match="not zero"):
        link.request(3, struct.pack("<HH", 3, 7) + pilots + bytes(2))  # adapt with a reserved field set
    with pytest.raises(FirmwareError, match="not zero"):
        link.request(3, struct.pack("<HH", 3, 0) + pilots + b"\x01\x00")  # … with its labels' padding set
    assert link.selftest().max_error <= 1e-5


def test_an_image_whose_self_test_fails_is_loaded_but_never_runs_frames(firmware):
    import hashlib

    raw = bytearray(firmware.image)
    struct.pack_into("<f", raw, len(raw) - 36, struct.unpack_from("<f", raw, len(raw) - 36)[0] + 1.0)  # the last expected value
    raw[-32:] = hashlib.sha256(bytes(raw[:-32])).digest()
    reply = firmware.link.load(bytes(raw))
    assert reply.max_error > reply.atol and firmware.link.info().state == "failed"
    with pytest.raises(FirmwareError, match="passed its self-test"):
        firmware.link.decide(np.zeros((2, 2), np.float32), 16)


def test_broken_framing_is_answered_and_the_line_recovers(firmware):
    link = firmware.link
    link.send_raw(struct.pack("<I", 1 << 20) + bytes(16))  # a length beyond the limit: the boundary is lost
    assert link.read_reply()[1:] == (1, 0, b"message length outside 8..4096 bytes")
    link.send_raw(struct.pack("<I", 40) + bytes(10))  # a message that stops short
    assert link.read_reply()[1] == STATUS_RESEND
    good = frame(request_payload(OP_INFO, 9))
    link.send_raw(good[:-1] + bytes([good[-1] ^ 0xFF]))  # a CRC that does not match
    assert link.read_reply()[1:] == (STATUS_RESEND, 0, b"CRC mismatch: the message was corrupted in transit")
    link.send_raw(good)
    assert link.read_reply()[:3] == (OP_INFO, 0, 9)
    assert link.info().state == "ready"


def test_malformed_serial_input_never_hangs_or_changes_the_image(firmware):
    from metaedge.sdk.bench.mcu import fuzz_serial

    result = fuzz_serial(firmware, 150, np.random.default_rng(5))
    assert result["messages"] >= 140 and result["hangs"] == 0
    assert result["image_unchanged"] and result["selftest_passed"]


def test_a_stopped_microcontroller_is_restarted_with_its_image(firmware):
    firmware.emulator.process.kill()
    firmware.emulator.process.wait()
    with pytest.raises(BackendError, match="restarted"):
        firmware.log_probs(np.zeros((3, 2), np.float32))
    assert firmware.selftest().passed and firmware.link.info().state == "ready"


def test_the_device_checks_the_image_against_the_manifest(receivers):
    bundle = receivers["metasgd"][2]
    theta = dict(bundle.tensors(m.THETA))
    image = mcu_image.decode(bundle.artifacts[m.IMAGE])
    changed = dataclasses.replace(image, theta={**image.theta, "l0.bias": image.theta["l0.bias"] + 1})
    with pytest.raises(BackendError, match="θ differs"):
        McuBackend.inspect(dataclasses.replace(bundle, artifacts={**bundle.artifacts, m.IMAGE: mcu_image.encode(changed)}))
    assert set(theta) == {*image.theta, *image.step_sizes}


def test_runs_the_firmware_cannot_run_are_refused_with_the_reason(tmp_path, capsys):
    assert main(tiny_demod_argv("bmaml", tmp_path / "bmaml")) == 0
    capsys.readouterr()
    assert main(["export", str(tmp_path / "bmaml"), "--target", "mcu", "--out", str(tmp_path / "b")]) != 0
    assert "plain SGD steps" in capsys.readouterr().err


def test_a_device_process_serves_the_mcu_target_through_the_protocol(receivers, signing_keys, tmp_path, capsys):
    _, onnx_bundle, mcu_bundle = receivers["metasgd"]
    device = Served(tmp_path / "state", signing_keys[1], target="mcu")
    emulators: set[int] = set()
    try:
        assert main(["deploy", str(mcu_bundle.path), "--device", device.url, "--confirm", "--quiet"]) == 0
        capsys.readouterr()
        assert main(["run", "--device", device.url, "--frames", "2", "--pilots", "8", "--symbols", "100", "--json"]) == 0
        result = json.loads(capsys.readouterr().out)
        assert result["frames"] == 2 and 0 <= result["ser"] <= 1
        onnx = OnnxBackend()
        onnx.load(onnx_bundle)
        batch = frames(2, 200)
        with DeviceClient(device.url) as client:
            info, _ = client.call("info")
            assert info["target"] == "mcu" and info["mode"] == "confirmed"
            for i in range(2):
                frame = Frame(batch.x_tr[i].astype(np.float32), batch.y_tr[i], batch.x_va[i].astype(np.float32))
                telemetry, out = client.call("frame", {"pilots": frame.pilots, "labels": frame.labels.astype(np.int32), "payload": frame.payload})
                expected = onnx.frame(frame)
                assert telemetry["receiver"] == expected.receiver
                np.testing.assert_array_equal(out["decisions"], expected.outputs.argmax(-1))
            with pytest.raises(Exception, match="NaN"):
                client.call("frame", {"pilots": np.full((4, 2), np.nan, np.float32), "payload": np.zeros((5, 2), np.float32)})
            stats, _ = client.call("stats")
            assert stats["mode"] == "confirmed" and stats["frames"] >= 4
        emulators = _emulators_under(device.proc.pid)
        assert emulators
    finally:
        device.proc.terminate()
        device.proc.wait(30)
    deadline = time.time() + 10
    while time.time() < deadline and _alive(emulators):
        time.sleep(0.2)
    assert _alive(emulators) == set()  # the device's emulators end with it


def _emulators_under(root: int) -> set[int]:
    """The QEMU processes descended from ``root``."""
    parents = {}
    for line in subprocess.run(["ps", "-eo", "pid=,ppid=,comm="], capture_output=True, text=True).stdout.splitlines():
        pid, ppid, name = line.split(None, 2)
        parents[int(pid)] = (int(ppid), name)
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in parents.items() if ppid in frontier} - found
        found |= frontier
    return {pid for pid in found if parents[pid][1].startswith("qemu-system")}


def _alive(pids: set[int]) -> set[int]:
    return {
        pid
        for pid in pids
        if subprocess.run(["ps", "-p", str(pid), "-o", "stat="], capture_output=True, text=True).stdout.strip()[:1] not in ("", "Z")
    }
