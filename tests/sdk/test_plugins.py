"""The architecture's extension points, used from tests/ alone: a new task family runs train → export → device frame
through the registries, and a new algorithm meta-trains with the shared trainer and deploys."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from metaedge.deploy import tensors
from metaedge.deploy.bundle import pack
from metaedge.firmware_sim.device import Device
from metaedge.firmware_sim.profile import PROFILES
from metaedge.sdk import families, targets
from metaedge.sdk.meta import Algorithm, get_algorithm, register
from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.meta.outer import fit
from metaedge.sdk.rundir import CONFIG, RUN_FORMAT, RUN_VERSION, THETA, read_config, write_json

# -- a toy task family: estimate a device's complex gain h from pilots y = h·s + noise ------------------------------
# A sample is [Re y, Im y, Re s, Im s]; the receiver's one parameter is its gain estimate ĝ, its output ĝ·s (the
# received sample it predicts), its loss the mean |y − ĝ·s|². Devices' gains cluster around MEAN_GAIN, so the
# meta-learned start should sit there and adapt faster than a start at 0.
MEAN_GAIN, SPREAD, NOISE = complex(0.8, -0.6), 0.2, 0.05
FEATURES = ["Re y", "Im y", "Re s", "Im s"]


def gain_forward(params, x):
    g = params["gain"]
    s_re, s_im = x[:, 2], x[:, 3]
    return torch.stack([g[0] * s_re - g[1] * s_im, g[0] * s_im + g[1] * s_re], dim=-1)


def gain_loss(params, x, _target):
    return ((gain_forward(params, x) - x[:, :2]) ** 2).sum(-1).mean()


def samples(rng: np.random.Generator, gains: np.ndarray, count: int) -> np.ndarray:
    """[devices, count, 4] received samples of unit-power QPSK symbols through each device's gain."""
    s = (rng.choice([-1.0, 1.0], (len(gains), count)) + 1j * rng.choice([-1.0, 1.0], (len(gains), count))) / np.sqrt(2)
    y = gains[:, None] * s + NOISE * (rng.normal(size=s.shape) + 1j * rng.normal(size=s.shape)) / np.sqrt(2)
    return np.stack([y.real, y.imag, s.real, s.imag], -1).astype(np.float32)


def device_gains(rng: np.random.Generator, n: int) -> np.ndarray:
    return MEAN_GAIN + SPREAD * (rng.normal(size=n) + 1j * rng.normal(size=n)) / np.sqrt(2)


class GainFamily:
    name = "gain"
    summary = "estimate a scalar complex gain (a test family)"
    model_kinds = ("gain-estimator",)
    train_command = "test_plugins.train_gain"

    def receiver(self, run_dir: Path, steps, ensemble):
        from metaedge.sdk.targets.onnx import Receiver, selftest_vectors

        config = read_config(run_dir)
        params = {k: torch.from_numpy(v) for k, v in tensors.load(run_dir / THETA)[0].items()}
        inner = InnerLoop(lr=config["train"]["inner_lr"], steps=steps or config["train"]["inner_steps"], loss=gain_loss)
        rng = np.random.default_rng(99)
        pilots, payload = (samples(rng, device_gains(rng, 1), n)[0] for n in (4, 16))
        vectors = selftest_vectors(params, inner, pilots, None, payload, fn=gain_forward, output="outputs")
        task = {"name": self.name, "features": FEATURES, "outputs": 2, "pilot_sequence": None}
        return Receiver(
            params,
            inner,
            "maml",
            task,
            vectors,
            {"run": str(run_dir)},
            model={"kind": "gain-estimator"},
            forward=gain_forward,
            output="outputs",
            loss="gain_mse",
        )


def train_gain(out: Path, iterations: int = 300) -> dict[str, torch.Tensor]:
    """Meta-train ĝ with MAML on the shared core and write a run directory the registries recognise."""
    rng = np.random.default_rng(0)
    inner = InnerLoop(lr=0.3, steps=1, loss=gain_loss)

    def batch(_):
        gains = device_gains(rng, 8)
        x_tr, x_va = torch.from_numpy(samples(rng, gains, 4)), torch.from_numpy(samples(rng, gains, 16))
        return x_tr, torch.zeros(8, 4, 1), x_va, torch.zeros(8, 16, 1)

    theta = fit(get_algorithm("maml").objective, {"gain": torch.zeros(2)}, inner, batch, iterations, 0.05)
    out.mkdir(parents=True)
    write_json(
        out / CONFIG,
        {
            "format": RUN_FORMAT,
            "version": RUN_VERSION,
            "task": {"name": "gain"},
            "model": {"kind": "gain-estimator"},
            "train": {"algo": "maml", "inner_lr": 0.3, "inner_steps": 1},
        },
    )
    tensors.save(out / THETA, {k: v.numpy() for k, v in theta.items()})
    return theta


