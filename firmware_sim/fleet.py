"""A device of a fleet: its identity, its frames scored on known check symbols, its telemetry and its management
requests, both through an MQTT broker (docs/device-protocol.md §7).

The device's management operations are the protocol's own (§3), each request and response one MQTT message on the
device's topics ``fleet/<id>/req`` and ``fleet/<id>/resp``, signed by an operator as over TCP. Its telemetry goes to
``fleet/<id>/telemetry``, authenticated with its own key (``deploy.telemetry``), its status (retained) to
``fleet/<id>/status``. The broker's access list lets a device publish on its own topics only; the host's check of the
MAC and the topic holds even where a broker does not.
"""

from __future__ import annotations

import io
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaedge.backends import classical
from metaedge.deploy import telemetry, wire
from metaedge.firmware_sim.access import Policy, Session
from metaedge.firmware_sim.device import Device
from metaedge.firmware_sim.server import respond

CHECK_SEED = 20261  # the known check sequence; part of the field's frame definition
DEVICE_ID = re.compile(r"^dev-[0-9]{4,6}$")
TOPICS = {"telemetry": "fleet/{}/telemetry", "status": "fleet/{}/status", "req": "fleet/{}/req", "resp": "fleet/{}/resp"}
CONFIDENT = 0.99  # a decided payload symbol is reported (marked as decided) when its probability is at least this


def topic(kind: str, device: str) -> str:
    return TOPICS[kind].format(device)


def check_symbols(order: int, count: int) -> np.ndarray:
    """The known reference symbols that end every payload, the same on every device: a fixed permutation of the
    constellation, repeated, so that every class is checked as often as any other (and learned from as often)."""
    return np.resize(np.random.default_rng(CHECK_SEED).permutation(order), count)


@dataclass(frozen=True)
class Identity:
    """What a device is given when it joins the fleet: its name, its telemetry key, its broker password."""

    device: str
    key: bytes
    password: str

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({"device": self.device, "key": self.key.hex(), "password": self.password}))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> "Identity":
        data = json.loads(path.read_text())
        return cls(data["device"], bytes.fromhex(data["key"]), data["password"])


@dataclass
class Reporting:
    """Opt-in telemetry: whether the device reports at all, and for which fraction of its frames it adds its pilots
    (and, with ``decided``, its payload symbols decided with high confidence)."""

    enabled: bool = True
    pilots_fraction: float = 1.0
    decided: bool = False


class Member:
    """One device of the fleet: a ``Device`` (its own flash, slots and receiver) with its identity and reporting."""

    def __init__(self, identity: Identity, device: Device, reporting: Reporting, policy: Policy, seed: int) -> None:
        self.identity, self.device, self.reporting, self.policy = identity, device, reporting, policy
        self.lock = threading.Lock()  # frames and management requests, one at a time
        self.session = Session()
        self.seq = 0
        self.frames = 0
        self.window: list[tuple[int, int]] = []  # (errors, symbols) of recent frames, for the status
        self.rng = np.random.default_rng(seed)

    @property
    def classical(self):
        """The running bundle's classical receiver (bundle-format.md §6.1), None where it carries none."""
        bundle = self.device.bundle
        return None if bundle is None else classical.receiver_of(bundle.manifest.task)

    def version(self) -> dict | None:
        """The running image: its SHA-256, security counter and release (None: nothing runs)."""
        device = self.device
        bundle, slot = device.bundle, device.running.slot
        if bundle is None:
            return None
        header = device.flash.header(slot)
        manifest = bundle.manifest
        return {"sha256": header[1].hex(), "security_counter": manifest.security_counter, "release": manifest.release}

    def frame(self, pilots: np.ndarray, labels: np.ndarray, payload: np.ndarray, reference: np.ndarray) -> bytes | None:
        """Receive one frame; the telemetry message to publish (None when not reporting or nothing runs)."""
        with self.lock:
            version = self.version()
            if version is None:
                return None
            meta, out = self.device.frame({"pilots": pilots, "payload": payload, "labels": labels})
        self.frames += 1
        decisions = out["decisions"]
        errors = int(np.count_nonzero(decisions[len(decisions) - len(reference) :] != reference))
        self.window = [*self.window[-19:], (errors, len(reference))]
        if not self.reporting.enabled:
            return None
        body = {"device": self.identity.device, "seq": self.seq, "frame": self.frames, "version": version}
        body.update(receiver=meta["receiver"], check=[errors, len(reference)])
        if self.classical is not None:  # the reference receiver on the same samples: what the channel alone explains
            scores = self.classical.logits(self.classical.channel(pilots, labels), payload[len(payload) - len(reference) :])
            body["reference_errors"] = int(np.count_nonzero(scores.argmax(-1) != reference))
        if meta["residuals"] is not None:
            body["residuals"] = [meta["residuals"]["learned"], meta["residuals"]["classical"]]
        if self.rng.random() < self.reporting.pilots_fraction:
            # the pilots, then the check symbols: both known, the support and the query of a task
            body["pilots"] = _samples(np.concatenate([pilots, payload[-len(reference) :]]), np.concatenate([labels, reference]))
            if self.reporting.decided:
                sure = np.flatnonzero(out["confidence"][: len(decisions) - len(reference)] >= CONFIDENT)
                if len(sure):
                    sure = sure[: telemetry.MAX_SAMPLES]
                    body["decided"] = _samples(payload[sure], decisions[sure])
        self.seq += 1
        return telemetry.encode(self.identity.key, body)

    def status(self) -> dict:
        """What the device shows the fleet: read under the lock, as a management request may be rebooting it."""
        with self.lock:
            version, mode = self.version(), self.device.running.mode
        errors, symbols = (sum(v) for v in zip(*self.window)) if self.window else (0, 0)
        ser = errors / symbols if symbols else None
        return {"device": self.identity.device, "frames": self.frames, "version": version, "mode": mode, "check_ser": ser}

    def request(self, message: bytes) -> bytes:
        """The response to one management request carried by a broker message."""
        try:
            header, arrays = wire.read_message(io.BytesIO(message))
        except wire.WireError as e:
            self.device.stats.errors += 1
            return wire.encode({"seq": None, "ok": False, "error": str(e)})
        return respond(self.device, header, arrays, self.session, self.lock, self.policy)


def _samples(x: np.ndarray, y: np.ndarray) -> dict:
    count = min(len(x), telemetry.MAX_SAMPLES)
    return {"x": np.round(x[:count].astype(float), 5).tolist(), "y": [int(v) for v in y[:count]]}


class Uplink:
    """A member's own connection to the broker (paho-mqtt), under its identity: answers its management requests and
    publishes its telemetry and status. Management travels at QoS 1 (at least once; a resent request carries the same
    ``seq``); telemetry at QoS 0 (a sample of the frames: a lost report costs nothing)."""

    def __init__(self, member: Member, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.member, name = member, member.identity.device
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(name, member.identity.password)
        self.client.on_connect = lambda client, *_: client.subscribe(topic("req", name), qos=1)
        self.client.on_message = self._on_request
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_request(self, client, _userdata, message) -> None:
        client.publish(topic("resp", self.member.identity.device), self.member.request(message.payload), qos=1)

    def publish(self, report: bytes | None) -> None:
        if report is not None:
            self.client.publish(topic("telemetry", self.member.identity.device), report, qos=0)

    def publish_status(self) -> None:
        status = json.dumps(self.member.status()).encode()
        self.client.publish(topic("status", self.member.identity.device), status, qos=1, retain=True)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
