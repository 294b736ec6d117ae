"""Device profiles: what a simulated device offers a receiver (docs/device-protocol.md §5)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from metaedge.deploy.manifest import RAM_ROLES, BundleError, Manifest, Task


@dataclass(frozen=True)
class Profile:
    name: str
    slot_size: int  # bytes of flash per image slot (header included)
    ram: int  # bytes for the receiver's working set: θ, the adapted copy, graphs, one frame
    max_pilots: int  # pilots per frame
    max_symbols: int  # payload symbols per frame
    threads: int = 1  # intra-op threads of the runtime

    def payload_limit(self, task: Task) -> int:
        """Payload samples per frame: ``max_symbols`` symbols, or for a predictor (whose samples are whole channel
        vectors, and whose outputs are as large) as many as pilots."""
        return self.max_pilots if task.predictor else self.max_symbols

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES = {
    p.name: p
    for p in (
        Profile("edge-small", slot_size=128 << 10, ram=2 << 20, max_pilots=256, max_symbols=16_384),
        Profile("edge-tiny", slot_size=64 << 10, ram=128 << 10, max_pilots=32, max_symbols=1_024),
    )
}
DEFAULT = "edge-small"


def required_ram(manifest: Manifest, profile: Profile) -> int:
    """Working set of a bundle on this profile: θ twice (θ and the adapted φ), graphs or circuit, one full frame, and a
    Gaussian posterior's weight draws (float32, both streams)."""
    parameters = sum(p.nbytes for p in manifest.parameters)
    drawn = _draw_bytes(manifest.algorithm.raw.get("noise"), {p.name: p.count for p in manifest.parameters})
    graphs = sum(a.size for role, a in manifest.artifacts.items() if role in RAM_ROLES)
    task = manifest.task
    payload = profile.payload_limit(task)
    features = len(task.features)
    frame = 4 * (features * profile.max_pilots + features * payload + task.width * payload)
    return 2 * parameters + graphs + frame + drawn


def _draw_bytes(noise: object, sizes: dict[str, int]) -> int:
    if not isinstance(noise, dict):
        return 0
    try:
        draws = [noise[stream]["draws"] for stream in ("adapt", "predict")]
        weights = sum(sizes[n] for n in noise["parameters"])
    except (KeyError, TypeError):
        raise BundleError("algorithm.noise must name 'parameters' and give 'draws' for 'adapt' and 'predict'") from None
    if not all(type(d) is int and d >= 0 for d in draws):
        raise BundleError("algorithm.noise draws must be non-negative integers")
    return 4 * sum(draws) * weights
