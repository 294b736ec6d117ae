"""The top-level ``metaedge`` package: its version, its public names, ``python -m metaedge``, and a device driven from
Python alone — a real device process on loopback, a real bundle."""

import subprocess
import sys
from importlib.metadata import version

import numpy as np
import pytest
from conftest import Served, lava_python

import metaedge


def test_every_public_name_resolves_and_the_version_is_the_installed_one():
    assert metaedge.__version__ == version("metaedge")
    assert sorted(metaedge.__all__) == dir(metaedge) and all(getattr(metaedge, name) is not None for name in metaedge.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Trainr'"):
        metaedge.Trainr


def test_a_device_side_environment_imports_metaedge_and_its_device_names_without_torch():
    """The Lava environment has no torch: ``import metaedge`` and the device client work there."""
    names = "metaedge.connect, metaedge.read_bundle, metaedge.DeviceClient"
    script = f"import sys, metaedge; {names}; print(metaedge.__version__, 'torch' in sys.modules)"
    result = subprocess.run([lava_python(), "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.split() == [version("metaedge"), "False"], result.stderr


def test_python_dash_m_metaedge_is_the_command():
    result = subprocess.run([sys.executable, "-m", "metaedge", "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == f"metaedge {version('metaedge')}"
    result = subprocess.run([sys.executable, "-m", "metaedge", "inspect", "no/such/bundle"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "no/such/bundle" in result.stderr and "Traceback" not in result.stderr


def test_deploy_and_run_frames_from_python(trained_bundle, signing_keys, tmp_path):
    _, bundle = trained_bundle
    device = Served(tmp_path / "state", signing_keys[1])
    try:
        with metaedge.connect(device.url) as client:
            deployed = client.deploy(metaedge.pack(metaedge.read_bundle(bundle)), confirm=True)
            info, images = client.info(), client.images()
            task = info["task"]
            rng = np.random.default_rng(0)
            labels = np.resize(np.asarray(task["pilot_sequence"]), 8)
            constellation = np.asarray(task["constellation"], np.float32)
            telemetry, out = client.frame(constellation[labels], rng.normal(0, 1, (50, 2)), labels)
            with pytest.raises(metaedge.DeviceRequestError, match="pilot"):
                client.frame(constellation[labels], rng.normal(0, 1, (5, 2)), np.full(8, 99))
            stats = client.stats()
    finally:
        device.stop()
    assert deployed["confirmed"] and images["images"][deployed["slot"]]["confirmed"] and info["running"] == deployed["slot"]
    assert out["decisions"].shape == (50,) and ((0 <= out["decisions"]) & (out["decisions"] < task["classes"])).all()
    assert np.all((out["confidence"] > 0) & (out["confidence"] <= 1)) and "seq" not in telemetry
    assert stats["frames"] == 1
