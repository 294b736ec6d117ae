"""``metaedge report``: run the evaluation suites of every task family and write their figures and one HTML
page (no external resources; the figures are PNG files beside it). Each section records the command that
reproduces it and its seed.

Sections: demodulation (SER vs pilots and vs meta-training devices K, reliability diagrams), the learned
link (BLER vs adaptation steps), channel prediction (NMSE vs training samples), power control (sum-rate
vs meta-training periods K) and the device (latency of one frame on the ONNX runtime).
"""

from __future__ import annotations

import dataclasses
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from metaedge.sdk.errors import UserError
from metaedge.sdk.options import Progress, command, option, output_dir, seed_option, silent, str_list

SECTIONS = ("demod", "link", "prediction", "power", "device")


@dataclass
class Section:
    title: str
    command: str  # reproduces this section's numbers
    seed: int
    tables: list[tuple[str, list[str], list[list[str]]]] = field(default_factory=list)  # (caption, header, rows)
    figures: list[tuple[str, str]] = field(default_factory=list)  # (file, caption)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Budget:
    demod_iterations: int = 1500
    demod_devices_grid: tuple[int, ...] = (10, 100, 1000)
    eval_devices: int = 200
    eval_payload: int = 1000
    link_iterations: int = 3000
    power_iterations: int = 2000
    power_periods: tuple[int, ...] = (5, 50)  # either side of the published crossover (docs/results/tasks.md)
    prediction_frames: int = 300
    device_repeats: int = 200


QUICK = Budget(
    demod_iterations=4,
    demod_devices_grid=(8, 16),
    eval_devices=3,
    eval_payload=50,
    link_iterations=3,
    power_iterations=2,
    power_periods=(1, 2),
    prediction_frames=10,
    device_repeats=4,
)


def demod_section(out: Path, budget: Budget, seed: int, quick: bool, quiet: bool) -> Section:
    from metaedge.sdk.families.demod.bench import train_config
    from metaedge.sdk.families.demod.runs import evaluate_runs, train_or_reuse
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.plots import plot_lines, plot_reliability, plot_ser

    task = DemodConfig(pilots=8, snr_db=18.0, **({"val_pilots": 16} if quick else {}))
    pilots = [1, 2, 4, 8, 16] if not quick else [1, 8]
    runs = out / "runs"
    paths = []
    for algo in ("maml", "metasgd", "joint"):
        train_or_reuse(runs / algo, task, train_config(algo, budget.demod_iterations, 0, seed, quick), fresh=False, quiet=quiet)
        paths.append(runs / algo)
    report = evaluate_runs(
        paths, pilots, budget.eval_devices, budget.eval_payload, inner_steps=None, scratch_lr=0.1, baselines=True, seed=None, quiet=quiet
    )
    plot_ser(report["methods"], pilots, out / "demod-ser.png", "16-QAM with I/Q imbalance, 18 dB")
    plot_reliability({m["name"]: m["reliability"]["8"] for m in report["methods"]}, out / "demod-reliability.png", "reliability at 8 pilots")
    section = Section(
        "Demodulation with unknown I/Q imbalance (§5.2)",
        f"metaedge report --out {out} --sections demod --seed {seed}{' --quick' if quick else ''}",
        seed,
    )
    section.tables.append(
        (
            f"SER on {budget.eval_devices} new devices vs pilots (ECE at 8 pilots)",
            ["method", *map(str, pilots), "ECE@8"],
            [[m["name"], *(f"{m['ser'][str(p)]['ser']:.4f}" for p in pilots), f"{m['ser']['8']['ece']:.4f}"] for m in report["methods"]],
        )
    )
    section.figures += [("demod-ser.png", "SER vs pilots with 95 % intervals"), ("demod-reliability.png", "reliability diagrams, 8 pilots")]
    by_k = {}
    for algo in ("maml", "joint"):
        for k in budget.demod_devices_grid:
            train = dataclasses.replace(
                train_config(algo, budget.demod_iterations, 0, seed, quick), meta_devices=k, tasks_per_batch=min(16 if not quick else 2, k)
            )
            train_or_reuse(runs / f"{algo}-K{k}", task, train, fresh=False, quiet=quiet)
            result = evaluate_runs([runs / f"{algo}-K{k}"], [8], budget.eval_devices, budget.eval_payload, None, 0.1, False, None, quiet)
            by_k.setdefault(algo, {})[str(k)] = result["methods"][0]["ser"]["8"]["ser"]
    section.tables.append(
        (
            "SER at 8 pilots vs meta-training devices K",
            ["method", *map(str, budget.demod_devices_grid)],
            [[a, *(f"{v[str(k)]:.4f}" for k in budget.demod_devices_grid)] for a, v in by_k.items()],
        )
    )
    plot_lines(by_k, out / "demod-vs-k.png", "meta-training devices K", "SER at 8 pilots")
    section.figures.append(("demod-vs-k.png", "SER at 8 pilots vs K"))
    section.data = {"ser_vs_pilots": report["methods"], "ser_vs_k": by_k}
    return section


