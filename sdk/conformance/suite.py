"""The conformance suite on disk: what a case is, and how the suite is written and read (numpy and the standard library).

Layout of a suite directory:

    index.json                  {"suite", "spec", "key", "cases": [case, ...]}
    keys/conformance.pub        the public key every signed case is signed with (a published test key: trust it
                                only on a device under test)
    bundles/<id>.bin            each case's packed bundle (bundle-format.md §11)
    requests/<id>.bin           for protocol cases: the raw bytes of one request (device-protocol.md §2)
    frames/<id>.safetensors     for cases with frames: pilots.<k>, labels.<k> (classifiers), payload.<k> and the
                                expected decisions.<k>, confidence.<k> and reliable.<k> (symbols whose top two
                                probabilities differ by more than ``MARGIN``: their decisions must match), or a
                                predictor's expected outputs.<k>

A case: ``id``, ``section`` (the spec section it checks), ``statement`` (what the spec requires), ``expect`` (one of
``EXPECTATIONS``), ``target`` (the device target it is for; null: every device), ``bundle``, ``frames`` (or null)
and ``atol`` (tolerance of confidences, or of a predictor's outputs). Cases run in index order; a runner skips the
cases of other targets than its device's.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaedge.deploy import tensors

SUITE = "metaedge-conformance"
SPEC = "1.3"
KEY_FILE = "keys/conformance.pub"
MARGIN = 1e-3
ATOL = 1e-4
# accept: uploads, trial-boots and confirms, then its frames decide as expected; refuse-upload: the upload is
# refused; refuse-boot: the image never runs (refused at upload or test, or its trial boot fails and the device
# reverts); refuse-frames: its bundle is the running one (the accept case before it deployed it), and every one of
# its frames is refused; refuse-request: the raw request gets an error response (or, where the framing is lost, the
# connection is closed) and the device keeps serving its image
EXPECTATIONS = ("accept", "refuse-upload", "refuse-boot", "refuse-frames", "refuse-request", "refuse-frame", "refuse-unsigned", "refuse-forged")
KEY_SEED = b"metaedge conformance suite: a published test key, never to be trusted outside a device under test"


@dataclass
class Case:
    id: str
    section: str
    statement: str
    expect: str
    bundle: bytes | None = None
    frames: list[dict[str, np.ndarray]] | None = None  # pilots, labels, payload and the expected outputs
    atol: float = ATOL
    request: bytes | None = None
    target: str | None = "onnx"  # the device target it is for; None: every device

    def entry(self) -> dict:
        return {
            "id": self.id,
            "section": self.section,
            "statement": self.statement,
            "expect": self.expect,
            "target": self.target,
            "bundle": f"bundles/{self.id}.bin" if self.bundle is not None else None,
            "bundle_sha256": hashlib.sha256(self.bundle).hexdigest() if self.bundle is not None else None,
            "request": f"requests/{self.id}.bin" if self.request is not None else None,
            "frames": f"frames/{self.id}.safetensors" if self.frames else None,
            "atol": self.atol,
        }


def write(cases: list[Case], public_pem: bytes, out: Path) -> Path:
    """Write a suite; byte for byte the same for the same cases (sorted JSON, frames in order)."""
    for sub in ("bundles", "frames", "keys", "requests"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    (out / KEY_FILE).write_bytes(public_pem)
    for case in cases:
        if case.bundle is not None:
            (out / f"bundles/{case.id}.bin").write_bytes(case.bundle)
        if case.request is not None:
            (out / f"requests/{case.id}.bin").write_bytes(case.request)
        if case.frames:
            arrays = {f"{name}.{k}": value for k, frame in enumerate(case.frames) for name, value in frame.items()}
            (out / f"frames/{case.id}.safetensors").write_bytes(tensors.dumps(arrays))
    index = {"suite": SUITE, "spec": SPEC, "key": KEY_FILE, "cases": [case.entry() for case in cases]}
    path = out / "index.json"
    path.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")
    return path


class SuiteError(ValueError):
    """A suite directory that cannot be read; the message says what to do."""


def read_index(suite: Path) -> dict:
    try:
        index = json.loads((suite / "index.json").read_text())
    except (OSError, ValueError) as e:
        raise SuiteError(
            f"{suite} holds no readable conformance index ({e}); create one with 'metaedge conformance generate --out {suite}'"
        ) from None
    if index.get("suite") != SUITE or not isinstance(index.get("cases"), list):
        raise SuiteError(f"{suite / 'index.json'} is not a MetaEdge conformance index")
    return index


def load_frames(suite: Path, entry: dict) -> list[dict[str, np.ndarray]]:
    """A case's frames, each with its inputs and expected outputs."""
    arrays, _ = tensors.load(suite / entry["frames"])
    frames: dict[int, dict[str, np.ndarray]] = {}
    for key, value in arrays.items():
        name, k = key.rsplit(".", 1)
        frames.setdefault(int(k), {})[name] = value
    return [frames[k] for k in sorted(frames)]


def statement_table(index: dict) -> str:
    """The spec's table of normative statements and the cases that check them (markdown), from a suite's index."""
    rows = ["| section | statement | case | target | expectation |", "|---|---|---|---|---|"]
    rows += [f"| {c['section']} | {c['statement']} | `{c['id']}` | {c['target'] or 'any'} | {c['expect']} |" for c in index["cases"]]
    return "\n".join(rows) + "\n"
