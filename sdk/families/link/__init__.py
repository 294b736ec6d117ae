"""A learned encoder/decoder over frequency-selective fading (monograph §5.3); the decoder adapts on a device."""

from metaedge.sdk.families import Family

FAMILY = Family(
    "link",
    "learned encoder/decoder over frequency-selective fading (monograph §5.3)",
    ("autoencoder",),
    __name__,
    uses={"autoencoder": "export it with 'metaedge export RUN --out DIR', evaluate it with 'metaedge bench link'"},
)
