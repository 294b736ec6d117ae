"""The bundle manifest as typed sections, parsed and validated once (normative text: docs/bundle-format.md §2–§8).

This module is the only place that knows the manifest's member names, the artifact roles,
and the names and roles of graph inputs and outputs: exporters build manifests from its
constants, readers get a ``Manifest`` whose fields were checked when it was parsed. Target
sections that only one backend reads (``snn``, ``born``, ``predictor``, ``circuit``) stay as
JSON objects (``Manifest.section``) and are validated by that backend's own spec class.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

FORMAT = "metaedge-bundle"
VERSION = 1
MANIFEST_FILE = "manifest.json"
SIGNATURE_FILE = "manifest.sig"  # detached signature over manifest.json
MAX_MANIFEST = 1 << 20  # bytes
MAX_CLASSES = 1 << 16  # task.classes: a one-hot row per pilot must stay small
MAX_FEATURES = 1 << 10  # task.features and task.outputs
EXPIRY_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

# -- artifact roles (§3) ---------------------------------------------------------------------------
THETA, SELFTEST = "theta", "selftest"
FORWARD, ADAPT_STEP, ADAPT_LOOP, FRAME = "forward", "adapt_step", "adapt_loop", "frame"
CIRCUIT = "circuit"
IMAGE = "image"  # the mcu target's receiver image (§17)
REQUIRED_ROLES = {
    "onnx": (THETA, FORWARD, ADAPT_STEP, SELFTEST),
    "qiskit": (THETA, CIRCUIT, SELFTEST),
    "loihi": (THETA, SELFTEST),
    "linear": (THETA, SELFTEST),
    "mcu": (THETA, IMAGE),
}
TARGETS = tuple(REQUIRED_ROLES)
GRAPH_ROLES = (FORWARD, ADAPT_STEP, ADAPT_LOOP, FRAME)  # artifacts that are ONNX graphs
RAM_ROLES = (FORWARD, ADAPT_STEP, CIRCUIT)  # artifacts a device keeps loaded while it serves

# -- graph input and output names (§7) -------------------------------------------------------------
SAMPLES, PILOT_SAMPLES, PILOT_ONEHOT, STEPS = "samples", "pilot_samples", "pilot_onehot", "steps"
LOG_PROBS, OUTPUTS = "log_probs", "outputs"


def adapted_name(parameter: str) -> str:
    """The ``adapt_step`` output that replaces ``parameter``."""
    return f"adapted.{parameter}"


def anchor_name(parameter: str) -> str:
    """The input that carries θ's value of ``parameter`` to a proximal or Gaussian step."""
    return f"anchor.{parameter}"


def noise_name(parameter: str) -> str:
    """The input that carries a Gaussian posterior's weight draws for ``parameter``."""
    return f"noise.{parameter}"


# -- graph input and output roles (§7) -------------------------------------------------------------
ROLE_PARAMETER, ROLE_ANCHOR, ROLE_NOISE, ROLE_STEPS = "parameter", "anchor", "noise", "steps"
ROLE_SAMPLES, ROLE_PILOT_SAMPLES, ROLE_PILOT_ONEHOT = "samples", "pilot_samples", "pilot_labels_onehot"
ROLE_LOG_PROBS, ROLE_OUTPUTS = "log_probabilities", "outputs"
PORT_ROLES = (ROLE_PARAMETER, ROLE_ANCHOR, ROLE_NOISE, ROLE_STEPS, ROLE_SAMPLES, ROLE_PILOT_SAMPLES, ROLE_PILOT_ONEHOT, ROLE_LOG_PROBS, ROLE_OUTPUTS)

PARAMETER_DTYPES = ("float32", "float64")
_ARTIFACT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class BundleError(ValueError):
    """A bundle a reader must reject; the message names the member or place and what is wrong with it."""


@dataclass(frozen=True)
class Artifact:
    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Selection:
    """The per-frame selection of §6.2: the classical receiver decides a frame when the residual of its split of the
    pilots and the first ``samples`` payload samples is below the learned one's by more than ``margin`` (relative)."""

    margin: float
    samples: int


