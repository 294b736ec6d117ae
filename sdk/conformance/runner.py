"""Play a conformance suite against a device over the management protocol (numpy and the protocol client only).

The device under test must be fresh (no image, security counter 0), trust the suite's public key, and — if it has
operator keys — be driven with one. Each case's result names the spec section it checks. A refusal case passes
when the image never runs and the device keeps running the image it had; what the refusal says is reported, not
judged (a runtime words its own errors).
"""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Callable

import numpy as np

from metaedge.deploy import wire
from metaedge.deploy.client import DeviceClient, DeviceRequestError, parse_device_url
from metaedge.sdk.conformance.suite import SuiteError, load_frames, read_index


class Failed(Exception):
    """The device did not do what the case expects; the message says what it did."""


class Skipped(Exception):
    """The case does not apply to this device as the runner drives it; the message says why."""


def run(suite: Path, client: DeviceClient, url: str, progress: Callable[[], None] | None = None) -> dict:
    """Every case of the suite in order against the device at ``url`` (``client``: a connection to it)."""
    index = read_index(suite)
    target = client.call("info")[0]["target"]
    images = client.call("image.list")[0]
    if images["security_counter"] or any(image["valid"] for image in images["images"]):
        raise SuiteError(f"the device at {url} is not fresh (it holds an image or a security counter): start it with an empty --state")
    results, lost = [], None
    for entry in index["cases"]:
        if lost:
            results.append(_result(entry, False, f"not played: the device stopped answering during '{lost}'"))
            continue
        if entry.get("target") not in (None, target):
            results.append({**_result(entry, True, f"for a '{entry['target']}' device; this one runs '{target}'"), "skipped": True})
            continue
        bundle = (suite / entry["bundle"]).read_bytes() if entry.get("bundle") else None
        if bundle is not None and hashlib.sha256(bundle).hexdigest() != entry["bundle_sha256"]:
            results.append(_result(entry, False, "the suite's bundle file does not match its index (regenerate the suite)"))
            continue
        try:
            detail = PLAYS[entry["expect"]](client, bundle, suite, {**entry, "url": url})
            results.append(_result(entry, True, detail))
        except Failed as e:
            results.append(_result(entry, False, str(e)))
        except Skipped as e:
            results.append({**_result(entry, True, str(e)), "skipped": True})
        except ConnectionError as e:  # the device dropped the management connection: a failure, and the end of the run
            results.append(_result(entry, False, f"the device stopped answering: {e}"))
            lost = entry["id"]
        if progress:
            progress()
    skipped = sum(r.get("skipped", False) for r in results)
    passed = sum(r["passed"] for r in results) - skipped
    return {
        "suite": index["suite"],
        "spec": index["spec"],
        "target": target,
        "cases": len(results),
        "passed": passed,
        "failed": len(results) - passed - skipped,
        "skipped": skipped,
        "results": results,
    }


def _result(entry: dict, passed: bool, detail: str) -> dict:
    return {"id": entry["id"], "section": entry["section"], "expect": entry["expect"], "passed": passed, "detail": detail}


def _running(client: DeviceClient) -> tuple:
    info = client.call("info")[0]
    return info["running"], info["mode"]


def _upload(client: DeviceClient, bundle: bytes) -> str:
    return client.upload(bundle)["sha256"]


def play_accept(client: DeviceClient, bundle: bytes, suite: Path, entry: dict) -> str:
    try:
        client.deploy(bundle, confirm=True)
    except DeviceRequestError as e:
        raise Failed(f"refused a valid bundle: {e}") from None
    frames = load_frames(suite, entry)
    worst = 0.0
    for k, frame in enumerate(frames):
        try:
            _, out = client.call("frame", {name: frame[name] for name in ("pilots", "labels", "payload") if name in frame})
        except DeviceRequestError as e:
            raise Failed(f"frame {k} refused: {e}") from None
        if "outputs" in frame:  # a predictor
            worst = max(worst, float(np.abs(out["outputs"] - frame["outputs"]).max()))
            if worst > entry["atol"]:
                raise Failed(f"frame {k}: outputs off by {worst:.2e}, more than {entry['atol']:g}")
            continue
        reliable = frame["reliable"].astype(bool)
        wrong = int((out["decisions"][reliable] != frame["decisions"][reliable]).sum())
        if wrong:
            raise Failed(f"frame {k}: {wrong} of {int(reliable.sum())} clear-cut decisions differ from the reference")
        worst = max(worst, float(np.abs(out["confidence"] - frame["confidence"]).max()))
        if worst > entry["atol"]:
            raise Failed(f"frame {k}: confidence off by {worst:.2e}, more than {entry['atol']:g}")
    return f"deployed; {len(frames)} frames answer as the reference (within {worst:.1e})"


def play_refuse_upload(client: DeviceClient, bundle: bytes, suite: Path, entry: dict) -> str:
    before = _running(client)
    try:
        _upload(client, bundle)
    except DeviceRequestError as e:
        if _running(client) != before:
            raise Failed(f"refused the upload but no longer runs its image ({_running(client)})") from None
        return f"refused: {e}"
    raise Failed("accepted an upload the spec requires it to refuse")


