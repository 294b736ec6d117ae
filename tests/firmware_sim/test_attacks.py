"""One test per attack (after TUF's attack list): each is refused with a clear reason, and the
running image keeps serving. Real Ed25519 keys, real bundles, the real ONNX backend."""

import hashlib
import json
import shutil

import numpy as np
import pytest

from metaedge.deploy.bundle import manifest_bytes, pack, read_bundle
from metaedge.deploy.manifest import MANIFEST_FILE, SIGNATURE_FILE
from metaedge.deploy.signing import generate, load_private
from metaedge.firmware_sim.device import Device, DeviceError
from metaedge.firmware_sim.profile import PROFILES

PROFILE = PROFILES["edge-small"]


@pytest.fixture
def device(tmp_path, trusted, trained_bundle):
    """A device running the test bundle (security counter 1), confirmed."""
    d = Device(tmp_path / "device", "onnx", PROFILE, trusted_keys=trusted)
    install(d, pack(read_bundle(trained_bundle[1])))
    return d


def upload(device, image, chunk=4096, declared=None):
    digest = hashlib.sha256(image).hexdigest()
    result = {}
    for offset in range(0, len(image), chunk):
        result = device.upload(offset, declared or len(image), digest, image[offset : offset + chunk])
    return result


def install(device, image):
    result = upload(device, image)
    device.test(result["sha256"])
    assert device.reset()["mode"] == "trial"
    device.confirm()
    return result


def still_serving(device, slot=0):
    rng = np.random.default_rng(0)
    telemetry, out = device.frame({"pilots": rng.normal(0, 2, (8, 2)).astype(np.float32), "payload": rng.normal(0, 2, (50, 2)).astype(np.float32)})
    assert telemetry["slot"] == slot and out["decisions"].shape == (50,)
    assert device.list_images()["images"][1 - slot]["valid"] is False or slot == 1


def refused(device, image, fragment):
    with pytest.raises(DeviceError, match=fragment):
        upload(device, image)
    still_serving(device)


def test_unsigned_bundle(device, make_variant):
    refused(device, pack(read_bundle(make_variant(key=None))), "bundle is not signed")


def test_signature_by_an_unknown_key(device, make_variant, tmp_path):
    stranger, _ = generate(tmp_path / "stranger")
    refused(device, pack(read_bundle(make_variant(key=stranger))), "is signed by key [0-9a-f]{16}, which this device does not trust")


def test_artifact_tampered_after_signing(device, make_variant):
    path = make_variant()
    theta = bytearray((path / "theta.safetensors").read_bytes())
    theta[-1] ^= 0x01
    image = bytearray(pack(read_bundle(path)))
    image[image.index(bytes(theta[:-1])) + len(theta) - 1] ^= 0x01  # the same flip inside the packed image
    refused(device, bytes(image), "'theta': SHA-256 does not match")


def test_manifest_tampered_after_signing(device, make_variant):
    path = make_variant()
    raw = (path / MANIFEST_FILE).read_bytes().replace(b'"inner_lr":1.0', b'"inner_lr":9.0')
    assert b'"inner_lr":9.0' in raw
    (path / MANIFEST_FILE).write_bytes(raw)  # manifest.sig still holds the signature of the original
    refused(device, pack(read_bundle(path)), "signature does not verify with key [0-9a-f]{16}")


def test_mix_and_match_of_artifacts_from_another_signed_bundle(device, make_variant, trained_bundle, tmp_path):
    other = make_variant(security_counter=5)
    mixed = tmp_path / "mixed"
    shutil.copytree(trained_bundle[1], mixed)
    alien = np.frombuffer((other / "selftest.safetensors").read_bytes(), np.uint8).copy()
    alien[-4:] ^= 0xFF  # a valid-looking artifact that is not the one this manifest hashed
    (mixed / "selftest.safetensors").write_bytes(alien.tobytes())
    with pytest.raises(Exception, match="SHA-256 does not match"):
        read_bundle(mixed)
    # and the other way round: this bundle's signed manifest with the other bundle's (signed) manifest swapped in
    (mixed / "selftest.safetensors").write_bytes((trained_bundle[1] / "selftest.safetensors").read_bytes())
    (mixed / MANIFEST_FILE).write_bytes((other / MANIFEST_FILE).read_bytes())
    refused(device, pack(read_bundle(mixed)), "signature does not verify with key")


def test_rollback_to_a_lower_counter(device, make_variant):
    install(device, pack(read_bundle(make_variant(security_counter=3))))
    assert device.list_images()["security_counter"] == 3
    with pytest.raises(DeviceError, match="rollback refused: security counter 2 is below 3"):
        upload(device, pack(read_bundle(make_variant(security_counter=2))))
    still_serving(device, slot=1)


