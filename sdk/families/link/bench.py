"""The learned-link benchmark (monograph §5.3, Figure 5.7): BLER on new channels against the number of
adaptation steps, for encoder/decoder pairs meta-trained by MAML, trained jointly on all
meta-training channels, or initialised at random (conventional learning).

Each adaptation step is one SGD step of size α on 2^k fresh messages (every message once) with
fresh noise, as in meta-training. Methods:
  maml     MAML on encoder and decoder (the monograph's setting: the simulator differentiates the channel)
  maml-rx  MAML with only the decoder adapting (the deployable receiver: the device adapts on pilots,
           the transmitter keeps the meta-learned codebook; see docs/bundle-format.md)
  metasgd  Meta-SGD: MAML with a meta-learned step size per parameter (-rx: decoder only)
  fomaml   first-order MAML on encoder and decoder
  joint    one pair trained on the pooled meta-training channels, then adapted like maml
  scratch  random initialisation, then adapted like maml (conventional learning)
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict
from typing import Callable

from metaedge.sdk.families.link.config import METHODS, LinkBench, LinkFigure
from metaedge.sdk.families.link.learning import bler_curve, spec_of, train
from metaedge.sdk.options import Progress, chosen, silent
from metaedge.sdk.stats import format_table


def run(options: LinkFigure, progress: Progress = silent) -> dict:
    """``metaedge bench link``: the benchmark of ``options`` and its plot."""
    from metaedge.sdk.plots import plot_link

    methods = chosen(options.algos, METHODS)
    cfg = quick(options.setup) if options.quick else options.setup
    progress(0, total=len([m for m in methods if m != "scratch"]) * cfg.iterations)
    report = run_benchmark(cfg, methods, lambda method, _iteration: progress(label=f"link {method}"))
    plot_link(report, options.plot)
    return {**report, "plot": str(options.plot)}


def text(report: dict) -> str:
    s, link = report["setup"], report["setup"]["link"]
    steps = [str(k) for k in s["steps"]]
    rows = [[m, *(f"{report['bler'][m][k]['ser']:.2e}" for k in steps)] for m in report["methods"]]
    return (
        f"BLER on {s['test_channels']} new channels vs adaptation steps (Eb/N0 {link['ebn0_db']:g} dB, {link['bits']} bits over "
        f"{link['uses']} channel uses, {link['taps']} taps{', RTN decoders' if s['rtn_taps'] else ''})\n"
        f"{format_table(['method', *steps], rows)}\n\nwritten: {report['plot']}"
    )


def run_benchmark(cfg: LinkBench, methods: tuple[str, ...] = METHODS, progress: Callable[[str, int], None] | None = None) -> dict:
    results = {}
    for method in methods:
        theta = train(method, cfg, (lambda it, _theta, _loss, m=method: progress(m, it)) if progress else None)
        results[method] = bler_curve(method, theta, cfg)
    spec = spec_of(cfg)
    setup = {
        **asdict(cfg),
        "link": cfg.link.to_dict(),
        "noise_var": cfg.link.noise_var,
        "encoder": list(spec.encoder.sizes),
        "decoder": list(spec.decoder.sizes),
        **({"rtn": list(spec.rtn.sizes)} if cfg.rtn_taps else {}),
    }
    return {"benchmark": "link", "setup": setup, "methods": list(methods), "bler": results}


def quick(cfg: LinkBench) -> LinkBench:
    """A budget of seconds, for tests of the machinery."""
    return dataclasses.replace(
        cfg, iterations=5, tasks_per_batch=4, meta_channels=8, test_channels=3, test_messages=64, steps=tuple(s for s in cfg.steps if s <= 5)
    )
