"""The outer loop: it learns, resumes exactly, stops early, and survives a diverging run."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from metaedge.deploy import tensors
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.task import DemodConfig
from metaedge.sdk.families.demod.training import TrainConfig, Trainer, TrainingDiverged
from metaedge.sdk.meta.core import adapt
from metaedge.sdk.rundir import load_run

TASK = DemodConfig(order=4, snr_db=15.0, pilots=4, val_pilots=32)


def trainer(path, **changes):
    cfg = dict(
        algo="fomaml", iterations=60, tasks_per_batch=4, outer_lr=3e-3, hidden=(8, 8), meta_devices=50, val_devices=20, val_every=30, patience=5
    )
    cfg.update(changes)
    t = Trainer(path, TASK, TrainConfig(**cfg))
    return t


@pytest.mark.slow
def test_short_meta_training_lowers_validation_ser(tmp_path):
    t = trainer(tmp_path / "run", algo="maml", iterations=300, val_every=300, outer_lr=1e-2, val_devices=50)
    t.start(resume=False)
    before = t.validate()["val_ser"]
    state = t.run()
    after = state["best_val_ser"]
    assert after < before - 0.1, (before, after)
    run = load_run(tmp_path / "run")
    assert run.algo == "maml" and set(run.theta) == set(t.params)


@pytest.mark.parametrize("algo", ["fomaml", "esmaml"])  # ES-MAML: the objective's own random draws resume too
def test_resume_continues_exactly_where_the_run_stopped(tmp_path, algo):
    straight = trainer(tmp_path / "a", iterations=60, algo=algo)
    straight.start(resume=False)
    straight.run()
    first = trainer(tmp_path / "b", iterations=30, algo=algo)
    first.start(resume=False)
    first.run()
    assert first.state["stop_reason"] == "reached --iterations"
    second = trainer(tmp_path / "b", iterations=60, algo=algo)
    second.start(resume=True)
    assert second.state["iteration"] == 30
    second.run()
    for k in straight.params:
        torch.testing.assert_close(second.params[k], straight.params[k], rtol=0, atol=1e-6)
    assert json.loads((tmp_path / "b" / "curves.json").read_text()) == json.loads((tmp_path / "a" / "curves.json").read_text())


def test_a_run_written_before_a_task_field_existed_resumes_and_a_changed_task_does_not(tmp_path):
    first = trainer(tmp_path / "run", iterations=2, val_every=2)
    first.start(resume=False)
    first.run()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    del config["task"]["phase_max_deg"]  # as an older MetaEdge wrote it: the field held its default
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    again = trainer(tmp_path / "run", iterations=4, val_every=2)
    again.start(resume=True)
    assert again.state["iteration"] == 2
    changed = Trainer(tmp_path / "run", dataclasses.replace(TASK, snr_db=TASK.snr_db + 1), again.cfg)
    with pytest.raises(UserError, match="task configuration differs"):
        changed.start(resume=True)


def test_early_stopping_after_patience_validations(tmp_path):
    t = trainer(tmp_path / "run", iterations=10_000, val_every=1, patience=2, outer_lr=1e-9)
    t.start(resume=False)
    state = t.run()
    assert state["stop_reason"].startswith("early stop")
    assert state["iteration"] < 50


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    t = trainer(tmp_path / "run", iterations=100, val_every=10)
    t.start(resume=False)
    real_gradient = t.loop.gradient
    calls = {"n": 0}

    def gradient(params, batch):
        calls["n"] += 1
        grads, loss = real_gradient(params, batch)
        return grads, loss * float("nan") if calls["n"] > 25 else loss

    t.loop.gradient = gradient
    with pytest.raises(TrainingDiverged, match=r"became nan at iteration 26; the last good checkpoint \(iteration 20\)"):
        t.run()
    arrays, meta = tensors.load(tmp_path / "run" / "checkpoint.safetensors")
    assert json.loads(meta["state"])["iteration"] == 20
    assert all(np.isfinite(v).all() for v in arrays.values())
    assert load_run(tmp_path / "run").theta  # the best θ is still there and readable


def test_a_used_directory_needs_resume(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="already holds files; pass --resume"):
        trainer(tmp_path / "run").start(resume=False)


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"algo": "mamal"}, "unknown algorithm"),
        ({"inner_lr": -0.1}, "--inner-lr"),
        ({"tasks_per_batch": 80}, "exceeds --meta-devices"),
        ({"outer_opt": "rmsprop"}, "--outer-opt"),
        ({"inner_steps": 0}, "--inner-steps"),
        ({"adapt": "first"}, "--adapt 'first' is unknown; use all or input"),
        ({"algo": "reptile", "adapt": "input"}, "reptile needs --adapt all"),
    ],
)
def test_impossible_training_configurations_are_refused(changes, fragment):
    with pytest.raises(UserError, match=fragment):
        TrainConfig(**{"meta_devices": 50, **changes})


def test_pilot_range_draws_counts_log_uniformly_within_bounds(tmp_path):
    t = Trainer(tmp_path / "run", TASK.replace(pilots=32), TrainConfig(algo="fomaml", pilots_min=1, meta_devices=50))
    assert t.cfg.pilot_counts(t.task_cfg) == [1, 2, 4, 8, 16, 32]
    counts = np.array([t._pilots() for _ in range(4000)])
    assert counts.min() == 1 and counts.max() == 32
    # log-uniform: about as many draws in [1, 5] as in [6, 32]  (ln 6 ≈ ½ ln 33)
    assert abs(np.mean(counts <= 5) - 0.5) < 0.05
    with pytest.raises(UserError, match="is empty"):
        TrainConfig(algo="fomaml", pilots_min=8, meta_devices=50).pilot_counts(TASK)


@pytest.mark.slow
def test_compiled_training_with_varying_pilot_counts(tmp_path):
    """--compile with a pilot range: shapes change between meta-batches and training still runs."""
    t = Trainer(
        tmp_path / "run",
        TASK.replace(pilots=8),
        TrainConfig(
            algo="fomaml", iterations=12, tasks_per_batch=4, hidden=(8, 8), meta_devices=50, val_devices=5, val_every=12, pilots_min=1, compile=True
        ),
    )
    t.start(resume=False)
    state = t.run()
    assert state["iteration"] == 12 and np.isfinite(state["best_val_ser"])


@pytest.mark.parametrize("algo", ["fomaml", "maml", "metasgd"])
def test_input_layer_adaptation_moves_only_that_layer_and_the_rest_still_learns(tmp_path, algo):
    """--adapt input: the inner loop moves the first layer alone, while the meta-gradient still reaches every
    layer (else the demapper behind it would never learn); Meta-SGD keeps step sizes for that layer only, and the
    run loads back with them."""
    t = trainer(tmp_path / "run", algo=algo, adapt="input", iterations=3, val_every=3)
    assert t.inner.adapt == ("l0.weight", "l0.bias")
    assert sorted(k for k in t.params if k.startswith("lr.")) == (["lr.l0.bias", "lr.l0.weight"] if algo == "metasgd" else [])
    before = {k: v.detach().clone() for k, v in t.params.items()}
    t.start(resume=False)
    t.run()
    assert all(not torch.equal(before[k], t.params[k]) for k in t.params), "every meta-learned tensor moves"
    x, y = torch.randn(6, 2), torch.nn.functional.one_hot(torch.arange(6) % 4, 4).float()
    adapted = adapt({k: v.detach() for k, v in t.params.items()}, x, y, t.inner)
    assert [k for k in t.params if not torch.equal(adapted[k], t.params[k])] == ["l0.weight", "l0.bias"]
    assert set(load_run(tmp_path / "run").theta) == set(t.params)


def test_pooled_reptile_trains_differently_and_its_run_records_the_choice(tmp_path):
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.rundir import read_config

    runs = {}
    for data in ("support", "pooled"):
        runs[data] = trainer(tmp_path / data, algo="reptile", inner_steps=3, inner_lr=0.05, inner_data=data, iterations=30, val_every=30)
        runs[data].start(resume=False)
        runs[data].run()
    assert runs["pooled"].inner.options.pooled and not runs["support"].inner.options.pooled
    assert max(float((runs["pooled"].params[k] - runs["support"].params[k]).detach().abs().max()) for k in runs["pooled"].params) > 1e-4
    assert configs_from_run(read_config(tmp_path / "pooled"))[1].inner_data == "pooled"


def test_the_command_line_and_the_python_api_train_the_same_configuration(capsys):
    """Unset flags take the recipe, exactly as the API's defaults do; the flags' help quotes the same recipes."""
    from metaedge.sdk.cli.main import build_parser
    from metaedge.sdk.cli.options import config_from
    from metaedge.sdk.families.demod.recipes import RECIPES, recipe
    from metaedge.sdk.meta import ALGORITHMS

    parser = build_parser()
    for algo in ALGORITHMS:
        args = parser.parse_args(["train", "demod", "--algo", algo, "--out", "unused"])
        from_cli = config_from(args, TrainConfig, pilots_min=args.pilots[0])
        assert from_cli == TrainConfig(algo=algo)
        assert all(getattr(from_cli, k) == v for k, v in recipe(algo).items())
    args = parser.parse_args(["train", "demod", "--algo", "fomaml", "--inner-lr", "0.7", "--hidden", "4,4", "--out", "unused"])
    assert config_from(args, TrainConfig) == TrainConfig(algo="fomaml", inner_lr=0.7, hidden=(4, 4))
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "demod", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"fomaml {RECIPES['fomaml']['inner_lr']:g}" in text and "recipe: reptile pooled" in text


def test_run_without_start_starts_a_new_run(tmp_path):
    """The Python API: Trainer(...).run() alone trains and writes the run (it used to fail on a missing file)."""
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer
    from metaedge.sdk.rundir import load_run

    trainer = Trainer(
        tmp_path / "run", DemodConfig(pilots=4, val_pilots=16), TrainConfig(algo="fomaml", iterations=2, meta_devices=6, val_devices=2, val_every=2)
    )
    state = trainer.run()
    assert state["iteration"] == 2 and set(load_run(tmp_path / "run").theta) == set(trainer.params)