def deployed(tmp_path: Path, bundle) -> Device:
    device = Device(tmp_path / "device", "onnx", PROFILES["edge-small"], allow_unsigned=True)
    image = pack(bundle)
    digest = hashlib.sha256(image).hexdigest()
    device.upload(0, len(image), digest, image)
    device.test(digest)
    assert device.reset()["mode"] == "trial"
    device.confirm()
    return device


@pytest.fixture
def gain_family(monkeypatch):
    monkeypatch.setitem(families._FAMILIES, "gain", GainFamily())


def test_a_family_registered_from_tests_trains_exports_and_runs_on_a_device(gain_family, tmp_path):
    theta = train_gain(tmp_path / "run")
    assert abs(complex(*theta["gain"].tolist()) - MEAN_GAIN) < 0.1  # meta-learning found the devices' centre
    bundle = targets.export("onnx", tmp_path / "run", tmp_path / "bundle")
    assert bundle.manifest.task.name == "gain" and bundle.manifest.task.predictor and bundle.manifest.adapted == ["gain"]
    device = deployed(tmp_path, bundle)

    rng = np.random.default_rng(5)
    gains = device_gains(rng, 20)
    pilots, payload = samples(rng, gains, 4), samples(rng, gains, 64)
    inner = InnerLoop(lr=0.3, steps=1, loss=gain_loss)
    errors, cold = [], []
    for p, x in zip(pilots, payload):
        telemetry, out = device.frame({"pilots": p, "payload": x})
        host = gain_forward(adapt(theta, torch.from_numpy(p), torch.zeros(4, 1), inner), torch.from_numpy(x)).detach().numpy()
        np.testing.assert_allclose(out["outputs"], host, atol=1e-5)  # the device runs what was trained
        assert telemetry["steps"] == 1 and telemetry["fallback"] is None
        errors.append(((out["outputs"] - x[:, :2]) ** 2).sum(-1).mean())
        start = {"gain": torch.zeros(2)}
        from_zero = gain_forward(adapt(start, torch.from_numpy(p), torch.zeros(4, 1), inner), torch.from_numpy(x)).detach()
        cold.append(float(((from_zero.numpy() - x[:, :2]) ** 2).sum(-1).mean()))
    assert np.mean(errors) < 0.5 * np.mean(cold)  # one step from θ beats one step from 0


def test_a_run_of_an_unregistered_family_is_refused_by_name(tmp_path):
    (tmp_path / "run").mkdir()
    write_json(
        tmp_path / "run" / CONFIG, {"format": RUN_FORMAT, "version": RUN_VERSION, "task": {"name": "radar"}, "model": {"kind": "cfar"}, "train": {}}
    )
    with pytest.raises(Exception, match="unknown kind .*known families: demod, link, power, prediction, sinusoid"):
        targets.export("onnx", tmp_path / "run", tmp_path / "bundle")


# -- a toy algorithm: MAML whose meta-objective also counts the loss on the adaptation pilots ------------------------
def both_sets(params, x_tr, y_tr, x_va, y_va, inner):
    phi = adapt(params, x_tr, y_tr, inner)
    loss = inner.loss(phi, x_va, y_va)
    return loss + inner.loss(phi, x_tr, y_tr), loss


@pytest.fixture
def toy_algorithm(monkeypatch):
    from metaedge.sdk import meta

    monkeypatch.setitem(meta.ALGORITHMS, "both-sets", meta.ALGORITHMS["maml"])  # restored after the test
    register(Algorithm("both-sets", both_sets, "MAML with the pilots' loss in the meta-objective (a test algorithm)"))


def test_an_algorithm_registered_from_tests_trains_with_the_shared_trainer_and_deploys(toy_algorithm, tmp_path):
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer

    trainer = Trainer(
        tmp_path / "run",
        DemodConfig(pilots=8, val_pilots=32),
        TrainConfig(algo="both-sets", iterations=4, meta_devices=10, val_devices=3, val_every=2),
    )
    trainer.start(resume=False)
    before = {k: v.detach().clone() for k, v in trainer.params.items()}
    state = trainer.run()
    assert state["iteration"] == 4 and len(trainer.curves) == 2 and 0 <= state["best_val_ser"] <= 1
    assert all(not torch.equal(before[k], v) for k, v in trainer.params.items())  # the outer loop moved θ
    bundle = targets.export("onnx", tmp_path / "run", tmp_path / "bundle")
    assert bundle.manifest.algorithm.name == "both-sets"
    device = deployed(tmp_path, bundle)
    rng = np.random.default_rng(0)
    telemetry, out = device.frame({"pilots": rng.normal(0, 2, (8, 2)).astype(np.float32), "payload": rng.normal(0, 2, (50, 2)).astype(np.float32)})
    assert out["decisions"].shape == (50,) and telemetry["steps"] == 1
