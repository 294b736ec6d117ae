"""The dependency rule: deploy/, backends/ and firmware_sim/ import and run without torch.

Runs in the Lava environment (.venv-lava: Python 3.10, numpy < 2, no torch), which the
Makefile builds and points to with METAEDGE_LAVA_PYTHON. The environment is required, not
optional: a missing one fails the test with the command that builds it.
"""

import subprocess
import sys
from pathlib import Path

from conftest import lava_python

ROOT = Path(__file__).resolve().parents[1]
DEVICE_SIDE = ("deploy", "backends", "firmware_sim")

IMPORT_ALL = r"""
import importlib, importlib.util, pkgutil, sys
import metaedge
try:
    import torch
except ModuleNotFoundError:
    pass
else:
    sys.exit("torch is installed in this environment; the check needs an environment without it")
import lava.magma.core  # this is the Lava environment
names = []
# a backend whose runtime this environment does not carry is checked in the main environment instead
absent = [p for p, runtime in {"metaedge.backends.qiskit": "qiskit"}.items() if importlib.util.find_spec(runtime) is None]
for folder in sys.argv[1:]:
    package = importlib.import_module(f"metaedge.{folder}")
    names.append(package.__name__)
    for info in pkgutil.walk_packages(package.__path__, prefix=f"metaedge.{folder}."):
        if any(info.name == p or info.name.startswith(p + ".") for p in absent):
            continue
        importlib.import_module(info.name)
        names.append(info.name)
bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
if bad:
    sys.exit(f"torch was imported: {bad[:3]}")
print(sys.version_info[:2], len(names), "modules:", " ".join(names))
"""


def test_device_side_modules_import_in_the_lava_environment_without_torch():
    result = subprocess.run([lava_python(), "-c", IMPORT_ALL, *DEVICE_SIDE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "(3, 10)" in result.stdout, result.stdout
    listed = result.stdout.split("modules:")[1].split()
    on_disk = {
        f"metaedge.{p.parent.relative_to(ROOT).as_posix().replace('/', '.')}.{p.stem}".replace(".__init__", "")
        for folder in DEVICE_SIDE
        for p in (ROOT / folder).rglob("*.py")
    }
    without_runtime = {m for m in on_disk if m.startswith("metaedge.backends.qiskit")}  # no qiskit there
    assert on_disk - without_runtime <= set(listed), f"modules not imported: {on_disk - without_runtime - set(listed)}"


QISKIT_SIDE = r"""
import importlib, pkgutil, sys
import metaedge.backends.qiskit as package
names = [info.name for info in pkgutil.walk_packages(package.__path__, prefix="metaedge.backends.qiskit.")]
for name in names:
    importlib.import_module(name)
import metaedge.firmware_sim.device
bad = [m for m in sys.modules if m == "torch" or m.startswith("torch.")]
sys.exit(f"torch was imported: {bad[:3]}" if bad else 0) if bad else print(len(names), "modules")
"""


def test_qiskit_backend_imports_without_torch_in_the_main_environment():
    """The main environment has torch installed; the qiskit backend and device must still not import it."""
    result = subprocess.run([sys.executable, "-c", QISKIT_SIDE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    on_disk = len([p for p in (ROOT / "backends" / "qiskit").glob("*.py") if p.stem != "__init__"])
    assert result.stdout.split()[0] == str(on_disk)


def test_lava_environment_has_numpy_below_2_and_main_environment_is_untouched():
    result = subprocess.run([lava_python(), "-c", "import numpy; print(numpy.__version__)"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and int(result.stdout.split(".")[0]) < 2, result.stdout + result.stderr
    import numpy

    assert sys.version_info >= (3, 11) and int(numpy.__version__.split(".")[0]) >= 2  # Lava's pins stay in .venv-lava


def test_a_torch_free_environment_inspects_serves_deploys_and_runs(trained_bundle, signing_keys, tmp_path):
    """A device-only install's commands (Lava environment: no torch, no matplotlib): each runs without importing what
    it lacks."""
    import json

    metaedge = [lava_python(), "-m", "metaedge.sdk.cli.main"]

    def cli(*argv: str) -> str:
        result = subprocess.run([*metaedge, *argv], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    assert "verified" in cli("inspect", str(trained_bundle[1]))
    state = tmp_path / "state"
    serve = [*metaedge, "device", "serve", "--state", str(state), "--listen", "127.0.0.1:0", "--trusted-key", str(signing_keys[1])]
    device = subprocess.Popen(serve, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = "tcp://" + device.stdout.readline().split()[-1]
        assert "confirmed" in cli("deploy", str(trained_bundle[1]), "--device", url, "--confirm", "--quiet")
        report = json.loads(cli("run", "--device", url, "--frames", "3", "--pilots", "8", "--symbols", "50", "--json"))
        assert report["frames"] == 3 and 0.0 <= report["ser"] <= 1.0
        assert json.loads(cli("device", "stats", "--device", url, "--json"))["frames"] == 3
    finally:
        device.terminate()
        device.wait(30)