def play_refuse_boot(client: DeviceClient, bundle: bytes, suite: Path, entry: dict) -> str:
    before = _running(client)
    try:
        digest = _upload(client, bundle)
        client.call("image.test", sha256=digest)
    except DeviceRequestError as e:
        return f"refused before booting it: {e}"
    booted = client.call("reset")[0]
    if booted["mode"] == "trial":
        client.call("reset")  # revert, so that later cases start from the confirmed image
        raise Failed("booted the image on trial; it must never run")
    if _running(client) != before:
        raise Failed(f"after the failed trial it runs {_running(client)}, not its confirmed image {before}")
    return f"the trial boot failed and the device reverted: {'; '.join(booted.get('events', []))}"


def play_refuse_frames(client: DeviceClient, bundle: bytes, suite: Path, entry: dict) -> str:
    frames = load_frames(suite, entry)
    answers = []
    for k, frame in enumerate(frames):
        try:
            client.call("frame", {"pilots": frame["pilots"], "labels": frame["labels"], "payload": frame["payload"]})
        except DeviceRequestError as e:
            answers.append(str(e))
            continue
        raise Failed(f"frame {k} was answered; the spec requires it to be refused")
    return f"all {len(frames)} frames refused: {answers[0]}"


def play_refuse_request(client: DeviceClient, bundle: bytes | None, suite: Path, entry: dict) -> str:
    before = _running(client)
    host, port = parse_device_url(entry["url"])
    with socket.create_connection((host, port), timeout=30) as raw:
        try:
            raw.sendall((suite / entry["request"]).read_bytes())
            raw.shutdown(socket.SHUT_WR)  # nothing more is coming: a device waiting for the rest of a message sees the end
        except OSError:
            pass  # the device closed the connection before the whole request was sent: its answer (if any) is read below
        try:
            answer = wire.read_message(raw.makefile("rb"))[0]
        except (wire.WireError, OSError) as e:
            answer = {"closed": str(e) or type(e).__name__}
    if answer.get("ok"):
        raise Failed("the request was answered ok; the spec requires an error response")
    if _running(client) != before:
        raise Failed(f"after the request the device runs {_running(client)}, not {before}")
    return f"error response: {answer['error']}" if "error" in answer else f"connection closed ({answer['closed']})"


def play_refuse_frame(client: DeviceClient, bundle: bytes | None, suite: Path, entry: dict) -> str:
    """A malformed frame sent as raw bytes while the image an earlier case confirmed runs (so that the error is the
    frame's, not that no image runs)."""
    if _running(client)[0] is None:
        raise Failed("no image runs: the valid case before this one did not leave one confirmed")
    return play_refuse_request(client, bundle, suite, entry)


def play_refuse_unsigned(client: DeviceClient, bundle: bytes | None, suite: Path, entry: dict) -> str:
    """An unsigned management request, played only against a device driven with an operator key (one without
    operator keys accepts unsigned management on loopback, as device-protocol.md §3.4 allows)."""
    if client.operator_key is None:
        raise Skipped("the device is driven without an operator key: operator authentication is not tested")
    return play_refuse_request(client, bundle, suite, entry)


def play_refuse_forged(client: DeviceClient, bundle: bytes | None, suite: Path, entry: dict) -> str:
    """A reset signed over the device's nonce by a key it does not know (``auth-unknown-key``), or a correctly signed
    reset sent again on the same connection after its nonce was spent (``auth-replay``); either must be refused."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from metaedge.deploy.auth import CHALLENGE, sign_request

    if client.operator_key is None:
        raise Skipped("the device is driven without an operator key: operator authentication is not tested")
    before = _running(client)
    host, port = parse_device_url(entry["url"])
    key = Ed25519PrivateKey.generate() if entry["id"] == "auth-unknown-key" else client.operator_key
    with socket.create_connection((host, port), timeout=30) as raw:
        stream = raw.makefile("rwb")

        def send(header: dict) -> dict:
            stream.write(wire.encode(header))
            stream.flush()
            return wire.read_message(stream)[0]

        nonce = bytes.fromhex(send({"op": CHALLENGE, "seq": 1})["nonce"])
        request = {"op": "reset"}
        signed = {**request, "seq": 2, "auth": sign_request(key, nonce, request, None)}
        first = send(signed)
        if entry["id"] == "auth-replay":
            if not first.get("ok"):
                raise Failed(f"refused a correctly signed reset: {first.get('error')}")
            answer = send({**signed, "seq": 3})
        else:
            answer = first
    if answer.get("ok"):
        raise Failed("the request was answered ok; the spec requires an error response")
    if _running(client) != before:
        raise Failed(f"after the request the device runs {_running(client)}, not {before}")
    return f"error response: {answer.get('error')}"


PLAYS = {
    "accept": play_accept,
    "refuse-upload": play_refuse_upload,
    "refuse-boot": play_refuse_boot,
    "refuse-frames": play_refuse_frames,
    "refuse-request": play_refuse_request,
    "refuse-frame": play_refuse_frame,
    "refuse-unsigned": play_refuse_unsigned,
    "refuse-forged": play_refuse_forged,
}
