"""Multi-antenna channel prediction with linear predictors, meta-learned in closed form (monograph §5.4)."""

from metaedge.sdk.families import Family

FAMILY = Family(
    "prediction",
    "channel prediction with meta-learned linear predictors (monograph §5.4)",
    ("linear-predictor",),
    __name__,
    export=None,
    no_export="its predictor is solved in closed form; export it with --target linear",
    uses={"linear-predictor": "export it with 'metaedge export RUN --target linear', evaluate it with 'metaedge bench prediction'"},
)
