"""A real device process on loopback: deploy through the CLI, frames through the protocol, garbage, power cuts."""

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import Served

from metaedge.deploy import wire
from metaedge.deploy.client import DeviceClient
from metaedge.sdk.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
LAVA_PYTHON = os.environ.get("METAEDGE_LAVA_PYTHON") or str(ROOT / ".venv-lava" / "bin" / "python")


PUBLIC_KEY: list = []


@pytest.fixture(autouse=True)
def _public_key(signing_keys):
    PUBLIC_KEY[:] = [str(signing_keys[1])]


class DeviceProcess(Served):
    def __init__(self, state: Path, python: str = sys.executable, target: str = "onnx") -> None:
        super().__init__(state, PUBLIC_KEY[0], python=python, target=target)

    def power_cut(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)


@pytest.fixture
def device(tmp_path):
    d = DeviceProcess(tmp_path / "state")
    yield d
    if d.proc.poll() is None:
        d.power_cut()


def cli(*argv):
    assert main(list(argv)) == 0


def trained_on_the_device(device, tmp_path, signing_keys, capsys, train: str, frames: str):
    """``metaedge train TRAIN``, export signed, deploy and confirm, then ``metaedge run FRAMES``: (run, its report)."""
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    cli("train", *train.split(), "--out", str(run), "--quiet")
    cli("export", str(run), "--out", str(bundle), "--key", str(signing_keys[0]))
    cli("deploy", str(bundle), "--device", device.url, "--confirm", "--quiet")
    capsys.readouterr()
    cli("run", "--device", device.url, *frames.split(), "--json")
    return run, json.loads(capsys.readouterr().out)


@pytest.mark.slow
def test_deploy_confirm_and_ser_through_the_protocol_matches_eval(device, trained_bundle, capsys):
    run_dir, bundle = trained_bundle
    cli("deploy", str(bundle), "--device", device.url, "--confirm", "--quiet")
    capsys.readouterr()
    cli("run", "--device", device.url, "--frames", "40", "--pilots", "8", "--symbols", "500", "--json")
    on_device = json.loads(capsys.readouterr().out)
    cli("eval", str(run_dir), "--pilots", "8", "--devices", "40", "--payload", "500", "--no-baselines", "--select", "--json", "--quiet")
    methods = json.loads(capsys.readouterr().out)["methods"]
    on_host = next(m for m in methods if m["name"].endswith("+ selection"))["ser"]["8"]  # as the device decides each frame
    assert on_device["ser"] == pytest.approx(on_host["ser"], abs=2e-3)  # same devices and symbols; float32 ties aside
    assert on_device["ece"] == pytest.approx(on_host["ece"], abs=2e-3)  # calibration checked on the device too
    assert sum(on_device["reliability"]["count"]) == 40 * 500
    assert on_device["device_us"]["p50"] > 0 and on_device["round_trip_us"]["p50"] >= on_device["device_us"]["p50"]
    assert device.stop() == 0  # SIGTERM: a clean exit


@pytest.mark.slow
def test_power_cut_during_a_trial_reverts_to_the_confirmed_image(device, trained_bundle, tmp_path, capsys):
    _, bundle = trained_bundle
    cli("deploy", str(bundle), "--device", device.url, "--confirm", "--quiet")
    cli("deploy", str(bundle), "--device", device.url, "--quiet")  # second image, on trial in slot 1
    with DeviceClient(device.url) as client:
        assert client.call("info")[0]["mode"] == "trial"
    device.power_cut()
    restarted = DeviceProcess(tmp_path / "state")
    try:
        with DeviceClient(restarted.url) as client:
            info = client.call("info")[0]
            assert (info["running"], info["mode"]) == (0, "confirmed")
            assert any("revert" in e for e in client.call("stats")[0]["boot_events"])
    finally:
        restarted.power_cut()


def raw_exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def responses(blob: bytes) -> list[dict]:
    import io

    stream, out = io.BytesIO(blob), []
    while stream.tell() < len(blob):
        out.append(wire.read_message(stream)[0])
    return out


@pytest.mark.slow
def test_garbage_gets_error_responses_and_the_device_keeps_serving(device):
    payload = b"\x05\x00\x00\x00{bad}"
    bad_crc = struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload) ^ 1)
    bad_json = struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(payload))
    unknown = wire.encode({"op": "format-flash", "seq": 7})
    replies = responses(raw_exchange(device.port, bad_crc + bad_json + unknown))
    assert [r["ok"] for r in replies] == [False, False, False]
    assert "CRC mismatch" in replies[0]["error"] and "not UTF-8 JSON" in replies[1]["error"]
    assert "unknown operation 'format-flash'" in replies[2]["error"] and replies[2]["seq"] == 7
    huge = raw_exchange(device.port, struct.pack("<I", 1 << 30) + b"x" * 100)
    assert "exceeds" in responses(huge)[0]["error"]
    with DeviceClient(device.url) as client:  # still serving, on a new connection
        assert client.call("info")[0]["target"] == "onnx"
        assert client.call("stats")[0]["errors"] >= 2


