"""Spiking receiver on the host: encoder, read-out, the rule's gradient, meta-training, export, CLI errors."""

import json
import re

import numpy as np
import pytest

from metaedge.backends.loihi.backend import LoihiBackend
from metaedge.backends.loihi.network import (
    LATENCY,
    SnnParameters,
    SnnSpec,
    encode,
    gain_control,
    probabilities,
    rates,
    stream_length,
    teacher,
    window_counts,
)
from metaedge.backends.loihi.reference import hidden_layer, hidden_spikes, output_layer
from metaedge.deploy.bundle import read_bundle
from metaedge.sdk.cli.main import main
from metaedge.sdk.families.demod.snn.training import Streams, adapted_ser, default_task, evaluate_rule, load_snn_run
from metaedge.sdk.families.demod.task import DemodTasks

SPEC = SnnSpec()


def test_encoder_fires_at_the_receptive_field_rates_and_stays_silent_in_the_gap():
    samples = np.random.default_rng(0).normal(size=(5, 2))
    raster = encode(SPEC, samples).reshape(5, SPEC.period, SPEC.inputs)
    expected = rates(SPEC, gain_control(samples)) * SPEC.steps
    assert np.all(np.abs(raster[:, : SPEC.steps].sum(1) - expected) <= 1.0)
    assert raster[:, SPEC.steps :].sum() == 0
    assert np.allclose(np.mean(gain_control(samples) ** 2), 1.0)


def test_teacher_marks_the_label_during_the_output_window_only():
    t = teacher(SPEC, np.array([2, 0]), stream_length(SPEC, 2))
    assert t.shape == (stream_length(SPEC, 2), SPEC.classes)
    window = t[LATENCY : LATENCY + SPEC.steps]
    assert np.all(window[:, 2] == 1) and np.all(window[:, [0, 1, 3]] == -1)
    assert np.all(t[:LATENCY] == 0) and np.all(t[SPEC.period + LATENCY : SPEC.period + LATENCY + SPEC.steps, 0] == 1)
    assert np.all(t[2 * SPEC.period :] == 0)


def test_decision_counts_spikes_and_breaks_ties_by_the_earliest_first_spike():
    spikes = np.zeros((SPEC.period * 2, SPEC.classes))
    spikes[LATENCY + 3, 1] = spikes[LATENCY + 1, 3] = 1  # symbol 0: one spike each, class 3 first
    spikes[SPEC.period + LATENCY + np.arange(4), 2] = 1  # symbol 1: class 2 has the most
    counts, first = window_counts(SPEC, spikes, 2)
    assert counts[0].tolist() == [0, 1, 0, 1] and first[0].tolist() == [SPEC.steps, 3, SPEC.steps, 1]
    p = probabilities(SPEC, spikes, 2)
    assert p.argmax(-1).tolist() == [3, 2] and np.allclose(p.sum(-1), 1)
    silent = probabilities(SPEC, np.zeros_like(spikes), 2)
    assert silent.argmax(-1).tolist() == [0, 0] and np.allclose(silent, 1 / SPEC.classes)


def test_rule_gradient_is_the_rule_sum_scaled_per_neuron_and_leaves_weights_alone():
    tasks = DemodTasks(default_task().replace(order=4), seed=3)
    frame = tasks.frames(tasks.devices("train", 3), 8, 0, tasks.rng("train", 1))
    data = Streams.encode(SPEC, frame.x_tr, frame.y_tr)
    grid = SnnParameters.grid(SPEC)
    params = SnnParameters(grid.input_weights, grid.hidden_bias, np.array([0.02, 0.05, 0.1, 0.2]))
    theta = np.full((SPEC.classes, SPEC.hidden), 0.05)
    run = output_layer(SPEC, theta, hidden_spikes(SPEC, params, data.inputs), data.teacher, params.learning_rates, apply=False)
    assert np.array_equal(run.weights, np.broadcast_to(theta, run.weights.shape))
    g = evaluate_rule(SPEC, theta, params, data).gradient
    assert np.abs(g).max() > 0
    assert np.allclose(g, -run.rule_sum / (params.learning_rates[:, None] * 8))
    # each neuron's update scales with its own rate: doubling one neuron's rate doubles only its rule sum
    doubled = SnnParameters(grid.input_weights, grid.hidden_bias, params.learning_rates * np.array([1, 1, 1, 2]))
    again = output_layer(SPEC, theta, hidden_spikes(SPEC, doubled, data.inputs), data.teacher, doubled.learning_rates, apply=False)
    assert np.allclose(again.rule_sum[:, :3], run.rule_sum[:, :3]) and np.allclose(again.rule_sum[:, 3], 2 * run.rule_sum[:, 3])


