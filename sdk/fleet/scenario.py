"""The field a simulated fleet lives in: each device's transmitter impairments, its time-varying channel and its frames.

A scenario is the trained task distribution, optionally shifted (``SHIFTS`` of the safe-adaptation benchmark: milder
I/Q imbalance, another SNR, …), with each device's flat channel an AR(1) Rayleigh process over frames,
h[t+1] = ρ·h[t] + √(1 − ρ²)·w[t], w ~ CN(0, σh²) (Jakes-free block fading, as in the monograph's Fig. 7.2): ρ = 1 keeps
a device's channel fixed, ρ = 0 draws a new one every frame. A frame holds the known pilots, then a payload whose last
``check`` symbols are a known reference sequence (``firmware_sim.fleet.check_symbols``) the device scores itself on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaedge.deploy.telemetry import MAX_SAMPLES
from metaedge.firmware_sim.fleet import check_symbols
from metaedge.firmware_sim.profile import DEFAULT, PROFILES
from metaedge.sdk.errors import UserError
from metaedge.sdk.families.demod.shift import SHIFTS
from metaedge.sdk.families.demod.task import DemodConfig, DemodTasks, Devices, pilot_symbols

SCENARIOS = tuple(SHIFTS)


@dataclass(frozen=True)
class Field:
    """What the devices of a fleet see: ``shift`` (a name of ``SCENARIOS``) applied to the trained task, the channels'
    frame-to-frame correlation ``rho``, and each frame's pilots, payload and check symbols."""

    shift: str = "trained"
    rho: float = 0.9
    pilots: int = 8
    payload: int = 256
    check: int = 32

    def __post_init__(self) -> None:
        if self.shift not in SHIFTS:
            raise UserError(f"unknown scenario '{self.shift}'; choose one of {', '.join(SCENARIOS)}")
        if not 0.0 <= self.rho <= 1.0:
            raise UserError(f"channel correlation rho {self.rho} must lie in [0, 1]")
        profile = PROFILES[DEFAULT]
        if not 1 <= self.check <= self.payload:
            raise UserError(f"check symbols {self.check} must lie in [1, payload {self.payload}]")
        if not 1 <= self.pilots < MAX_SAMPLES:
            raise UserError(f"pilots {self.pilots} must lie in [1, {MAX_SAMPLES - 1}]: a report carries them with at least one check symbol")
        if self.payload > profile.max_symbols:
            raise UserError(f"payload {self.payload} exceeds the {profile.max_symbols} symbols a device of profile {profile.name} takes")

    def config(self, trained: DemodConfig) -> DemodConfig:
        return trained.replace(**SHIFTS[self.shift][1])


class Fleet:
    """The field of ``count`` devices (seeded): ``frames()`` advances every device's channel by one frame and returns
    the received samples, vectorised over devices."""

    def __init__(self, trained: DemodConfig, field: Field, count: int, seed: int) -> None:
        self.field, self.config = field, field.config(trained)
        self.tasks = DemodTasks(self.config.replace(channel="rayleigh"), seed=seed)
        self.devices = self.tasks.devices("test", count)
        self.rng = self.tasks.rng("test", 11)
        self.frame_index = 0
        sequence = pilot_symbols(self.config.order).tolist() if self.config.pilot_sequence == "fixed" else None
        self.reference = check_symbols(self.config.order, field.check, sequence)  # as the devices' bundles state it
        self.pilot_labels = pilot_symbols(self.config.order, field.pilots)

    def _advance(self) -> None:
        if self.frame_index > 0:
            rho, n = self.field.rho, len(self.devices)
            w = np.sqrt(self.config.channel_var / 2.0) * (self.rng.standard_normal(n) + 1j * self.rng.standard_normal(n))
            h = rho * self.devices.h + np.sqrt(1.0 - rho**2) * w
            self.devices = Devices(eps=self.devices.eps, delta=self.devices.delta, h=h)
        self.frame_index += 1

    def frames(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(pilots [D, P, 2], payload [D, S, 2], payload symbols [D, S]) of every device's next frame."""
        self._advance()
        devices, f = self.devices, self.field
        count = len(devices)
        labels = self.rng.integers(0, self.config.order, size=(count, f.pilots + f.payload))
        labels[:, : f.pilots] = self.pilot_labels
        labels[:, f.pilots + f.payload - f.check :] = self.reference
        x = self.tasks.transmit(devices, labels, self.rng)
        return x[:, : f.pilots], x[:, f.pilots :], labels[:, f.pilots :]
