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
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from metaedge.backends import classical
from metaedge.deploy import telemetry, wire
from metaedge.firmware_sim.access import Policy, Session
from metaedge.firmware_sim.device import Device
from metaedge.firmware_sim.server import respond

TOPICS = {"telemetry": "fleet/{}/telemetry", "status": "fleet/{}/status", "req": "fleet/{}/req", "resp": "fleet/{}/resp"}
CONFIDENT = 0.99  # a decided payload symbol is reported (marked as decided) when its probability is at least this
STATUS_FRAMES = 20  # the frames a status's check-symbol SER covers


def topic(kind: str, device: str) -> str:
    return TOPICS[kind].format(device)


def check_symbols(order: int, count: int, sequence: list[int] | None) -> np.ndarray:
    """The known reference symbols that end every payload: the bundle's pilot sequence (a permutation of the
    constellation), or 0 … M−1 where it has none, repeated to ``count`` — every class checked, and learned from, as
    often as any other (device-protocol.md §7.1)."""
    return np.resize(np.asarray(sequence if sequence is not None else np.arange(order), np.int64), count)


@dataclass(frozen=True)
class Identity:
    """What a device is given when it joins the fleet: its name, its telemetry key, its broker password."""

    device: str
    key: bytes
    password: str

    def save(self, path: Path) -> None:
        """Written readable by its owner alone from the start (a secret: the key and the password)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps({"device": self.device, "key": self.key.hex(), "password": self.password}))

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
    """One device of the fleet: a ``Device`` (its own flash, slots and receiver) with its identity and reporting;
    ``check``: the known check symbols that end every payload."""

    def __init__(self, identity: Identity, device: Device, reporting: Reporting, policy: Policy, check: int, seed: int) -> None:
        self.identity, self.device, self.reporting, self.policy, self.check = identity, device, reporting, policy, check
        self.lock = threading.Lock()  # frames and management requests, one at a time
        self.session = Session()
        self.seq = time.time_ns() // 1000  # above every report of an earlier run of this device (§7.1)
        self.frames = 0
        self.window: list[tuple[int, int]] = []  # (errors, symbols) of recent frames, for the status
        self.rng = np.random.default_rng(seed)

    def version(self) -> dict | None:
        """The running image: its SHA-256, security counter and release (None: nothing runs). Under ``lock``."""
        device = self.device
        bundle, slot = device.bundle, device.running.slot
        if bundle is None:
            return None
        header = device.flash.header(slot)
        manifest = bundle.manifest
        return {"sha256": header[1].hex(), "security_counter": manifest.security_counter, "release": manifest.release}

    def frame(self, pilots: np.ndarray, labels: np.ndarray, payload: np.ndarray) -> bytes | None:
        """Receive one frame; the telemetry message to publish (None when not reporting or nothing runs)."""
        with self.lock:  # a management request may reboot the device: what ran this frame is read with it
            version, bundle = self.version(), self.device.bundle
            if version is None:
                return None
            meta, out = self.device.frame({"pilots": pilots, "payload": payload, "labels": labels})
        task = bundle.manifest.task
        reference = check_symbols(task.classes, self.check, task.pilot_sequence)
        tail = slice(len(payload) - len(reference), len(payload))
        self.frames += 1
        decisions = out["decisions"]
        errors = int(np.count_nonzero(decisions[tail] != reference))
        self.window = [*self.window[1 - STATUS_FRAMES :], (errors, len(reference))]
        if not self.reporting.enabled:
            return None
        body = {"device": self.identity.device, "seq": self.seq, "frame": self.frames, "version": version}
        body.update(receiver=meta["receiver"], check=[errors, len(reference)])
        receiver = classical.receiver_of(task)
        if receiver is not None:  # the reference receiver on the same samples: what the channel alone explains
            scores = receiver.logits(receiver.channel(pilots, labels), payload[tail])
            body["reference_errors"] = int(np.count_nonzero(scores.argmax(-1) != reference))
        if meta["residuals"] is not None:
            body["residuals"] = [meta["residuals"]["learned"], meta["residuals"]["classical"]]
        if len(pilots) < telemetry.MAX_SAMPLES and self.rng.random() < self.reporting.pilots_fraction:
            body.update(known_samples(pilots, labels, payload[tail], reference))
            if self.reporting.decided:
                sure = np.flatnonzero(out["confidence"][: tail.start] >= CONFIDENT)[: telemetry.MAX_SAMPLES]
                if len(sure):
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
        stream = io.BytesIO(message)
        try:
            header, arrays = wire.read_message(stream)
            if stream.read(1):
                raise wire.WireError("a broker message carries exactly one request; this one holds more bytes after it")
        except wire.WireError as e:
            self.device.stats.errors += 1
            return wire.encode({"seq": None, "ok": False, "error": str(e)})
        return respond(self.device, header, arrays, self.session, self.lock, self.policy)


def known_samples(pilots: np.ndarray, labels: np.ndarray, checked: np.ndarray, reference: np.ndarray) -> dict:
    """The report's known samples: the pilots, then as many check symbols as fit (the support and the query of a
    task), with ``support`` saying where the pilots end."""
    room = telemetry.MAX_SAMPLES - len(pilots)
    return {"support": len(pilots), "pilots": _samples(np.concatenate([pilots, checked[:room]]), np.concatenate([labels, reference[:room]]))}


def _samples(x: np.ndarray, y: np.ndarray) -> dict:
    count = min(len(x), telemetry.MAX_SAMPLES)
    return {"x": np.round(x[:count].astype(float), 5).tolist(), "y": [int(v) for v in y[:count]]}


class Uplink:
    """A member's own connection to the broker (paho-mqtt), under its identity: answers its management requests and
    publishes its telemetry and status. Management travels at QoS 1 (at least once: the operator matches responses to
    requests by ``seq``); telemetry at QoS 0 (a sample of the frames: a lost report costs nothing)."""

    def __init__(self, member: Member, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.member, name = member, member.identity.device
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        self.client.username_pw_set(name, member.identity.password)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_request
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client, _userdata, _flags, reason, _properties) -> None:
        """(Re)subscribe to the device's requests on every accepted connection (the session is clean)."""
        if not reason.is_failure:
            client.subscribe(topic("req", self.member.identity.device), qos=1)

    def _on_request(self, client, _userdata, message) -> None:
        client.publish(topic("resp", self.member.identity.device), self.member.request(message.payload), qos=1)

    def publish(self, report: bytes | None) -> None:
        if report is not None:
            self.client.publish(topic("telemetry", self.member.identity.device), report, qos=0)

    def publish_status(self) -> None:
        status = json.dumps(self.member.status()).encode()
        self.client.publish(topic("status", self.member.identity.device), status, qos=1, retain=True)

    def close(self) -> None:
        """Clear the retained status (a stopped device shows none), then disconnect."""
        self.client.publish(topic("status", self.member.identity.device), b"", qos=1, retain=True).wait_for_publish(2.0)
        self.client.disconnect()
        self.client.loop_stop()