def link_section(out: Path, budget: Budget, seed: int, quick: bool, quiet: bool) -> Section:
    from metaedge.sdk.families.link.bench import quick as quick_link
    from metaedge.sdk.families.link.bench import run_benchmark
    from metaedge.sdk.families.link.config import LinkBench
    from metaedge.sdk.plots import plot_link

    cfg = LinkBench(iterations=budget.link_iterations, rtn_taps=3, seed=seed)  # decoders with a radio-transformer network
    cfg = quick_link(cfg) if quick else cfg
    methods = ("maml", "maml-rx", "metasgd-rx", "joint", "scratch")
    report = run_benchmark(cfg, methods)
    plot_link(report, out / "link-bler.png")
    steps = [str(s) for s in cfg.steps]
    section = Section(
        "Learned encoder/decoder over fading channels (§5.3)",
        f"metaedge bench link --rtn-taps 3 --iterations {cfg.iterations} --algos {','.join(methods)} --seed {seed}",
        seed,
    )
    section.tables.append(
        (
            f"BLER on {cfg.test_channels} new channels vs adaptation steps (decoders with an RTN)",
            ["method", *steps],
            [[m, *(f"{report['bler'][m][s]['ser']:.2e}" for s in steps)] for m in methods],
        )
    )
    section.figures.append(("link-bler.png", "BLER vs adaptation steps"))
    section.data = report
    return section


def prediction_section(out: Path, budget: Budget, seed: int, quick: bool, quiet: bool) -> Section:
    from metaedge.sdk.families.prediction.bench import quick as quick_prediction
    from metaedge.sdk.families.prediction.bench import run_benchmark
    from metaedge.sdk.families.prediction.learning import PredictionBench
    from metaedge.sdk.families.prediction.task import DOPPLER, ChannelConfig
    from metaedge.sdk.plots import plot_prediction

    regimes = {}
    for regime in ("slow", "fast"):
        cfg = PredictionBench(
            channel=ChannelConfig(doppler_hz=DOPPLER[regime]), meta_frames=budget.prediction_frames, test_frames=budget.prediction_frames, seed=seed
        )
        regimes[regime] = run_benchmark(quick_prediction(cfg) if quick else cfg)
    report = {"regimes": regimes}
    plot_prediction(report, out / "prediction-nmse.png")
    section = Section("Multi-antenna channel prediction (§5.4)", f"metaedge bench prediction --frames {budget.prediction_frames} --seed {seed}", seed)
    for regime, r in regimes.items():
        grid = [str(n) for n in r["setup"]["sample_grid"]]
        section.tables.append(
            (
                f"NMSE (dB), {regime} fading, vs training samples N_tr",
                ["scheme", *grid],
                [[name, *(f"{v[n]:.2f}" for n in grid)] for name, v in r["nmse_db"].items()],
            )
        )
    section.figures.append(("prediction-nmse.png", "NMSE vs training samples"))
    section.data = report
    return section


def power_section(out: Path, budget: Budget, seed: int, quick: bool, quiet: bool) -> Section:
    from metaedge.sdk.families.power.bench import quick as quick_power
    from metaedge.sdk.families.power.bench import run_benchmark
    from metaedge.sdk.families.power.config import PowerBench
    from metaedge.sdk.plots import plot_power
    from metaedge.sdk.stats import paired_text

    cfg = PowerBench(iterations=budget.power_iterations, period_grid=budget.power_periods, seed=seed)
    report = run_benchmark(quick_power(cfg) if quick else cfg, jobs=os.cpu_count() or 1)  # the same report as serial
    plot_power(report, out / "power-sum-rate.png")
    grid = [str(k) for k in report["setup"]["period_grid"]]
    section = Section(
        "Power control in dynamic networks (§5.5)",
        f"metaedge bench power --iterations {cfg.iterations} --periods {','.join(grid)} --seed {seed}",
        seed,
    )
    section.tables.append(
        (
            f"sum-rate (bit/s/Hz per slot) on new topologies vs K; full power {report['full_power']['sum_rate']:.2f}, "
            f"optimised per slot (oracle) {report['optimised']['sum_rate']:.2f}",
            ["method", *grid],
            [[m, *(f"{report['sum_rate'][m][k]['sum_rate']:.2f}" for k in grid)] for m in report["methods"]],
        )
    )
    section.tables.append(
        (
            "black-box minus modular meta-learning on the same topologies (95 % interval): the published "
            "figure has modular ahead with few periods and black-box with many",
            ["method", *grid],
            [
                [m, *(paired_text(report["sum_rate"][m][k]["vs_modular"]) for k in grid)]
                for m in report["methods"]
                if "vs_modular" in report["sum_rate"][m][grid[0]]
            ],
        )
    )
    section.figures.append(("power-sum-rate.png", "sum-rate vs meta-training periods"))
    section.data = report
    return section


