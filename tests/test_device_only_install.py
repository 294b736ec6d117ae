"""A device-side install from the wheel, as a user makes one: `pip install 'metaedge[onnx]'` into a fresh virtual
environment (no torch, no matplotlib), then keys, inspect, device serve, deploy, run and device stats from it —
against a real device process on loopback, with a bundle the host exported."""

import json
import subprocess
import sys

import pytest
from conftest import Served


def _run(*cmd, timeout=600) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd}: {result.stderr[-2000:]}"
    return result


@pytest.mark.slow
def test_the_onnx_extra_alone_serves_deploys_and_runs(tmp_path, trained_bundle, signing_keys):
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "wheel", root)
    (wheel,) = (tmp_path / "wheel").glob("metaedge-*.whl")
    _run(sys.executable, "-m", "venv", tmp_path / "env")
    python, metaedge = tmp_path / "env" / "bin" / "python", tmp_path / "env" / "bin" / "metaedge"
    _run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[onnx]")
    absent = _run(python, "-c", "import importlib.util as u; print([m for m in ('torch', 'matplotlib', 'scipy') if u.find_spec(m)])")
    assert absent.stdout.strip() == "[]"

    assert _run(metaedge, "spec", "bundle").stdout.startswith("# MetaEdge bundle format")  # the specs ship in the wheel
    _run(metaedge, "keys", "generate", "--out", tmp_path / "keys", "--name", "operator")
    assert "verified" in _run(metaedge, "inspect", trained_bundle[1]).stdout
    device = Served(tmp_path / "state", signing_keys[1], "--operator", str(tmp_path / "keys" / "operator.pub"), python=str(python))
    try:
        url, key = device.url, tmp_path / "keys" / "operator.key"
        _run(metaedge, "deploy", trained_bundle[1], "--device", url, "--operator-key", key, "--confirm", "--quiet")
        report = json.loads(_run(metaedge, "run", "--device", url, "--frames", "10", "--symbols", "200", "--json", "--quiet").stdout)
        stats = json.loads(_run(metaedge, "device", "stats", "--device", url, "--json").stdout)
    finally:
        device.stop()
    assert report["task"] == "demod" and 0 <= report["ser"] <= 1 and stats["frames"] == 10 and stats["errors"] == 0
