"""The bundle reader refuses everything the specification says it must, each with its reason."""

import json
import shutil
import struct

import numpy as np
import pytest

from metaedge.deploy import tensors
from metaedge.deploy.bundle import BundleError, manifest_bytes, read_bundle, sha256, write_bundle
from metaedge.deploy.manifest import MANIFEST_FILE, Artifact

ARTIFACTS = {
    "theta": ("theta.safetensors", tensors.dumps({"w": np.ones((2, 3), np.float32)})),
    "forward": ("forward.onnx", b"graph-1"),
    "adapt_step": ("adapt_step.onnx", b"graph-2"),
    "selftest": ("selftest.safetensors", tensors.dumps({"x": np.zeros(4, np.float32)})),
}
_PORT = {"name": "w", "role": "parameter"}
# the smallest complete ONNX manifest: one adapted parameter, a two-class task
MANIFEST = {
    "target": "onnx",
    "security_counter": 3,
    "task": {"name": "demod", "features": ["I", "Q"], "classes": 2, "pilot_sequence": [0, 1]},
    "parameters": [{"name": "w", "shape": [2, 3], "dtype": "float32", "adapts": True}],
    "algorithm": {"name": "maml", "inner_lr": 0.1, "inner_steps": 1, "adapts": ["w"], "loss": "cross_entropy_mean_onehot"},
    "graphs": {
        "opset": 18,
        "forward": {"inputs": [_PORT, {"name": "samples", "role": "samples"}], "outputs": [{"name": "log_probs", "role": "log_probabilities"}]},
        "adapt_step": {
            "inputs": [_PORT, {"name": "pilot_samples", "role": "pilot_samples"}, {"name": "pilot_onehot", "role": "pilot_labels_onehot"}],
            "outputs": [{"name": "adapted.w", "role": "parameter", "parameter": "w"}],
        },
    },
    "selftest": {"atol": 1e-4, "pilots": 8, "samples": 16},
}


@pytest.fixture
def bundle_dir(tmp_path):
    write_bundle(tmp_path / "b", MANIFEST, ARTIFACTS)
    return tmp_path / "b"


def rewrite_manifest(path, change):
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    change(manifest)
    (path / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))


def test_round_trip(bundle_dir):
    b = read_bundle(bundle_dir)
    assert b.target == "onnx" and b.manifest.security_counter == 3 and b.manifest.raw["version"] == 1
    assert {r: d for r, d in b.artifacts.items()} == {r: d for r, (_, d) in ARTIFACTS.items()}
    np.testing.assert_array_equal(b.tensors("theta")["w"], np.ones((2, 3)))
    assert b.manifest.artifacts["forward"] == Artifact("forward.onnx", 7, sha256(b"graph-1"))
    assert b.manifest.task.pilot_sequence == (0, 1) and not b.manifest.task.predictor and b.manifest.task.width == 2
    assert b.manifest.adapted == ["w"] and b.manifest.parameters[0].shape == (2, 3) and b.manifest.selftest.atol == 1e-4
    assert b.manifest.graphs["adapt_step"].output_names == ["adapted.w"] and b.manifest.opset == 18


def test_manifest_encoding_is_canonical(bundle_dir):
    raw = (bundle_dir / MANIFEST_FILE).read_bytes()
    assert raw == manifest_bytes(json.loads(raw))


def _with_selection(manifest: dict, select: dict) -> None:
    """A valid classical fallback (and the constellation it needs) with the given ``select``."""
    classes = manifest["task"]["classes"]
    manifest["task"].update(
        constellation=[[float(c), 0.0] for c in range(classes)], fallback={"kind": "mmse-ml", "noise_var": 0.1, "channel_var": 1.0, "select": select}
    )


