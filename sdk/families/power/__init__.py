"""Power control in dynamic networks with random-edge graph neural networks (monograph §5.5)."""

from metaedge.sdk.families import Family

FAMILY = Family(
    name="power",
    summary="REGNN power allocation for dynamic networks (monograph §5.5)",
    model_kinds=("regnn",),
    commands=("metaedge.sdk.families.power.config",),
    train_command="metaedge train power",
    device="metaedge.sdk.families.power.device",
    export="metaedge.sdk.families.power.run",
    uses={"regnn": "export it with 'metaedge export RUN --out DIR', evaluate it with 'metaedge bench power'"},
)
