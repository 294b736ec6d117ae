"""The fleet commands, declared once: ``metaedge fleet up|learn|rollout|status`` (their options are the flags).
Torch-free."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.sdk.fleet.scenario import SCENARIOS
from metaedge.sdk.options import command, count, nested, option, output_dir, positive_int, seed_option

EXAMPLES = """
examples:
  metaedge fleet up --run runs/demo/metasgd --devices 100 --dir runs/fleet --scenario iq-milder &
  metaedge fleet status --dir runs/fleet --watch 2
  metaedge fleet learn --dir runs/fleet --releases 1 --rollout --json
  metaedge fleet rollout runs/fleet/releases/000002/bundle --dir runs/fleet --canary 0.1
"""


def fraction(text: str) -> float:
    """A number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a fraction; give a number in [0, 1], e.g. 0.1")
    return value


def seconds(text: str) -> float:
    """A duration in seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value >= 0.0:
        raise argparse.ArgumentTypeError(f"'{text}' is not a duration; give seconds, 0 or more, e.g. 0.5")
    return value


@dataclass(frozen=True)
class OnlineOptions:
    """How ``fleet learn`` meta-learns online (``online.OnlineLearner``)."""

    buffer: int = option(64, "replay buffer: tasks of at most this many recent devices", parse=positive_int)
    frames_per_device: int = option(8, "replay buffer: at most this many recent tasks (frames) per device", parse=positive_int)
    batch: int = option(8, "tasks per outer step, and new tasks between two rounds of steps", parse=positive_int)
    steps: int = option(1, "outer steps per round", parse=positive_int)
    outer_lr: float = option(1e-3, "Adam step size of the online outer loop")
    evaluate_every: int = option(200, "score the candidate θ against the running one after this many new tasks (M)", parse=positive_int)
    holdout: float = option(0.2, "fraction of the devices whose telemetry is held back to score candidates", parse=fraction)
    margin: float = option(
        0.003, "a candidate is released when its held-back SER is lower by more than this, its paired 95-percent interval below 0", parse=fraction
    )


@dataclass(frozen=True, kw_only=True)
class FleetOptions:
    EXAMPLES: ClassVar[str] = EXAMPLES

    dir: Path = option(Path("runs/fleet"), "the fleet directory (keys, identities, devices' flash, releases, rollout log)", parse=output_dir)


@dataclass(frozen=True, kw_only=True)
class UpOptions(FleetOptions):
    """start a fleet of simulated devices reporting through an MQTT broker

    Provisions the fleet directory on first start (signing keys, device identities and telemetry keys, broker
    passwords and access list, release 1 exported from --run and installed on every device), then starts the Mosquitto
    broker on loopback and every device's frame loop: each frame the device adapts on its pilots, decides its payload,
    scores itself on the payload's known check symbols and reports (opt-in, signed with its own key). Runs until
    --frames frames or Ctrl-C; later starts reuse the directory (--fresh provisions anew)."""

    run: Path | None = option(None, "a demodulator run to provision the fleet with (metaedge train demod)")
    devices: int = option(100, "devices in the fleet", parse=positive_int)
    scenario: str = option("trained", "the field's conditions: as trained, or a shift", choices=SCENARIOS)
    rho: float = option(0.9, "frame-to-frame correlation of each device's Rayleigh channel (AR(1)); 1: fixed channels", parse=fraction)
    pilots: int = option(8, "pilots per frame", parse=positive_int)
    payload: int = option(256, "payload symbols per frame, the check symbols included", parse=positive_int)
    check: int = option(32, "known check symbols at the end of each payload", parse=positive_int)
    reporting: float = option(1.0, "fraction of frames whose pilots and check symbols a device reports", parse=fraction)
    opt_out: float = option(0.0, "fraction of the devices that send no telemetry", parse=fraction)
    frames: int = option(0, "frames per device, then stop (0: until stopped)", parse=count)
    period: float = option(0.0, "seconds between a device's frames at least (0: as fast as they run)", parse=seconds)
    seed: int = seed_option("the devices, their channels and frames")
    fresh: bool = option(False, "remove the fleet directory and provision a new fleet")


@dataclass(frozen=True, kw_only=True)
class RolloutStage:
    canary: float = option(0.1, "fraction of the reporting devices that trial-boot a release first", parse=fraction)
    window: int = option(30, "frames per device in each window of the canary test (before, after)", parse=positive_int)
    tolerance: float = option(0.02, "the canaries' SER may rise by at most this over the others' (the 95-percent bound)", parse=fraction)
    timeout: float = option(120.0, "seconds to wait for each window's telemetry", parse=seconds)


@dataclass(frozen=True, kw_only=True)
class LearnOptions(FleetOptions, RolloutStage):
    """meta-learn θ online from the fleet's telemetry; release what beats the running θ

    Starts from the latest release's θ; keeps a replay buffer of the most recent devices' frames as tasks (support: the
    pilots, query: the check symbols) and takes outer steps of the run's own algorithm on it (follow the meta-leader).
    Every --evaluate-every tasks it scores the candidate against the running θ on held-back devices' frames, paired over
    devices; a candidate better by the margin with its interval below zero becomes the next release (signed, security
    counter + 1) — rolled out at once with --rollout."""

    online: OnlineOptions = nested(OnlineOptions)
    releases: int = option(0, "stop after this many releases (0: no limit)", parse=count)
    tasks: int = option(0, "stop after this many training tasks (0: no limit)", parse=count)
    duration: float = option(0.0, "stop after this many seconds (0: no limit)", parse=seconds)
    rollout: bool = option(False, "roll every release out through the canary stage (see 'metaedge fleet rollout')")


@dataclass(frozen=True, kw_only=True)
class RolloutOptions(FleetOptions, RolloutStage):
    """roll a release out: canaries on trial first, confirmed for all or reverted

    Uploads the bundle to a canary fraction of the reporting devices and trial-boots it there; compares the canaries'
    change in check-symbol SER with the other devices' over windows before and after (difference in differences,
    Welch's 95 % interval: confirmed only when its upper end is within --tolerance); otherwise resets the canaries
    (their trial reverts) and logs why, else confirms them and installs and confirms the release on every device.
    Every decision goes to the fleet's rollout.jsonl."""

    bundle: Path = option(help="a bundle signed with the fleet's release key (releases/NNNNNN/bundle)", positional=True, metavar="BUNDLE")


@dataclass(frozen=True, kw_only=True)
class StatusOptions(FleetOptions):
    """the fleet now: devices per release and boot mode, their SER, the releases and rollouts

    Reads every device's last status from the broker (retained messages) and the fleet directory's releases and
    rollout log. With --watch, redraws every N seconds until Ctrl-C."""

    watch: float = option(0.0, "redraw every N seconds (0: once)", parse=seconds)


@dataclass(frozen=True, kw_only=True)
class DrillOptions(FleetOptions, RolloutStage):
    """fire drill: push a deliberately bad release; the canary stage must stop it

    Exports the latest release's run with θ of an untrained network as the next release, signed like any other, and
    rolls it out; exits non-zero unless the canaries reverted it and no other device ever held it."""


FLEET = (
    command("up", UpOptions, "metaedge.sdk.fleet.up"),
    command("learn", LearnOptions, "metaedge.sdk.fleet.learn"),
    command("rollout", RolloutOptions, "metaedge.sdk.fleet.rollout"),
    command("status", StatusOptions, "metaedge.sdk.fleet.status"),
    command("drill", DrillOptions, "metaedge.sdk.fleet.rollout:drill"),
)
