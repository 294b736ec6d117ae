"""The documentation site builds in strict mode: every page in the navigation exists, every link and anchor
resolves, the API reference finds every documented name and the command-line reference is generated."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_site(site: Path) -> Path:
    """``make docs`` into ``site``: MkDocs in strict mode, where any warning fails the build."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return site


def test_the_site_builds_strictly_with_every_page_and_reference(tmp_path):
    site = build_site(tmp_path / "site")
    assert "metaedge train demod" in (site / "cli-reference" / "index.html").read_text()
    api = (site / "api-reference" / "index.html").read_text()
    assert all(name in api for name in ("Trainer", "DeviceClient", "deploy", "read_bundle"))
    for page in ("tutorials/onnx", "tutorials/loihi", "tutorials/qiskit", "bundle-format", "spec-coverage", "results/demo"):
        assert (site / page / "index.html").is_file(), page
