"""Few-pilot demodulation with I/Q imbalance (monograph §5.2), the reference task: the MLP receivers of every
meta-learning algorithm, and the Born-machine (``born``) and spiking (``snn``) receivers of the qiskit and loihi targets."""

from metaedge.sdk.families import Family

FAMILY = Family(
    "demod",
    "few-pilot demodulation with I/Q imbalance (monograph §5.2)",
    ("born", "snn"),
    __name__,
    commands=("config", "snn.config", "born.config"),
    uses={
        "born": "export it with 'metaedge export RUN --target qiskit', evaluate it with 'metaedge bench qiskit'",
        "snn": "export it with 'metaedge export RUN --target loihi', evaluate it with 'metaedge bench loihi'",
    },
    ensemble=True,
)