def test_replay_of_an_old_upload_session(device, make_variant):
    old = pack(read_bundle(make_variant(security_counter=1)))
    recorded = [(offset, old[offset : offset + 4096]) for offset in range(0, len(old), 4096)]
    install(device, pack(read_bundle(make_variant(security_counter=2))))
    digest = hashlib.sha256(old).hexdigest()
    with pytest.raises(DeviceError, match="rollback refused"):
        for offset, chunk in recorded:  # the old session, byte for byte
            device.upload(offset, len(old), digest, chunk)
    # replaying old chunks into someone else's session does not continue it either
    new = pack(read_bundle(make_variant(security_counter=4)))
    device.upload(0, len(new), hashlib.sha256(new).hexdigest(), new[:4096])
    with pytest.raises(DeviceError, match="no upload in progress for this image"):
        device.upload(4096, len(old), digest, recorded[1][1])
    still_serving(device, slot=1)


def test_truncated_upload(device, make_variant):
    image = pack(read_bundle(make_variant(security_counter=2)))
    digest = hashlib.sha256(image).hexdigest()
    device.upload(0, len(image), digest, image[: len(image) // 2])  # the connection drops here
    with pytest.raises(DeviceError, match="no verified image"):
        device.test(digest)
    assert device.reset()["mode"] == "confirmed"  # a reboot keeps the old image
    assert device.list_images()["images"][1]["valid"] is False
    still_serving(device)


def test_oversized_upload_and_endless_data(device, make_variant):
    image = pack(read_bundle(make_variant(security_counter=2)))
    with pytest.raises(DeviceError, match="does not fit the"):
        device.upload(0, PROFILE.slot_size + 1, "00" * 32, b"x")
    digest = hashlib.sha256(image).hexdigest()
    with pytest.raises(DeviceError, match="runs past the declared image length"):
        for offset in range(0, 10 * len(image), 4096):  # keeps sending past the declared end
            device.upload(offset, len(image), digest, (image * 10)[offset : offset + 4096])
    still_serving(device)


def test_wrong_target(device, make_variant):
    # a correctly signed ONNX bundle sent to a device of another target
    other = Device(device.flash.path.parent.parent / "loihi", "loihi", PROFILE, trusted_keys=device.trusted_keys)
    with pytest.raises(DeviceError, match="wrong target: bundle is for 'onnx', this device runs 'loihi'"):
        upload(other, pack(read_bundle(make_variant())))
    still_serving(device)


def test_expired_bundle(device, make_variant):
    refused(device, pack(read_bundle(make_variant(expires="2020-01-01T00:00:00Z", security_counter=2))), "expired at 2020-01-01")
    fresh = make_variant(expires="2999-01-01T00:00:00Z", security_counter=2)
    install(device, pack(read_bundle(fresh)))
    still_serving(device, slot=1)
    assert device.list_images()["images"][1]["expires"] == "2999-01-01T00:00:00Z"


def test_key_rotation_with_two_trusted_keys(trusted, make_variant, tmp_path):
    from metaedge.deploy.signing import key_id, load_public

    new_private, new_public = generate(tmp_path / "next-release")
    stranger, _ = generate(tmp_path / "stranger")
    device = Device(tmp_path / "rotating", "onnx", PROFILE, trusted_keys=[*trusted, load_public(new_public)])
    install(device, pack(read_bundle(make_variant(security_counter=1))))  # old key
    install(device, pack(read_bundle(make_variant(key=new_private, security_counter=2))))  # new key
    still_serving(device, slot=1)
    assert device.list_images()["images"][1]["signer"] == key_id(load_public(new_public))  # who signed what runs
    with pytest.raises(DeviceError, match="which this device does not trust"):
        upload(device, pack(read_bundle(make_variant(key=stranger, security_counter=3))))


def test_a_1_0_bundle_without_a_signer_is_verified_against_every_trusted_key(device, make_variant, signing_keys):
    """Spec 1.1 names the signer in the manifest; a 1.0 bundle has none, and a 1.1 device still accepts it."""
    from metaedge.deploy.signing import sign

    path = make_variant(key=None, security_counter=2)
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    del manifest["signer"]  # as a 1.0 writer made it
    (path / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
    (path / SIGNATURE_FILE).write_bytes(sign((path / MANIFEST_FILE).read_bytes(), load_private(signing_keys[0])))
    install(device, pack(read_bundle(path)))
    assert device.list_images()["images"][1]["signer"] is None
    # a device that trusts several keys tries each: the one that signed it need not be the first
    from metaedge.deploy.signing import generate, load_public

    stranger = load_public(generate(path.parent / "stranger")[1])
    rotated = Device(path.parent / "rotated", "onnx", PROFILE, trusted_keys=[stranger, *device.trusted_keys])
    install(rotated, pack(read_bundle(path)))
    assert rotated.info()["running"] == 0