@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda m: m.update(format="zip"), "format is 'zip'"),
        (lambda m: m.update(version=2), "version 2 is not supported"),
        (lambda m: m.update(target="fpga"), "target 'fpga' is unknown"),
        (lambda m: m.update(security_counter=-1), "security_counter"),
        (lambda m: m.update(security_counter=1.5), "security_counter"),
        (lambda m: m["artifacts"]["forward"].update(path="../../etc/passwd"), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].update(path="theta.safetensors"), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].update(path=MANIFEST_FILE), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].update(sha256="00" * 32), "SHA-256 does not match"),
        (lambda m: m["artifacts"]["forward"].update(sha256="XYZ"), "64 lowercase hex"),
        (lambda m: m["artifacts"]["forward"].update(size=8), "has 7 bytes, the manifest says 8"),
        (lambda m: m["artifacts"]["forward"].update(extra=1), "exactly path, size and sha256"),
        (lambda m: m["artifacts"].pop("adapt_step"), "needs artifacts adapt_step"),
        (lambda m: m.update(artifacts={}), "no artifact table"),
        # the typed sections, each checked once at parse time
        (lambda m: m.pop("task"), "no task section"),
        (lambda m: m["task"].update(classes=1), "task.classes must be an integer in \\[2, 65536\\]"),
        (lambda m: m["task"].update(features="IQ"), "task.features must list"),
        (lambda m: m["task"].update(pilot_sequence=[0, 2]), "pilot_sequence must be null or"),
        (lambda m: m["task"].update(outputs=0), "task.outputs must be an integer"),
        (lambda m: m["parameters"][0].update(shape=[2, -3]), "shape must be a list of non-negative integers"),
        (lambda m: m.update(release=-1), "release must be an integer in"),
        (lambda m: m.update(signer="ABCD"), "signer must be a key id"),
        (lambda m: m["task"].update(fallback={"kind": "neural"}), "task.fallback must be an object whose kind is one of mmse-ml"),
        (lambda m: m["task"].update(fallback={"kind": "mmse-ml", "noise_var": 0, "channel_var": 1}), "noise_var and channel_var, finite numbers > 0"),
        (lambda m: _with_selection(m, {"rule": "entropy", "margin": 0.1, "samples": 8}), "select must be an object whose rule is 'frame-residual'"),
        (lambda m: m["task"].update(fallback={"kind": "conventional"}), "kind conventional applies to a predictor"),
        (lambda m: _with_selection(m, {"rule": "frame-residual", "margin": 1.0, "samples": 8}), "select.margin must be a number in \\[0, 1\\)"),
        (lambda m: _with_selection(m, {"rule": "frame-residual", "margin": 0.1, "samples": 0}), "select.samples must be an integer in \\[1,"),
        (lambda m: _with_selection(m, {"rule": "frame-residual", "margin": 0.1, "samples": 8.0}), "select.samples must be an integer in \\[1,"),
        (lambda m: m.update(release="2"), "release must be an integer in"),
        (lambda m: m["parameters"][0].update(dtype="int8"), "dtype must be one of"),
        (lambda m: m["parameters"][0].update(adapts=1), "adapts must be true or false"),
        (lambda m: m["parameters"].append(dict(m["parameters"][0])), "listed twice"),
        (lambda m: m["algorithm"].update(adapts=[]), "disagrees with the parameters marked adapts"),
        (lambda m: m["algorithm"].update(inner_steps=-1), "inner_steps must be a non-negative integer"),
        (lambda m: m["algorithm"].update(inner_lr="0.1"), "algorithm.inner_lr must be a finite number"),
        (lambda m: m.pop("algorithm"), "algorithm section"),
        (lambda m: m["graphs"].pop("opset"), "integer opset"),
        (lambda m: m["graphs"].pop("forward"), "graphs.forward is missing"),
        (lambda m: m["graphs"]["forward"]["outputs"][0].update(role="outputs"), "one output, of role 'log_probabilities'"),
        (lambda m: m["graphs"]["adapt_step"]["inputs"][1].update(role="pilots"), r"graphs.adapt_step.inputs\[1\] must have"),
        (lambda m: m["selftest"].pop("atol"), "selftest.atol must be a finite number"),
        (lambda m: m.pop("selftest"), "no selftest section"),
        (lambda m: m.update(expires="tomorrow"), "not a UTC time"),
        # bundle-format §3, §4, §9: the rest of the rules, one row each
        (lambda m: m["artifacts"]["forward"].update(path="a" * 65), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].update(path=".hidden"), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].update(path="_x.onnx"), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].update(path="-x.onnx"), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].update(path="manifest.sig"), "not a plain, unique file name"),
        (lambda m: m["artifacts"]["forward"].pop("size"), "exactly path, size and sha256"),
        (lambda m: m["artifacts"]["forward"].update(size=-1), "size"),
        (lambda m: m["artifacts"]["forward"].update(size=7.0), "size"),
        (lambda m: m["task"].update(name=3), "task.name"),
        (lambda m: m["task"].update(fallback={"kind": "mmse-ml", "noise_var": float("inf"), "channel_var": 1}), "non-standard literal Infinity"),
        (lambda m: m["task"].update(fallback={"kind": "mmse-ml", "noise_var": 0.1, "channel_var": 1}), "constellation"),
        (lambda m: (_with_selection(m, {"rule": "frame-residual", "margin": 0.1, "samples": 8}), m["task"].update(features=["a", "b"])), "I and Q"),
        (lambda m: m.update(parameters=[]), "parameters"),
        (lambda m: m["parameters"][0].pop("name"), "parameters"),
        (lambda m: m["algorithm"].pop("name"), "algorithm section with a string 'name'"),
        (lambda m: m["algorithm"].update(loss=1), "algorithm.loss"),
        (lambda m: m["algorithm"].update(inner_lr=-0.1), "algorithm.inner_lr must be a finite number"),
        (lambda m: m["algorithm"].update(prox=-1), "algorithm.prox"),
        (lambda m: m["selftest"].update(atol=-1), "selftest.atol must be a finite number"),
        (lambda m: m.pop("graphs"), "graphs"),
        (lambda m: m["graphs"].pop("adapt_step"), "adapt_step"),
        (lambda m: m["graphs"]["forward"]["inputs"][0].pop("name"), r"graphs.forward.inputs\[0\]"),
    ],
)
def test_invalid_manifests_are_refused(bundle_dir, change, fragment):
    rewrite_manifest(bundle_dir, change)
    with pytest.raises(BundleError, match=fragment):
        read_bundle(bundle_dir)