@dataclass(frozen=True)
class Holdout:
    """The per-frame selection of a predictor (§15.5): the conventional predictor is used when, fitted on the pilots'
    windows but the last ``windows``, it predicts their targets with a mean squared error below the learned one's by
    more than ``margin`` (relative)."""

    margin: float
    windows: int


@dataclass(frozen=True)
class Fallback:
    """The classical receiver a bundle carries: for a demodulator (kind ``mmse-ml``, §6.1) an LMMSE channel estimate
    from the pilots, then ML detection on the nominal constellation; for a linear predictor (``conventional``,
    §15.5) the fit toward Θ = 0."""

    kind: str
    noise_var: float = 0.0  # mmse-ml
    channel_var: float = 0.0  # mmse-ml
    constellation: tuple[complex, ...] = ()  # mmse-ml
    select: Selection | Holdout | None = None  # §6.2 (mmse-ml), §15.5 (conventional): choose per frame; None: the guard alone


@dataclass(frozen=True)
class Task:
    """What the receiver works on (§4): a classifier (``classes``) or a predictor (``outputs``)."""

    name: str
    features: tuple[str, ...]
    classes: int | None
    outputs: int | None
    pilot_sequence: tuple[int, ...] | None
    raw: dict
    fallback: Fallback | None = None

    @property
    def predictor(self) -> bool:
        return self.outputs is not None

    @property
    def width(self) -> int:
        """Values per payload sample in a frame's result: class probabilities or outputs."""
        return self.outputs if self.outputs is not None else self.classes


@dataclass(frozen=True)
class Parameter:
    name: str
    shape: tuple[int, ...]
    dtype: str
    adapts: bool

    @property
    def count(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * (8 if self.dtype == "float64" else 4)


@dataclass(frozen=True)
class Algorithm:
    """The adaptation procedure (§6). Members beyond these (a target's budget, noise draws) are in ``raw``."""

    name: str
    inner_steps: int | None
    inner_lr: float | None
    prox: float
    adapts: tuple[str, ...] | None
    loss: str | None
    raw: dict


@dataclass(frozen=True)
class Port:
    """One graph input or output (§7)."""

    name: str
    role: str
    parameter: str | None = None
    stream: str | None = None


@dataclass(frozen=True)
class Graph:
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]

    @property
    def input_names(self) -> list[str]:
        return [p.name for p in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.name for p in self.outputs]


@dataclass(frozen=True)
class Selftest:
    atol: float
    raw: dict


@dataclass(frozen=True)
class Manifest:
    target: str
    security_counter: int
    release: int  # orders images of one security counter; 0 when absent
    signer: str | None  # id of the key that signed the manifest (spec 1.1); None: unsigned, or a 1.0 bundle
    expires: datetime | None
    artifacts: dict[str, Artifact]
    task: Task
    algorithm: Algorithm
    parameters: tuple[Parameter, ...]
    graphs: dict[str, Graph]
    opset: int | None
    selftest: Selftest
    raw: dict

    @property
    def order(self) -> tuple[int, int]:
        """How new this image is: (security counter, release); a device never selects one older than its confirmed."""
        return self.security_counter, self.release

    @property
    def adapted(self) -> list[str]:
        """The adapted parameters, in canonical order."""
        return [p.name for p in self.parameters if p.adapts]

    def section(self, name: str) -> dict:
        """A target section (``snn``, ``born``, ``predictor``, ``circuit``) as a JSON object."""
        value = self.raw.get(name)
        if not isinstance(value, dict):
            raise BundleError(f"manifest has no '{name}' section, which target '{self.target}' needs")
        return value


