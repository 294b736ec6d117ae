"""``metaedge bench prediction``: channel prediction of monograph §5.4, Figure 5.9, as JSON and a PNG."""

from __future__ import annotations

import argparse
import json
import sys

from metaedge.backends.selection import HOLDOUT
from metaedge.sdk.cli.parsing import add_benchmark, add_command, chosen, int_list, margin, positive_int, str_list
from metaedge.sdk.errors import UserError

EXAMPLES = """
examples:
  metaedge bench prediction --json > prediction.json     # slow and fast fading; also writes prediction.png
  metaedge bench prediction --doppler fast --lam 0.01 --rank aic
  metaedge bench prediction --doppler slow --test-doppler fast      # meta-trained on slow fading, deployed on fast
  metaedge bench prediction --quick                       # a second: the machinery, not the figures
"""


def register(benches) -> None:
    b = add_command(
        benches,
        "prediction",
        help="multi-antenna channel prediction: NMSE vs training samples (§5.4)",
        description="Linear predictors of a multi-antenna frequency-selective channel (N_R = 2, N_T = 4, "
        "W = 2; window 5, lag 3) fitted per frame by ridge regression toward a bias that is "
        "0 (conventional), jointly learned, or meta-learned in closed form (iMAML, eq. 2.12); "
        "naive and with the long-short-term decomposition. Channels: a clustered multipath "
        "model whose geometry and Doppler change from frame to frame (sdk/tasks/channels.py).",
        examples=EXAMPLES,
    )
    b.add_argument("--doppler", type=str_list, default=["slow", "fast"], help="regimes: slow (1-10 Hz), fast (20-200 Hz); default both")
    b.add_argument("--samples", type=int_list, default=[1, 2, 5, 10, 20], help="training samples N_tr per frame (default 1,2,5,10,20)")
    b.add_argument("--lam", type=float, default=1.0, help="ridge λ toward the bias (default 1)")
    b.add_argument("--rank", default="meta", help="LSTD rank R: meta (meta-validation, default), aic (per frame) or a number")
    b.add_argument("--frames", type=positive_int, default=500, help="meta-training frames K, and as many test frames (default 500)")
    b.add_argument("--slot", type=float, default=1e-3, help="slot duration in seconds (default 0.001)")
    b.add_argument(
        "--holdout-windows", type=positive_int, default=HOLDOUT.windows, help=f"selecting rows: pilot windows held out (default {HOLDOUT.windows})"
    )
    b.add_argument("--holdout-margin", type=margin, default=HOLDOUT.margin, help=f"selecting rows: the margin (default {HOLDOUT.margin})")
    b.add_argument("--split", choices=("test", "val"), default="test", help="test frames' stream: test (default), or val to choose the selection on")
    b.add_argument(
        "--test-doppler",
        default=None,
        metavar="REGIME",
        help="test frames from this regime instead of the meta-training one (a shift: how a deployed predictor fares, "
        "and whether its hold-out selection falls back to the conventional fit)",
    )
    add_benchmark(b, "prediction.png", "NMSE vs N_tr")
    b.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.deploy.manifest import Holdout
    from metaedge.sdk.families.prediction.bench import quick, run_benchmark
    from metaedge.sdk.families.prediction.learning import PredictionBench
    from metaedge.sdk.families.prediction.task import DOPPLER, ChannelConfig
    from metaedge.sdk.plots import plot_prediction

    chosen(args.doppler + ([args.test_doppler] if args.test_doppler else []), tuple(DOPPLER), "--doppler", "regime")
    if not args.slot > 0 or any(n < 1 for n in args.samples):
        raise UserError("--slot must be positive and --samples at least 1")
    reports = {}
    with tqdm(total=len(args.doppler) * len(args.samples), desc="prediction", disable=args.quiet or None, file=sys.stderr) as bar:
        for regime in args.doppler:
            cfg = PredictionBench(
                channel=ChannelConfig(doppler_hz=DOPPLER[regime], slot_s=args.slot),
                test_channel=ChannelConfig(doppler_hz=DOPPLER[args.test_doppler], slot_s=args.slot) if args.test_doppler else None,
                lam=args.lam,
                meta_frames=args.frames,
                test_frames=args.frames,
                sample_grid=tuple(args.samples),
                rank=int(args.rank) if args.rank.isdigit() else args.rank,
                seed=args.seed,
                test_split=args.split,
                holdout=Holdout(args.holdout_margin, args.holdout_windows),
            )
            if args.quick:
                cfg = quick(cfg)
            bar.set_description(f"prediction {regime}")
            reports[regime] = run_benchmark(cfg, progress=lambda _: bar.update())
    report = {"benchmark": "prediction", "regimes": reports}
    plot_prediction(report, args.plot)
    report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from metaedge.sdk.cli.main import format_table

    for regime, r in reports.items():
        grid = [str(n) for n in r["setup"]["sample_grid"]]
        tested = f", tested on {args.test_doppler} fading" if args.test_doppler else ""
        print(f"NMSE (dB) on {r['setup']['test_frames']} new frames, {regime} fading{tested}, vs training samples N_tr")
        print(format_table(["scheme", *grid], [[name, *(f"{v[n]:.2f}" for n in grid)] for name, v in r["nmse_db"].items()]))
        print()
    print(f"written: {args.plot}")
    return 0
