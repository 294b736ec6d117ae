"""Multi-antenna channel prediction with linear predictors, meta-learned in closed form (monograph §5.4)."""

from metaedge.sdk.families import Family

FAMILY = Family(
    name="prediction",
    summary="channel prediction with meta-learned linear predictors (monograph §5.4)",
    model_kinds=("linear-predictor",),
    commands=("metaedge.sdk.families.prediction.config",),
    train_command="metaedge train prediction",
    device="metaedge.sdk.families.prediction.device",
    no_export="its predictor is solved in closed form; export it with --target linear",
    uses={"linear-predictor": "export it with 'metaedge export RUN --target linear', evaluate it with 'metaedge bench prediction'"},
)
