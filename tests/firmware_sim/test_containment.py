"""Contained execution: a signed receiver that hangs or allocates gigabytes on a trigger input is stopped, restarted,
and — on trial — reverted; the device keeps answering management requests meanwhile. Real hostile ONNX graphs."""

import json
import threading
import time

import numpy as np
import pytest
from conftest import Served
from test_attacks import install, upload

from metaedge.deploy.bundle import pack, read_bundle
from metaedge.deploy.client import DeviceClient, DeviceRequestError
from metaedge.deploy.manifest import MANIFEST_FILE
from metaedge.deploy.signing import load_private
from metaedge.firmware_sim.contain import Containment
from metaedge.firmware_sim.device import Device, DeviceError
from metaedge.firmware_sim.profile import PROFILES
from metaedge.sdk.bench.attack import TRIGGER, hostile_bundle
from metaedge.sdk.device_frames import deploy

PROFILE = PROFILES["edge-small"]


@pytest.fixture(scope="module")
def hostile(trained_bundle, signing_keys, tmp_path_factory):
    """Packed images of the test bundle with a hang and with a memory trigger (security counter 2), signed."""
    root = tmp_path_factory.mktemp("hostile")
    key = load_private(signing_keys[0])
    return {kind: pack(hostile_bundle(trained_bundle[1], root / kind, kind, key, security_counter=2)) for kind in ("hang", "memory")}


def arrays(seed: int = 0, trigger: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    pilots = rng.normal(0, 2, (8, 2)).astype(np.float32)
    if trigger:
        pilots[3, 0] = 5 * TRIGGER
    return {"pilots": pilots, "payload": rng.normal(0, 2, (100, 2)).astype(np.float32)}


def contained(tmp_path, trusted, **limits) -> Device:
    return Device(tmp_path / "device", "onnx", PROFILE, trusted_keys=trusted, containment=Containment(**limits))


TRIGGERS = [("hang", {"frame_s": 1.0}, "ran over its 1 s limit"), ("memory", {"memory": 256 << 20}, "receiver failed")]


@pytest.mark.parametrize("kind, limit, reason", TRIGGERS)
def test_a_triggered_receiver_is_stopped_and_restarts_for_the_next_frame(tmp_path, trusted, hostile, kind, limit, reason):
    device = contained(tmp_path, trusted, **limit)
    install(device, hostile[kind])
    before = device.frame(arrays())[1]["decisions"]
    start = time.monotonic()
    with pytest.raises(DeviceError, match=reason):
        device.frame(arrays(trigger=True))
    assert time.monotonic() - start < 4
    assert np.array_equal(device.frame(arrays())[1]["decisions"], before)  # a fresh receiver, the same image
    assert device.stats_report()["violations"] == 1 and device.info()["mode"] == "confirmed"
    device.close()


def test_contained_and_in_process_receivers_decide_alike(tmp_path, trusted, trained_bundle):
    image = pack(read_bundle(trained_bundle[1]))
    inside = Device(tmp_path / "inside", "onnx", PROFILE, trusted_keys=trusted)
    outside = contained(tmp_path, trusted)
    install(inside, image)
    install(outside, image)
    for seed in range(3):
        a, b = inside.frame(arrays(seed))[1], outside.frame(arrays(seed))[1]
        assert np.array_equal(a["decisions"], b["decisions"]) and np.array_equal(a["confidence"], b["confidence"])
    outside.close()


def test_a_violation_during_a_trial_reverts_the_image(tmp_path, trusted, trained_bundle, hostile):
    device = contained(tmp_path, trusted, frame_s=1.0)
    install(device, pack(read_bundle(trained_bundle[1])))
    device.test(upload(device, hostile["hang"])["sha256"])
    assert device.reset()["mode"] == "trial"
    with pytest.raises(DeviceError, match="the image on trial was reverted"):
        device.frame(arrays(trigger=True))
    info = device.info()
    assert (info["running"], info["mode"]) == (0, "confirmed") and device.flash.boot_state().trial is None
    device.frame(arrays(trigger=True))  # the old receiver has no trigger
    device.close()


def test_a_selftest_that_never_ends_fails_the_trial_boot(tmp_path, trusted, trained_bundle, make_variant):
    manifest = json.loads((trained_bundle[1] / MANIFEST_FILE).read_text())
    endless = pack(read_bundle(make_variant(algorithm={**manifest["algorithm"], "inner_steps": 10**9}, security_counter=1)))
    device = contained(tmp_path, trusted, start_s=2.0)
    install(device, pack(read_bundle(trained_bundle[1])))
    device.test(upload(device, endless)["sha256"])
    start = time.monotonic()
    booted = device.reset()
    assert (booted["slot"], booted["mode"]) == (0, "confirmed") and time.monotonic() - start < 10
    assert any("ran over its 2 s limit (selftest)" in event for event in device.stats_report()["boot_events"])
    device.close()


def test_management_answers_while_a_frame_hangs_and_sigterm_stops_the_device(tmp_path, signing_keys, hostile):
    served = Served(tmp_path / "state", signing_keys[1], "--frame-timeout", "30")
    try:
        deploy(served.url, hostile["hang"], confirm=True)
        outcome = {}

        def hang():
            with DeviceClient(served.url, timeout=60) as client:
                try:
                    client.call("frame", arrays(trigger=True))
                except (DeviceRequestError, ConnectionError) as e:
                    outcome["error"] = str(e)

        threading.Thread(target=hang, daemon=True).start()
        time.sleep(1.0)  # the trigger frame is running in the receiver's process now
        with DeviceClient(served.url, timeout=5) as operator:
            start = time.monotonic()
            assert operator.call("info")[0]["mode"] == "confirmed"
            assert operator.call("image.list")[0]["images"][0]["active"]
            assert time.monotonic() - start < 2  # the trigger frame may run 30 s: it does not hold these up
        start = time.monotonic()
        served.proc.terminate()
        assert served.proc.wait(10) == 0 and time.monotonic() - start < 5
    finally:
        served.stop()


def test_the_protocols_table_of_limits_is_the_devices():
    """device-protocol §3.5 states the containment defaults; they are the ones the device applies."""
    import re
    from pathlib import Path

    from metaedge.backends.registry import FRAME_LIMITS_S
    from metaedge.firmware_sim.contain import Containment

    spec = (Path(__file__).resolve().parents[2] / "docs" / "device-protocol.md").read_text()
    frame_row = next(line for line in spec.splitlines() if line.startswith("| one frame, wall clock"))
    assert dict(re.findall(r"`(\w+)` (\d+) s", frame_row)) == {t: f"{s:g}" for t, s in FRAME_LIMITS_S.items()}
    defaults = Containment()
    assert f"| {defaults.start_s:g} s each |" in spec and f"| {defaults.memory >> 20} MiB |" in spec
