"""The fleet commands, declared once: ``metaedge fleet up|learn|rollout|status`` (their options are the flags).
Torch-free."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from metaedge.sdk.fleet.scenario import SCENARIOS
from metaedge.sdk.options import command, count, fraction, nested, option, output_dir, plot_option, positive, positive_int, seconds, seed_option

EXAMPLES = """
examples:
  metaedge fleet up --run runs/demo/metasgd --devices 100 --dir runs/fleet --scenario iq-milder &
  metaedge fleet status --dir runs/fleet --watch 2
  metaedge fleet learn --dir runs/fleet --releases 1 --rollout --json
  metaedge fleet rollout runs/fleet/releases/000002/bundle --dir runs/fleet --canary 0.1
"""


@dataclass(frozen=True)
class OnlineOptions:
    """How ``fleet learn`` meta-learns online (``online.OnlineLearner``)."""

    buffer: int = option(64, "replay buffer: tasks of at most this many recent devices", parse=positive_int)
    frames_per_device: int = option(8, "replay buffer: at most this many recent tasks (frames) per device", parse=positive_int)
    batch: int = option(32, "tasks per outer step, and new tasks between two rounds of steps", parse=positive_int)
    steps: int = option(8, "outer steps per round", parse=positive_int)
    outer_lr: float = option(1e-3, "Adam step size of the online outer loop", parse=positive)
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
    decided: bool = option(False, "reports also carry payload symbols decided with probability 0.99 or more, marked as decisions")
    frames: int = option(0, "frames per device, then stop (0: until stopped)", parse=count)
    period: float = option(0.0, "seconds between a device's frames at least (0: as fast as they run)", parse=seconds)
    seed: int = seed_option("the devices, their channels and frames")
    fresh: bool = option(False, "remove the fleet directory and provision a new fleet")


@dataclass(frozen=True, kw_only=True)
class RolloutStage:
    canary: float = option(0.1, "fraction of the reporting devices that trial-boot a release first", parse=fraction)
    window: int = option(30, "frames per device in each window of the canary test (before, after)", parse=positive_int)
    tolerance: float = option(0.005, "the canaries' SER may rise by at most this over the others' (the 95-percent bound)", parse=fraction)
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


@dataclass(frozen=True, kw_only=True)
class FleetBench:
    """online meta-learning from a fleet's frames: SER vs frames used, vs channel correlation, under a field shift

    Feeds the learner of 'fleet learn' the reports of a simulated fleet in process and scores θ on fresh devices (8
    pilots): from an untrained θ against the number of frames used, next to the conventional per-frame receiver (the
    shape of Fig. 7.1 of Chen et al. 2023); the same budget from a tenth of the devices against the channels'
    correlation ρ (Fig. 7.2); and from the offline θ in a shifted field, the learned, selecting and classical
    receivers over frames."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench fleet --json > docs/benchmarks/fleet.json      # the demo's Meta-SGD run (make demo first)
  metaedge bench fleet --devices 20 --frames 10 --test-devices 100
  metaedge bench fleet --system --devices 100 --json > docs/benchmarks/fleet-system.json
"""

    run: Path = option(Path("runs/demo/metasgd"), "a demodulator run: its algorithm, inner loop and offline θ")
    devices: int = option(100, "devices in the simulated fleet", parse=positive_int)
    frames: int = option(200, "frames per device used for online meta-learning", parse=positive_int)
    pilots: int = option(8, "pilots per frame", parse=positive_int)
    rhos: tuple[float, ...] = option((0.0, 0.5, 0.9, 0.99, 1.0), "channel correlations ρ", parse=lambda t: tuple(fraction(v) for v in t.split(",")))
    shift: str = option("iq-milder", "the shifted field", choices=SCENARIOS)
    test_devices: int = option(1000, "fresh devices each θ is scored on", parse=positive_int)
    online: OnlineOptions = nested(OnlineOptions)
    seed: int = seed_option()
    plot: Path = plot_option("docs/results/fleet.png", "the three panels")
    system: bool = option(False, "instead: run --devices devices on the broker and measure throughput, release latency, the drill, memory")
    listen: float = option(20.0, "--system: seconds of telemetry counted at the learner", parse=seconds)
    window: int = option(100, "--system: frames per device in each window of the canary test", parse=positive_int)
    dir: Path | None = option(None, "--system: the fleet directory to create (default: a temporary one)", parse=output_dir)


FLEET = (
    command("up", UpOptions, "metaedge.sdk.fleet.up"),
    command("learn", LearnOptions, "metaedge.sdk.fleet.learn"),
    command("rollout", RolloutOptions, "metaedge.sdk.fleet.rollout"),
    command("status", StatusOptions, "metaedge.sdk.fleet.status"),
    command("drill", DrillOptions, "metaedge.sdk.fleet.rollout:drill"),
)
