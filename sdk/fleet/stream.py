"""The host's end of the fleet's telemetry: subscribe, verify each message against its device's key and topic, count
what was dropped and why. A bounded queue sits between the broker's thread and the consumer: when the consumer falls
behind, the newest messages are dropped and counted, never held without bound."""

from __future__ import annotations

import queue
import time
from collections import Counter

from metaedge.deploy import telemetry
from metaedge.firmware_sim.fleet import TOPICS
from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.store import FleetDir

QUEUE = 10_000  # messages waiting for the consumer: at most QUEUE × telemetry.MAX_BYTES bytes
BATCH = 1_000  # reports verified per call of ``reports``, so that a consumer under load still gets to its own work


def device_of(topic: str, kind: str) -> str | None:
    """The device a topic of ``kind`` belongs to (None: not such a topic)."""
    prefix, _, suffix = TOPICS[kind].partition("{}")
    if not topic.startswith(prefix) or not topic.endswith(suffix):
        return None
    return topic[len(prefix) : len(topic) - len(suffix)] or None


class Telemetry:
    """Verified reports from the fleet's devices, as ``user`` (learner or operator)."""

    def __init__(self, fleet: FleetDir, user: str, classes: int) -> None:
        spec, secrets = fleet.spec(), fleet.secrets()
        self.keys = fleet.telemetry_keys()
        self.classes = classes
        self.last_seq: dict[str, int] = {}
        self.dropped: Counter = Counter()
        self.accepted = 0
        self.messages: queue.Queue = queue.Queue(QUEUE)
        self.client = broker.connect(user, secrets["passwords"][user], spec.port)
        self.client.on_message = self._on_message
        self.client.subscribe(TOPICS["telemetry"].format("+"), qos=0)

    def _on_message(self, _client, _userdata, message) -> None:
        if len(message.payload) > telemetry.MAX_BYTES:  # never held: counted where ``decode`` would count it
            self.dropped["oversized"] += 1
            return
        try:
            self.messages.put_nowait((message.topic, bytes(message.payload), time.monotonic()))
        except queue.Full:
            self.dropped["queue-full"] += 1

    def reports(self, timeout: float) -> list[tuple[telemetry.Report, float]]:
        """Up to BATCH reports that arrived (waiting up to ``timeout`` for the first), with their arrival time; bad
        messages are counted in ``dropped``."""
        items = []
        try:
            items.append(self.messages.get(timeout=timeout))
            while len(items) < BATCH:
                items.append(self.messages.get_nowait())
        except queue.Empty:
            pass
        out: list = []
        for item in items:
            self._take(*item, out)
        return out

    def _take(self, topic: str, payload: bytes, arrived: float, out: list) -> None:
        device = device_of(topic, "telemetry")
        try:
            report = telemetry.decode(device or "", payload, self.keys, self.last_seq, self.classes)
        except telemetry.TelemetryError as e:
            self.dropped[e.reason] += 1
            return
        self.accepted += 1
        out.append((report, arrived))

    def counts(self) -> dict:
        return {"accepted": self.accepted, "dropped": dict(self.dropped)}

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
