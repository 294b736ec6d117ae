"""The device benchmark's machinery: every variant computes the same frame; a real device answers."""

import pytest

from metaedge.deploy.bundle import read_bundle
from metaedge.sdk.bench.device import bench_device, bench_round_trip

RECEIVER_FRAMES = {"receiver_frame", "receiver_frame_guard_only", "receiver_frame_random_samples"}


def test_variants_agree_and_report_medians(trained_bundle):
    bundle = read_bundle(trained_bundle[1])
    report = bench_device(bundle, repeats=20, steps=3)
    variants = {"onnx_step_loop", "onnx_iobinding", "torch_eager", "torch_forward_only"}
    # a one-step bundle carries no Loop graph, so its device steps with IO binding
    loop = "adapt_loop" in bundle.artifacts
    assert loop == (bundle.manifest.raw["algorithm"]["inner_steps"] > 1)
    assert set(report["median_us"]) == variants | RECEIVER_FRAMES | ({"onnx_loop"} if loop else set())
    assert report["device_mode"] == ("onnx_loop" if loop else "onnx_iobinding")
    assert all(d <= 1e-5 for d in report["max_abs_prob_diff_vs_torch"].values()), report["max_abs_prob_diff_vs_torch"]
    assert report["frame"]["steps"] == 3 and report["torch_over_onnx"] > 0
    # the device's whole frame, with the selection and with the guard alone, on frames of the training conditions
    shares = report["classical_share"]
    assert shares["receiver_frame_guard_only"] == 0 and 0 <= shares["receiver_frame"] <= 1
    assert report["selection_over_guard_only"] > 0 and report["selection_worst_over_guard_only"] > 0


def test_a_one_step_bundle_is_timed_with_its_fused_frame(trained_bundle, tmp_path):
    from metaedge.sdk.targets import export

    report = bench_device(export("onnx", trained_bundle[0], tmp_path / "one", inner_steps=1), repeats=20)
    assert report["device_mode"] == "onnx_frame"
    assert set(report["median_us"]) == {"onnx_frame", "onnx_iobinding", "onnx_step_loop", "torch_eager", "torch_forward_only"} | RECEIVER_FRAMES
    assert all(d <= 1e-5 for d in report["max_abs_prob_diff_vs_torch"].values()), report["max_abs_prob_diff_vs_torch"]


def test_round_trip_through_a_real_device(trained_bundle, tmp_path):
    report = bench_round_trip(trained_bundle[1], frames=5, pilots=8, symbols=200, state=tmp_path)
    assert report["round_trip_us"]["p50"] > 0 and report["in_process"]["round_trip_us"]["p50"] > 0
    # the contained device's memory counts its receiver's process too: two interpreters, more than one
    assert report["device_peak_rss_bytes"] > report["in_process"]["device_peak_rss_bytes"] > 1 << 20


@pytest.mark.slow
def test_soak_under_attack_machinery(trained_bundle, tmp_path):
    from metaedge.sdk.bench.attack_soak import bench_attack

    report = bench_attack(trained_bundle[1], frames=400, pilots=8, symbols=50, work=tmp_path)
    assert report["device_frames"] == 400  # the trigger frame is refused, not counted; every operator frame served
    assert report["device_violations"] == 1 and "ran over its 2 s limit" in report["attack"]["trigger"]["answer"]
    assert report["attack"]["connections_opened"] >= 300 and report["attack"]["refused_busy"] > 0
    assert report["peak_rss_bytes"] > 1 << 20 and report["round_trip_us"]["max"] >= report["round_trip_us"]["p99"]


def test_soak_machinery(trained_bundle, tmp_path):
    from metaedge.sdk.bench.device import bench_soak

    report = bench_soak(trained_bundle[1], frames=300, pilots=8, symbols=50, state=tmp_path)
    assert report["device_frames"] == 300 and report["device_errors"] == 0
    assert report["fds_end"] == report["fds_after_warmup"] and report["frames_per_s"] > 0


def test_bundles_torch_cannot_recompute_are_timed_without_it(trained_bundle, tmp_path, rewritten):
    """Eager torch recomputes a plain MLP's frame from the manifest; for an ensemble, a Gaussian posterior or a module
    assignment it cannot, so only the device's modes are timed; a predictor is refused with one line."""
    import pytest

    from metaedge.sdk.errors import UserError

    gaussian = rewritten(trained_bundle[1], tmp_path / "g", lambda m: m["model"].update(posterior="gaussian"))
    report = bench_device(gaussian, repeats=10, steps=1)
    assert not any(n.startswith("torch") for n in report["median_us"]) and report["torch_over_onnx"] is None
    assert "Gaussian posterior" in report["torch_unavailable"]

    def as_predictor(m):
        m["task"].pop("classes")
        m["task"].pop("fallback")  # a classical demodulator has no place in a predictor
        m["task"].update(outputs=16, pilot_sequence=None)
        m["graphs"]["forward"]["outputs"][0].update(role="outputs")

    predictor = rewritten(trained_bundle[1], tmp_path / "p", as_predictor)
    with pytest.raises(UserError, match="bench device times classifier bundles"):
        bench_device(predictor, repeats=10)


def test_the_bench_commands_report_through_the_cli(trained_bundle, capsys):
    """The generated commands: text and exit code of fuzz, JSON of soak, one line for a bundle that is not one."""
    import json

    from metaedge.sdk.cli.main import main

    bundle = str(trained_bundle[1])
    assert main(["bench", "fuzz", "--bundle", bundle, "--count", "100", "--quiet"]) == 0
    assert "total: 100 inputs, 0 crashes, 0 hangs" in capsys.readouterr().out
    assert main(["bench", "soak", "--bundle", bundle, "--frames", "40", "--symbols", "20", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["frames"] == 40
    assert main(["bench", "fuzz", "--bundle", trained_bundle[0].as_posix(), "--count", "1"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
