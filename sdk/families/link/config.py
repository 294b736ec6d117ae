"""The learned link's configuration (``LinkBench``: training and its benchmark) and the options of ``metaedge train
link`` and ``metaedge bench link``, declared once: the command line, the Python API and the runs share these
defaults. Torch-free, so that flags are built without loading a model."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.sdk.errors import UserError
from metaedge.sdk.families.link.task import LinkConfig
from metaedge.sdk.options import command, count_list, nested, option, out_option, plot_option, positive_int, quick_option, seed_option, str_list

METHODS = ("maml", "maml-rx", "metasgd", "metasgd-rx", "fomaml", "joint", "scratch")
TRAINABLE = tuple(a + suffix for a in ("maml", "metasgd", "fomaml", "joint") for suffix in ("-rx", ""))
RTN_TAPS = 3  # the published radio-transformer network estimates a 3-tap inverse filter


@dataclass(frozen=True)
class LinkBench:
    link: LinkConfig = nested(LinkConfig)
    hidden: tuple[int, ...] = option((16,), "hidden widths of encoder and decoder")
    rtn_taps: int = option(
        0, f"taps of the inverse filter a radio-transformer network at the decoder's input estimates (0: none; {RTN_TAPS} as published)"
    )
    iterations: int = option(20_000, "outer steps", parse=positive_int)
    meta_channels: int = option(100, "meta-training channels K", parse=positive_int)
    tasks_per_batch: int = option(20, "channels per outer step", parse=positive_int)
    inner_lr: float = option(0.1, "adaptation step size α, in meta-training and at test")
    outer_lr: float = option(0.01, "Adam step size")
    test_channels: int = option(100, "new channels tested on (the published figure tests 20; more narrow the interval)", parse=positive_int)
    test_messages: int = option(10_000, "messages per channel and grid point", flag=False)
    steps: tuple[int, ...] = option((0, 1, 2, 5, 10, 100, 1000), "adaptation-step grid", flag="inner-steps", parse=count_list)
    seed: int = seed_option("channels, initialisation and messages")

    def __post_init__(self) -> None:
        for flag, value in (("--inner-lr", self.inner_lr), ("--outer-lr", self.outer_lr)):
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{flag} {value} must be a positive number")
        if any(h < 1 for h in self.hidden):
            raise UserError(f"--hidden {','.join(map(str, self.hidden))} must list positive layer widths")
        if self.rtn_taps < 0:
            raise UserError(f"--rtn-taps {self.rtn_taps} must be 0 (no radio-transformer network) or more")
        object.__setattr__(self, "steps", tuple(sorted(set(self.steps))))


@dataclass(frozen=True)
class LinkTraining:
    """learned encoder/decoder over frequency-selective fading (monograph §5.3)

    Meta-train an encoder/decoder pair (k bits over n complex channel uses, L-tap Rayleigh block fading) so that
    a new channel is learned in a few steps. Methods ending in -rx adapt only the decoder (on pilots) and export
    as a receiver bundle whose task section carries the encoder's codebook; the others adapt both ends through
    the channel simulator."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge train link --out runs/link                       # MAML, decoder with RTN adapts: deployable (~6 min)
  metaedge train link --rtn-taps 0 --algo metasgd-rx --out runs/link-sgd
  metaedge train link --algo maml --out runs/link-full     # both ends adapt (simulator only; not exportable)
  metaedge export runs/link --out bundles/link && metaedge inspect bundles/link
"""

    out: Path = out_option()
    algo: str = option("maml-rx", "the method; -rx: only the decoder adapts (deployable)", choices=TRAINABLE)
    inner_steps: int = option(1, "adaptation steps on the device and in validation", parse=positive_int)
    val_every: int = option(1000, "validate every N iterations", parse=positive_int)
    setup: LinkBench = nested(LinkBench)


@dataclass(frozen=True)
class LinkFigure:
    """learned encoder/decoder over fading channels: BLER vs adaptation steps (§5.3)

    Meta-train encoder/decoder pairs (k bits over n complex channel uses, L-tap Rayleigh block fading) with
    MAML, MAML adapting only the decoder (the deployable receiver), first-order MAML, joint training and random
    initialisation; report BLER on new channels against the number of adaptation steps (monograph Figure 5.7)."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench link --json > link.json            # also writes link.png
  metaedge bench link --algos maml,joint --inner-steps 0,1,10,100,1000,10000
  metaedge bench link --ebn0-db 10 --plot link-10db.png
  metaedge bench link --rtn-taps 3 --plot link-rtn.png  # decoders with a radio-transformer network
  metaedge bench link --quick                        # seconds: the machinery, not the figures
"""

    algos: tuple[str, ...] = option(METHODS, "methods", parse=str_list)
    setup: LinkBench = nested(LinkBench)
    quick: bool = quick_option()
    plot: Path = plot_option("link.png", "BLER vs steps")


TRAIN = command(
    "link", LinkTraining, "metaedge.sdk.families.link.run", skip=("setup.steps", "setup.test_channels"), defaults={"setup.rtn_taps": RTN_TAPS}
)

BENCH = command("link", LinkFigure, "metaedge.sdk.families.link.bench")
