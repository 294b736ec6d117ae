"""The options of the cross-family benchmarks (``metaedge bench meta-train|device|powercut|fuzz|soak``), declared
once and torch-free: the command line generates their flags, the Python API builds them directly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from metaedge.sdk.fleet.config import FleetBench
from metaedge.sdk.options import command, count, int_list, option, positive_int, seed_option, str_list


def bundle_option(what: str = "an exported bundle (metaedge export)") -> Any:
    return option(help=what)


@dataclass(frozen=True)
class MetaTrainBench:
    """batched core vs per-task loop: tasks/s and meta-gradient agreement

    Times one meta-gradient of the batched core (eager and torch.compile'd) against the per-task loop of the
    incumbent libraries on the same tasks, and checks that both give the same meta-gradient (within 1e-5)."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench meta-train
  metaedge bench meta-train --json > bench.json
  metaedge bench meta-train --algos fomaml --tasks 32 --repeats 100 --no-compile
  metaedge bench meta-train --algos fomaml --tasks 32,256,1024,4096 --device cuda --json
  metaedge bench meta-train --algos fomaml --tasks 1024 --no-compile --distributed 2 --json
"""

    algos: tuple[str, ...] = option(("fomaml", "maml"), "algorithms, or 'all'", parse=str_list)
    memory_steps: tuple[int, ...] = option((), "also measure the peak memory of maml, fomaml and imaml at these inner step counts", parse=int_list)
    tasks: tuple[int, ...] = option((5, 32), "tasks per batch", parse=int_list)
    repeats: int = option(30, "timed repeats per configuration", parse=positive_int)
    no_compile: bool = option(False, "skip the torch.compile'd variant (saves ~30 s per configuration)")
    device: str = option("cpu", "where the meta-gradients run: cpu, cuda or cuda:N")
    distributed: int = option(0, "also time the first algorithm's sharded meta-gradient on 1 … N torchrun processes (gloo)", parse=count)


@dataclass(frozen=True)
class DeviceBench:
    """device-side cost of a frame: ONNX Runtime vs eager torch, protocol round trip

    Times one frame (reset, K adaptation steps on the pilots, inference on the payload) on one core with the
    ONNX backend (ONNX Loop, IO binding, step loop) and with eager torch, alternating per repeat; then deploys
    the bundle to a real device process and times frames through the protocol and reports its peak memory."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench device --bundle bundles/cavia --json
  metaedge bench device --bundle bundles/cavia --inner-steps 5
"""

    bundle: Path = bundle_option()
    pilots: int = option(8, "pilots per frame", parse=positive_int)
    symbols: int = option(1000, "payload symbols per frame", parse=positive_int)
    inner_steps: int | None = option(None, "adaptation steps (default: the bundle's)", parse=positive_int)
    repeats: int = option(300, "timed repeats", parse=positive_int)
    frames: int = option(200, "frames through the protocol", parse=positive_int)


@dataclass(frozen=True)
class PowercutBench:
    """cut power at every flash write of an update and a revert; count failures

    Runs a full update (upload, test, trial boot, confirm) and a revert on a simulated device and cuts power at
    every flash write, before it and torn halfway (trailer writes also torn at their magic and flag bytes);
    after each cut the device reboots and must run a verified image that decodes a frame exactly as that image
    does. Then it records the writes and fsyncs of each scenario and boots crash states that keep every synced
    write and a random subset of the unsynced sectors (ALICE/CrashMonkey style); the counter floor must never
    drop below what was durable."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench powercut --bundle runs/demo/bundle --json
  metaedge bench powercut --bundle runs/demo/bundle --crash-states 0   # cuts only
"""

    bundle: Path = bundle_option("the image to update from (a second one is derived from it)")
    crash_states: int = option(1000, "crash states to boot, over both scenarios (0: none)", parse=count)


@dataclass(frozen=True)
class FuzzBench:
    """mutated inputs against every reader of untrusted bytes; crashes and hangs

    Feeds seeded mutations of a valid packed bundle, its manifest, a safetensors file and a protocol message to
    their readers; each must accept or refuse with its own typed error. Reports crashes (any other exception)
    and hangs (> 1 s)."""

    EXAMPLES: ClassVar[str] = "\nexamples:\n  metaedge bench fuzz --bundle runs/demo/bundle --count 100000 --json\n"

    bundle: Path = bundle_option("a valid bundle: the seed of the mutations")
    count: int = option(100_000, "mutated inputs in all", parse=positive_int)
    seed: int = seed_option("the mutations")


@dataclass(frozen=True)
class SoakBench:
    """many frames against one device process: throughput, latency, memory, fds (--attack: under attack)

    Streams frames to one device process and reports throughput, round-trip percentiles, memory growth and file
    descriptors. With --attack the device runs a signed bundle whose graph hangs on a trigger input, an attacker
    holds 200 idle and 100 half-sent 8 MiB connections for the whole run and sends one trigger frame halfway,
    and an authenticated operator's frames are timed (target: p99 under 50 ms, device and receiver under 512 MiB
    resident)."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench soak --bundle runs/demo/bundle --frames 100000 --json
  metaedge bench soak --bundle runs/demo/bundle --frames 20000 --attack --json
"""

    bundle: Path = bundle_option()
    frames: int = option(100_000, "frames in all", parse=positive_int)
    pilots: int = option(8, "pilots per frame", parse=positive_int)
    symbols: int = option(100, "payload symbols per frame", parse=positive_int)
    attack: bool = option(False, "under attack (see the description)")


@dataclass(frozen=True)
class McuBench:
    """the mcu target on an emulated Cortex-M4F: parity with ONNX, SER, instructions, RAM and flash, fuzz

    Exports a trained MLP run for the onnx and the mcu targets, runs the firmware under QEMU (-icount: instructions
    counted), and compares: the firmware's log-probabilities on the self-test vectors with ONNX Runtime's; decisions
    on the evaluation devices' frames with the ONNX receiver's, and the SER with the host's evaluation of the run on the
    same frames; instructions per frame (adaptation and decisions apart); peak RAM and flash from the firmware and its
    linker map. Then malformed messages over the serial line: each must be answered, none may hang the firmware or
    change its image."""

    EXAMPLES: ClassVar[str] = """
examples:
  metaedge bench mcu --json > mcu.json                  # the demo's Meta-SGD receiver (make demo first)
  metaedge bench mcu --run runs/demo/cavia --devices 100 --fuzz 1000
"""

    run: Path = option(Path("runs/demo/metasgd"), "a trained MLP run (metaedge train demod)")
    devices: int = option(200, "evaluation devices, one frame each", parse=positive_int)
    pilots: int = option(8, "pilots per frame", parse=positive_int)
    symbols: int = option(1000, "payload symbols per frame", parse=positive_int)
    fuzz: int = option(10_000, "malformed messages over the serial line (0: none)", parse=count)
    seed: int = seed_option("the fuzz mutations")


BENCH = (
    command("meta-train", MetaTrainBench, "metaedge.sdk.bench.meta_train"),
    command("device", DeviceBench, "metaedge.sdk.bench.device"),
    command("powercut", PowercutBench, "metaedge.sdk.bench.powercut"),
    command("fuzz", FuzzBench, "metaedge.sdk.bench.fuzz"),
    command("soak", SoakBench, "metaedge.sdk.bench.attack_soak"),
    command("mcu", McuBench, "metaedge.sdk.bench.mcu"),
    command("fleet", FleetBench, "metaedge.sdk.fleet.bench", skip=("online.evaluate_every", "online.holdout", "online.margin")),
)
