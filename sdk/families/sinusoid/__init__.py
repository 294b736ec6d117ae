"""Sinusoid regression (monograph §2, Fig. 2.3): the benchmark of the algorithms' few-shot and few-task shapes."""

from metaedge.sdk.families import Family

FAMILY = Family(
    name="sinusoid",
    summary="sinusoid regression, the algorithms' benchmark (monograph Fig. 2.3)",
    model_kinds=(),
    commands=("metaedge.sdk.families.sinusoid.config",),
    train_command="metaedge bench sinusoid",
    no_export="it is a benchmark task with no device",
)