# -- parsing ---------------------------------------------------------------------------------------
def parse(raw: Any) -> Manifest:
    """Validate a decoded manifest and return its typed form; ``BundleError`` names the first problem."""
    if not isinstance(raw, dict):
        raise BundleError("manifest is not a JSON object")
    if raw.get("format") != FORMAT:
        raise BundleError(f"manifest format is {raw.get('format')!r}, not '{FORMAT}'")
    if raw.get("version") != VERSION:
        raise BundleError(f"bundle format version {raw.get('version')!r} is not supported (this reader: {VERSION})")
    target = raw.get("target")
    if target not in TARGETS:
        raise BundleError(f"target {target!r} is unknown; expected one of {', '.join(TARGETS)}")
    counter = raw.get("security_counter")
    if type(counter) is not int or not 0 <= counter < 2**32:
        raise BundleError("security_counter must be an integer in [0, 2^32)")
    release = raw.get("release", 0)
    if type(release) is not int or not 0 <= release < 2**32:
        raise BundleError("release must be an integer in [0, 2^32)")
    signer = raw.get("signer")
    if signer is not None and not (isinstance(signer, str) and re.fullmatch(r"[0-9a-f]{64}", signer)):
        raise BundleError("signer must be a key id: the SHA-256 of the signing public key, 64 lowercase hex digits")
    artifacts = _artifacts(raw.get("artifacts"), target)
    task = parse_task(raw.get("task"))
    parameters = _parameters(raw.get("parameters"))
    algorithm = _algorithm(raw.get("algorithm"), parameters)
    graphs, opset = _graphs(raw.get("graphs"), target, task)
    return Manifest(
        target=target,
        security_counter=counter,
        release=release,
        signer=signer,
        expires=parse_expiry(raw.get("expires")),
        artifacts=artifacts,
        task=task,
        algorithm=algorithm,
        parameters=parameters,
        graphs=graphs,
        opset=opset,
        selftest=_selftest(raw.get("selftest")),
        raw=raw,
    )


def parse_expiry(value: Any) -> datetime | None:
    """``expires`` as an aware UTC datetime (None when absent)."""
    if value is None:
        return None
    try:
        moment = datetime.strptime(value, EXPIRY_FORMAT) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise BundleError(f"expires {value!r} is not a UTC time of the form 2027-01-31T00:00:00Z")
    return moment.replace(tzinfo=timezone.utc)


def _artifacts(table: Any, target: str) -> dict[str, Artifact]:
    if not isinstance(table, dict) or not table:
        raise BundleError("manifest has no artifact table")
    artifacts, seen = {}, set()
    for role, entry in table.items():
        if not isinstance(entry, dict) or set(entry) != {"path", "size", "sha256"}:
            raise BundleError(f"artifact '{role}': entry must have exactly path, size and sha256")
        name, size, digest = entry["path"], entry["size"], entry["sha256"]
        if not isinstance(name, str) or not _ARTIFACT_NAME.match(name) or name in (MANIFEST_FILE, SIGNATURE_FILE) or name in seen:
            raise BundleError(f"artifact '{role}': path {name!r} is not a plain, unique file name")
        if type(size) is not int or size < 0:
            raise BundleError(f"artifact '{role}': size must be a non-negative integer")
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise BundleError(f"artifact '{role}': sha256 must be 64 lowercase hex digits")
        seen.add(name)
        artifacts[role] = Artifact(name, size, digest)
    missing = [r for r in REQUIRED_ROLES[target] if r not in artifacts]
    if missing:
        raise BundleError(f"target '{target}' needs artifacts {', '.join(missing)}, which the manifest does not list")
    return artifacts


def parse_task(task: Any) -> Task:
    """The task section (§4): what a device sizes and checks its frames by."""
    if not isinstance(task, dict):
        raise BundleError("manifest has no task section")
    outputs, classes = task.get("outputs"), task.get("classes")
    if outputs is not None:
        if type(outputs) is not int or not 1 <= outputs <= MAX_FEATURES:
            raise BundleError(f"task.outputs must be an integer in [1, {MAX_FEATURES}]")
        classes = None
    elif type(classes) is not int or not 2 <= classes <= MAX_CLASSES:
        raise BundleError(f"task.classes must be an integer in [2, {MAX_CLASSES}]")
    features = task.get("features")
    if not isinstance(features, list) or not 1 <= len(features) <= MAX_FEATURES or not all(isinstance(f, str) for f in features):
        raise BundleError(f"task.features must list 1 to {MAX_FEATURES} feature names")
    sequence = task.get("pilot_sequence")
    if sequence is not None:
        if classes is None or not isinstance(sequence, list) or not sequence or not all(type(c) is int and 0 <= c < classes for c in sequence):
            raise BundleError("task.pilot_sequence must be null or a non-empty list of class indices in [0, classes)")
        sequence = tuple(sequence)
    name = task.get("name")
    if not isinstance(name, str):
        raise BundleError("task.name must be a string")
    fallback = _fallback(task, classes, features)
    return Task(name=name, features=tuple(features), classes=classes, outputs=outputs, pilot_sequence=sequence, raw=task, fallback=fallback)


