"""Which image a device may select and start (issue: device hardening): expiry at test and boot, fallback to the
other slot when the confirmed one breaks, a starting image that throws, and the state directory's lock."""

import json
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from test_attacks import install, upload

from metaedge.backends.onnx.backend import OnnxBackend
from metaedge.deploy.bundle import pack, read_bundle
from metaedge.deploy.manifest import MANIFEST_FILE
from metaedge.firmware_sim.device import Device, DeviceError
from metaedge.firmware_sim.flash import HEADER_SIZE, lock_state
from metaedge.firmware_sim.profile import PROFILES

PROFILE = PROFILES["edge-small"]
EXPIRY = datetime(2027, 1, 31, tzinfo=timezone.utc)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def still_serving(device: Device, slot: int = 0) -> None:
    rng = np.random.default_rng(0)
    telemetry, out = device.frame({"pilots": rng.normal(0, 2, (8, 2)).astype(np.float32), "payload": rng.normal(0, 2, (50, 2)).astype(np.float32)})
    assert telemetry["slot"] == slot and out["decisions"].shape == (50,)


@pytest.fixture
def clock():
    return Clock(EXPIRY - timedelta(days=1))


@pytest.fixture
def fresh(tmp_path, trusted, clock):
    return lambda: Device(tmp_path / "device", "onnx", PROFILE, trusted_keys=trusted, clock=clock)


@pytest.fixture
def expiring(make_variant):
    return pack(read_bundle(make_variant(expires="2027-01-31T00:00:00Z", security_counter=1)))


def test_an_image_that_expired_after_upload_cannot_be_selected_for_a_trial(fresh, clock, expiring, trained_bundle):
    device = fresh()
    install(device, pack(read_bundle(trained_bundle[1])))
    digest = upload(device, expiring)["sha256"]  # accepted: not expired yet
    clock.now = EXPIRY  # the boundary itself counts as expired
    with pytest.raises(DeviceError, match="expired at 2027-01-31T00:00:00Z: refusing to select"):
        device.test(digest)
    assert device.flash.boot_state().pending is None
    still_serving(device)


def test_a_confirmed_image_that_expired_does_not_start_at_boot(fresh, clock, expiring):
    device = fresh()
    install(device, expiring)
    clock.now = EXPIRY + timedelta(seconds=1)
    booted = device.reset()
    assert booted["mode"] == "none" and device.info()["running"] is None
    assert any("expired" in event for event in device.stats_report()["boot_events"])
    with pytest.raises(DeviceError, match="no image is running"):
        still_serving(device)
    assert device.list_images()["images"][0]["valid"]  # still there for the operator to inspect, just not run


def _corrupt_image(device: Device, slot: int) -> None:
    """Flip one byte of the slot's image (bit rot): its header no longer matches."""
    path = device.flash.path
    data = bytearray(path.read_bytes())
    data[slot * device.flash.slot_size + HEADER_SIZE + 100] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_confirmed_slot_falls_back_to_the_other_verified_image(fresh, make_variant, trained_bundle):
    device = fresh()
    install(device, pack(read_bundle(trained_bundle[1])))  # slot 0, counter 1
    upload(device, pack(read_bundle(make_variant(security_counter=1))))  # slot 1, verified, never tested
    _corrupt_image(device, 0)
    booted = device.reset()
    assert (booted["slot"], booted["mode"]) == (1, "fallback")
    assert device.flash.boot_state().confirmed == 0  # the fallback is not confirmed: the trailer is unchanged
    still_serving(device, slot=1)


def test_fallback_never_starts_an_image_below_the_counter_floor(fresh, make_variant):
    device = fresh()
    install(device, pack(read_bundle(make_variant(security_counter=1))))
    upload(device, pack(read_bundle(make_variant(security_counter=3))))
    digest = device.list_images()["images"][1]["sha256"]
    device.test(digest)
    device.reset()
    device.confirm()  # slot 1 at counter 3 is confirmed; slot 0 holds counter 1
    _corrupt_image(device, 1)
    booted = device.reset()
    assert booted["mode"] == "none" and device.flash.boot_state().counter == 3
    assert any("rollback refused" in event for event in device.stats_report()["boot_events"])


