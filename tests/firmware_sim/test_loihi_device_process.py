"""A Loihi device process (Lava environment): signed deploy, frames through the protocol, bad input,
a client killed mid-frame, and a shutdown that leaves no Lava process or shared memory behind."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import lava_python

from metaedge.deploy import wire
from metaedge.deploy.client import DeviceClient, parse_device_url
from metaedge.sdk.cli.main import main
from metaedge.sdk.device_process import serve_command

pytestmark = pytest.mark.lava


def _parents() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, state letter) of every process."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                table[int(entry.name)] = (int(fields[1]), fields[0])
            except (OSError, IndexError, ValueError):
                pass
    return table


def descendants(root: int) -> set[int]:
    """The processes started by ``root`` (the receiver's, and the ones Lava starts from it), transitively."""
    table, found, frontier = _parents(), set(), {root}
    while frontier:
        frontier = {pid for pid, (parent, _) in table.items() if parent in frontier} - found
        found |= frontier
    return found


def running(pids: set[int]) -> set[int]:
    table = _parents()
    return {pid for pid in pids if pid in table and table[pid][1] != "Z"}


@pytest.fixture
def loihi_device(tmp_path, signing_keys):
    state = tmp_path / "loihi-state"
    shm_before = set(os.listdir("/dev/shm"))
    cmd = serve_command("loihi", state, "--trusted-key", str(signing_keys[1]), python=lava_python())
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on"), line + proc.stderr.read()
    yield "tcp://" + line.split()[-1], proc, shm_before
    if proc.poll() is None:
        proc.kill()
        proc.wait(20)


def test_loihi_device_end_to_end_and_clean_shutdown(loihi_device, snn_bundle, capsys):
    url, proc, shm_before = loihi_device
    assert main(["deploy", str(snn_bundle[1]), "--device", url, "--confirm", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["run", "--device", url, "--frames", "2", "--pilots", "4", "--symbols", "48", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["ser"] < 0.5  # QPSK: guessing errs 75 %
    started = descendants(proc.pid)
    assert len(started) > 3  # the receiver's process, and Lava runs the network as several more
    with DeviceClient(url) as client:
        info, _ = client.call("info")
        assert info["target"] == "loihi" and info["mode"] == "confirmed"
        with pytest.raises(Exception, match=r"'payload' must be a float32 array of shape \[n, 2\]"):
            client.call("frame", {"pilots": np.zeros((4, 2), np.float32), "payload": np.zeros((5, 3), np.float32)})
        with pytest.raises(Exception, match="NaN"):
            client.call("frame", {"pilots": np.full((4, 2), np.nan, np.float32), "payload": np.zeros((5, 2), np.float32)})
    # a client that sends a long frame and vanishes before the answer
    host, port = parse_device_url(url)
    with socket.create_connection((host, port)) as sock:
        sock.sendall(wire.encode({"seq": 1, "op": "frame"}, {"pilots": np.ones((4, 2), np.float32), "payload": np.ones((400, 2), np.float32)}))
    time.sleep(0.5)
    with DeviceClient(url, timeout=120) as client:  # still serving, with its image
        telemetry, out = client.call("frame", {"pilots": np.ones((4, 2), np.float32), "payload": np.ones((6, 2), np.float32)})
        assert out["decisions"].shape == (6,) and telemetry["steps"] == 4 * 10
        stats, _ = client.call("stats")
        assert stats["errors"] >= 2 and stats["mode"] == "confirmed"
    proc.terminate()
    assert proc.wait(60) == 0
    deadline = time.time() + 10
    while running(started) and time.time() < deadline:
        time.sleep(0.2)
    assert running(started) == set()
    assert set(os.listdir("/dev/shm")) - shm_before == set()
