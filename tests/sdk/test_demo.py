"""``metaedge demo`` end to end on a tiny budget: trains, reuses finished runs, evaluates, writes files."""

import json

import pytest

from metaedge.sdk.cli.main import main

TINY = ["--algos", "maml,joint", "--iterations", "10", "--devices", "3", "--payload", "100", "--quiet", "--target", "none"]


def test_demo_trains_evaluates_and_reuses_runs(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    report = json.loads((out / "ser.json").read_text())
    assert [m["name"] for m in report["methods"]] == ["maml", "joint", "scratch", "model-based (MMSE + ML)"]
    assert set(report["methods"][0]["ser"]) == {"1", "2", "4", "8", "16", "32"}
    assert (out / "ser.png").is_file() and (out / "maml" / "curves.png").is_file()
    assert "model-based (MMSE + ML)" in capsys.readouterr().out
    before = (out / "maml" / "theta.safetensors").stat().st_mtime_ns
    assert main(["demo", "--out", str(out), *TINY]) == 0  # second run reuses the finished runs
    assert (out / "maml" / "theta.safetensors").stat().st_mtime_ns == before


def test_demo_refuses_a_run_with_another_configuration(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *TINY]) == 0
    capsys.readouterr()
    assert main(["demo", "--out", str(out), *TINY[:2], "--iterations", "12", *TINY[4:]]) == 2
    assert "pass --fresh" in capsys.readouterr().err


def test_demo_on_a_simulated_onnx_device_matches_the_host(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--algos",
        "cavia",
        "--device-algo",
        "cavia",
        "--iterations",
        "10",
        "--devices",
        "4",
        "--payload",
        "300",
        "--quiet",
        "--json",
        "--target",
        "onnx",
    ]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    rows = report["device"]["rows"]
    assert [r["pilots"] for r in rows] == [1, 2, 4, 8, 16, 32]
    for r in rows:  # the device adapts with the same budget on the same frames as the host evaluation
        assert r["device"]["ser"] == pytest.approx(r["host"]["ser"], abs=2e-3)
    assert all(0 <= r["classical_frames"] <= 4 for r in rows)  # each frame decided by the learned or the classical receiver
    assert (out / "device-ser.png").is_file() and (out / "bundle" / "manifest.json").is_file()
    assert main(["demo", "--out", str(out), "--algos", "joint", "--quiet", "--target", "onnx"]) == 2
    assert "--device-algo metasgd is not among" in capsys.readouterr().err
