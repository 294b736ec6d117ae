"""scripts/find-python: the Makefile's interpreter discovery, and its message when none exists."""

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "find-python"


def find(which: str, path: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PATH": path, **env}
    return subprocess.run([SCRIPT, which], capture_output=True, text=True, env=environment, timeout=30)


def test_finds_both_interpreters_on_this_machine():
    for which, version in (("main", "3.1"), ("lava", "3.10")):
        result = find(which, os.environ["PATH"])
        assert result.returncode == 0, result.stderr
        out = subprocess.run([result.stdout.strip(), "--version"], capture_output=True, text=True).stdout
        assert out.startswith(f"Python {version}")


def test_says_what_to_install_when_python_310_is_missing(tmp_path):
    # a PATH with the shell tools but no python3.10 and no pyenv
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env"):
        (bin_dir / tool).symlink_to(subprocess.run(["which", tool], capture_output=True, text=True).stdout.strip())
    result = find("lava", str(bin_dir), HOME=str(tmp_path), PYENV_ROOT=str(tmp_path / "no-pyenv"))
    assert result.returncode == 1
    assert "no Python 3.10 found" in result.stderr and "pyenv install 3.10" in result.stderr


def test_rejects_an_unknown_environment_name():
    result = find("conda", os.environ["PATH"])
    assert result.returncode == 2 and "unknown environment" in result.stderr
