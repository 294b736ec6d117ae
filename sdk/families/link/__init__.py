"""A learned encoder/decoder over frequency-selective fading (monograph §5.3); the decoder adapts on a device."""

from metaedge.sdk.families import Family

FAMILY = Family(
    name="link",
    summary="learned encoder/decoder over frequency-selective fading (monograph §5.3)",
    model_kinds=("autoencoder",),
    commands=("metaedge.sdk.families.link.config",),
    train_command="metaedge train link",
    device="metaedge.sdk.families.link.device",
    export="metaedge.sdk.families.link.export",
    uses={"autoencoder": "export it with 'metaedge export RUN --out DIR', evaluate it with 'metaedge bench link'"},
)
