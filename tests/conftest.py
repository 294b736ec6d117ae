"""Shared fixtures. Tests mirror the source folders: tests/sdk, tests/deploy, ..."""

import os
import sys

import pytest

# One intra-op thread keeps small tensor ops fast and timings out of the tests' way.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch
    except ModuleNotFoundError:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def signing_keys(tmp_path_factory):
    """An Ed25519 key pair for tests: (private key path, public key path)."""
    from metaedge.deploy.signing import generate

    return generate(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="session")
def trusted(signing_keys):
    """The trusted-key list of a test device provisioned with ``signing_keys``."""
    from metaedge.deploy.signing import load_public

    return [load_public(signing_keys[1])]


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory, signing_keys):
    """A briefly trained two-step CAVIA run exported to a signed ONNX bundle (with the optional Loop graph, which
    only multi-step bundles carry): (run dir, bundle dir). Shared: export takes seconds."""
    from metaedge.deploy.signing import load_private
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer
    from metaedge.sdk.targets import export

    root = tmp_path_factory.mktemp("trained")
    trainer = Trainer(
        root / "run",
        DemodConfig(pilots=8, val_pilots=32),
        TrainConfig(algo="cavia", iterations=3, meta_devices=10, val_devices=3, val_every=3, inner_lr=1.0, inner_steps=2),
    )
    trainer.start(resume=False)
    trainer.run()
    export("onnx", root / "run", root / "bundle", key=load_private(signing_keys[0]))
    return root / "run", root / "bundle"


@pytest.fixture(scope="session")
def born_bundle(tmp_path_factory):
    """A briefly meta-trained Born machine (5 qubits) exported for the qiskit target."""
    from metaedge.sdk.families.demod.born.learning import InnerConfig
    from metaedge.sdk.families.demod.born.training import BornTrainConfig, default_task, make_spec, train_born
    from metaedge.sdk.targets import export

    root = tmp_path_factory.mktemp("born")
    task = default_task()
    train_born(root / "run", task, make_spec(task, 5, 2), InnerConfig(), BornTrainConfig(iterations=40, val_devices=64, val_every=20))
    export("qiskit", root / "run", root / "bundle")
    return root / "bundle"


@pytest.fixture(scope="session")
def snn_bundle(tmp_path_factory, signing_keys):
    """A briefly meta-trained spiking receiver (FOMAML with the rule) exported, signed, for the loihi target: (run, bundle)."""
    from metaedge.backends.loihi.network import SnnSpec
    from metaedge.deploy.signing import load_private
    from metaedge.sdk.families.demod.snn.training import SnnTrainConfig, default_task, train_snn
    from metaedge.sdk.targets import export

    root = tmp_path_factory.mktemp("snn")
    task = default_task().replace(order=4, pilots=4)  # QPSK keeps the tests quick
    train_snn(root / "run", task, SnnSpec(classes=4), SnnTrainConfig(iterations=20, tasks_per_batch=32, val_devices=50, val_every=10))
    export("loihi", root / "run", root / "bundle", key=load_private(signing_keys[0]))
    return root / "run", root / "bundle"


def lava_python() -> str:
    """The Lava environment's interpreter (Makefile: METAEDGE_LAVA_PYTHON); a missing one fails with the fix."""
    from metaedge.sdk.errors import UserError
    from metaedge.sdk.lava_env import lava_python as find

    try:
        return find()
    except UserError as e:
        pytest.fail(str(e))


@pytest.fixture
def rewritten():
    """``rewritten(bundle_path, tmp_path, change_manifest, files)``: a copy of a bundle with replaced artifact files
    (hashes updated) and an edited manifest, read back."""
    import json
    import shutil

    from metaedge.deploy.bundle import manifest_bytes, read_bundle, sha256
    from metaedge.deploy.manifest import MANIFEST_FILE

    def rewrite(bundle_path, tmp_path, change_manifest=lambda m: None, files=None):
        copy = tmp_path / "b"
        shutil.copytree(bundle_path, copy)
        manifest = json.loads((copy / MANIFEST_FILE).read_text())
        for role, data in (files or {}).items():
            (copy / manifest["artifacts"][role]["path"]).write_bytes(data)
            manifest["artifacts"][role].update(size=len(data), sha256=sha256(data))
        change_manifest(manifest)
        (copy / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
        return read_bundle(copy)

    return rewrite


def tiny_demod_argv(algo: str, out, *extra: str, iterations: int = 3, val_every: int = 3) -> list[str]:
    """``metaedge train demod`` on a budget of seconds: 8 pilots, 10 meta-training and 4 validation devices."""
    return [
        "train",
        "demod",
        "--algo",
        algo,
        "--iterations",
        str(iterations),
        "--val-every",
        str(val_every),
        "--val-devices",
        "4",
        "--meta-devices",
        "10",
        "--pilots",
        "8",
        *extra,
        "--out",
        str(out),
        "--quiet",
    ]


@pytest.fixture
def make_variant(trained_bundle, signing_keys, tmp_path):
    """A copy of the test bundle with manifest changes, signed by ``key`` (None: unsigned)."""
    import json
    import shutil

    from metaedge.deploy.bundle import manifest_bytes, sign_bundle
    from metaedge.deploy.manifest import MANIFEST_FILE, SIGNATURE_FILE
    from metaedge.deploy.signing import load_private

    counter = iter(range(1000))

    def variant(key=signing_keys[0], **changes):
        out = tmp_path / f"variant{next(counter)}"
        shutil.copytree(trained_bundle[1], out)
        (out / SIGNATURE_FILE).unlink(missing_ok=True)
        manifest = json.loads((out / MANIFEST_FILE).read_text())
        manifest.update(changes)
        (out / MANIFEST_FILE).write_bytes(manifest_bytes(manifest))
        if key is not None:
            sign_bundle(out, load_private(key))
        return out

    return variant


class Served:
    """``metaedge device serve`` of ``target`` (run by ``python``) on a free loopback port, trusting ``public_key``,
    with extra flags."""

    def __init__(self, state, public_key, *options: str, python: str = sys.executable, target: str = "onnx") -> None:
        import subprocess

        from metaedge.sdk.device_process import serve_command

        cmd = serve_command(target, state, "--trusted-key", str(public_key), *options, python=python)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        line = self.proc.stdout.readline()
        assert line.startswith("listening on"), line + self.proc.stderr.read()
        self.url = "tcp://" + line.split()[-1]
        self.port = int(line.split(":")[-1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