def test_management_commands_answer_bad_input_with_one_line(capsys, tmp_path):
    assert main(["device", "list", "--device", "http://x"]) == 2
    assert "not of the form tcp://HOST:PORT" in capsys.readouterr().err
    assert main(["device", "list", "--device", "tcp://127.0.0.1:1"]) == 2
    assert "is 'metaedge device serve' running?" in capsys.readouterr().err
    assert main(["deploy", str(tmp_path), "--device", "tcp://127.0.0.1:1"]) == 2
    assert "has no manifest.json" in capsys.readouterr().err
    assert main(["device", "serve", "--state", str(tmp_path), "--listen", "nowhere", "--allow-unsigned"]) == 2
    assert "is not HOST:PORT" in capsys.readouterr().err
    assert main(["device", "serve", "--state", str(tmp_path)]) == 2
    assert "--trusted-key PUB" in capsys.readouterr().err


@pytest.mark.slow
def test_a_device_in_the_lava_environment_serves_frames(trained_bundle, tmp_path, capsys):
    """Python 3.10, numpy < 2, no torch: the device side on its own."""
    device = DeviceProcess(tmp_path / "state", python=LAVA_PYTHON)
    try:
        cli("deploy", str(trained_bundle[1]), "--device", device.url, "--confirm", "--quiet")
        capsys.readouterr()
        cli("run", "--device", device.url, "--frames", "5", "--pilots", "8", "--symbols", "200", "--json")
        assert json.loads(capsys.readouterr().out)["frames"] == 5
    finally:
        device.power_cut()