def test_a_variance_written_as_an_overflowing_number_is_refused(bundle_dir):
    """bundle-format §4: non-finite variances are refused however they are spelled (1e999 parses to infinity)."""
    rewrite_manifest(bundle_dir, lambda m: _with_selection(m, {"rule": "frame-residual", "margin": 0.1, "samples": 8}))
    path = bundle_dir / MANIFEST_FILE
    path.write_bytes(path.read_bytes().replace(b'"noise_var":0.1', b'"noise_var":1e999'))
    with pytest.raises(BundleError, match="noise_var and channel_var, finite numbers > 0"):
        read_bundle(bundle_dir)


def test_unlisted_files_are_ignored_and_any_valid_json_with_unknown_members_is_read(bundle_dir):
    """bundle-format §1, §2: a file the manifest does not list is never used; a reader accepts any valid JSON (not only
    the canonical encoding) and ignores members it does not know, at the top and inside sections."""
    canonical = read_bundle(bundle_dir).manifest
    (bundle_dir / "extra.onnx").write_bytes(b"never read")
    manifest = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=3))
    again = read_bundle(bundle_dir)
    assert again.manifest.artifacts == canonical.artifacts and again.manifest.task == canonical.task and "extra.onnx" not in again.artifacts
    manifest.update(future={"x": 1})
    manifest["task"]["later"] = [1, 2]
    manifest["algorithm"]["later"] = "y"
    manifest["parameters"][0]["later"] = True
    (bundle_dir / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    later = read_bundle(bundle_dir).manifest
    assert later.parameters == canonical.parameters and later.algorithm.name == canonical.algorithm.name


def test_tampered_artifact_is_refused(bundle_dir):
    (bundle_dir / "forward.onnx").write_bytes(b"graph-X")  # same size, other bytes
    with pytest.raises(BundleError, match="'forward': SHA-256 does not match"):
        read_bundle(bundle_dir)


def test_missing_artifact_and_manifest_are_refused(bundle_dir, tmp_path):
    other = tmp_path / "copy"
    shutil.copytree(bundle_dir, other)
    (other / "selftest.safetensors").unlink()
    with pytest.raises(BundleError, match="selftest.safetensors is missing"):
        read_bundle(other)
    (other / MANIFEST_FILE).unlink()
    with pytest.raises(BundleError, match="has no manifest.json"):
        read_bundle(other)
    with pytest.raises(BundleError, match="not a bundle directory"):
        read_bundle(tmp_path / "nothing")


@pytest.mark.parametrize(
    "raw,fragment",
    [(b"\xff\xfe", "not UTF-8 JSON"), (b"[1, 2]", "not a JSON object"), (b"{" * 10, "not UTF-8 JSON"), (b" " * (1 << 20 + 1), "exceeds")],
)
def test_garbled_manifests_are_refused(bundle_dir, raw, fragment):
    (bundle_dir / MANIFEST_FILE).write_bytes(raw)
    with pytest.raises(BundleError, match=fragment):
        read_bundle(bundle_dir)


def test_corrupt_tensor_artifact_is_refused_on_use(tmp_path):
    artifacts = {**ARTIFACTS, "theta": ("theta.safetensors", b"\x00" * 16)}
    b = write_bundle(tmp_path / "b", MANIFEST, artifacts)
    with pytest.raises(BundleError, match="artifact 'theta'"):
        b.tensors("theta")


def test_writer_refuses_a_used_directory(bundle_dir):
    with pytest.raises(BundleError, match="not empty"):
        write_bundle(bundle_dir, MANIFEST, ARTIFACTS)


def test_packed_form_round_trips_and_refuses_damage(bundle_dir):
    from dataclasses import replace

    from metaedge.deploy.bundle import pack, unpack

    b = replace(read_bundle(bundle_dir), signature=b"sig")
    blob = pack(b)
    again = unpack(blob)
    assert again.manifest == b.manifest and again.artifacts == b.artifacts and again.signature == b"sig"
    assert again.manifest_raw == (bundle_dir / MANIFEST_FILE).read_bytes()
    for damaged, fragment in [
        (blob[:-1], "truncated inside its signature"),
        (blob[:40], "truncated"),
        (b"XX" + blob[2:], "bad magic"),
        (blob + b"\0", "beyond its declared end"),
        (blob[:8] + struct.pack("<I", (1 << 20) + 1) + blob[12:], "exceeds the 1048576-byte limit"),
        (blob[: len(blob) - len(b.artifacts["theta"])], "truncated inside artifact"),  # the last artifact cut short
    ]:
        with pytest.raises(BundleError, match=fragment):
            unpack(damaged)
    flipped = bytearray(blob)
    flipped[-10] ^= 0xFF  # inside the last artifact's bytes
    with pytest.raises(BundleError, match="SHA-256 does not match|beyond"):
        unpack(bytes(flipped))


def test_signing_names_the_signer_in_the_manifest(bundle_dir, tmp_path):
    """Spec 1.1: the signed manifest carries the signing key's id, so a device checks that key and reports it."""
    from metaedge.deploy.bundle import sign_bundle
    from metaedge.deploy.signing import generate, key_id, load_private, load_public, verify

    first, second = generate(tmp_path / "a"), generate(tmp_path / "b")
    sign_bundle(bundle_dir, load_private(first[0]))
    bundle = read_bundle(bundle_dir)
    assert bundle.manifest.signer == key_id(load_public(first[1])) and len(bundle.manifest.signer) == 64
    trusted = [load_public(second[1]), load_public(first[1])]
    assert verify(bundle.manifest_raw, bundle.signature, trusted, bundle.manifest.signer) == bundle.manifest.signer
    sign_bundle(bundle_dir, load_private(second[0]))  # re-signing replaces the signer and the signature
    assert read_bundle(bundle_dir).manifest.signer == key_id(load_public(second[1]))
    forged = json.loads((bundle_dir / MANIFEST_FILE).read_text())
    forged["signer"] = key_id(load_public(first[1]))  # naming another trusted key breaks the signature
    (bundle_dir / MANIFEST_FILE).write_bytes(manifest_bytes(forged))
    bundle = read_bundle(bundle_dir)
    with pytest.raises(Exception, match="does not verify with key"):
        verify(bundle.manifest_raw, bundle.signature, trusted, bundle.manifest.signer)
