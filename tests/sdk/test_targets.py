"""One export entry point for every target: options and releases are checked before any work, one line each."""

import pytest

from metaedge.sdk.cli.main import main
from metaedge.sdk.errors import UserError
from metaedge.sdk.targets import OPTIONS, TARGETS, Release, Target, check_options, export


@pytest.mark.parametrize(
    "target, options, fragment",
    [
        ("onnx", {"shots": 64}, "--shots does not apply to the onnx target: it applies to the qiskit target only"),
        ("qiskit", {"ensemble": 3}, "--ensemble does not apply to the qiskit target: it applies to the onnx target only"),
        ("loihi", {"inner_steps": 2}, "the rule adapts while the pilots are presented"),
        ("linear", {"inner_steps": 2}, "each frame's predictor is solved exactly"),
        ("linear", {"shots": 8}, "--shots does not apply to the linear target"),
        ("fpga", {}, "unknown target 'fpga'; choose one of onnx, qiskit, loihi, linear"),
    ],
)
def test_options_a_target_does_not_take_are_refused(target, options, fragment):
    with pytest.raises(UserError, match=fragment):
        check_options(target, options)


def test_unset_options_are_dropped_and_every_option_has_a_taker():
    assert check_options("qiskit", {"inner_steps": None, "shots": 4, "ensemble": None}) == {"shots": 4}
    assert {o for t in TARGETS.values() for o in t.options} == set(OPTIONS)


@pytest.mark.parametrize(
    "release, fragment",
    [
        ({"security_counter": -1}, "must lie in"),
        ({"security_counter": 2**32}, "must lie in"),
        ({"expires": "2027-01-31"}, "--expires: expires '2027-01-31' is not a UTC time"),
    ],
)
def test_bad_releases_are_refused(release, fragment):
    with pytest.raises(UserError, match=fragment):
        Release(**release)
    assert Release(7, "2027-01-31T00:00:00Z").fields() == {"security_counter": 7, "expires": "2027-01-31T00:00:00Z"}


def test_a_used_output_directory_is_refused_before_any_work(trained_bundle, tmp_path, monkeypatch):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "file").write_text("x")
    # an exporter that cannot even be imported: reaching it would raise ModuleNotFoundError instead
    monkeypatch.setitem(TARGETS, "onnx", Target("metaedge.sdk.targets.not_reached", "runs"))
    with pytest.raises(UserError, match="already exists and is not an empty directory"):
        export("onnx", trained_bundle[0], tmp_path / "used")


def test_the_export_command_generates_its_flags_from_the_targets(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = capsys.readouterr().out
    assert all(f"--{name.replace('_', '-')}" in text for name in OPTIONS) and all(name in text for name in TARGETS)
