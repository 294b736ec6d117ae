"""The options of ``metaedge train prediction`` and ``metaedge bench prediction`` (the predictor's own configuration
is ``learning.PredictionBench``), declared once and torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.backends.linear.predictor import FORMS, SCHEMES
from metaedge.backends.selection import HOLDOUT
from metaedge.sdk.families.prediction.learning import PredictionBench
from metaedge.sdk.families.prediction.task import DOPPLER
from metaedge.sdk.options import command, margin, nested, option, out_option, plot_option, positive_int, quick_option, str_list

REGIMES = tuple(DOPPLER)


@dataclass(frozen=True)
class PredictionTraining:
    """multi-antenna channel predictor, meta-learned in closed form (monograph §5.4)

    Meta-learn the bias of a linear channel predictor that each frame fits by ridge regression on its past
    channels (iMAML in closed form, eq. 2.11-2.12), naive or with the long-short-term decomposition. Seconds.
    Export it with --target linear."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge train prediction --out runs/pred                  # meta-learned LSTD predictor, fast fading
  metaedge train prediction --form naive --scheme joint --out runs/pred-joint
  metaedge export runs/pred --target linear --out bundles/pred
"""

    out: Path = out_option()
    form: str = option("lstd", "the predictor: lstd (long-short-term decomposition) or naive", choices=FORMS)
    scheme: str = option("meta", "the bias the per-frame fit is pulled toward", choices=SCHEMES)
    samples: int = option(5, "training windows N_tr per frame", parse=positive_int)
    doppler: str = option("fast", "fading: fast (20-200 Hz) or slow (1-10 Hz)", choices=REGIMES)
    setup: PredictionBench = nested(PredictionBench)


@dataclass(frozen=True)
class PredictionFigure:
    """multi-antenna channel prediction: NMSE vs training samples (§5.4)

    Linear predictors of a multi-antenna frequency-selective channel (N_R = 2, N_T = 4, W = 2; window 5, lag 3)
    fitted per frame by ridge regression toward a bias that is 0 (conventional), jointly learned, or meta-
    learned in closed form (iMAML, eq. 2.12); naive and with the long-short-term decomposition. Channels: a
    clustered multipath model whose geometry and Doppler change from frame to frame."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench prediction --json > prediction.json     # slow and fast fading; also writes prediction.png
  metaedge bench prediction --doppler fast --lam 0.01 --rank aic
  metaedge bench prediction --doppler slow --test-doppler fast      # meta-trained on slow fading, deployed on fast
  metaedge bench prediction --quick                       # a second: the machinery, not the figures
"""

    doppler: tuple[str, ...] = option(REGIMES, "regimes: slow (1-10 Hz), fast (20-200 Hz)", parse=str_list)
    test_doppler: str | None = option(
        None,
        "test frames from this regime instead of the meta-training one (a shift: how a deployed predictor fares, and "
        "whether its hold-out selection falls back to the conventional fit)",
        choices=REGIMES,
    )
    slot: float = option(1e-3, "slot duration in seconds")
    holdout_windows: int = option(HOLDOUT.windows, "selecting rows: pilot windows held out", parse=positive_int)
    holdout_margin: float = option(HOLDOUT.margin, "selecting rows: the margin", parse=margin)
    setup: PredictionBench = nested(PredictionBench)
    quick: bool = quick_option()
    plot: Path = plot_option("prediction.png", "NMSE vs N_tr")


TRAIN = command(
    "prediction", PredictionTraining, "metaedge.sdk.families.prediction.run", skip=("setup.sample_grid", "setup.test_frames", "setup.test_split")
)

BENCH = command("prediction", PredictionFigure, "metaedge.sdk.families.prediction.bench")