def test_stdio_transport(trained_bundle, tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "metaedge.sdk.cli.main", "device", "serve", "--state", str(tmp_path), "--listen", "stdio", "--allow-unsigned"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    proc.stdin.write(wire.encode({"op": "info", "seq": 1}) + wire.encode({"op": "nope", "seq": 2}))
    proc.stdin.close()
    first, second = wire.read_message(proc.stdout)[0], wire.read_message(proc.stdout)[0]
    assert first["ok"] and first["target"] == "onnx" and first["mode"] == "none"
    assert not second["ok"] and second["seq"] == 2
    assert proc.wait(10) == 0


def test_run_with_short_frames(device, trained_bundle, capsys):
    cli("deploy", str(trained_bundle[1]), "--device", device.url, "--confirm", "--quiet")
    capsys.readouterr()
    cli("run", "--device", device.url, "--frames", "3", "--pilots", "2", "--symbols", "20", "--json")
    assert json.loads(capsys.readouterr().out)["symbols"] == 20


@pytest.mark.slow
def test_a_learned_link_receiver_on_the_device_matches_the_host(device, tmp_path, signing_keys, capsys):
    """Monograph §5.3 end to end: train (decoder adapts), export with the codebook, deploy, frames of new channels."""
    import numpy as np
    import torch

    from metaedge.deploy.client import DeviceRequestError
    from metaedge.deploy.tensors import load
    from metaedge.sdk.families.link import model as autoencoder
    from metaedge.sdk.families.link.export import link_frames, receiver_params
    from metaedge.sdk.meta.core import InnerLoop, adapt

    frames = "--frames 10 --pilots 16 --symbols 400 --seed 4"
    run, report = trained_on_the_device(device, tmp_path, signing_keys, capsys, "link --iterations 200 --val-every 100", frames)
    assert report["metric"] == "BLER" and sum(report["reliability"]["count"]) == 10 * 400
    with DeviceClient(device.url) as client:
        task = client.call("info")[0]["task"]
        # the host: the same frames through the run's receiver (decoder and RTN), adapted one step in torch
        pilots, labels, payload, messages = link_frames(task, 10, 16, 400, seed=4)
        theta = {k: torch.from_numpy(v) for k, v in load(run / "theta.safetensors")[0].items()}
        errors = []
        for p, c, x, m in zip(pilots, labels, payload, messages):
            onehot = torch.nn.functional.one_hot(torch.from_numpy(c), 16).float()
            decoder = adapt(receiver_params(theta), torch.from_numpy(p), onehot, InnerLoop(lr=0.1, steps=1, loss=autoencoder.receiver_loss))
            errors.append((autoencoder.receiver_log_probs(decoder, torch.from_numpy(x)).argmax(-1).numpy() != m).mean())
        assert report["ser"] == pytest.approx(float(np.mean(errors)), abs=2e-3)
        assert report["ser"] < 0.9  # 200 iterations already learn something; chance is 15/16
        # I/Q pairs of a demodulator are not this receiver's input: one clear refusal, and it keeps serving
        with pytest.raises(DeviceRequestError, match=r"shape \[n, 8\]"):
            client.call("frame", {"pilots": np.zeros((16, 2), np.float32), "payload": np.zeros((4, 2), np.float32)})
        assert client.call("info")[0]["task"]["name"] == "link"
    assert device.stop() == 0


@pytest.mark.slow
def test_a_channel_predictor_on_the_device_matches_the_host(tmp_path, signing_keys, capsys):
    """Monograph §5.4 end to end: the meta-learned bias to a 'linear' device; frames of new channels; NMSE."""
    import numpy as np

    from metaedge.backends.linear import predictor as pr
    from metaedge.backends.linear.backend import to_complex
    from metaedge.deploy.client import DeviceRequestError
    from metaedge.deploy.tensors import load
    from metaedge.sdk.families.prediction.run import prediction_frames

    run, bundle = tmp_path / "run", tmp_path / "bundle"
    cli("train", "prediction", "--out", str(run), "--frames", "60", "--samples", "5")
    cli("export", str(run), "--target", "linear", "--out", str(bundle), "--key", str(signing_keys[0]))
    device = DeviceProcess(tmp_path / "state", target="linear")
    try:
        cli("deploy", str(bundle), "--device", device.url, "--confirm", "--quiet")
        capsys.readouterr()
        cli("run", "--device", device.url, "--frames", "12", "--pilots", "5", "--symbols", "20", "--seed", "2", "--json")
        report = json.loads(capsys.readouterr().out)
        assert report["metric"] == "NMSE" and len(report["per_frame_nmse"]) == 12
        with DeviceClient(device.url) as client:
            task = client.call("info")[0]["task"]
            pilots, history, truth = prediction_frames(task, 12, 5, 20, seed=2)
            theta = load(run / "theta.safetensors")[0]
            window = pr.Window(task["window"], task["lag"])
            config = json.loads((run / "config.json").read_text())["model"]
            fitted = pr.fit(config["form"], window, 1.0, to_complex(pilots), 5, theta["bias.re"] + 1j * theta["bias.im"], config["rank"])
            host = pr.nmse(pr.predict(config["form"], window, *fitted, to_complex(history)), truth).mean(1)
            np.testing.assert_allclose(report["per_frame_nmse"], host, rtol=1e-4)
            assert report["nmse_db"] < -1.0  # the predictor predicts: 0 dB is predicting nothing
            # too few pilot channels for one window: one clear refusal, and it keeps serving
            with pytest.raises(DeviceRequestError, match="needs at least 8 pilot channels"):
                client.call("frame", {"pilots": pilots[0, :7], "payload": history[0]})
            assert client.call("info")[0]["task"]["name"] == "prediction"
        assert device.stop() == 0
    finally:
        if device.proc.poll() is None:
            device.power_cut()


@pytest.mark.slow
def test_a_power_allocator_on_the_device_matches_the_host(device, tmp_path, signing_keys, capsys):
    """Monograph §5.5 end to end: the REGNN to an ONNX device that adapts on unlabelled slots of a new topology."""
    import numpy as np
    import torch

    from metaedge.sdk.families.power import model as regnn
    from metaedge.sdk.families.power.run import load_power_run, power_frames, sum_rates
    from metaedge.sdk.meta.core import InnerLoop, adapt

    frames = "--frames 6 --pilots 5 --symbols 40 --seed 1"
    run, report = trained_on_the_device(device, tmp_path, signing_keys, capsys, "power --iterations 40 --periods 10", frames)
    assert report["metric"] == "sum-rate" and report["sum_rate"] > report["full_power_sum_rate"]
    with DeviceClient(device.url) as client:
        task = client.call("info")[0]["task"]
    _, cfg, theta = load_power_run(run)
    pilots, slots = power_frames(task, 6, 5, 40, seed=1)
    host = []
    for p, x in zip(pilots, slots):
        adapted = adapt(theta, torch.from_numpy(p), torch.zeros(5, 1), InnerLoop(lr=cfg.inner_lr, steps=cfg.inner_steps, loss=regnn.task_loss))
        host.append(sum_rates(x, regnn.powers(adapted, torch.from_numpy(x)).detach().numpy()).mean())
    np.testing.assert_allclose(report["per_frame_sum_rate"], host, rtol=1e-4)
    assert device.stop() == 0
