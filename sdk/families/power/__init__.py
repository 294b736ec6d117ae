"""Power control in dynamic networks with random-edge graph neural networks (monograph §5.5)."""

from metaedge.sdk.families import Family

FAMILY = Family(
    "power",
    "REGNN power allocation for dynamic networks (monograph §5.5)",
    ("regnn",),
    __name__,
    export="run",
    uses={"regnn": "export it with 'metaedge export RUN --out DIR', evaluate it with 'metaedge bench power'"},
)
