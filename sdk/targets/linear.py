"""The ``linear`` target: a channel predictor's bias and its per-frame procedure as a bundle (docs/bundle-format.md §15).

The device fits each frame's predictor toward the meta-learned bias in closed form; the
self-test runs one validation frame through that exact procedure.
"""

from __future__ import annotations

from pathlib import Path

from metaedge.backends.linear import predictor as pr
from metaedge.backends.linear.backend import to_complex, to_rows
from metaedge.backends.selection import HOLDOUT
from metaedge.deploy import tensors
from metaedge.deploy.bundle import Bundle, write_bundle
from metaedge.sdk.families.prediction.run import load_prediction_run
from metaedge.sdk.families.prediction.task import ChannelFrames
from metaedge.sdk.targets import Release

SELFTEST_ATOL = 1e-4


def export(run_dir: Path, out: Path, release: Release, key=None) -> Bundle:
    config, cfg, bias = load_prediction_run(run_dir)
    model, w, s = config["model"], cfg.window, cfg.channel.entries
    # self-test: one validation frame through the exact per-frame procedure
    env = ChannelFrames(cfg.channel, seed=cfg.seed)
    samples = int(config["train"]["samples"])
    _, observed = env.frames("val", 1, w.slots(samples) + 8, index=99)
    pilots, history = to_rows(observed[0, : w.slots(samples)]), to_rows(observed[0, samples : samples + w.length + 7])
    # a meta-learned or joint bias travels with the conventional predictor and the hold-out selection (§15.5)
    holdout = None if config["train"]["scheme"] == "conventional" else HOLDOUT
    fitted = pr.fit_selected(model["form"], w, cfg.lam, to_complex(pilots), samples, bias, model["rank"], holdout)[0]
    predictions = to_rows(pr.predict(model["form"], w, *fitted, to_complex(history)))
    theta = {"bias.re": bias.real.copy(), "bias.im": bias.imag.copy()}
    manifest = {
        "target": "linear",
        **release.fields(),
        "task": {
            "name": "prediction",
            "features": [f"Re h{i}" for i in range(s)] + [f"Im h{i}" for i in range(s)],
            "outputs": 2 * s,
            "pilot_sequence": None,
            "window": w.length,
            "lag": w.lag,
            **{k: v for k, v in config["task"].items() if k != "name"},
            **(
                {"fallback": {"kind": "conventional", "select": {"rule": "holdout", "margin": holdout.margin, "windows": holdout.windows}}}
                if holdout is not None
                else {}
            ),
        },
        "predictor": {
            "form": model["form"],
            "window": w.length,
            "lag": w.lag,
            "lam": cfg.lam,
            "rank": model["rank"],
            "scheme": config["train"]["scheme"],
        },
        "algorithm": {"name": f"{config['train']['scheme']}-{model['form']}", "inner_steps": 1},
        "parameters": [{"name": k, "shape": list(v.shape), "dtype": "float64", "adapts": False} for k, v in theta.items()],
        "selftest": {"atol": SELFTEST_ATOL, "pilots": len(pilots), "history": len(history)},
        "source": {"run": str(run_dir), "seed": cfg.seed},
    }
    artifacts = {
        "theta": ("theta.safetensors", tensors.dumps(theta)),
        "selftest": ("selftest.safetensors", tensors.dumps({"pilots": pilots, "history": history, "predictions": predictions})),
    }
    return write_bundle(out, manifest, artifacts, key=key)
