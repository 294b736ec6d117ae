"""``metaedge algorithms``: which meta-learning algorithms exist, what each is, and which export."""

from __future__ import annotations

import argparse
import json

from metaedge.sdk.cli.parsing import add_command


def register(sub) -> None:
    p = add_command(
        sub,
        "algorithms",
        help="list the meta-learning algorithms (--json for scripts)",
        description="The algorithms `metaedge train demod --algo NAME` accepts, with their monograph "
        "equations, training recipe and whether `metaedge export` supports them yet.",
        examples="examples:\n  metaedge algorithms\n  metaedge algorithms --json | jq '.[].name'",
    )
    p.add_argument("--json", action="store_true", help="print as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from metaedge.sdk.families.demod.recipes import recipe
    from metaedge.sdk.meta import ALGORITHMS

    rows = [
        {
            "name": a.name,
            "summary": a.summary,
            "inner_lr": own["inner_lr"],
            "inner_steps": own["inner_steps"],
            "adapts": "context" if a.context else own.get("adapt", "all"),
            "inner_data": own.get("inner_data", "support"),
        }
        for a, own in ((a, recipe(a.name)) for a in ALGORITHMS.values())
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        recipe_text = (
            f"α={r['inner_lr']:g}, {r['inner_steps']} step{'s' if r['inner_steps'] != 1 else ''}"
            + (f", {r['adapts']}" if r["adapts"] != "all" else "")
            + (f", {r['inner_data']}" if r["inner_data"] != "support" else "")
        )
        print(f"{r['name']:<10} {recipe_text:<25} {r['summary']}")
    return 0
