"""The conformance suite: generated deterministically, passed by our device, and able to catch a device that breaks a
rule. Real device processes on loopback, real bundles."""

import json
from pathlib import Path

import pytest
from conftest import Served

from metaedge.deploy.signing import generate
from metaedge.sdk.cli.main import main
from metaedge.sdk.conformance import cases, runner, suite
from metaedge.sdk.conformance.suite import EXPECTATIONS, KEY_FILE


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "conformance"
    assert main(["conformance", "generate", "--out", str(out)]) == 0
    return out


def play(generated, url, capsys, *extra) -> dict:
    code = main(["conformance", "run", "--suite", str(generated), "--device", url, "--json", "--quiet", *extra])
    out, err = capsys.readouterr()
    assert out, f"the run ended without a report (exit {code}): {err}"
    report = json.loads(out)
    assert code == (0 if report["failed"] == 0 else 1)
    return report


def test_the_suite_covers_every_kind_of_case_and_names_its_sections(generated):
    index = suite.read_index(generated)
    kinds = {case["expect"] for case in index["cases"]}
    assert kinds == set(EXPECTATIONS) and len(index["cases"]) >= 40
    assert all(case["section"].startswith(("bundle-format §", "device-protocol §")) for case in index["cases"])
    assert len({case["id"] for case in index["cases"]}) == len(index["cases"])


def test_our_device_passes_every_case_through_its_operator_key(generated, tmp_path, capsys):
    operator = generate(tmp_path / "keys", "operator")
    device = Served(tmp_path / "state", generated / KEY_FILE, "--operator", str(operator[1]))
    try:
        report = play(generated, device.url, capsys, "--operator-key", str(operator[0]))
        again = ["conformance", "run", "--suite", str(generated), "--device", device.url, "--operator-key", str(operator[0]), "--quiet"]
        assert main(again) == 2  # the suite needs a fresh device, and says so
        assert "is not fresh" in capsys.readouterr().err
    finally:
        device.stop()
    assert report["failed"] == 0, [r for r in report["results"] if not r["passed"]]
    onnx = [c for c in suite.read_index(generated)["cases"] if c["target"] in (None, "onnx")]
    assert report["passed"] == len(onnx) and report["skipped"] == report["cases"] - len(onnx)
    assert all("error response" in r["detail"] for r in report["results"] if r["id"].startswith("auth-"))


@pytest.mark.parametrize(
    "target, options, valid, sections, rules",
    [
        ("linear", (), "valid-channel-predictor", "linear-section-", 5),
        # the loihi device of the reference engine, the host simulator whose decisions Lava's equal (test_loihi_device_process)
        ("loihi", ("--engine", "reference"), "valid-spiking-receiver", "loihi-section-", 7),
        # the qiskit device on its exact backend: the deterministic form of the adaptation (a sampling backend draws)
        ("qiskit", ("--backend", "exact"), "valid-born-receiver", "qiskit-section-", 8),
        # the mcu device: the firmware under QEMU, against ONNX Runtime's outputs of the same receiver
        ("mcu", (), "valid-mcu-receiver", "mcu-section-", 7),
    ],
)
def test_a_device_of_another_target_plays_its_own_cases_and_the_protocol_ones(generated, tmp_path, capsys, target, options, valid, sections, rules):
    device = Served(tmp_path / "state", generated / KEY_FILE, *options, target=target)
    try:
        report = play(generated, device.url, capsys)
    finally:
        device.stop()
    index = suite.read_index(generated)
    # driven without an operator key: operator authentication is not played, and the runner says so
    own = [c["id"] for c in index["cases"] if c["target"] in (None, target) and c["expect"] not in ("refuse-unsigned", "refuse-forged")]
    assert report["failed"] == 0 and report["passed"] == len(own), [r for r in report["results"] if not r["passed"]]
    assert report["skipped"] == len(index["cases"]) - len(own) and valid in own and sum(c.startswith(sections) for c in own) == rules
    assert any(c.startswith("protocol-") for c in own) and sum(c.startswith(f"{target}-frame-") for c in own) >= 3
    unsigned = [r for r in report["results"] if r["id"].startswith("auth-")]
    assert len(unsigned) == 5 and all(r["skipped"] and "without an operator key" in r["detail"] for r in unsigned)


def test_a_device_that_breaks_a_rule_fails_exactly_that_case(generated, tmp_path, capsys):
    """A development device accepts unsigned bundles: the suite says so, and nothing else."""
    device = Served(tmp_path / "state", generated / KEY_FILE, "--allow-unsigned")
    try:
        report = play(generated, device.url, capsys)
    finally:
        device.stop()
    assert [r["id"] for r in report["results"] if not r["passed"]] == ["unsigned"]


class _DroppingDevice:
    """A device that answers the runner's opening questions and then drops the connection (a crash, a reboot)."""

    operator_key = None

    def call(self, op, *_, **__):
        answers = {"info": {"target": "onnx"}, "image.list": {"security_counter": 0, "images": []}}
        if op not in answers:
            raise ConnectionError("the connection to the device failed: [Errno 104] Connection reset by peer")
        return answers[op], {}

    def upload(self, bundle):
        return self.call("image.upload")

    def deploy(self, bundle, confirm=False):
        return self.upload(bundle)


def test_a_device_that_stops_answering_fails_the_case_it_was_on_and_the_rest_are_not_played(generated):
    report = runner.run(generated, _DroppingDevice(), "tcp://127.0.0.1:9")
    first, *rest = [r for r in report["results"] if not r.get("skipped")]
    assert not first["passed"] and "stopped answering" in first["detail"] and "Connection reset" in first["detail"]
    assert rest and all(not r["passed"] and f"during '{first['id']}'" in r["detail"] for r in rest)
    assert report["failed"] == len(rest) + 1 and report["passed"] == 0


@pytest.mark.slow
def test_generating_twice_writes_the_same_bytes(generated, tmp_path):
    again, public = cases.generate()
    suite.write(again, public, tmp_path / "again")
    for path in sorted(p for p in generated.rglob("*") if p.is_file()):
        assert (tmp_path / "again" / path.relative_to(generated)).read_bytes() == path.read_bytes(), path


def test_running_without_a_suite_says_how_to_make_one(tmp_path, capsys):
    assert main(["conformance", "run", "--suite", str(tmp_path), "--device", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "metaedge conformance generate --out" in err and "Traceback" not in err and err.count("\n") == 1


def test_the_spec_lists_every_case_of_the_suite(generated):
    """The statement → case table at the end of the spec is the suite's own (regenerate it with 'conformance table')."""
    spec = (Path(__file__).resolve().parents[2] / "docs" / "bundle-format.md").read_text()
    assert suite.statement_table(suite.read_index(generated)) in spec