@pytest.mark.parametrize("error", [MemoryError, RecursionError, KeyError])
def test_any_exception_while_starting_a_trial_reverts_and_is_logged(fresh, make_variant, trained_bundle, monkeypatch, error):
    device = fresh()
    install(device, pack(read_bundle(trained_bundle[1])))
    digest = upload(device, pack(read_bundle(make_variant(security_counter=2))))["sha256"]
    device.test(digest)
    original = OnnxBackend.load

    def failing(self, bundle):
        if bundle.manifest.security_counter == 2:
            raise error("while loading")
        return original(self, bundle)

    monkeypatch.setattr(OnnxBackend, "load", failing)
    booted = device.reset()
    assert (booted["slot"], booted["mode"]) == (0, "confirmed")
    assert any(error.__name__ in event for event in device.stats_report()["boot_events"])
    still_serving(device)


def test_one_state_directory_serves_one_device_process(tmp_path):
    held = lock_state(tmp_path / "state")
    with pytest.raises(ValueError, match="another device process is using this state directory"):
        lock_state(tmp_path / "state")
    held.close()
    lock_state(tmp_path / "state").close()  # free again once the first holder is gone


def test_a_receiver_that_answers_nan_gets_an_error_response_not_ok(fresh, trained_bundle, monkeypatch):
    """Finite but extreme samples can drive a receiver's arithmetic to NaN (inf − inf); the device must not answer
    ``ok`` with NaN confidences. The overflow is injected, since whether it happens depends on the weights."""
    device = fresh()
    install(device, pack(read_bundle(trained_bundle[1])))
    original = OnnxBackend.frame

    def overflowing(self, frame):
        result = original(self, frame)
        result.outputs[3] = np.nan
        return result

    monkeypatch.setattr(OnnxBackend, "frame", overflowing)
    with pytest.raises(DeviceError, match="outputs are not finite"):
        still_serving(device)
    monkeypatch.undo()
    still_serving(device)


def test_negative_weight_draws_cannot_push_the_ram_estimate_below_zero(fresh, make_variant, trained_bundle):
    manifest = json.loads((trained_bundle[1] / MANIFEST_FILE).read_text())
    name = manifest["parameters"][0]["name"]
    noise = {"parameters": [name], "adapt": {"seed": 0, "draws": -(10**9)}, "predict": {"seed": 1, "draws": 1}}
    image = pack(read_bundle(make_variant(algorithm={**manifest["algorithm"], "noise": noise})))
    device = fresh()
    with pytest.raises(DeviceError, match="draws must be non-negative integers"):
        upload(device, image)
    assert device.list_images()["images"][0]["valid"] is False


def test_an_older_release_is_never_installed_or_selected_again(fresh, make_variant):
    device = fresh()
    first, second = (pack(read_bundle(make_variant(security_counter=1, release=r))) for r in (1, 2))
    install(device, first)
    install(device, second)  # slot 1 confirmed (release 2); slot 0 still holds release 1
    old = device.list_images()["images"][0]
    assert old["valid"] and not old["active"]
    with pytest.raises(DeviceError, match="older release refused: counter 1, release 1 is older than the confirmed image's counter 1, release 2"):
        device.test(old["sha256"])  # the review's downgrade, even for an operator
    with pytest.raises(DeviceError, match="older release refused"):
        upload(device, first)
    install(device, pack(read_bundle(make_variant(security_counter=1, release=2, selftest={"atol": 1e-4}))))  # an equal release is allowed


def test_image_test_refuses_the_running_image_one_below_the_floor_and_one_that_no_longer_verifies(fresh, make_variant):
    """device-protocol §3.2: only an image that verifies, other than the running one, at or above the floor."""
    device = fresh()
    running = install(device, pack(read_bundle(make_variant(security_counter=1))))["sha256"]
    with pytest.raises(DeviceError, match="in the inactive slot"):
        device.test(running)
    install(device, pack(read_bundle(make_variant(security_counter=3))))  # slot 1 confirmed: the floor is 3
    with pytest.raises(DeviceError, match="rollback refused"):
        device.test(running)  # slot 0 still holds counter 1
    newer = upload(device, pack(read_bundle(make_variant(security_counter=4))))["sha256"]  # into slot 0
    _corrupt_image(device, 0)
    with pytest.raises(DeviceError):
        device.test(newer)
    assert device.flash.boot_state().pending is None
    still_serving(device, slot=1)