def test_hidden_biases_shift_the_hidden_layer_as_lava_adds_them():
    """A bias adds to v every step (Lava's bias_mant): a positive one makes a silent hidden layer fire, a large
    negative one silences it."""
    grid = SnnParameters.grid(SPEC)
    inputs = encode(SPEC, np.random.default_rng(0).normal(size=(6, 2)))
    base = hidden_spikes(SPEC, grid, inputs).sum()
    louder = hidden_spikes(SPEC, SnnParameters(grid.input_weights, np.full(SPEC.hidden, 0.5), grid.learning_rates), inputs).sum()
    silent = hidden_spikes(SPEC, SnnParameters(grid.input_weights, np.full(SPEC.hidden, -5.0), grid.learning_rates), inputs).sum()
    assert louder > base > silent == 0


def test_meta_learned_receiver_beats_the_untrained_one_and_a_random_start_on_new_devices(snn_bundle):
    """Meta-learned (hidden layer, θ, rates) against the untrained receiver (grid, θ = 0, one η) and a random θ."""
    run = load_snn_run(snn_bundle[0])
    tasks = DemodTasks(run.task, seed=11)
    frame = tasks.frames(tasks.devices("test", 150), run.task.pilots, 100, tasks.rng("test", 1))
    pilots, payload = Streams.encode(run.spec, frame.x_tr, frame.y_tr), Streams.encode(run.spec, frame.x_va, None)
    grid = SnnParameters.grid(run.spec)
    ser = {
        name: adapted_ser(run.spec, theta, params, pilots, payload, frame.y_va).mean()
        for name, (theta, params) in {
            "meta": (run.theta, run.params),
            "untrained": (np.zeros_like(run.theta), grid),
            "random": (np.random.default_rng(0).normal(scale=0.3, size=run.theta.shape), grid),
        }.items()
    }
    assert ser["meta"] < ser["untrained"] - 0.05 and ser["meta"] < ser["random"] - 0.05, ser


def test_loihi_bundle_manifest_and_reference_engine_selftest(snn_bundle, capsys):
    bundle = read_bundle(snn_bundle[1])
    m = bundle.manifest.raw
    assert m["target"] == "loihi" and m["algorithm"]["rule"]["dw"] == "u0*x1*y2 - u0*x1*y3"
    assert m["snn"]["classes"] == m["task"]["classes"] == 4 and bundle.signature
    backend = LoihiBackend(engine="reference")
    backend.load(bundle)
    report = backend.selftest()
    assert report.passed and report.max_error == 0.0
    probs = backend.predict(np.random.default_rng(0).normal(size=(7, 2)).astype(np.float32))
    assert probs.shape == (7, 4) and np.allclose(probs.sum(-1), 1, atol=1e-6)
    assert main(["inspect", str(snn_bundle[1])]) == 0
    out = capsys.readouterr().out
    assert "three-factor rule" in out and "64 LIF hidden" in out and "learning_rates" in out
    # what training learned besides θ travels in the bundle: a hidden layer off the grid, biases, a rate per neuron
    assert m["algorithm"]["meta_learned"] == ["theta", "input_weights", "hidden_bias", "learning_rates"]
    grid = SnnParameters.grid(backend.spec)
    assert np.abs(backend.params.input_weights - grid.input_weights).max() > 1e-4
    assert np.abs(backend.params.hidden_bias).max() > 0 and np.ptp(backend.params.learning_rates) > 0


