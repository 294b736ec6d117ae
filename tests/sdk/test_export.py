"""Export to the ONNX bundle: checker, parity with torch for every algorithm, self-test, round trip."""

import dataclasses

import numpy as np
import onnx
import pytest
import torch

from metaedge.backends.onnx import OnnxBackend
from metaedge.deploy.bundle import read_bundle
from metaedge.sdk.families.demod.task import DemodConfig
from metaedge.sdk.families.demod.training import TrainConfig, Trainer
from metaedge.sdk.meta import ALGORITHMS, modular
from metaedge.sdk.meta.bayes import log_predictive
from metaedge.sdk.meta.core import adapt
from metaedge.sdk.meta.defaults import Gaussian
from metaedge.sdk.targets import export
from metaedge.sdk.targets.onnx import noise_tensors

TASK = DemodConfig(pilots=8, val_pilots=32)
# every algorithm, and Meta-SGD adapting its input layer alone (--adapt input: step sizes for that layer only)
CASES = (*ALGORITHMS, "metasgd:input")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """One briefly trained run per algorithm, exported."""
    root = tmp_path_factory.mktemp("export")
    out = {}
    for case in CASES:
        algo, _, adapted = case.partition(":")
        steps = 2 if algo != "joint" else 1
        t = Trainer(
            root / case,
            TASK,
            TrainConfig(
                algo=algo, iterations=4, inner_steps=steps, inner_lr=0.3, adapt=adapted or "all", meta_devices=20, val_devices=3, val_every=4
            ),
        )
        t.start(resume=False)
        t.run()
        out[case] = (t, export("onnx", root / case, root / f"{case}.bundle"))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("algo", CASES)
def test_graphs_pass_the_full_checker_and_are_plain_onnx(bundles, algo):
    _, bundle = bundles[algo]
    for role in ("forward", "adapt_step"):
        model = onnx.load_from_string(bundle.artifacts[role])
        onnx.checker.check_model(model, full_check=True)
        assert {n.domain for n in model.graph.node} <= {"", "ai.onnx"}, "custom-domain ops would not run everywhere"


@pytest.mark.slow
@pytest.mark.parametrize("mode", OnnxBackend.MODES)
@pytest.mark.parametrize("algo", CASES)
def test_forward_and_chained_adaptation_match_torch(bundles, algo, mode):
    trainer, bundle = bundles[algo]
    backend = OnnxBackend(mode=mode)
    backend.load(bundle)
    theta = {k: v.detach().clone() for k, v in trainer.params.items()}
    inner = trainer.inner
    if algo == "modular":  # the device holds the modules and adapts assignment logits (spec §7.5)
        theta = modular.deployable(theta)
        inner = dataclasses.replace(inner, adapt=(modular.ASSIGNMENT,))
    # vbmaml: the draws the bundle names, which the device generates (spec §7.4)
    section = bundle.manifest.raw["algorithm"].get("noise")
    noise = noise_tensors(section, theta) if section else {"adapt": None, "predict": None}
    assert (section is not None) == (algo == "vbmaml")
    rng = np.random.default_rng(0)
    samples = rng.normal(0, 2, size=(200, 2)).astype(np.float32)
    with torch.no_grad():  # BMAML: the particles' mean probability; vbmaml: the draws'; the network itself for a point θ
        expected = (
            (
                modular.assigned_forward(theta, torch.from_numpy(samples))
                if algo == "modular"
                else log_predictive(theta, torch.from_numpy(samples), inner.posterior, inner.of(Gaussian).samples, noise["predict"])
            )
            .exp()
            .numpy()
        )
    assert np.abs(backend.predict(samples) - expected).max() <= 1e-5
    # k chained steps on the device against k steps of the torch inner loop
    k = 5
    pilots = rng.normal(0, 2, size=(6, 2)).astype(np.float32)
    labels = rng.integers(0, 16, size=6)
    backend.steps = k
    backend.reset()
    backend.adapt(pilots, labels)
    reference = adapt(
        theta,
        torch.from_numpy(pilots),
        torch.nn.functional.one_hot(torch.from_numpy(labels), 16).float(),
        dataclasses.replace(inner, steps=k),
        noise=noise["adapt"],
    )
    for name in theta:
        assert np.abs(backend.params[name] - reference[name].detach().numpy()).max() <= 1e-5, name
    changed = [n for n in theta if not np.array_equal(backend.params[n], theta[n].numpy())]
    assert changed == list(inner.keys(theta))  # only what the algorithm adapts (CAVIA: the context) moves


@pytest.mark.slow
@pytest.mark.parametrize("algo", CASES)
def test_selftest_passes_and_bundle_round_trips(bundles, algo):
    _, bundle = bundles[algo]
    again = read_bundle(bundle.path)
    assert again.manifest == bundle.manifest and again.artifacts == bundle.artifacts
    backend = OnnxBackend()
    backend.load(again)
    report = backend.selftest()
    assert report.passed, report
    model_parameters = [p["name"] for p in bundle.manifest.raw["parameters"] if not p["name"].startswith("lr.")]
    only = {"cavia": ["context"], "modular": [modular.ASSIGNMENT], "metasgd:input": ["l0.weight", "l0.bias"]}
    assert bundle.manifest.raw["algorithm"]["adapts"] == only.get(algo, model_parameters)


