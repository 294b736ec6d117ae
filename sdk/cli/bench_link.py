"""``metaedge bench link``: the learned link of monograph §5.3, Figure 5.7, as JSON and a PNG."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from metaedge.sdk.cli.parsing import add_benchmark, add_command, chosen, count_list, positive_int, str_list

EXAMPLES = """
examples:
  metaedge bench link --json > link.json            # also writes link.png
  metaedge bench link --algos maml,joint --inner-steps 0,1,10,100,1000,10000
  metaedge bench link --ebn0-db 10 --plot link-10db.png
  metaedge bench link --rtn --plot link-rtn.png       # decoders with a radio-transformer network
  metaedge bench link --quick                        # seconds: the machinery, not the figures
"""


def register(benches) -> None:
    b = add_command(
        benches,
        "link",
        help="learned encoder/decoder over fading channels: BLER vs adaptation steps (§5.3)",
        description="Meta-train encoder/decoder pairs (k bits over n complex channel uses, L-tap Rayleigh "
        "block fading) with MAML, MAML adapting only the decoder (the deployable receiver), "
        "first-order MAML, joint training and random initialisation; report BLER on new "
        "channels against the number of adaptation steps (monograph Figure 5.7).",
        examples=EXAMPLES,
    )
    b.add_argument("--algos", type=str_list, default=None, help="default maml,maml-rx,fomaml,joint,scratch")
    b.add_argument("--iterations", type=positive_int, default=None, help="meta-iterations per method (default 20000)")
    b.add_argument("--inner-steps", type=count_list, default=None, help="adaptation-step grid (default 0,1,2,5,10,100,1000)")
    b.add_argument("--ebn0-db", type=float, default=15.0, help="Eb/N0 in dB (default 15)")
    b.add_argument("--rtn", action="store_true", help="decoders start with a radio-transformer network (inverse filter, 3 taps)")
    b.add_argument("--test-channels", type=positive_int, default=None, help="new channels tested on (default 100)")
    add_benchmark(b, "link.png", "BLER vs steps")
    b.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from metaedge.sdk.families.link.bench import quick, run_benchmark
    from metaedge.sdk.families.link.learning import METHODS, LinkBench
    from metaedge.sdk.families.link.task import LinkConfig
    from metaedge.sdk.plots import plot_link

    methods = chosen(args.algos, METHODS)
    cfg = LinkBench(link=LinkConfig(ebn0_db=args.ebn0_db), rtn_taps=3 if args.rtn else 0, seed=args.seed)
    changes = {
        "iterations": args.iterations,
        "steps": tuple(sorted(set(args.inner_steps))) if args.inner_steps else None,
        "test_channels": args.test_channels,
    }
    cfg = dataclasses.replace(cfg, **{k: v for k, v in changes.items() if v is not None})
    if args.quick:
        cfg = quick(cfg)
    trained = [m for m in methods if m != "scratch"]
    with tqdm(total=len(trained) * cfg.iterations, desc="link", disable=args.quiet or None, file=sys.stderr, unit="it") as bar:

        def progress(method: str, iteration: int) -> None:
            bar.set_description(f"link {method}")
            bar.update()

        report = run_benchmark(cfg, methods, progress)
    plot_link(report, args.plot)
    report["plot"] = str(args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    from metaedge.sdk.cli.main import format_table

    steps = [str(s) for s in cfg.steps]
    print(
        f"BLER on {cfg.test_channels} new channels vs adaptation steps (Eb/N0 {cfg.link.ebn0_db:g} dB, "
        f"{cfg.link.bits} bits over {cfg.link.uses} channel uses, {cfg.link.taps} taps{', RTN decoders' if cfg.rtn_taps else ''})"
    )
    print(format_table(["method", *steps], [[m, *(f"{report['bler'][m][s]['ser']:.2e}" for s in steps)] for m in methods]))
    print(f"\nwritten: {args.plot}")
    return 0