def device_section(out: Path, budget: Budget, seed: int, quick: bool, quiet: bool) -> Section:
    import shutil

    from metaedge.deploy.bundle import read_bundle
    from metaedge.sdk.bench.device import bench_device
    from metaedge.sdk.targets import export

    run = out / "runs" / "maml"
    if not run.is_dir():
        raise UserError("the device section needs the demod section's MAML run: include 'demod' in --sections")
    bundle = out / "runs" / "maml-bundle"
    shutil.rmtree(bundle, ignore_errors=True)
    export("onnx", run, bundle)
    result = bench_device(read_bundle(bundle), budget.device_repeats)
    section = Section(
        "Device-side latency (ONNX Runtime, one core)", f"metaedge bench device --bundle {bundle} --repeats {budget.device_repeats}", seed
    )
    section.tables.append(
        (
            f"one frame: {result['frame']['pilots']} pilots, {result['frame']['steps']} step(s), {result['frame']['symbols']} symbols",
            ["variant", "median µs", "p90 µs"],
            [[n, f"{result['median_us'][n]:.0f}", f"{result['p90_us'][n]:.0f}"] for n in result["median_us"]],
        )
    )
    section.notes.append(f"eager torch / ONNX ({result['device_mode']}): {result['torch_over_onnx']:.2f}×; bundle {result['bundle_bytes']:,} bytes")
    section.data = result
    return section


RUNNERS: dict[str, Callable[..., Section]] = {
    "demod": demod_section,
    "link": link_section,
    "prediction": prediction_section,
    "power": power_section,
    "device": device_section,
}


@dataclass(frozen=True)
class ReportOptions:
    """run the evaluation suites and write figures and an HTML page

    Run the demodulation, learned-link, channel-prediction, power-control and device evaluations and write PNG figures,
    report.json and index.html (tables and figures; every section states the command and seed that reproduce it).
    Trained demodulators are kept under OUT/runs and reused by a second run."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge report --out report                     # ~15 min on 2 cores; open report/index.html
  metaedge report --out report --sections link,prediction
  metaedge report --out /tmp/r --quick             # seconds: the machinery, not the figures
"""

    out: Path = option(help="directory for index.html, report.json and the figures", parse=output_dir)
    sections: tuple[str, ...] = option(SECTIONS, "sections", parse=str_list)
    seed: int = seed_option()
    quick: bool = option(False, "tiny budgets, for tests of the machinery")
    command: str = option("metaedge report", flag=False)  # the command line that asked for the report
    quiet: bool = option(False, flag=False)  # no progress bars of its own


def run(options: ReportOptions, progress: Progress = silent) -> dict:
    """``metaedge report``: every section of ``options`` into ``out``."""
    done = build(
        options.out, options.sections, options.seed, options.quick, options.quiet, lambda name: progress(0, label=f"report: {name}"), options.command
    )
    return {"written": str(options.out / "index.html"), "sections": [s.title for s in done]}


def text(report: dict) -> str:
    return f"written: {report['written']} ({len(report['sections'])} sections)"


def build(
    out: Path,
    sections: tuple[str, ...],
    seed: int,
    quick: bool,
    quiet: bool,
    progress: Callable[[str], None] | None = None,
    command: str = "metaedge report",
) -> list[Section]:
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise UserError(f"--sections: unknown section '{unknown[0]}'; choose from {', '.join(SECTIONS)}")
    out.mkdir(parents=True, exist_ok=True)
    budget = QUICK if quick else Budget()
    done = []
    for name in sections:
        if progress:
            progress(name)
        done.append(RUNNERS[name](out, budget, seed, quick, quiet))
    (out / "report.json").write_text(
        json.dumps({"command": command, "seed": seed, "quick": quick, "sections": [dataclasses.asdict(s) for s in done]}, indent=2, default=str)
    )
    (out / "index.html").write_text(render(done, command, seed, quick))
    return done


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:.6em 0 1.2em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
td:first-child,th:first-child{text-align:left}code{background:#f4f4f4;padding:.1em .3em}img{max-width:100%}
.cmd{color:#555;font-size:.9em}"""


def render(sections: list[Section], command: str, seed: int, quick: bool) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>MetaEdge report</title>",
        f"<link rel='icon' href='data:,'><style>{STYLE}</style></head><body>",  # no favicon to ask for: the page is self-contained
        "<h1>MetaEdge report</h1>",
        f"<p class='cmd'>Produced by <code>{e(command)}</code>, seed {seed}{' (--quick: machinery only, not figures)' if quick else ''}.</p>",
    ]
    for s in sections:
        parts.append(f"<h2>{e(s.title)}</h2><p class='cmd'>Reproduce: <code>{e(s.command)}</code> (seed {s.seed})</p>")
        for caption, header, rows in s.tables:
            parts.append(f"<table><caption>{e(caption)}</caption><tr>{''.join(f'<th>{e(h)}</th>' for h in header)}</tr>")
            parts += [f"<tr>{''.join(f'<td>{e(c)}</td>' for c in row)}</tr>" for row in rows]
            parts.append("</table>")
        parts += [f"<p>{e(n)}</p>" for n in s.notes]
        parts += [f"<figure><img src='{e(f)}' alt='{e(c)}'><figcaption>{e(c)}</figcaption></figure>" for f, c in s.figures]
    parts.append("</body></html>")
    return "\n".join(parts)


REPORT = command("report", ReportOptions, "metaedge.sdk.report")