@pytest.mark.slow
def test_reference_bundle_is_at_most_64_kib(bundles, tmp_path):
    """The issue's size budget holds for the reference algorithms; Meta-SGD also ships a step size per weight,
    BMAML one network per particle (5) and an SVGD step, vbmaml a log-std per weight and a free-energy step (it
    still fits the 128 KiB slot of the default device profile). Only multi-step bundles carry the Loop graph, so the
    demo's one-step Meta-SGD bundle fits the budget too."""
    for algo, (_, bundle) in bundles.items():
        budget = {"metasgd": 96 * 1024, "bmaml": 160 * 1024, "vbmaml": 128 * 1024}.get(algo, 64 * 1024)
        assert bundle.size() <= budget, (algo, bundle.size())
        steps = bundle.manifest.raw["algorithm"]["inner_steps"]
        assert ("adapt_loop" in bundle.artifacts) == ("adapt_loop" in bundle.manifest.raw["graphs"]) == (steps > 1), algo
    one_step = export("onnx", bundles["metasgd"][1].path.parent / "metasgd", tmp_path / "metasgd-1", inner_steps=1)
    assert "adapt_loop" not in one_step.artifacts and one_step.size() <= 64 * 1024, one_step.size()
    backend = OnnxBackend()
    backend.load(one_step)
    assert backend.effective_mode == "iobinding" and backend.selftest().passed


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["imaml", "proxmaml", "alset"])
def test_proximal_bundles_anchor_every_step_at_theta(bundles, algo):
    """The device feeds θ as the anchor of every step; fed the current parameters instead, the step is plain SGD."""
    import onnxruntime as ort

    trainer, bundle = bundles[algo]
    inputs = bundle.manifest.raw["graphs"]["adapt_step"]["inputs"]
    anchors = [i for i in inputs if i["role"] == "anchor"]
    assert bundle.manifest.raw["algorithm"]["prox"] == trainer.inner.prox > 0
    assert [a["parameter"] for a in anchors] == bundle.manifest.raw["algorithm"]["adapts"]
    session = ort.InferenceSession(bundle.artifacts["adapt_step"], providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    moved = {k: v.detach().numpy() + rng.normal(0, 0.1, v.shape).astype(np.float32) for k, v in trainer.params.items()}
    pilots = {"pilot_samples": rng.normal(0, 2, (6, 2)).astype(np.float32), "pilot_onehot": np.eye(16, dtype=np.float32)[rng.integers(0, 16, 6)]}
    at_theta = session.run(None, {**moved, **{a["name"]: trainer.params[a["parameter"]].detach().numpy() for a in anchors}, **pilots})
    at_self = session.run(None, {**moved, **{a["name"]: moved[a["parameter"]] for a in anchors}, **pilots})
    plain = adapt(
        {k: torch.from_numpy(v) for k, v in moved.items()},
        torch.from_numpy(pilots["pilot_samples"]),
        torch.from_numpy(pilots["pilot_onehot"]),
        dataclasses.replace(trainer.inner, steps=1, options=None),  # the plain SGD step, without the proximal pull
    )
    for name, value in zip(bundle.manifest.raw["algorithm"]["adapts"], at_self):
        assert np.abs(value - plain[name].detach().numpy()).max() <= 1e-5
    assert max(np.abs(a - b).max() for a, b in zip(at_theta, at_self)) > 1e-3


@pytest.mark.slow
def test_an_anchor_for_a_parameter_that_does_not_adapt_is_refused(bundles):
    import copy

    from metaedge.backends.base import BackendError
    from metaedge.deploy.manifest import parse

    _, bundle = bundles["imaml"]
    manifest = copy.deepcopy(bundle.manifest.raw)
    next(i for i in manifest["graphs"]["adapt_step"]["inputs"] if i["role"] == "anchor")["parameter"] = "nonexistent"
    tampered = dataclasses.replace(bundle, manifest=parse(manifest))
    with pytest.raises(BackendError, match="anchor input for a parameter that does not adapt"):
        OnnxBackend().load(tampered)


@pytest.mark.slow
def test_a_gaussian_bundle_predicts_with_the_draws_its_seed_names(bundles, tmp_path, rewritten):
    """The device generates vbmaml's draws from the manifest's seeds: another seed gives other probabilities (so
    the self-test really checks the generator), and --ensemble sets how many draws the predictive averages."""
    trainer, bundle = bundles["vbmaml"]
    backend = OnnxBackend()
    backend.load(bundle)
    assert backend.selftest().passed
    samples = np.random.default_rng(1).normal(0, 2, size=(50, 2)).astype(np.float32)
    before = backend.predict(samples)

    def reseed(manifest):
        manifest["algorithm"]["noise"]["predict"]["seed"] += 1

    other = OnnxBackend()
    other.load(rewritten(bundle.path, tmp_path, reseed))
    assert np.abs(other.predict(samples) - before).max() > 1e-3
    assert not other.selftest().passed
    small = export("onnx", bundle.path.parent / "vbmaml", tmp_path / "small", ensemble=7)
    assert small.manifest.raw["algorithm"]["noise"]["predict"]["draws"] == 7
    assert [i["shape"][0] for i in small.manifest.raw["graphs"]["forward"]["inputs"] if i["role"] == "noise"] == [7] * 8
    backend.load(small)
    assert backend.selftest().passed


@pytest.mark.slow
@pytest.mark.parametrize(
    "change,fragment",
    [
        (lambda n: n.update(generator="mt19937"), "generator must be 'splitmix64-box-muller'"),
        (lambda n: n["predict"].update(draws=0), "algorithm.noise.predict must be"),
        (lambda n: n["adapt"].update(seed=-1), "algorithm.noise.adapt must be"),
        (lambda n: n.update(parameters=["l0.weight", "l9.weight"]), "distinct parameters of θ"),
        (lambda n: n.update(parameters=["l1.weight"]), "which algorithm.noise does not define"),
    ],
)
def test_a_gaussian_bundle_with_a_bad_noise_section_is_refused(bundles, tmp_path, change, fragment, rewritten):
    from metaedge.backends.base import BackendError

    _, bundle = bundles["vbmaml"]
    with pytest.raises(BackendError, match=fragment):
        OnnxBackend().load(rewritten(bundle.path, tmp_path, lambda m: change(m["algorithm"]["noise"])))


@pytest.mark.slow
def test_a_noise_input_reading_a_stream_the_noise_section_does_not_define_is_refused(bundles, tmp_path, rewritten):
    """bundle-format §7.4: a `noise` input names a stream of algorithm.noise (adapt or predict)."""
    from metaedge.backends.base import BackendError

    _, bundle = bundles["vbmaml"]

    def elsewhere(m: dict) -> None:
        next(port for port in m["graphs"]["forward"]["inputs"] if port["role"] == "noise")["stream"] = "train"

    with pytest.raises(BackendError, match="reads draws of stream 'train'"):
        OnnxBackend().load(rewritten(bundle.path, tmp_path, elsewhere))


@pytest.mark.slow
def test_a_modular_device_picks_the_assignment_with_the_lowest_pilot_loss(bundles):
    """An annealing run's device searches all M^L assignments: its adapted network is one module per layer, and
    no other assignment fits the pilots better."""
    import itertools

    from metaedge.sdk.models.mlp import task_loss

    trainer, bundle = bundles["modular"]
    assert bundle.manifest.raw["algorithm"]["assignment"] == "exhaustive" and bundle.manifest.raw["model"]["modules"] == 3
    backend = OnnxBackend()
    backend.load(bundle)
    rng = np.random.default_rng(3)
    pilots = rng.normal(0, 2, size=(8, 2)).astype(np.float32)
    labels = rng.integers(0, 16, size=8)
    backend.reset()
    backend.adapt(pilots, labels)
    logits = backend.params[modular.ASSIGNMENT]
    chosen = logits.argmax(-1)
    assert np.array_equal(logits == 0, np.eye(3, dtype=bool)[chosen])  # exactly one module per layer
    modules = {k: v.detach() for k, v in trainer.params.items()}
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), 16).float()
    loss = {
        c: float(task_loss(modular.assemble(modules, torch.tensor(c)), torch.from_numpy(pilots), onehot))
        for c in itertools.product(range(3), repeat=4)
    }
    assert loss[tuple(chosen)] == pytest.approx(min(loss.values()), abs=1e-6)