def test_only_confirm_raises_the_floor_and_an_absent_release_counts_as_zero(fresh, make_variant):
    """device-protocol §3.2: a trial that is never confirmed leaves the counter floor where it was; bundle-format §2:
    a bundle without ``release`` is release 0, older than release 1 of the same counter."""
    device = fresh()
    install(device, pack(read_bundle(make_variant(security_counter=1, release=1))))
    digest = upload(device, pack(read_bundle(make_variant(security_counter=5))))["sha256"]
    device.test(digest)
    assert device.reset()["mode"] == "trial" and device.list_images()["security_counter"] == 1
    assert device.reset()["slot"] == 0 and device.list_images()["security_counter"] == 1  # reverted, unconfirmed
    with pytest.raises(DeviceError, match="older release refused"):
        upload(device, pack(read_bundle(make_variant(security_counter=1))))


def test_a_fallback_is_never_older_than_a_confirmed_image_that_still_verifies(fresh, clock, make_variant):
    """bundle-format §2, device-protocol §4.3: the confirmed image (release 2) expires, so it does not start, but it
    still verifies: the other slot's release 1 is older and must not start either. Once the confirmed slot's bytes
    break, only the counter floor is left (the trailer records no release) and release 1 may serve, unconfirmed."""
    device = fresh()
    install(device, pack(read_bundle(make_variant(security_counter=1, release=1))))
    install(device, pack(read_bundle(make_variant(security_counter=1, release=2, expires="2027-01-31T00:00:00Z"))))
    clock.now = EXPIRY
    assert device.reset()["mode"] == "none"
    assert any("older release refused" in event for event in device.stats_report()["boot_events"])
    _corrupt_image(device, 1)
    assert device.reset()["mode"] == "fallback"


def test_an_expired_image_in_the_other_slot_is_not_a_fallback(tmp_path, trusted, clock, make_variant, expiring):
    device = Device(tmp_path / "second", "onnx", PROFILE, trusted_keys=trusted, clock=clock)
    install(device, pack(read_bundle(make_variant(security_counter=1))))
    upload(device, expiring)  # slot 1, verified, never tested
    _corrupt_image(device, 0)
    clock.now = EXPIRY
    assert device.reset()["mode"] == "none" and device.info()["running"] is None


def test_a_fallback_runs_unconfirmed(fresh, make_variant, trained_bundle):
    device = fresh()
    install(device, pack(read_bundle(trained_bundle[1])))
    upload(device, pack(read_bundle(make_variant(security_counter=1))))
    _corrupt_image(device, 0)
    assert device.reset()["mode"] == "fallback"
    with pytest.raises(DeviceError):
        device.confirm()
    assert device.flash.boot_state().confirmed == 0


def test_signatures_are_checked_again_at_boot(tmp_path, trusted, clock, make_variant):
    """bundle-format §12: a device verifies before it writes a slot header and again before it starts an image: a
    device whose trusted keys changed no longer starts an image signed by a key it dropped."""
    from metaedge.deploy.signing import generate, load_public

    device = Device(tmp_path / "state", "onnx", PROFILE, trusted_keys=trusted, clock=clock)
    install(device, pack(read_bundle(make_variant(security_counter=1))))
    waiting = upload(device, pack(read_bundle(make_variant(security_counter=2))))["sha256"]  # slot 1, verified then
    other = load_public(generate(tmp_path / "other")[1])
    again = Device(tmp_path / "state", "onnx", PROFILE, trusted_keys=[other], clock=clock)
    assert again.info()["running"] is None
    assert any("which this device does not trust" in event for event in again.stats_report()["boot_events"])
    with pytest.raises(DeviceError, match="does not trust"):  # device-protocol §3.2: nor selects it for a trial
        again.test(waiting)


@pytest.mark.parametrize("where", [0, 12])  # a byte of the magic, a byte of the header's CRC
def test_a_slot_header_with_a_bad_magic_or_crc_is_empty(fresh, trained_bundle, where):
    """device-protocol §4.1: a slot is valid only when its header's magic, CRC and length check."""
    from metaedge.firmware_sim.flash import _HEADER

    device = fresh()
    install(device, pack(read_bundle(trained_bundle[1])))
    offset = where if where < 8 else _HEADER.size + where % 4  # inside the magic, or inside the CRC after the header
    data = bytearray(device.flash.path.read_bytes())
    data[offset] ^= 0xFF
    device.flash.path.write_bytes(bytes(data))
    assert device.list_images()["images"][0]["valid"] is False and device.reset()["mode"] == "none"
