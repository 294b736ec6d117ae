"""A qiskit device process on the noisy FakeManilaV2 target: signed deploy, frames, bad input, still serving."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from metaedge.deploy.client import DeviceClient
from metaedge.sdk.cli.main import main
from metaedge.sdk.device_process import serve_command


@pytest.fixture
def noisy_device(tmp_path, signing_keys):
    cmd = serve_command("qiskit", tmp_path / "state", "--backend", "noisy:FakeManilaV2", "--trusted-key", str(signing_keys[1]))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on"), line + proc.stderr.read()
    yield "tcp://" + line.split()[-1]
    proc.terminate()
    assert proc.wait(20) == 0


@pytest.mark.slow
def test_noisy_qiskit_device_end_to_end_through_the_protocol(noisy_device, born_bundle, signing_keys, tmp_path, capsys):
    signed = tmp_path / "signed"
    shutil.copytree(born_bundle, signed)
    assert main(["sign", str(signed), "--key", str(signing_keys[0])]) == 0
    unsigned_refused = main(["deploy", str(born_bundle), "--device", noisy_device, "--quiet"])
    assert unsigned_refused != 0
    assert main(["deploy", str(signed), "--device", noisy_device, "--confirm", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", "--device", noisy_device, "--frames", "3", "--pilots", "4", "--symbols", "200", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ser"] < 0.25  # QPSK with a ±60° phase: guessing errs 75 %
    with DeviceClient(noisy_device) as client:
        info, _ = client.call("info")
        assert info["target"] == "qiskit" and info["task"]["channel"] == "phase"
        bad = {"pilots": np.zeros((4, 3), np.float32), "payload": np.zeros((5, 2), np.float32)}
        with pytest.raises(Exception, match=r"'pilots' must be a float32 array of shape \[n, 2\]"):
            client.call("frame", bad)
        nan = {"pilots": np.full((4, 2), np.nan, np.float32), "payload": np.zeros((5, 2), np.float32)}
        with pytest.raises(Exception, match="NaN"):
            client.call("frame", nan)
        telemetry, out = client.call("frame", {"pilots": np.ones((4, 2), np.float32), "payload": np.ones((5, 2), np.float32)})
        assert out["decisions"].shape == (5,) and telemetry["steps"] == 2