@pytest.mark.slow
def test_a_relaxed_modular_run_exports_its_logit_steps(tmp_path):
    t = Trainer(
        tmp_path / "run",
        TASK,
        TrainConfig(algo="modular", assignment="relaxed", iterations=2, inner_steps=3, inner_lr=1.0, meta_devices=20, val_devices=3, val_every=2),
    )
    t.start(resume=False)
    t.run()
    bundle = export("onnx", tmp_path / "run", tmp_path / "bundle")
    assert bundle.manifest.raw["algorithm"]["assignment"] == "relaxed" and bundle.manifest.raw["algorithm"]["inner_steps"] == 3
    backend = OnnxBackend()
    backend.load(bundle)
    assert backend.effective_mode == "onnx_loop" and backend.selftest().passed
    backend.adapt(np.zeros((4, 2), np.float32), np.arange(4))
    assert np.abs(backend.params[modular.ASSIGNMENT]).max() > 0  # the logits moved from the uniform mixture


@pytest.mark.slow
def test_a_gaussian_bundle_fits_and_serves_frames_on_a_device_process(bundles, tmp_path):
    """The default device profile takes the vbmaml bundle (slot and RAM, draws included) and serves its frames."""
    from metaedge.sdk.bench.device import device_process
    from metaedge.sdk.device_frames import stream as stream_frames

    _, bundle = bundles["vbmaml"]
    with device_process(bundle.path, tmp_path / "device") as (_, url):
        report = stream_frames(url, frames=3, pilots=8, symbols=200, seed=0)
    assert report["metric"] == "SER" and report["frames"] == 3 and 0 <= report["ser"] <= 1 and 0 <= report["ece"] <= 1
