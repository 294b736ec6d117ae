"""Cut power at every flash write of an update and of a revert: the device always comes back
with a verified image that decodes correctly (zero failures)."""

import json
import math
import shutil

import pytest

from metaedge.deploy.bundle import manifest_bytes, pack, read_bundle, sign_bundle
from metaedge.deploy.manifest import MANIFEST_FILE
from metaedge.deploy.signing import load_private
from metaedge.firmware_sim import powercut
from metaedge.firmware_sim.device import Device
from metaedge.firmware_sim.profile import PROFILES

PROFILE = PROFILES["edge-small"]


@pytest.fixture(scope="module")
def images(trained_bundle, signing_keys, tmp_path_factory):
    """The old image (counter 1) and a new one (counter 2, other self-test tolerance so its bytes differ)."""
    new = tmp_path_factory.mktemp("new") / "b"
    shutil.copytree(trained_bundle[1], new)
    manifest = json.loads((new / MANIFEST_FILE).read_text())
    manifest.update(security_counter=2)
    manifest["selftest"]["atol"] = 2e-4
    (new / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
    sign_bundle(new, load_private(signing_keys[0]))
    return pack(read_bundle(trained_bundle[1])), pack(read_bundle(new))


def setup(images, trusted, work):
    """A device with the old image confirmed, the new image as the update, real trust and the real ONNX backend."""
    return powercut.Setup.prepare(work, *images, lambda state: Device(state, "onnx", PROFILE, trusted_keys=trusted))


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["update", "revert"])
def test_power_cut_at_every_write(scenario, images, trusted, tmp_path):
    report = powercut.run(scenario, setup(images, trusted, tmp_path), tmp_path / "work")
    # every chunk of the upload is a write, and the trailer's records more; each cut clean and torn, trailer splits too
    assert report.writes > math.ceil(len(images[1]) / powercut.CHUNK) and report.cuts > 2 * report.writes
    assert report.failures == []


def test_the_powercut_benchmark_cuts_every_write_of_an_update_and_reports_no_failure(trained_bundle, capsys):
    import json

    from metaedge.sdk.cli.main import main

    assert main(["bench", "powercut", "--bundle", str(trained_bundle[1]), "--crash-states", "40", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failures"] == 0 and report["cuts"] == sum(r["cuts"] for r in report["scenarios"]) > 0
    assert {r["scenario"] for r in report["scenarios"]} == {"update", "revert", "update (crash states)", "revert (crash states)"}
    assert report["crash_states"] == 40


def test_crash_states_keep_synced_writes_and_lose_some_unsynced_sectors():
    base = bytes(4096)
    ops = [(0, b"\x01" * 1024), None, (1024, b"\x02" * 2048), (3072, b"\x03" * 512)]  # a synced write, then two unsynced
    states = list(powercut.crash_states(base, ops, count=50, seed=1))
    assert len(states) == 50
    for description, flash, durable in states:
        point = int(description.split()[3])
        if point >= 2:  # the first write was synced: never lost
            assert flash[:1024] == durable[:1024] == b"\x01" * 1024
        for sector in range(0, 4096, 512):  # every sector holds its durable bytes or those of a write before the crash
            written = [
                data[sector - offset : sector - offset + 512]
                for offset, data in (op for op in ops[:point] if op)
                if offset <= sector < offset + len(data)
            ]
            assert flash[sector : sector + 512] in [durable[sector : sector + 512], *written]
    after = [(flash, durable) for d, flash, durable in states if d.startswith("crash after operation 4")]
    assert after and all(durable[:1024] == b"\x01" * 1024 and durable[1024:] == bytes(3072) for _, durable in after)
    kept = {flash[1024:3584].count(0) // 512 for flash, _ in after}  # unsynced sectors lost: some, none or all
    assert len(kept) > 1


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["update", "revert"])
def test_every_crash_state_boots_a_verified_image_above_the_floor(scenario, images, trusted, tmp_path):
    report = powercut.explore(scenario, setup(images, trusted, tmp_path), tmp_path / "work", count=120)
    assert report.cuts == 120 and report.failures == []


def test_an_update_syncs_where_the_spec_says(images, trusted, tmp_path):
    """device-protocol §4.4: a sync after erasing a slot header, before writing a slot header (its image is durable
    first) and after it, and after every trailer record — checked on the recorded writes of a whole update."""
    from metaedge.firmware_sim.flash import HEADER_SIZE

    prepared = setup(images, trusted, tmp_path / "setup")
    prepared.fresh_state(tmp_path / "state")
    device = prepared.make_device(tmp_path / "state")
    journal = powercut.Journal()
    device.flash.observer = journal
    powercut.update(device, prepared.image)
    device.close()
    ops, slot_size = journal.ops, device.flash.slot_size
    kinds = []
    for op in ops:
        if op is None:
            kinds.append("sync")
        elif op[0] >= 2 * slot_size:
            kinds.append("trailer")
        elif op[0] % slot_size == 0 and len(op[1]) == HEADER_SIZE:
            kinds.append("erase" if set(op[1]) == {0xFF} else "header")
        else:
            kinds.append("image")
    assert {"erase", "header", "trailer", "image"} <= set(kinds)
    for k, kind in enumerate(kinds):
        if kind in ("erase", "header", "trailer"):
            assert kinds[k + 1] == "sync", (k, kind, kinds[k + 1])
        if kind == "header":
            assert kinds[k - 1] == "sync", (k, kinds[k - 1])