def test_a_revision_1_1_snn_section_and_theta_artifact_read_as_the_grid_with_one_rate():
    old = {k: v for k, v in SnnSpec(grid=6, hidden=36).to_dict().items() if k not in ("hidden", "pilot_phase")}
    spec = SnnSpec.from_dict(old)
    assert spec.hidden == 36 and not spec.pilot_phase
    with pytest.raises(ValueError, match=re.escape("snn: missing fields ['steps']")):
        SnnSpec.from_dict({k: v for k, v in old.items() if k != "steps"})
    grid = SnnParameters.grid(spec)
    params = SnnParameters.from_tensors(spec, {"input_weights": grid.input_weights})
    assert np.array_equal(params.hidden_bias, np.zeros(36)) and np.array_equal(params.learning_rates, np.full(4, spec.learning_rate))
    for tensors, message in (
        ({"input_weights": grid.input_weights[:5]}, "'input_weights' of shape (36, 12)"),
        ({"input_weights": grid.input_weights, "learning_rates": np.array([0.1, -0.1, 0.1, 0.1])}, "negative learning rate"),
        ({"input_weights": grid.input_weights, "hidden_bias": np.full(36, np.nan)}, "finite 'hidden_bias'"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            SnnParameters.from_tensors(spec, tensors)


def test_fixed_point_gives_each_neuron_its_rate_and_the_hidden_layer_its_own_scale():
    from metaedge.backends.loihi.network import BIAS_MANT_LIMIT, fixed_point

    grid = SnnParameters.grid(SPEC)
    params = SnnParameters(grid.input_weights * 1.7, np.linspace(-0.4, 0.2, SPEC.hidden), np.array([0.01, 0.05, 0.2, 0.0]))
    theta = np.random.default_rng(0).normal(scale=0.5, size=(SPEC.classes, SPEC.hidden))
    fp = fixed_point(SPEC, theta, params)
    assert fp.y_scale.max() <= 127 and fp.y_scale[3] == 0  # a neuron that does not learn stays so
    assert np.all(np.abs(fp.learning_rates[:3] - params.learning_rates[:3]) <= 0.05 * params.learning_rates[:3] + fp.learning_rates.max() / 127)
    assert np.abs(fp.input_weights(params)).max() <= 254 and np.all(fp.input_weights(params) % 2 == 0)
    assert np.allclose(fp.input_weights(params) / 2**fp.hidden_exp, params.input_weights, atol=2.0**-fp.hidden_exp)
    mant, exp = fp.hidden_bias(params)
    assert np.abs(mant).max() <= BIAS_MANT_LIMIT
    assert np.allclose(mant * 2.0**exp / 2.0 ** (fp.hidden_exp + 6), params.hidden_bias, atol=2.0**exp / 2.0 ** (fp.hidden_exp + 6))


def test_train_snn_cli_and_its_errors(tmp_path, capsys):
    assert main(["train", "snn", "--out", str(tmp_path / "r"), "--iterations", "4", "--tasks-per-batch", "8", "--quiet", "--json"]) == 0
    state = json.loads(capsys.readouterr().out)
    assert state["iterations"] == 4 and 0 <= state["best_val_ser"] <= 1
    cases = [
        (["train", "snn", "--out", str(tmp_path / "x"), "--order", "5"], "not a square QAM order"),
        (["train", "snn", "--out", str(tmp_path / "x"), "--hidden-lr", "-1"], "hidden_lr must be ≥ 0"),
        (["train", "snn", "--out", str(tmp_path / "x"), "--learning-rate", "0"], "--learning-rate must be > 0"),
        (["train", "snn", "--out", str(tmp_path / "x"), "--hidden", "5000"], "hidden must lie in 1..1024"),
        (["train", "snn", "--out", str(tmp_path / "r")], "already exists"),
        (
            ["export", str(tmp_path / "r"), "--target", "loihi", "--out", str(tmp_path / "b"), "--inner-steps", "2"],
            "does not apply to the loihi target",
        ),
        (
            ["device", "serve", "--target", "loihi", "--state", str(tmp_path / "s"), "--allow-unsigned"],
            ".venv-lava/bin/metaedge device serve --target loihi",
        ),
        (
            ["device", "serve", "--target", "loihi", "--engine", "reference", "--fixed-point", "--state", str(tmp_path / "s"), "--allow-unsigned"],
            "--fixed-point runs on Lava's fixed_pt models",
        ),
    ]
    for argv, message in cases:
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_export_refuses_a_run_of_another_kind(trained_bundle, tmp_path, capsys):
    assert main(["export", str(trained_bundle[0]), "--target", "loihi", "--out", str(tmp_path / "b")]) != 0
    assert "is not a spiking-receiver run" in capsys.readouterr().err


@pytest.mark.lava
def test_bench_quality_and_lava_timing_on_the_same_frames(snn_bundle):
    from conftest import lava_python

    from metaedge.sdk.families.demod.snn.bench import UNTRAINED, lava_speed, paired, quality, starts_of, test_frames

    run = load_snn_run(snn_bundle[0])
    frame = test_frames(run, 60, 60, seed=5)
    q = quality(run, starts_of({"fomaml": run, "grid": run}, 0), frame, {})
    assert set(q["results"]) == {"fomaml", "grid", UNTRAINED, "grid, random θ"}
    assert paired(q["per_device"], "fomaml", [UNTRAINED])[UNTRAINED]["ser_difference"] < 0
    # QPSK with 4 pilots: every class is among the pilots, so the split has no unpiloted symbols
    assert q["results"]["fomaml"]["ser_piloted"] == pytest.approx(q["results"]["fomaml"]["ser"]) and q["results"]["fomaml"]["ser_unpiloted"] is None
    s = lava_speed(run, snn_bundle[1], frame, 1, 12, lava_python(), fixed_frames=1)
    assert s["decisions_equal_reference"]
    assert s["lava"]["timesteps_per_s_median"] > 0 and s["speedup_over_lava"]["per_frame"] > 1
    assert 0 <= s["fixed_point"]["fixed_ser"] <= 1 and s["fixed_point"]["decision_agreement"] > 0.5


@pytest.mark.lava
def test_demo_loihi_deploys_to_a_lava_device_and_runs_frames(snn_bundle, tmp_path, capsys):
    import shutil

    for method in ("fomaml", "joint"):  # trained runs are reused, as on a second 'metaedge demo'
        shutil.copytree(snn_bundle[0], tmp_path / "loihi" / f"snn-{method}")
    assert main(["demo", "--target", "loihi", "--out", str(tmp_path), "--quiet", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    from metaedge.sdk.families.demod.snn.bench import UNTRAINED

    assert set(report["host"]) == {"fomaml", "joint", UNTRAINED}
    assert report["host"]["fomaml"]["ser"] < report["host"][UNTRAINED]["ser"]
    assert set(report["paired"]) >= {"ser_difference", "ci95"}
    assert report["protocol"]["frames"] == 4 and report["protocol"]["ser"] < 0.5


def test_input_traces_are_the_exact_derivative_of_the_hidden_voltage_without_resets():
    """With a threshold no neuron reaches, v(t) is linear in the input weights and biases: v = traces·W_inᵀ + bias_trace·b."""
    from metaedge.sdk.families.demod.snn.training import input_traces

    spec = SnnSpec(hidden_vth=1e6, hidden_du=0.7, hidden_dv=0.3)
    rng = np.random.default_rng(4)
    params = SnnParameters(rng.normal(size=(spec.hidden, spec.inputs)), rng.normal(size=spec.hidden), np.full(4, 0.05))
    inputs = encode(spec, rng.normal(size=(2, 5, 2)))
    voltage = hidden_layer(spec, params, inputs, record=True).voltage
    traces, bias = input_traces(spec, inputs)
    assert np.allclose(voltage, traces @ params.input_weights.T + bias[:, None] * params.hidden_bias)


def test_an_outer_step_moves_what_its_method_learns_and_nothing_else():
    from metaedge.sdk.families.demod.snn.config import SnnTrainConfig
    from metaedge.sdk.families.demod.snn.training import outer_step

    tasks = DemodTasks(default_task().replace(order=4, pilots=4), seed=2)
    batch = tasks.frames(tasks.devices("train", 8), 4, 8, tasks.rng("train", 1))
    tr, va = Streams.encode(SPEC, batch.x_tr, batch.y_tr), Streams.encode(SPEC, batch.x_va, batch.y_va)
    start, theta = SnnParameters.grid(SPEC), np.full((SPEC.classes, SPEC.hidden), 0.1)
    steps = {
        "fomaml": SnnTrainConfig(method="fomaml"),
        "grid": SnnTrainConfig(method="fomaml", hidden_lr=0.0, rate_lr=0.0),
        "joint": SnnTrainConfig(method="joint"),
    }
    moved = {}
    for name, cfg in steps.items():
        new_theta, params = outer_step(SPEC, cfg, theta, start, tr, va)
        moved[name] = {
            "theta": not np.array_equal(new_theta, theta),
            "hidden": not np.array_equal(params.input_weights, start.input_weights),
            "bias": not np.array_equal(params.hidden_bias, start.hidden_bias),
            "rates": not np.array_equal(params.learning_rates, start.learning_rates),
        }
        assert np.all(params.learning_rates > 0) and np.all(params.learning_rates <= SPEC.out_vth)
    assert moved["fomaml"] == {"theta": True, "hidden": True, "bias": True, "rates": True}
    assert moved["grid"] == {"theta": True, "hidden": False, "bias": False, "rates": False}
    assert moved["joint"] == {"theta": True, "hidden": True, "bias": True, "rates": False}


def test_with_the_pilot_phase_a_frame_decides_the_same_whatever_the_channel_phase(snn_bundle):
    """The device rotates each frame by its pilots' phase (§14.3): turning the whole frame by any angle leaves its
    decisions (up to rounding at a receptive field's rate) as they were; without the rotation they change."""
    from metaedge.backends.base import Frame
    from metaedge.backends.loihi.network import pilot_rotation, rotate

    backend = LoihiBackend(engine="reference")
    backend.load(read_bundle(snn_bundle[1]))
    assert backend.spec.pilot_phase
    run = load_snn_run(snn_bundle[0])
    tasks = DemodTasks(run.task, seed=5)
    batch = tasks.frames(tasks.devices("test", 4), run.task.pilots, 60, tasks.rng("test", 1))
    same, turned_raw = [], []
    for k in range(4):
        frame = Frame(batch.x_tr[k], batch.y_tr[k], batch.x_va[k])
        turn = np.exp(1j * (0.7 + k))
        turned = Frame(rotate(frame.pilots, turn), frame.labels, rotate(frame.payload, turn))
        decided, decided_turned = (backend.frame(f).outputs.argmax(-1) for f in (frame, turned))
        same.append(np.mean(decided == decided_turned))
        backend.reset()
        backend.adapt(turned.pilots, turned.labels)
        turned_raw.append(np.mean(backend.predict(turned.payload).argmax(-1) == decided))
    assert min(same) >= 0.98 and np.mean(turned_raw) < 0.8, (same, turned_raw)
    # the rotation itself: after it, the pilots' least-squares channel estimate is real and positive
    constellation = DemodTasks(run.task).constellation
    rotation = pilot_rotation(constellation, batch.x_tr, batch.y_tr)
    again = rotate(batch.x_tr, rotation)
    estimate = np.sum((again[..., 0] + 1j * again[..., 1]) * np.conj(constellation[batch.y_tr]), -1)
    assert np.allclose(np.abs(rotation), 1) and np.allclose(estimate.imag, 0, atol=1e-9) and np.all(estimate.real > 0)


def test_a_pilot_phase_without_a_constellation_is_refused_with_the_reason(snn_bundle, tmp_path, rewritten):
    from metaedge.backends.base import BackendError

    def drop(manifest):
        manifest["task"].pop("constellation")
        manifest["task"].pop("fallback")

    bundle = rewritten(snn_bundle[1], tmp_path, drop, {})
    with pytest.raises(BackendError, match="snn.pilot_phase needs the nominal constellation"):
        LoihiBackend(engine="reference").load(bundle)


def test_the_bench_can_give_another_receiver_the_spiking_receivers_phase_reference(snn_bundle):
    from metaedge.sdk.families.demod.snn.bench import PhaseReferenced

    class Recorder:
        def probabilities(self, x_tr, y_tr, x_va):
            self.seen = (x_tr, y_tr, x_va)
            return np.full((*x_va.shape[:-1], 4), 0.25)

    run = load_snn_run(snn_bundle[0])
    tasks = DemodTasks(run.task, seed=8)
    batch = tasks.frames(tasks.devices("test", 3), run.task.pilots, 5, tasks.rng("test", 1))
    recorder = Recorder()
    assert PhaseReferenced(recorder, run).probabilities(batch.x_tr, batch.y_tr, batch.x_va).shape == (3, 5, 4)
    x_tr, y_tr, x_va = recorder.seen
    points = DemodTasks(run.task).constellation[y_tr]
    estimate = np.sum((x_tr[..., 0] + 1j * x_tr[..., 1]) * np.conj(points), -1)
    assert np.allclose(np.angle(estimate), 0, atol=1e-5) and np.array_equal(y_tr, batch.y_tr)
    assert np.allclose(np.abs(x_va[..., 0] + 1j * x_va[..., 1]), np.abs(batch.x_va[..., 0] + 1j * batch.x_va[..., 1]), atol=1e-5)
