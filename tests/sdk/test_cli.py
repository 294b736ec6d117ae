"""The command line: one clear line and a non-zero exit for bad input; JSON where scripts read."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metaedge.sdk.cli.main import main

SMALL = [
    "--order",
    "4",
    "--snr-db",
    "15",
    "--val-pilots",
    "32",
    "--hidden",
    "8,8",
    "--meta-devices",
    "30",
    "--val-devices",
    "10",
    "--val-every",
    "10",
    "--quiet",
]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "fomaml"
    assert main(["train", "demod", "--algo", "fomaml", "--iterations", "20", "--out", str(out), *SMALL]) == 0
    return out


def assert_one_line_error(code, out, err, fragment):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("metaedge: error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in err + out


@pytest.mark.parametrize(
    "argv,fragment",
    [
        (["train", "demod", "--out", "X", "--bogus"], "unrecognized arguments: --bogus"),
        (["train", "demod", "--out", "X", "--algo", "mamll"], "unknown algorithm 'mamll'"),
        (["train", "demod", "--out", "X", "--pilots", "15000", "--val-pilots", "10000"], "exceed the frame"),
        (["train", "demod", "--out", "X", "--snr-db", "nan"], "not a finite number"),
        (["train", "demod", "--out", "X", "--inner-lr", "-1"], "--inner-lr -1.0 must be a positive number"),
        (["train", "demod", "--out", "X", "--order", "8"], "not a square QAM order"),
        (["train", "demod", "--out", "X", "--iterations", "0"], "0 must be at least 1"),
        (["train", "demod", "--out", "X", "--algo", "reptile", "--adapt", "input"], "reptile needs --adapt all"),
        (["train", "demod", "--out", "X", "--adapt", "last"], "--adapt 'last' is unknown; use all or input"),
        (["train", "demod", "--out", "X", "--algo", "fomaml", "--inner-data", "pooled"], "fomaml needs --inner-data support"),
        (["train", "demod", "--out", "X", "--algo", "reptile", "--inner-data", "all"], "--inner-data 'all' is unknown"),
        (["train", "demod"], "the following arguments are required: --out"),
        (["train", "demod", "--out", "NOPE", "--resume"], "does not exist"),
        (["train"], "required: TASK"),
        (["eval", "NOPE"], "run directory 'NOPE' does not exist"),
        (["eval", "NOPE", "--pilots", "1,x"], "not a comma-separated list"),
        (["bench", "meta-train", "--algos", "mamll"], "--algos: unknown mamll"),
        (["bench", "meta-train", "--memory-steps", "0"], "must list positive integers"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_gives_one_line(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(*run_cli(capsys, *argv), fragment)


def test_corrupt_run_directories_give_one_line(capsys, tmp_path, trained):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    assert_one_line_error(*run_cli(capsys, "eval", str(not_a_run)), "is not a run directory")
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "config.json").write_text("{not json")
    assert_one_line_error(*run_cli(capsys, "eval", str(garbled)), "is corrupt")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((trained / "config.json").read_text())
    (broken / "theta.safetensors").write_bytes((trained / "theta.safetensors").read_bytes()[:40])
    assert_one_line_error(*run_cli(capsys, "eval", str(broken)), "theta.safetensors is corrupt")


def test_out_directory_in_use_needs_resume(capsys, trained):
    assert_one_line_error(*run_cli(capsys, "train", "demod", "--out", str(trained), *SMALL), "pass --resume")


def test_resume_extends_a_run(capsys, tmp_path, trained):
    run = tmp_path / "copy"
    run.mkdir()
    for f in trained.iterdir():
        (run / f.name).write_bytes(f.read_bytes())
    code, out, _ = run_cli(capsys, "train", "demod", "--out", str(run), "--resume", "--iterations", "30", "--json", "--quiet")
    assert code == 0 and json.loads(out)["iteration"] == 30


def test_eval_json_has_one_entry_per_method_with_ser_per_pilot_count(capsys, tmp_path, trained):
    code, out, err = run_cli(
        capsys,
        "eval",
        str(trained),
        "--pilots",
        "1,4",
        "--devices",
        "5",
        "--payload",
        "200",
        "--json",
        "--quiet",
        "--plot",
        str(tmp_path / "ser.png"),
    )
    assert code == 0, err
    report = json.loads(out)
    assert [m["name"] for m in report["methods"]] == ["fomaml", "scratch", "model-based (MMSE + ML)"]
    for m in report["methods"]:
        assert set(m["ser"]) == {"1", "4"}
        for v in m["ser"].values():
            assert v["ci95"][0] <= v["ser"] <= v["ci95"][1] and 0 <= v["ser"] <= 1
            assert ("vs_reference" in v) == (m["algo"] != "model-based")
    assert (tmp_path / "ser.png").stat().st_size > 1000


def test_eval_table_is_readable(capsys, trained):
    code, out, _ = run_cli(capsys, "eval", str(trained), "--pilots", "2", "--devices", "3", "--payload", "100", "--quiet")
    assert code == 0
    assert "method \\ pilots" in out and "model-based (MMSE + ML)" in out and "fomaml" in out


def test_console_script_end_to_end(tmp_path):
    """The installed 'metaedge' executable: help has examples, bad input exits 2 with one line."""
    exe = Path(sys.executable).with_name("metaedge")
    help_text = subprocess.run([exe, "train", "demod", "--help"], capture_output=True, text=True, timeout=120)
    assert help_text.returncode == 0 and "examples:" in help_text.stdout
    bad = subprocess.run([exe, "eval", str(tmp_path / "missing")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    "argv, hint",
    [
        (["train", "power", "--method", "joint", "--out", "X"], "--method is now --algo"),
        (["bench", "link", "--steps", "1,2"], "--steps is now --inner-steps"),
        (["eval", "runs/x", "--adapt-steps", "5"], "--adapt-steps is now --inner-steps"),
        (["bench", "link", "--rtn"], "--rtn is now --rtn-taps 3"),  # not taken as an abbreviation of --rtn-taps
        (["train", "demod", "--out", "X", "--beta", "5", "2"], "--beta is now --beta-a A --beta-b B"),
    ],
)
def test_renamed_flags_are_answered_with_their_new_name(argv, hint, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert hint in err and len(err.strip().splitlines()) == 1


def test_argument_errors_name_the_command_once_and_point_at_the_task(capsys):
    code, out, err = run_cli(capsys, "train", "--out", "r1")
    assert_one_line_error(code, out, err, "train: argument TASK: invalid choice: 'r1'")
    assert "metaedge: error: metaedge" not in err and "e.g. 'metaedge train demod …'" in err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("metaedge ")


def test_a_path_that_cannot_be_written_is_one_line(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, out, err = run_cli(capsys, "keys", "generate", "--out", str(blocker / "keys"))
    assert_one_line_error(code, out, err, f"{blocker / 'keys'}")


@pytest.mark.parametrize("module, extra", [("qiskit_aer", "quantum"), ("lava", "loihi"), ("onnxruntime", "onnx"), ("torch", "train")])
def test_a_missing_package_names_the_extra_that_provides_it(capsys, monkeypatch, module, extra):
    import metaedge.sdk.cli.main as cli_main

    def missing(args):
        raise ModuleNotFoundError(f"No module named '{module}'", name=module)

    class Parsed:  # a command whose handler needs ``module``
        handler = staticmethod(missing)

    class Parser:
        def parse_args(self, argv):
            return Parsed()

    monkeypatch.setattr(cli_main, "build_parser", Parser)
    code, out, err = run_cli(capsys, "anything")
    assert_one_line_error(code, out, err, f"pip install 'metaedge[{extra}]' provides it")


def test_a_device_without_its_runtime_refuses_to_start(capsys, monkeypatch, tmp_path, signing_keys):
    from metaedge.backends import registry

    monkeypatch.setitem(registry._BACKENDS, "onnx", "metaedge.backends.no_such_runtime:Backend")
    code, out, err = run_cli(capsys, "device", "serve", "--state", str(tmp_path / "s"), "--trusted-key", str(signing_keys[1]))
    assert_one_line_error(code, out, err, "--target onnx: the 'onnx' backend needs onnxruntime")
    assert not (tmp_path / "s").exists()  # refused before it touched its state


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["eval", "RUN", "--plot", "/dev/null/ser.png"], "'/dev/null/ser.png' cannot be created: /dev/null is not a directory"),
        (["export", "RUN", "--out", "FILE"], "is a file; give a directory path"),
        (["train", "demod", "--out", "FILE"], "is a file; give a directory path"),
    ],
)
def test_output_paths_are_refused_before_any_work(argv, fragment, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    argv = [str(blocker) if a == "FILE" else str(tmp_path / "missing-run") if a == "RUN" else a for a in argv]
    code, out, err = run_cli(capsys, *argv)
    assert_one_line_error(code, out, err, fragment)


def test_listing_the_algorithms_does_not_load_torch():
    import subprocess
    import sys

    code = "import sys; from metaedge.sdk.cli.main import main; main(['algorithms', '--json']); sys.exit('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, "metaedge algorithms imported torch"
    assert '"name": "metasgd"' in result.stdout


@pytest.mark.slow
def test_the_readmes_python_example_runs_verbatim(tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (example,) = re.findall(r"```python\n(.*?)```", readme, re.S)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert "after 500 meta-iterations" in out and "model-based (MMSE + ML) 0." in out and "metasgd bundle:" in out
    assert (tmp_path / "api" / "bundle" / "manifest.sig").is_file()


def test_verbose_adds_the_options_a_command_runs_with_and_quiet_leaves_warnings_only(capsys):
    assert main(["-v", "algorithms"]) == 0
    assert "metaedge: debug: algorithms: AlgorithmList()" in capsys.readouterr().err
    assert main(["-q", "algorithms", "--json"]) == 0
    out, err = capsys.readouterr()
    assert err == "" and json.loads(out)[0]["name"] == "maml"


def test_a_reader_that_leaves_early_gets_no_error_message():
    """`metaedge algorithms | true`: the reader is gone before the command writes, which then stops quietly."""
    result = subprocess.run(f"'{sys.executable}' -m metaedge algorithms | true", shell=True, capture_output=True, text=True, timeout=120)
    assert result.stderr == ""


def test_the_specifications_ship_with_the_package(capsys):
    """`metaedge spec` prints the shipped bundle format, device protocol and conformance guide: the docs' own text."""
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    for name, file in (("bundle", "bundle-format.md"), ("protocol", "device-protocol.md"), ("conformance", "conformance.md")):
        assert main(["spec", name]) == 0
        assert capsys.readouterr().out == (docs / file).read_text().rstrip("\n") + "\n"
    assert main(["spec", "firmware"]) == 2
    assert "invalid choice: 'firmware'" in capsys.readouterr().err
