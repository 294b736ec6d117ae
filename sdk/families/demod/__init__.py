"""Few-pilot demodulation with I/Q imbalance (monograph §5.2), the reference task: the MLP receivers of every
meta-learning algorithm, and the Born-machine (``born``) and spiking (``snn``) receivers of the qiskit and loihi targets."""

from metaedge.sdk.families import Family

FAMILY = Family(
    name="demod",
    summary="few-pilot demodulation with I/Q imbalance (monograph §5.2)",
    model_kinds=("born", "snn"),
    commands=("metaedge.sdk.families.demod.config", "metaedge.sdk.families.demod.snn.config", "metaedge.sdk.families.demod.born.config"),
    train_command="metaedge train demod",
    device="metaedge.sdk.families.demod.device",
    export="metaedge.sdk.families.demod.export",
    uses={
        "born": "export it with 'metaedge export RUN --target qiskit', evaluate it with 'metaedge bench qiskit'",
        "snn": "export it with 'metaedge export RUN --target loihi', evaluate it with 'metaedge bench loihi'",
    },
    ensemble=True,
)
