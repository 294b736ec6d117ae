"""The conformance cases, generated deterministically from briefly meta-trained runs of every target and family.

From a CAVIA demodulator (ONNX target): two valid bundles (a one-step bundle with its fused ``frame`` graph, and a
two-step one with its ``Loop`` graph) with frames and the outputs the reference runtime computes; then one bundle for
every rejection rule of bundle-format.md §9, §3, §11, §12 and §7.7 and for the attacks of docs/security.md that a
bundle can carry, each changed from a valid one in that respect alone and signed again with the suite's key; frames
that break the pilot contract; and frames of fresh devices for a bundle with the per-frame selection of §6.2 (the
valid bundles carry the guard alone). Then a valid bundle of every other family (power allocator, learned link) and
target (linear predictor, loihi spiking receiver, qiskit Born machine) with the rejections of its target's section.
The suite key is derived from a published seed, so the same code writes the same bytes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from metaedge.deploy import tensors, wire
from metaedge.deploy.bundle import Bundle, manifest_bytes, pack_parts
from metaedge.deploy.signing import key_id
from metaedge.sdk.conformance.suite import KEY_SEED, MARGIN, Case

FRAMES, PILOTS, SYMBOLS = 3, 8, 64
# what a target's expected outputs are computed with: loihi's host reference engine (whose decisions Lava's equal) and
# qiskit's exact form of bundle-format.md §13.4 (statevector probabilities: a sampling backend's answers are a draw)
REFERENCE_ENGINES = {"loihi": {"engine": "reference"}, "qiskit": {"backend": "exact"}}
SELECTION_FRAMES, SELECTION_SYMBOLS = 8, 300  # the selection case's frames (fresh devices of the training conditions)
SELECTION_WINDOWS = 12  # pilot windows of the predictor-selection case's frames (more than the 4 held out)


def suite_key(seed: bytes = KEY_SEED) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(seed).digest())


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


class Source:
    """A valid bundle taken apart: its manifest as a dict and its artifacts, to be changed and packed again."""

    def __init__(self, bundle: Bundle) -> None:
        self.manifest = json.loads(bundle.manifest_raw)
        self.manifest["source"] = {"suite": "metaedge-conformance"}  # no path of the machine that generated it
        self.artifacts = dict(bundle.artifacts)

    def pack(self, change: Callable[[dict, dict], None] | None = None, key: Ed25519PrivateKey | None = None, sign: bool = True) -> bytes:
        """Name the signer, apply ``change(manifest, artifacts)`` (which may change even that), update the artifact
        table and sign with ``key`` (default: the suite's)."""
        manifest, artifacts = copy.deepcopy(self.manifest), dict(self.artifacts)
        key = key or suite_key()
        manifest.pop("signer", None)
        if sign:
            manifest["signer"] = key_id(key.public_key())
        if change:
            change(manifest, artifacts)
        for role, data in artifacts.items():
            if role in manifest.get("artifacts", {}) and isinstance(manifest["artifacts"][role], dict):
                manifest["artifacts"][role].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
        raw = manifest_bytes(manifest)
        return pack_parts(raw, artifacts, key.sign(raw) if sign else b"")


def _trained(work: Path) -> Path:
    """A briefly meta-trained CAVIA demodulator (one thread, fixed seeds: the same θ on every run)."""
    import torch

    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = Trainer(
            work / "run",
            DemodConfig(pilots=PILOTS, val_pilots=32),
            TrainConfig(algo="cavia", iterations=3, meta_devices=10, val_devices=3, val_every=3, inner_lr=1.0, inner_steps=2, seed=0),
        )
        trainer.start(resume=False)
        trainer.run()
    finally:
        torch.set_num_threads(threads)
    return work / "run"


def _frames(packed: bytes, seed: int, pilot_labels: Callable[[np.ndarray], np.ndarray] | None = None, target: str = "onnx") -> list[dict]:
    """Demodulator frames (noise-like samples, the declared pilot sequence or ``pilot_labels`` of it)."""
    from metaedge.deploy.bundle import unpack

    sequence = np.resize(np.asarray(unpack(packed).manifest.task.pilot_sequence), PILOTS).astype(np.int32)
    rng = np.random.default_rng(seed)
    pilots = rng.normal(0, 2, (FRAMES, PILOTS, 2)).astype(np.float32)
    payload = rng.normal(0, 2, (FRAMES, SYMBOLS, 2)).astype(np.float32)
    labels = np.stack([sequence if pilot_labels is None else pilot_labels(sequence)] * FRAMES)
    return _classifier_frames(packed, pilots, labels, payload, target)


def _classifier_frames(packed: bytes, pilots: np.ndarray, labels: np.ndarray, payload: np.ndarray, target: str = "onnx") -> list[dict]:
    """Frames of a classifier and the outputs the reference runtime of ``target`` gives (ONNX Runtime, as the device
    runs it; ``REFERENCE_ENGINES`` for the others)."""
    from metaedge.backends import registry
    from metaedge.backends.base import Frame
    from metaedge.deploy.bundle import unpack

    backend = registry.create(target, options=REFERENCE_ENGINES.get(target))
    backend.load(unpack(packed))
    frames = []
    for p, c, x in zip(pilots.astype(np.float32), labels.astype(np.int32), payload.astype(np.float32)):
        probs = backend.frame(Frame(pilots=p, labels=c.astype(np.int64), payload=x)).outputs
        top, decisions = np.sort(probs, axis=1), probs.argmax(1)
        frames.append(
            {
                "pilots": p,
                "labels": c,
                "payload": x,
                "decisions": decisions.astype(np.int16),
                "confidence": probs[np.arange(len(x)), decisions].astype(np.float32),
                "reliable": (top[:, -1] - top[:, -2] > MARGIN).astype(np.uint8),
            }
        )
    backend.close()
    return frames


def generate(work: Path | None = None) -> tuple[list[Case], bytes]:
    """Every case, in the order a runner plays them, and the suite key's public PEM."""
    from metaedge.sdk.targets import Release, export

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(work or tmp)
        run = _trained(root)
        one = Source(export("onnx", run, root / "one-step", Release(), inner_steps=1))
        two = Source(export("onnx", run, root / "two-step", Release(), inner_steps=2))
        power = Source(export("onnx", _power_run(root), root / "power", Release(security_counter=2)))
        linear = Source(export("linear", _prediction_run(root), root / "linear", Release()))
        link = Source(export("onnx", _link_run(root), root / "link", Release(security_counter=3)))
        spiking = Source(export("loihi", _spiking_run(root), root / "spiking", Release()))
        born = Source(export("qiskit", _born_run(root), root / "born", Release()))
        mcu = Source(export("mcu", run, root / "mcu", Release(), inner_steps=2))
        cases = _cases(one, two) + _predictor_cases(power, linear) + [_link_case(link)] + _spiking_cases(spiking) + _born_cases(born)
        cases += _mcu_cases(mcu, two)
    return cases, public_pem(suite_key())


def _power_run(work: Path) -> Path:
    """A briefly meta-trained power allocator (a predictor on the ONNX target: unlabelled pilots, outputs)."""
    from metaedge.sdk.families.power.config import PowerBench
    from metaedge.sdk.families.power.run import train_power

    train_power(work / "power-run", "fomaml", 10, PowerBench(seed=0, iterations=20))
    return work / "power-run"


def _prediction_run(work: Path) -> Path:
    """A meta-learned linear channel predictor (the 'linear' target: closed form, float64)."""
    from metaedge.sdk.families.prediction.learning import PredictionBench
    from metaedge.sdk.families.prediction.run import train_prediction
    from metaedge.sdk.families.prediction.task import DOPPLER, ChannelConfig

    train_prediction(
        work / "prediction-run",
        PredictionBench(channel=ChannelConfig(doppler_hz=DOPPLER["fast"]), meta_frames=60, test_frames=20, seed=0),
        5,
        "lstd",
        "meta",
    )
    return work / "prediction-run"


def _link_run(work: Path) -> Path:
    """A briefly meta-trained learned link (autoencoder over a fading channel; the device runs its decoder)."""
    from metaedge.sdk.families.link.config import LinkBench
    from metaedge.sdk.families.link.run import train_link

    train_link(work / "link-run", "maml-rx", LinkBench(iterations=100, seed=0), steps=1, val_every=100)
    return work / "link-run"


def _spiking_run(work: Path) -> Path:
    """A briefly FOMAML-trained spiking receiver (the 'loihi' target: θ, the hidden layer and the learning rates)."""
    from metaedge.backends.loihi.network import SnnSpec
    from metaedge.sdk.families.demod.snn.config import SnnTrainConfig
    from metaedge.sdk.families.demod.snn.training import default_task, train_snn

    task = default_task()
    train_snn(work / "spiking-run", task, SnnSpec(classes=task.order), SnnTrainConfig(iterations=4, tasks_per_batch=8, val_devices=10, seed=0))
    return work / "spiking-run"


def _spiking_cases(spiking: Source) -> list[Case]:
    """A spiking receiver for a 'loihi' device, and the loihi section's rejections (bundle-format.md §14.7)."""
    packed = spiking.pack()
    statement = "a spiking receiver adapts its plastic synapses on the pilots by the three-factor rule and decides as the reference"
    valid = Case("valid-spiking-receiver", "bundle-format §14.5", statement, "accept", packed, _frames(packed, 9, target="loihi"), target="loihi")
    rules = [
        ("classes", "snn.classes", spiking.manifest["snn"]["classes"] + 1, "snn.classes other than task.classes"),
        ("grid", "snn.grid", 1, "receptive fields per rail M outside 2…32"),
        ("hidden", "snn.hidden", 0, "hidden neurons H outside 1…1024"),
        ("pilot-phase", "snn.pilot_phase", "yes", "a pilot_phase that is not a boolean"),
        ("threshold", "snn.hidden_vth", 0.0, "a non-positive threshold"),
        ("learning-rate", "snn.learning_rate", -0.1, "a negative learning rate η"),
        ("missing", "snn", ..., "an snn member missing"),
    ]
    return [valid, *_frame_rules("loihi", spiking.manifest["task"])] + [
        Case(f"loihi-section-{name}", "bundle-format §14.7", f"refuse {text}", "refuse-boot", spiking.pack(_set(path, value)), target="loihi")
        for name, path, value, text in rules
    ]


def _mcu_cases(mcu: Source, reference: Source) -> list[Case]:
    """An MLP receiver for an 'mcu' device (bundle-format.md §16) and its image's rejections (§16.5). It is the
    two-step ONNX bundle's receiver, so ONNX Runtime's outputs are the expected ones."""
    packed = mcu.pack()
    statement = "an MLP receiver adapts by its image's SGD steps on the microcontroller and decides as ONNX Runtime"
    valid = Case("valid-mcu-receiver", "bundle-format §16.3", statement, "accept", packed, _frames(reference.pack(), 13), target="mcu")

    def image(edit: Callable[[bytearray], None], rehash: bool = True) -> Callable[[dict, dict], None]:
        def change(manifest: dict, artifacts: dict) -> None:
            raw = bytearray(artifacts["image"])
            edit(raw)
            if rehash:
                raw[-32:] = hashlib.sha256(bytes(raw[:-32])).digest()
            artifacts["image"] = bytes(raw)

        return change

    def theta(manifest: dict, artifacts: dict) -> None:
        loaded = tensors.loads(artifacts["theta"])[0]
        artifacts["theta"] = tensors.dumps({**loaded, "l0.bias": loaded["l0.bias"] + 1})

    other = next(p["name"] for p in mcu.manifest["parameters"] if not p["adapts"])  # adapts another tensor than the image
    only_other = _changes(
        _set("algorithm.adapts", [other]), *(_set(f"parameters.{i}.adapts", p["name"] == other) for i, p in enumerate(mcu.manifest["parameters"]))
    )
    rules = [
        ("hash", "an image whose SHA-256 trailer does not match", image(lambda raw: raw.__setitem__(len(raw) - 1, raw[-1] ^ 1), rehash=False)),
        ("magic", "an image whose magic is not MEMC", image(lambda raw: raw.__setitem__(slice(0, 4), b"XXXX"))),
        ("reserved", "an image with a non-zero reserved header field", image(lambda raw: raw.__setitem__(52, 1))),
        ("theta", "a θ that differs from the image's tensors", theta),
        ("adapts", "algorithm.adapts other than the image's adapted tensors", only_other),
        ("steps", "algorithm.inner_steps other than the image's K", _set("algorithm.inner_steps", 3)),
        ("lr", "algorithm.inner_lr other than the image's step size", _set("algorithm.inner_lr", mcu.manifest["algorithm"]["inner_lr"] / 2)),
    ]
    return [valid, *_frame_rules("mcu", mcu.manifest["task"])] + [
        Case(f"mcu-section-{name}", "bundle-format §16.5", f"refuse {text}", "refuse-upload", mcu.pack(change), target="mcu")
        for name, text, change in rules
    ]


def _born_run(work: Path) -> Path:
    """A briefly meta-trained Born machine (the 'qiskit' target: 4 qubits, one entangling layer)."""
    from metaedge.sdk.families.demod.born.learning import InnerConfig
    from metaedge.sdk.families.demod.born.training import BornTrainConfig, default_task, make_spec, train_born

    task = default_task()
    train_born(
        work / "born-run", task, make_spec(task, 4, 1), InnerConfig(), BornTrainConfig(iterations=4, tasks_per_batch=8, val_devices=16, val_every=4)
    )
    return work / "born-run"


def _born_cases(born: Source) -> list[Case]:
    """A Born-machine receiver for a 'qiskit' device (played on its exact backend), and the qiskit section's
    rejections (bundle-format.md §13.6)."""
    from metaedge.backends.qiskit.circuit import build_circuit, dump_qpy
    from metaedge.backends.qiskit.model import BornSpec

    packed = born.pack()
    statement = "a Born-machine receiver adapts its angles on the pilots (the exact form of §13.4) and decides as the reference"
    valid = Case(
        "valid-born-receiver", "bundle-format §13.3, §13.4", statement, "accept", packed, _frames(packed, 10, target="qiskit"), target="qiskit"
    )
    qubits, layers = born.manifest["born"]["qubits"], born.manifest["born"]["layers"]

    def artifact(role: str, data: bytes) -> Callable[[dict, dict], None]:
        def change(manifest: dict, artifacts: dict) -> None:
            artifacts[role] = data

        return change

    def angles(name: str, value: float) -> Callable[[dict, dict], None]:
        def change(manifest: dict, artifacts: dict) -> None:
            theta, _ = tensors.loads(artifacts["theta"])
            theta[name] = np.full_like(theta[name], value)
            artifacts["theta"] = tensors.dumps(theta)

        return change

    wider = dump_qpy(build_circuit(BornSpec(qubits=qubits + 1, layers=layers)))
    rules = [
        ("missing", _set("born", ...), "a born member missing"),
        ("layers", _set("born.layers", "two"), "a born member of the wrong type"),
        ("shots", _set("algorithm.shots", 0), "shots < 1"),
        ("prior-shots", _set("algorithm.prior_shots", 0), "prior_shots < 1"),
        ("circuit-not-qpy", artifact("circuit", b"QISKIT-not-a-circuit"), "a circuit artifact that is not a QPY circuit"),
        ("circuit-qubits", artifact("circuit", wider), "a circuit whose qubit and parameter counts differ from the born section's"),
        ("theta-not-finite", angles("theta", np.nan), "θ angles that are not finite"),
        ("lr-not-finite", angles("lr", np.inf), "step sizes that are not finite"),
    ]
    return [valid, *_frame_rules("qiskit", born.manifest["task"])] + [
        Case(f"qiskit-section-{name}", "bundle-format §13.6", f"refuse {text}", "refuse-boot", born.pack(change), target="qiskit")
        for name, change, text in rules
    ]


def _link_case(link: Source) -> Case:
    """The learned link's receiver on the ONNX target (played last: it replaces the image before it)."""
    from metaedge.sdk.families.link.export import link_frames

    packed = link.pack()
    pilots, labels, payload, _ = link_frames(link.manifest["task"], FRAMES, 16, 32, seed=6)
    statement = "a learned link's receiver adapts on its pilot messages and decodes as the reference runtime"
    return Case(
        "valid-learned-link", "bundle-format §4 (task link), §6", statement, "accept", packed, _classifier_frames(packed, pilots, labels, payload)
    )


def _predictor_frames(packed: bytes, target: str, pilots: np.ndarray, payload: np.ndarray) -> list[dict]:
    """A predictor's frames (no labels) and the outputs the reference backend of ``target`` gives."""
    from metaedge.backends import registry
    from metaedge.backends.base import Frame
    from metaedge.deploy.bundle import unpack

    backend = registry.create(target)
    backend.load(unpack(packed))
    frames = []
    for p, x in zip(pilots.astype(np.float32), payload.astype(np.float32)):
        outputs = backend.frame(Frame(pilots=p, labels=None, payload=x)).outputs
        frames.append({"pilots": p, "payload": x, "outputs": outputs.astype(np.float32)})
    backend.close()
    return frames


def _predictor_cases(power: Source, linear: Source) -> list[Case]:
    """Predictors: a power allocator on the ONNX target (played last on an ONNX device: it replaces the demodulator),
    and a channel predictor for a 'linear' device."""
    from metaedge.sdk.families.power.run import power_frames
    from metaedge.sdk.families.prediction.run import prediction_frames

    allocator, predictor = power.pack(), linear.pack()
    slots = power_frames(power.manifest["task"], FRAMES, 5, 20, seed=4)
    pilots, history, _ = prediction_frames(linear.manifest["task"], FRAMES, 5, 20, seed=5)
    return [
        Case(
            "valid-power-allocator",
            "bundle-format §4, §6",
            "a predictor (power allocator) adapts on unlabelled pilots and answers outputs as the reference runtime",
            "accept",
            allocator,
            _predictor_frames(allocator, "onnx", *slots),
        ),
        Case(
            "valid-channel-predictor",
            "bundle-format §15",
            "a 'linear' channel predictor fits in closed form and predicts as the reference",
            "accept",
            predictor,
            _predictor_frames(predictor, "linear", pilots, history),
            target="linear",
        ),
        Case(
            "predictor-selection",
            "bundle-format §15.5",
            "choose the learned or the conventional fit per frame by their errors on the last pilot windows",
            "accept",
            predictor,
            _predictor_frames(predictor, "linear", *_shifted_prediction_frames(linear.manifest["task"])),
            target="linear",
        ),
        *_frame_rules("linear", linear.manifest["task"]),
        _linear_refusal(linear),
        *_linear_section_rules(linear),
    ]


def _shifted_prediction_frames(task: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pilots and histories with more windows than the selection holds out, half from the trained (fast) fading and
    half from slow fading, where the conventional fit predicts better: both fits decide some frames."""
    from metaedge.sdk.families.prediction.run import prediction_frames
    from metaedge.sdk.families.prediction.task import DOPPLER

    trained = prediction_frames(task, FRAMES, SELECTION_WINDOWS, 20, seed=6)
    shifted = prediction_frames({**task, "doppler_hz": list(DOPPLER["slow"])}, FRAMES, SELECTION_WINDOWS, 20, seed=6)
    return np.concatenate([trained[0], shifted[0]]), np.concatenate([trained[1], shifted[1]])


def _linear_refusal(linear: Source) -> Case:
    bundle = linear.pack(_set("security_counter", -1))
    return Case(
        "linear-manifest-counter", "bundle-format §9", "refuse a security counter outside [0, 2^32)", "refuse-upload", bundle, target="linear"
    )


def _linear_section_rules(linear: Source) -> list[Case]:
    """The linear target's own rejections (bundle-format.md §15.4): a bundle whose predictor the device cannot fit never
    runs (refused at upload or at its trial boot)."""
    outputs = len(linear.manifest["task"]["features"]) + 2
    rules = [
        ("form", "predictor.form", "cubic", "a predictor form other than naive or lstd"),
        ("lam", "predictor.lam", 0.0, "a ridge λ that is not positive"),
        ("rank", "predictor.rank", 999, "a rank outside [1, S]"),
        ("window", "predictor.window", 0, "a window shorter than one channel"),
        ("outputs", "task.outputs", outputs, "task.outputs other than 2S"),
    ]
    return [
        Case(f"linear-section-{name}", "bundle-format §15.4", f"refuse {text}", "refuse-boot", linear.pack(_set(path, value)), target="linear")
        for name, path, value, text in rules
    ]


def _set(path: str, value) -> Callable[[dict, dict], None]:
    """A change that sets the manifest member at ``path`` (dots; integers index lists); ``...`` deletes it."""

    def change(manifest: dict, artifacts: dict) -> None:
        *parents, last = path.split(".")
        node = manifest
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        key = int(last) if last.isdigit() else last
        if value is ...:
            del node[key]
        else:
            node[key] = value

    return change


def _refuse(name: str, section: str, statement: str, bundle: bytes, expect: str = "refuse-upload") -> Case:
    return Case(name, section, statement, expect, bundle)


def _cases(one: Source, two: Source) -> list[Case]:
    # the valid bundles check §6 itself: the guard alone, so that the learned receiver decides their frames
    guard_only = _set("task.fallback.select", ...)
    valid, later = one.pack(guard_only), two.pack(_changes(_set("release", 1), guard_only))
    accept = "deploys and decides as the reference runtime"
    cases = [Case("valid-one-step", "bundle-format §6, §7.6, §8", f"a valid one-step bundle {accept}", "accept", valid, _frames(valid, 1))]
    cases += _manifest_rules(two) + _artifact_rules(two) + _trust_rules(two) + _policy_rules(two)
    cases.append(
        _refuse("selftest-fails", "bundle-format §8", "a bundle that fails its self-test is never confirmed", two.pack(_selftest_off), "refuse-boot")
    )
    cases.append(Case("valid-two-step", "bundle-format §6, §7.3, §8", f"a valid two-step bundle {accept}", "accept", later, _frames(later, 2)))
    cases.append(_refuse("older-release", "bundle-format §2", "refuse an image older than the confirmed one by (counter, release)", two.pack()))
    broken = _frames(later, 3, lambda sequence: np.roll(sequence, 1))
    statement = "refuse frames whose pilot classes break the declared sequence"
    cases.append(Case("pilot-contract", "device-protocol §3.3", statement, "refuse-frames", later, broken))
    statement = "decide each frame with the receiver the guard and the frame residual select"
    cases.append(Case("frame-selection", "bundle-format §6.2", statement, "accept", *_selection_case(two)))
    cases += _frame_rules("onnx", two.manifest["task"])
    return cases + _protocol_rules() + _auth_rules()


def _selection_case(source: Source) -> tuple[bytes, list[dict]]:
    """A bundle with the per-frame selection and frames of fresh devices on which each receiver decides some: the
    margin sits in the middle of the widest gap between the frames' residual ratios (classical / learned), so no
    frame is near the threshold."""
    from metaedge.backends.base import Frame
    from metaedge.backends.onnx import OnnxBackend
    from metaedge.deploy.bundle import unpack
    from metaedge.sdk.families.demod.task import DemodTasks, config_of_conditions

    release = _set("release", 2)
    bundle = unpack(source.pack(release))
    tasks = DemodTasks(config_of_conditions(bundle.manifest.task.raw, pilots=PILOTS, payload=SELECTION_SYMBOLS), seed=4)
    batch = tasks.frames(tasks.devices("test", SELECTION_FRAMES), PILOTS, SELECTION_SYMBOLS, tasks.rng("test", 1))
    backend = OnnxBackend()
    backend.load(bundle)
    ratios = []
    for p, c, x in zip(batch.x_tr, batch.y_tr, batch.x_va):
        learned, classical = backend.frame(Frame(pilots=p, labels=c, payload=x)).residuals
        ratios.append(classical / learned)
    ratios = np.sort(ratios)
    widest = int(np.argmax(np.diff(ratios)))
    margin = 1.0 - float(np.sqrt(ratios[widest] * ratios[widest + 1]))
    packed = source.pack(_changes(release, _set("task.fallback.select.margin", margin)))
    return packed, _classifier_frames(packed, batch.x_tr, batch.y_tr, batch.x_va)


def _changes(*changes: Callable[[dict, dict], None]) -> Callable[[dict, dict], None]:
    """One change made of several, in order."""

    def change(manifest: dict, artifacts: dict) -> None:
        for each in changes:
            each(manifest, artifacts)

    return change


def _message(header: bytes, attachments: bytes = b"") -> bytes:
    """One framed message with a raw header, valid or not (device-protocol.md §2)."""
    payload = struct.pack("<I", len(header)) + header + attachments
    return struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload))


def _frame_request(pilots: np.ndarray, payload: np.ndarray, labels: np.ndarray | None = None) -> bytes:
    arrays = {"pilots": pilots, "payload": payload, **({"labels": labels} if labels is not None else {})}
    return wire.encode({"op": "frame", "seq": 1}, arrays)


def _auth_rules() -> list[Case]:
    """Management requests without a signature, which a device provisioned with operator keys must refuse and survive
    (device-protocol.md §3.4); a runner plays them only when it drives the device with an operator key."""
    rules = [
        ("reset", "an unsigned reset", {"op": "reset", "seq": 1}),
        ("confirm", "an unsigned image.confirm", {"op": "image.confirm", "seq": 1}),
        ("test", "an unsigned image.test", {"op": "image.test", "seq": 1, "sha256": "0" * 64}),
    ]
    statement = "with operator keys, answer {} with an error and keep running its image"
    unsigned = [
        Case(f"auth-unsigned-{name}", "device-protocol §3.4", statement.format(text), "refuse-unsigned", request=wire.encode(header), target=None)
        for name, text, header in rules
    ]
    # signatures over the device's own nonce: the runner makes these requests itself (bundle-free, request-free)
    forged = [
        Case("auth-unknown-key", "device-protocol §3.4", statement.format("a reset signed by a key it was not given"), "refuse-forged", target=None),
        Case(
            "auth-replay",
            "device-protocol §3.4",
            statement.format("a signed reset sent a second time (its nonce spent)"),
            "refuse-forged",
            target=None,
        ),
    ]
    return unsigned + forged


def _protocol_rules() -> list[Case]:
    """Requests the device must answer with an error and survive (device-protocol.md §2, §3)."""
    corrupt = bytearray(wire.encode({"op": "info", "seq": 1}))
    corrupt[-1] ^= 0xFF
    blob = json.dumps({"op": "frame", "seq": 1, "blobs": [{"name": "pilots", "dtype": "f4", "shape": [1000, 2]}]}).encode()
    rules = [
        ("unknown-operation", "device-protocol §3", "an unknown operation", wire.encode({"op": "teleport", "seq": 1})),
        ("crc-mismatch", "device-protocol §2", "a message whose CRC does not match", bytes(corrupt)),
        ("length-over-limit", "device-protocol §2", "a length field above 8 MiB", struct.pack("<I", (8 << 20) + 1) + bytes(16)),
        ("header-not-object", "device-protocol §2", "a header that is not a JSON object", _message(b"[1, 2]")),
        ("attachment-overrun", "device-protocol §2", "attachments that run past the payload", _message(blob, bytes(8))),
        ("trailing-payload", "device-protocol §2", "bytes after the last attachment", _message(b'{"op":"info","seq":1}', bytes(4))),
        ("nesting", "device-protocol §2", "a header nested 40 deep", _message(b'{"op":"info","x":' + b"[" * 40 + b"]" * 40 + b"}")),
        ("long-integer", "device-protocol §2", "an integer literal of 25 digits", _message(b'{"op":"info","seq":' + b"9" * 25 + b"}")),
        ("nan-literal", "device-protocol §2", "a NaN literal", _message(b'{"op":"info","seq":NaN}')),
    ]
    return [
        Case(f"protocol-{name}", section, f"answer {text} with an error and keep serving", "refuse-request", request=raw, target=None)
        for name, section, text, raw in rules
    ]


def _frame_rules(target: str, task: dict) -> list[Case]:
    """Malformed frames for the image a ``target`` device runs, whose task section is ``task`` (a classifier's pilots
    carry its declared sequence, or every class where it declares none; a predictor's carry no labels): each wrong
    in one respect alone, played right after the valid case."""
    features = len(task["features"])
    good = np.zeros((PILOTS, features), np.float32)
    classes = task.get("classes")
    labels = None if classes is None else np.resize(np.asarray(task["pilot_sequence"] or range(classes), np.int32), PILOTS)
    rules = [
        ("nan", "a frame with NaN samples", _frame_request(np.full_like(good, np.nan), good, labels)),
        ("features", "samples of the wrong feature count", _frame_request(good, np.zeros((4, features + 1), np.float32), labels)),
        ("no-pilots", "a frame without pilots", _frame_request(good[:0], good, None if labels is None else labels[:0])),
    ]
    if labels is not None:
        rules.append(("labels-range", "pilot labels outside [0, M)", _frame_request(good, good, np.full(PILOTS, 999, np.int32))))
    prefix = "protocol" if target == "onnx" else target
    return [
        Case(
            f"{prefix}-frame-{name}",
            "device-protocol §3.3",
            f"answer {text} with an error and keep running its image",
            "refuse-frame",
            request=raw,
            target=target,
        )
        for name, text, raw in rules
    ]


def _manifest_rules(source: Source) -> list[Case]:
    rules = [
        ("format", "format", "other-format", "a manifest whose format is not metaedge-bundle"),
        ("version", "version", 2, "a version the reader does not implement"),
        ("target", "target", "fpga", "an unknown target"),
        ("counter-negative", "security_counter", -1, "a security counter outside [0, 2^32)"),
        ("counter-string", "security_counter", "1", "a security counter that is not an integer"),
        ("release", "release", -5, "a release outside [0, 2^32)"),
        ("artifact-extra-member", "artifacts.theta.extra", 1, "an artifact entry with a member it does not define"),
        ("artifact-path", "artifacts.theta.path", "../theta.safetensors", "an artifact path that is not a plain file name"),
        ("task-classes", "task.classes", 1, "task.classes outside [2, 65536]"),
        ("task-features", "task.features", [], "task.features that is not a list of 1 to 1024 strings"),
        ("pilot-sequence", "task.pilot_sequence", [99], "a pilot sequence with classes outside [0, classes)"),
        ("parameter-shape", "parameters.0.shape", [2, -3], "a parameter shape with a negative dimension"),
        ("parameter-dtype", "parameters.0.dtype", "int8", "a parameter dtype other than float32 or float64"),
        ("algorithm-missing", "algorithm", ..., "no algorithm section"),
        ("inner-steps", "algorithm.inner_steps", -1, "inner_steps that is not a non-negative integer"),
        ("adapts-disagree", "algorithm.adapts", ["not-a-parameter"], "algorithm.adapts that differs from the parameters marked adapts"),
        ("selftest-atol", "selftest.atol", ..., "a self-test without atol"),
        ("expires-format", "expires", "tomorrow", "an expiry that is not YYYY-MM-DDTHH:MM:SSZ"),
        ("graphs-forward", "graphs.forward", ..., "graphs without forward"),
        ("port-role", "graphs.forward.inputs.0.role", "mystery", "a graph port with an unknown role"),
        ("signer-format", "signer", "ABCD", "a signer that is not a 64-hex key id"),
        ("fallback-kind", "task.fallback.kind", "neural", "a classical fallback of an unknown kind"),
        ("select-rule", "task.fallback.select.rule", "entropy", "a per-frame selection with an unknown rule"),
        ("select-margin", "task.fallback.select.margin", 1.5, "a selection margin outside [0, 1)"),
    ]
    return [_refuse(f"manifest-{name}", "bundle-format §9", f"refuse {text}", source.pack(_set(path, value))) for name, path, value, text in rules]


def _artifact_rules(source: Source) -> list[Case]:
    def trailing(manifest: dict, artifacts: dict) -> None:
        artifacts["theta"] = artifacts["theta"] + b"\0\0\0\0"

    def missing_parameter(manifest: dict, artifacts: dict) -> None:
        theta, _ = tensors.loads(artifacts["theta"])
        theta.pop(manifest["parameters"][0]["name"])
        artifacts["theta"] = tensors.dumps(theta)

    def missing_role(manifest: dict, artifacts: dict) -> None:
        del manifest["artifacts"]["forward"], artifacts["forward"]

    packed = source.pack()
    tampered = bytearray(packed)
    tampered[packed.index(source.artifacts["theta"][:64]) + 40] ^= 1  # inside θ's bytes: its SHA-256 no longer matches
    return [
        _refuse("tensor-trailing-bytes", "bundle-format §3", "refuse a tensor file with bytes after its last tensor", source.pack(trailing)),
        _refuse("theta-missing-parameter", "bundle-format §9", "refuse a θ that lacks a listed parameter", source.pack(missing_parameter)),
        _refuse("role-missing", "bundle-format §9", "refuse a bundle without a role its target requires", source.pack(missing_role)),
        _refuse("artifact-hash", "bundle-format §9", "refuse an artifact whose SHA-256 differs from the manifest", bytes(tampered)),
        _refuse("packed-trailing-bytes", "bundle-format §11", "refuse a packed bundle with bytes after its signature", packed + b"\0"),
        _refuse("packed-magic", "bundle-format §11", "refuse a packed bundle with another magic", b"XXBNDL\0\1" + packed[8:]),
    ]


def _trust_rules(source: Source) -> list[Case]:
    packed = source.pack()
    tampered = packed.replace(b'"inner_lr":1.0', b'"inner_lr":9.0', 1)
    assert tampered != packed, "the manifest has no inner_lr of 1.0 to tamper with"
    short_signature = packed[:-68] + (63).to_bytes(4, "little") + packed[-64:-1]
    stranger = suite_key(b"a key no device under test trusts")
    expired, rollback = source.pack(_set("expires", "2001-01-01T00:00:00Z")), source.pack(_set("security_counter", 0))
    return [
        _refuse("unsigned", "bundle-format §12", "refuse an unsigned bundle", source.pack(sign=False)),
        _refuse("unknown-signer", "bundle-format §12", "refuse a bundle whose signer the device does not trust", source.pack(key=stranger)),
        _refuse("manifest-tampered", "bundle-format §12", "refuse a manifest changed after signing", tampered),
        _refuse("signature-length", "bundle-format §12", "refuse a signature that is not 64 bytes", short_signature),
        _refuse("expired", "bundle-format §2", "refuse a bundle whose expiry has passed", expired),
        _refuse("rollback", "bundle-format §2", "refuse a security counter below the confirmed image's", rollback),
    ]


def _policy_rules(source: Source) -> list[Case]:
    from onnx import TensorProto, helper, load_from_string

    def graph_change(edit: Callable) -> Callable[[dict, dict], None]:
        def change(manifest: dict, artifacts: dict) -> None:
            model = load_from_string(artifacts["forward"])
            edit(model)
            artifacts["forward"] = model.SerializeToString()

        return change

    def external(model) -> None:
        stolen = helper.make_tensor("stolen", TensorProto.UINT8, [64], np.zeros(64, np.uint8).tobytes(), raw=True)
        stolen.ClearField("raw_data")
        stolen.data_location = TensorProto.EXTERNAL
        stolen.external_data.add(key="location", value="keys/metaedge.key")
        model.graph.initializer.append(stolen)

    def custom_domain(model) -> None:
        model.graph.node[0].domain = "com.example"
        model.opset_import.append(helper.make_opsetid("com.example", 1))

    def function(model) -> None:
        body = [helper.make_node("Identity", ["a"], ["b"])]
        model.functions.append(helper.make_function("local", "F", ["a"], ["b"], body, [helper.make_opsetid("", 18)]))

    rules = [
        ("external-data", external, "a graph tensor with external data (reading a file)"),
        ("custom-domain", custom_domain, "a non-default operator domain"),
        ("function", function, "model-local functions"),
    ]
    return [_refuse(f"policy-{name}", "bundle-format §7.7", f"refuse {text}", source.pack(graph_change(edit))) for name, edit, text in rules]


def _selftest_off(manifest: dict, artifacts: dict) -> None:
    """Self-test vectors that no correct runtime reproduces (the stored log-probabilities shifted by 1)."""
    vectors, metadata = tensors.loads(artifacts["selftest"])
    vectors["forward.log_probs"] = vectors["forward.log_probs"] + 1.0
    artifacts["selftest"] = tensors.dumps(vectors, metadata)
