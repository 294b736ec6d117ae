"""Frames through a device, as ``metaedge run`` sends them: connect, send one frame per new simulated device, time
it, score it. Each task family makes its own frames and scores (``TaskFamily.stream``); this module holds what they
share, and ``stream`` picks the family from the task the device runs."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

from metaedge.backends.registry import FRAME_LIMITS_S
from metaedge.sdk.errors import UserError
from metaedge.sdk.stats import percentiles, summarise


def stream(url: str, frames: int, pilots: int, symbols: int, seed: int, operator_key: Path | None = None) -> dict:
    """Frames of new devices (meta-test split) for the running receiver's task, through the protocol, scored."""
    from metaedge.sdk import families

    with connect(url, operator_key) as client:
        info, _ = call(client, "info")
        if info["task"] is None:
            raise UserError(f"no image is running on {url}: deploy a bundle first")
        name = info["task"]["name"]
        return {"task": name, **families.get(name).stream(client, url, info["task"], frames, pilots, symbols, seed)}


def deploy(url: str, image: bytes, confirm: bool, progress=None, operator_key: Path | None = None) -> dict:
    """``DeviceClient.deploy`` of a packed bundle, its refusals as one line."""
    with connect(url, operator_key) as client, refusals("the deployment"):
        return client.deploy(image, confirm, progress=progress)


def latency_text(report: dict) -> str:
    """The device's time per frame and the protocol's round trip, as ``metaedge run`` prints them."""
    lat = report["device_us"]
    return (
        f"device time per frame: median {lat['p50']:.0f} µs, p90 {lat['p90']:.0f} µs, p99 {lat['p99']:.0f} µs; "
        f"round trip median {report['round_trip_us']['p50']:.0f} µs"
    )


def timed_frames(client, frames) -> tuple[list[tuple[dict, dict]], dict, dict]:
    """Each frame's (telemetry, outputs) from the device, with percentiles of device time and round trip (µs)."""
    results, device_us, round_trip = [], [], []
    for arrays in frames:
        start = time.perf_counter()
        telemetry, out = call(client, "frame", arrays)
        round_trip.append((time.perf_counter() - start) * 1e6)
        device_us.append(telemetry["adapt_us"] + telemetry["infer_us"] + telemetry.get("select_us", 0.0))
        results.append((telemetry, out))
    return results, percentiles(device_us), percentiles(round_trip)


def decided(results: list[tuple[dict, dict]]) -> dict:
    """How many frames the bundle's classical receiver decided (bundle-format.md §6.2, §15.5), and in how many the
    adaptation diverged, from the frames' telemetry."""
    return {
        "classical_frames": sum(telemetry.get("receiver") == "classical" for telemetry, _ in results),
        "diverged_frames": sum(bool(telemetry.get("diverged")) for telemetry, _ in results),
    }


def predictor_report(
    metric: str, frames: int, pilots: int, symbols: int, seed: int, results: list, device_us: dict, round_trip: dict, **scores
) -> dict:
    """A predictor's report (sum-rate, NMSE, …): what was sent, its ``scores``, which receiver decided the frames
    (``results``: telemetry and outputs per frame), and the device's timings."""
    return {
        "metric": metric,
        "frames": frames,
        "pilots": pilots,
        "symbols": symbols,
        "seed": seed,
        **scores,
        **decided(results),
        "device_us": device_us,
        "round_trip_us": round_trip,
    }


def error_rate_report(client, url: str, metric: str, seed: int, x_pilots, y_pilots, x_payload, y_payload) -> dict:
    """Frames (one per new device or channel) through the device, scored against the true ``y_payload``: the error
    rate named ``metric`` (SER, BLER) with calibration and timings."""
    result = send_frames(client, url, x_pilots, y_pilots, x_payload)
    errors = score_frames(result, y_payload)
    return {"metric": metric, **frame_report(errors, len(x_pilots), y_pilots.shape[1], x_payload.shape[1], seed, result)}


def frame_report(errors, frames: int, pilots: int, symbols: int, seed: int, result: dict) -> dict:
    """Error rate over frames (each a new device or channel) with its 95 % interval, and the device's timings."""
    ser = summarise(errors)
    return {
        "frames": frames,
        "pilots": pilots,
        "symbols": symbols,
        "seed": seed,
        "ser": ser["ser"],
        "ser_ci95": ser["ci95"],
        **result,
        "per_device_ser": errors.tolist(),
    }


def score_frames(result: dict, labels):
    """Per-frame SER of ``send_frames``'s decisions against the true ``labels``; replaces the per-symbol
    decisions and confidences in ``result`` by the mean confidence, the ECE and the reliability diagram."""
    from metaedge.sdk.calibration import reliability

    correct = result.pop("decisions") == labels
    confidence = result.pop("confidence")
    diagram = reliability(confidence, correct)
    result.update(mean_confidence=float(confidence.mean()), ece=diagram["ece"], reliability=diagram)
    return 1.0 - correct.mean(1)


def send_frames(client, url: str, x_pilots, y_pilots, x_payload) -> dict:
    """One frame per row through the protocol: decisions and confidences [frames, N], device time and round trip."""
    import numpy as np

    info, _ = call(client, "info")
    if info["running"] is None:
        raise UserError(f"no image is running on {url}: deploy a bundle first")
    frames = ({"pilots": x_p, "labels": y_p.astype(np.int32), "payload": x} for x_p, y_p, x in zip(x_pilots, y_pilots, x_payload))
    results, device_us, round_trip = timed_frames(client, frames)
    return {
        "decisions": np.stack([out["decisions"] for _, out in results]),
        "confidence": np.stack([out["confidence"] for _, out in results]),
        **decided(results),
        "device_us": device_us,
        "round_trip_us": round_trip,
    }


# How long a client waits for an answer: a frame or a trial boot of the slowest target (its frame limit; a boot's
# load and self-test have their own limits of the same order), twice over.
ANSWER_S = 2 * max(FRAME_LIMITS_S.values())


def connect(url: str, operator_key: Path | None = None, timeout: float = ANSWER_S):
    """A client of the device at ``url``, signing its requests with ``operator_key`` (a PEM private key) if given,
    waiting at most ``timeout`` seconds for an answer."""
    from metaedge.deploy.client import DeviceClient
    from metaedge.deploy.signing import SignatureError, load_private

    try:
        key = load_private(operator_key) if operator_key else None
    except SignatureError as e:
        raise UserError(f"--operator-key: {e}") from None
    try:
        return DeviceClient(url, timeout=timeout, operator_key=key)
    except (ValueError, ConnectionError) as e:
        raise UserError(str(e)) from None


@contextlib.contextmanager
def refusals(what: str) -> Iterator[None]:
    """A device's refusal of ``what`` and a lost connection, each as the one line a command prints."""
    from metaedge.deploy.client import DeviceRequestError

    try:
        yield
    except DeviceRequestError as e:
        raise UserError(f"the device refused {what}: {e}") from None
    except ConnectionError as e:
        raise UserError(str(e)) from None


def call(client, op: str, arrays=None, **args):
    with refusals(f"'{op}'"):
        return client.call(op, arrays, **args)