FALLBACKS = {"mmse-ml": "frame-residual", "conventional": "holdout"}  # kind → the rule of its per-frame selection
MAX_SELECT_COUNT = 1 << 20


def _fallback(task: dict, classes: int | None, features: list[str]) -> Fallback | None:
    """``task.fallback`` (§6.1, §15.5), with the constellation an mmse-ml receiver decides on."""
    section = task.get("fallback")
    if section is None:
        return None
    if not isinstance(section, dict) or section.get("kind") not in FALLBACKS:
        raise BundleError(f"task.fallback must be an object whose kind is one of {', '.join(FALLBACKS)}")
    kind = section["kind"]
    if kind == "conventional":
        if classes is not None:
            raise BundleError("task.fallback of kind conventional applies to a predictor (task.outputs)")
        return Fallback(kind, select=_select(section, kind))
    if classes is None or features != ["I", "Q"]:
        raise BundleError("task.fallback applies to a classifier of I/Q samples (features I and Q)")
    variances = [section.get(k) for k in ("noise_var", "channel_var")]
    if not all(type(v) in (int, float) and math.isfinite(v) and v > 0 for v in variances):
        raise BundleError("task.fallback needs noise_var and channel_var, finite numbers > 0")
    try:
        points = task_constellation(task, classes)
    except BundleError:
        raise BundleError("task.fallback needs task.constellation: one [I, Q] pair of finite numbers per class") from None
    return Fallback(kind, float(variances[0]), float(variances[1]), points, _select(section, kind))


def task_constellation(task: dict, classes: int) -> tuple[complex, ...]:
    """``task.constellation`` (§4) as complex points, or a BundleError: it must hold one [I, Q] pair of finite
    numbers per class."""
    points = task.get("constellation")
    if not (isinstance(points, list) and len(points) == classes and all(_point(c) for c in points)):
        raise BundleError("task.constellation must hold one [I, Q] pair of finite numbers per class")
    return tuple(complex(i, q) for i, q in points)


def _select(section: dict, kind: str) -> Selection | Holdout | None:
    """``task.fallback.select`` (§6.2, §15.5), or None where the bundle has none."""
    select, rule = section.get("select"), FALLBACKS[kind]
    if select is None:
        return None
    if not isinstance(select, dict) or select.get("rule") != rule:
        raise BundleError(f"task.fallback.select must be an object whose rule is '{rule}' (for a fallback of kind {kind})")
    count_name = "samples" if rule == "frame-residual" else "windows"
    margin, count = select.get("margin"), select.get(count_name)
    if type(margin) not in (int, float) or not 0 <= margin < 1:
        raise BundleError("task.fallback.select.margin must be a number in [0, 1)")
    if type(count) is not int or not 1 <= count <= MAX_SELECT_COUNT:
        raise BundleError(f"task.fallback.select.{count_name} must be an integer in [1, {MAX_SELECT_COUNT}]")
    return Selection(float(margin), count) if rule == "frame-residual" else Holdout(float(margin), count)


def _point(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(type(v) in (int, float) and math.isfinite(v) for v in value)


def _parameters(entries: Any) -> tuple[Parameter, ...]:
    if not isinstance(entries, list) or not entries:
        raise BundleError("parameters must be a non-empty list")
    parameters, names = [], set()
    for i, p in enumerate(entries):
        where = f"parameters[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            raise BundleError(f"{where} must be an object with a non-empty string 'name'")
        name, shape = p["name"], p.get("shape")
        if name in names:
            raise BundleError(f"{where}: parameter '{name}' is listed twice")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            raise BundleError(f"{where} ('{name}'): shape must be a list of non-negative integers")
        if p.get("dtype") not in PARAMETER_DTYPES:
            raise BundleError(f"{where} ('{name}'): dtype must be one of {', '.join(PARAMETER_DTYPES)}")
        if type(p.get("adapts")) is not bool:
            raise BundleError(f"{where} ('{name}'): adapts must be true or false")
        names.add(name)
        parameters.append(Parameter(name, tuple(shape), p["dtype"], p["adapts"]))
    return tuple(parameters)


def _number(section: dict, key: str, where: str, minimum: float = 0.0) -> float | None:
    value = section.get(key)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value) or value < minimum:
        raise BundleError(f"{where}.{key} must be a finite number ≥ {minimum:g}")
    return float(value)


