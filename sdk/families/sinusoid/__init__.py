"""Sinusoid regression (monograph §2, Fig. 2.3): the benchmark of the algorithms' few-shot and few-task shapes."""

from metaedge.sdk.families import Family

FAMILY = Family(
    "sinusoid",
    "sinusoid regression, the algorithms' benchmark (monograph Fig. 2.3)",
    (),
    __name__,
    device=None,
    export=None,
    no_export="it is a benchmark task with no device",
    train_command="metaedge bench sinusoid",
)