def _algorithm(section: Any, parameters: tuple[Parameter, ...]) -> Algorithm:
    if not isinstance(section, dict) or not isinstance(section.get("name"), str):
        raise BundleError("manifest needs an algorithm section with a string 'name'")
    steps = section.get("inner_steps")
    if steps is not None and (type(steps) is not int or steps < 0):
        raise BundleError("algorithm.inner_steps must be a non-negative integer")
    adapts = section.get("adapts")
    if adapts is not None:
        if not isinstance(adapts, list) or not all(isinstance(a, str) for a in adapts):
            raise BundleError("algorithm.adapts must list parameter names")
        listed = [p.name for p in parameters if p.adapts]
        if adapts != listed:
            raise BundleError(f"algorithm.adapts {adapts} disagrees with the parameters marked adapts {listed}")
        adapts = tuple(adapts)
    loss = section.get("loss")
    if loss is not None and not isinstance(loss, str):
        raise BundleError("algorithm.loss must be a string")
    return Algorithm(
        name=section["name"],
        inner_steps=steps,
        inner_lr=_number(section, "inner_lr", "algorithm"),
        prox=_number(section, "prox", "algorithm") or 0.0,
        adapts=adapts,
        loss=loss,
        raw=section,
    )


def _graphs(section: Any, target: str, task: Task) -> tuple[dict[str, Graph], int | None]:
    """Every graph's ports (§7); only the ``onnx`` target has graphs."""
    if target != "onnx":
        return {}, None
    if not isinstance(section, dict) or type(section.get("opset")) is not int:
        raise BundleError("target 'onnx' needs a graphs section with an integer opset")
    graphs = {}
    for role in GRAPH_ROLES:
        if role not in section:
            continue
        entry = section[role]
        if not isinstance(entry, dict):
            raise BundleError(f"graphs.{role} must be an object with inputs and outputs")
        graphs[role] = Graph(
            *(tuple(_port(port, f"graphs.{role}.{side}[{i}]") for i, port in enumerate(_list(entry, side, role))) for side in ("inputs", "outputs"))
        )
    for role in (FORWARD, ADAPT_STEP):
        if role not in graphs:
            raise BundleError(f"graphs.{role} is missing")
    output = graphs[FORWARD].outputs
    want = ROLE_OUTPUTS if task.predictor else ROLE_LOG_PROBS
    if len(output) != 1 or output[0].role != want:
        raise BundleError(f"graphs.forward must have one output, of role '{want}'")
    return graphs, section["opset"]


def _list(entry: dict, side: str, role: str) -> list:
    ports = entry.get(side)
    if not isinstance(ports, list):
        raise BundleError(f"graphs.{role}.{side} must be a list")
    return ports


def _port(port: Any, where: str) -> Port:
    if not isinstance(port, dict) or not isinstance(port.get("name"), str) or port.get("role") not in PORT_ROLES:
        raise BundleError(f"{where} must have a string name and a role among {', '.join(PORT_ROLES)}")
    for key in ("parameter", "stream"):
        if port.get(key) is not None and not isinstance(port[key], str):
            raise BundleError(f"{where}.{key} must be a string")
    return Port(port["name"], port["role"], port.get("parameter"), port.get("stream"))


def _selftest(section: Any) -> Selftest:
    if not isinstance(section, dict):
        raise BundleError("manifest has no selftest section")
    atol = _number(section, "atol", "selftest")
    if atol is None:
        raise BundleError("selftest.atol must be a finite number ≥ 0")
    return Selftest(atol=atol, raw=section)
