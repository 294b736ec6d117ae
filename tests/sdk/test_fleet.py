"""The fleet loop: telemetry authenticated per device through a real Mosquitto broker, online meta-learning, and the
canary rollout that stops a bad release and confirms a sound one."""

import contextlib
import io
import json
import shutil
import threading
import time

import numpy as np
import pytest

from metaedge.deploy import telemetry
from metaedge.firmware_sim.fleet import Identity, topic
from metaedge.sdk.fleet import broker
from metaedge.sdk.fleet.rollout import Operator, bad_release, drill, run_rollout, verdict
from metaedge.sdk.fleet.scenario import Field
from metaedge.sdk.fleet.store import FleetDir
from metaedge.sdk.fleet.stream import Telemetry
from metaedge.sdk.fleet.up import Running, export_release, provision

pytestmark = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs the Mosquitto broker: run 'make env'")
KEY_A, KEY_B = b"a" * 32, b"b" * 32
VERSION = {"sha256": "0" * 64, "security_counter": 1, "release": 0}


def body(device="dev-0000", seq=0, **changes):
    return {"device": device, "seq": seq, "frame": 1, "version": VERSION, "receiver": "learned", "check": [1, 32], **changes}


def decode(device, message, last=None):
    return telemetry.decode(device, message, {"dev-0000": KEY_A, "dev-0001": KEY_B}, {} if last is None else last, classes=16)


def test_a_report_is_accepted_only_from_its_own_device_key_and_topic_once():
    good = telemetry.encode(KEY_A, body(support=1, pilots={"x": [[0.1, -0.2], [1.0, 3.0]], "y": [3, 5]}))
    last = {}
    report = decode("dev-0000", good, last)
    assert (report.device, report.check, report.support, report.pilots.y) == ("dev-0000", (1, 32), 1, [3, 5])
    with pytest.raises(telemetry.TelemetryError) as e:
        decode("dev-0000", good, last)
    assert e.value.reason == "replayed"
    cases = {
        "bad-mac": ("dev-0001", good),  # dev-0000's message on dev-0001's topic: not under dev-0001's key
        "wrong-device": ("dev-0000", telemetry.encode(KEY_A, body(device="dev-0001", seq=5))),
        "unknown-device": ("dev-0009", good),
        "oversized": ("dev-0000", good + b" " * telemetry.MAX_BYTES),
        "malformed": ("dev-0000", telemetry.encode(KEY_A, body(seq=7, support=1, pilots={"x": [[0.1, 0.2]] * 2, "y": [16, 0]}))),
    }
    for reason, (device, message) in cases.items():
        with pytest.raises(telemetry.TelemetryError) as e:
            decode(device, message, dict(last))
        assert e.value.reason == reason, reason


@pytest.mark.parametrize(
    "change",
    [
        {"check": [5, 4]},
        {"receiver": "oracle"},
        {"version": {"sha256": "x", "security_counter": 1, "release": 0}},
        {"support": 1, "pilots": {"x": [[0.0, 0.0]] * 65, "y": [0] * 65}},
        {"support": 1, "pilots": {"x": [[0.0], [0.0, 0.0]], "y": [0, 0]}},
        {"support": 2, "pilots": {"x": [[0.0, 0.0]] * 2, "y": [0, 0]}},  # no query left
        {"pilots": {"x": [[0.0, 0.0]] * 2, "y": [0, 0]}},  # no support count
        {"support": 1, "pilots": {"x": [[1e300, 0.0], [0.0, 0.0]], "y": [0, 0]}},  # finite, but it would poison θ
        {"check": [0, 0]},
        {"seq": -1},
        {"seq": "7"},
        {"version": {"sha256": "z" * 64, "security_counter": 1, "release": 0}},
        {"version": {**VERSION, "extra": 1}},
        {"extra": 1},
        {"residuals": [0.1, -1.0]},
        {"residuals": [0.1]},
        {"reference_errors": 33},
    ],
)
def test_malformed_reports_are_refused(change):
    with pytest.raises(telemetry.TelemetryError) as e:
        decode("dev-0000", telemetry.encode(KEY_A, body(**change)))
    assert e.value.reason == "malformed"


def test_the_canary_test_reverts_what_is_worse_or_unproven_and_confirms_what_is_shown_sound():
    rng = np.random.default_rng(0)
    others = rng.normal(0.0, 0.01, 60)
    assert verdict((rng.normal(0.05, 0.01, 10), others), tolerance=0.02).regression  # clearly worse
    assert verdict((rng.normal(0.0, 0.2, 10), others), tolerance=0.02).regression  # too noisy to show it is within 0.02
    sound = verdict((rng.normal(-0.01, 0.01, 10), others), tolerance=0.02)
    assert not sound.regression and sound.difference["ci95"][1] <= 0.02
    # the same SER, but the canaries' learned receiver splits their frames worse (the classical one masked it)
    masked = verdict((rng.normal(-0.01, 0.01, 10), others), 0.02, residual=(rng.normal(1.0, 0.2, 10), rng.normal(0.0, 0.2, 60)))
    assert masked.regression and "learned receiver" in masked.reason
    better = verdict((rng.normal(-0.01, 0.01, 10), others), 0.02, residual=(rng.normal(-0.3, 0.2, 10), rng.normal(0.0, 0.2, 60)))
    assert not better.regression


def test_field_refuses_bad_settings():
    from metaedge.sdk.errors import UserError

    for bad in ({"shift": "moon"}, {"rho": 1.5}, {"check": 0}, {"check": 300}):
        with pytest.raises(UserError):
            Field(**bad)


@pytest.fixture(scope="module")
def fleet_run(tmp_path_factory):
    """A Meta-SGD demodulator trained long enough that its selecting receiver beats the classical one (seconds)."""
    from metaedge.sdk.families.demod.task import DemodConfig
    from metaedge.sdk.families.demod.training import TrainConfig, Trainer

    run = tmp_path_factory.mktemp("fleet-run") / "run"
    trainer = Trainer(run, DemodConfig(pilots=8, val_pilots=64), TrainConfig(algo="metasgd", iterations=1500, val_every=500, val_devices=20))
    trainer.start(resume=False)
    trainer.run()
    return run


@pytest.fixture(scope="module")
def fleet(fleet_run, tmp_path_factory):
    """8 devices of the Meta-SGD run on a broker on loopback, running frames in a thread."""
    run = fleet_run
    fleet = FleetDir(tmp_path_factory.mktemp("fleet") / "fleet")
    spec = provision(fleet, run, 8, Field(rho=0.9, payload=64, check=16), seed=0, reporting=1.0, opt_out=0.0, decided=True)
    running = Running(fleet, spec)
    thread = threading.Thread(target=running.run, args=(0, 0.01), daemon=True)
    thread.start()
    time.sleep(6)  # the broker, the devices' first boot, their connections
    yield fleet
    running.stop()
    thread.join(30)


def test_devices_report_and_an_impostor_is_dropped(fleet):
    stream = Telemetry(fleet, broker.LEARNER, classes=16)
    try:
        a = Identity.load(fleet.devices / "dev-0000" / "identity.json")
        impostor = broker.connect("dev-0000", a.password, fleet.spec().port)
        forged = {"device": "dev-0001", "seq": 10**9, "frame": 1, "version": VERSION, "receiver": "learned", "check": [0, 16]}
        impostor.publish(topic("telemetry", "dev-0001"), telemetry.encode(a.key, forged)).wait_for_publish(5)  # the broker's ACL drops it
        impostor.publish(topic("telemetry", "dev-0000"), telemetry.encode(a.key, forged)).wait_for_publish(5)  # the host drops it
        impostor.publish(topic("telemetry", "dev-0000"), b"\x00" * 40).wait_for_publish(5)
        reports = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and (len(reports) < 40 or "wrong-device" not in stream.dropped):
            reports += stream.reports(timeout=0.5)
        impostor.loop_stop()
        impostor.disconnect()
    finally:
        stream.close()
    assert len(reports) >= 40
    assert {r.device for r, _ in reports} <= set(fleet.spec().devices)
    assert not any(r.seq == 10**9 for r, _ in reports)  # neither copy of the forged report was accepted
    assert stream.dropped["wrong-device"] == 1 and stream.dropped["bad-mac"] >= 1
    first = reports[0][0]
    assert first.pilots is not None and len(first.pilots.y) == 8 + 16 and first.support == 8  # pilots, then the check symbols
    from metaedge.firmware_sim.fleet import check_symbols
    from metaedge.sdk.families.demod.task import pilot_symbols

    assert first.pilots.y[8:] == check_symbols(16, 16, pilot_symbols(16).tolist()).tolist()  # the bundle's pilot sequence
    assert sorted(first.pilots.y[8:]) == list(range(16))  # every class once
    decided = [r.decided for r, _ in reports if r.decided is not None]  # marked apart from the known samples
    assert decided and all(1 <= len(d.y) <= telemetry.MAX_SAMPLES for d in decided)


def test_the_learner_takes_the_stream(fleet):
    from metaedge.sdk.fleet.config import LearnOptions, OnlineOptions
    from metaedge.sdk.fleet.learn import run

    report = run(LearnOptions(dir=fleet.path, tasks=60, duration=60, online=OnlineOptions(batch=4, evaluate_every=30, holdout=0.3)))
    assert report["counts"]["tasks"] >= 60 and report["counts"]["steps"] >= 60 // 4
    assert report["telemetry"]["accepted"] >= 60


def test_a_bad_release_is_stopped_at_the_canaries_and_a_sound_one_reaches_every_device(fleet):
    from metaedge.sdk.fleet.config import DrillOptions
    from metaedge.sdk.rundir import load_run

    report = drill(DrillOptions(dir=fleet.path, window=20, timeout=60))
    assert report["outcome"] == "reverted" and report["stopped_at_canaries"] and report["exposed"] == []
    log = [json.loads(line) for line in fleet.log_file.read_text().splitlines()]
    assert [e["stage"] for e in log[-3:]] == ["canary", "decision", "reverted"]

    latest = fleet.latest_release()
    run = load_run(fleet.release(1) / "run")
    sound = export_release(fleet, latest + 1, run.config, run.theta)
    outcome = run_rollout(fleet, sound, canary=0.3, frames=30, tolerance=0.1, timeout=60)  # 3 canaries: a wide interval
    assert outcome["outcome"] == "confirmed" and outcome["failed"] == {}, outcome["reason"]
    operator = Operator(fleet)
    try:
        images = operator.each(fleet.spec().devices, lambda c: c.images())
    finally:
        operator.close()
    for listing in images.values():
        active = next(i for i in listing["images"] if i["active"])
        assert active["confirmed"] and active["security_counter"] == latest + 1
        assert listing["security_counter"] == latest + 1  # the counter floor rose: release 1 can never return


def test_bad_release_is_signed_and_counted_like_any_other(fleet):
    from metaedge.deploy.bundle import read_bundle

    latest = fleet.latest_release()
    bundle = read_bundle(bad_release(fleet))
    assert bundle.manifest.security_counter == latest + 1 and bundle.signature
    shutil.rmtree(fleet.release(latest + 1))


def test_fleet_commands_answer_a_missing_fleet_in_one_line(tmp_path):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "metaedge.sdk.cli.main", "fleet", "status", "--dir", str(tmp_path / "none")], capture_output=True, text=True
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "is not a fleet directory" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_online_meta_learning_from_a_field_beats_the_starting_theta_on_held_back_devices(trained_bundle):
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.fleet.bench import reports
    from metaedge.sdk.fleet.config import OnlineOptions
    from metaedge.sdk.fleet.online import OnlineLearner
    from metaedge.sdk.fleet.scenario import Fleet
    from metaedge.sdk.rundir import load_run

    run = load_run(trained_bundle[0])
    task, train = configs_from_run(run.config)
    field = Field(rho=0.5, payload=64, check=32)
    learner = OnlineLearner(run.theta, train, task.order, field.pilots, OnlineOptions(batch=16, steps=4, holdout=0.3, evaluate_every=10**9))
    fleet = Fleet(task, field, 30, seed=3)
    for frame in range(40):
        for report in reports(fleet, frame):
            learner.add(report)
    assert learner.counts["held_back"] > 0 and learner.counts["steps"] == learner.counts["tasks"] // 16 * 4
    verdict = learner.score()
    assert verdict["candidate_ser"] < verdict["running_ser"] - 0.05 and verdict["release"]
    assert verdict["devices"] >= 5


def test_bench_fleet_measures_the_three_curves(trained_bundle, tmp_path):
    from metaedge.sdk.cli.main import main

    argv = ["bench", "fleet", "--run", str(trained_bundle[0]), "--devices", "10", "--frames", "3", "--test-devices", "20"]
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert main([*argv, "--rhos", "0,1", "--plot", str(tmp_path / "fleet.png"), "--json", "--quiet"]) == 0
    report = json.loads(buffer.getvalue())
    assert [p["frames"] for p in report["frames"]] == [0, 1, 2, 3] and [p["rho"] for p in report["rho"]] == [0.0, 1.0]
    assert report["shift"]["scenario"] == "iq-milder" and (tmp_path / "fleet.png").stat().st_size > 10_000
    for point in report["frames"]:
        assert 0.0 <= point["learned"]["ser"] <= 1.0 and "selecting_vs_classical" in point


def test_the_operator_reads_the_answer_to_its_own_request_only():
    from metaedge.deploy import wire
    from metaedge.sdk.fleet.rollout import Carrier

    class Broker:  # what a request publishes: nothing to deliver here
        def publish(self, *args, **kwargs):
            pass

    carrier = Carrier(Broker(), "dev-0000", timeout=1.0)
    carrier.write(wire.encode({"op": "info", "seq": 7}))
    carrier.flush()
    for stale in (wire.encode({"seq": 6, "ok": True, "late": True}), wire.encode({"seq": 7, "ok": True, "mine": True})):
        carrier.inbox.put(stale)
    carrier.inbox.put(wire.encode({"seq": 7, "ok": True, "mine": True}))  # a QoS-1 duplicate
    header, _ = wire.read_message(carrier)
    assert header.get("mine") and not header.get("late")
    carrier.write(wire.encode({"op": "stats", "seq": 8}))
    carrier.flush()
    with pytest.raises(OSError, match="no response"):  # the duplicate of 7 is not the answer to 8
        wire.read_message(carrier)


def test_a_step_whose_meta_gradient_is_not_finite_moves_nothing():
    import torch

    from metaedge.sdk.meta.outer import OuterLoop

    theta = {"w": torch.ones(3)}
    loop = OuterLoop(theta, lambda p, batch: ({"w": batch}, batch.sum()), outer_lr=0.1)
    assert loop.step(torch.tensor([float("nan"), 0.0, 0.0]), finite_only=True) is None
    assert torch.equal(loop.theta["w"], torch.ones(3)) and not loop.opt.state  # Adam's moments untouched
    assert loop.step(torch.ones(3), finite_only=True) is not None and not torch.equal(loop.theta["w"], torch.ones(3))


def test_a_canary_that_stops_reporting_is_a_regression():
    from metaedge.sdk.fleet.rollout import Window, _decide

    def window(errors):
        return Window(errors=errors, symbols=320, frames=10, reference=errors)

    canaries, others = ["c1", "c2", "c3"], ["o1", "o2", "o3"]
    before = {d: window(30) for d in canaries + others}
    after = {d: window(30) for d in canaries[:2] + others}  # c3 refused its frames on the release
    decision = _decide(before, after, canaries, others, booted=canaries, tolerance=0.5)
    assert decision.regression and "c3" in decision.reason


def test_device_statuses_are_untrusted():
    from metaedge.sdk.fleet.status import parse_status

    good = {"device": "dev-0000", "frames": 3, "version": VERSION, "mode": "trial", "check_ser": 0.1}
    assert parse_status(json.dumps(good).encode())["mode"] == "trial"
    wrong = [json.dumps({**good, **change}).encode() for change in ({"mode": 3}, {"version": "x"}, {"frames": None})]
    for bad in (b"[" * 5000, b"[]", b"{" + b" " * 2000 + b"}", *wrong):
        assert parse_status(bad) is None


def test_fleet_commands_refuse_what_would_harm_in_one_line(tmp_path, fleet_run):
    import subprocess
    import sys

    def metaedge(*args):
        result = subprocess.run([sys.executable, "-m", "metaedge.sdk.cli.main", "fleet", *args], capture_output=True, text=True)
        assert result.returncode == 2 and "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
        return result.stderr

    precious = tmp_path / "runs"
    (precious / "run").mkdir(parents=True)
    assert "not a fleet directory" in metaedge("up", "--dir", str(precious), "--fresh")
    assert (precious / "run").is_dir()  # --fresh never removes what is not a fleet
    assert "not empty" in metaedge("up", "--dir", str(precious), "--run", str(fleet_run))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "fleet.json").write_text("{not json")
    assert "is corrupt" in metaedge("status", "--dir", str(broken))
    assert "pilots 64" in metaedge("up", "--dir", str(tmp_path / "new"), "--run", str(fleet_run), "--pilots", "64")
    assert not (tmp_path / "new").exists()


def test_a_rollout_refuses_a_bundle_its_devices_would_refuse(fleet, trained_bundle):
    from metaedge.sdk.errors import UserError

    with pytest.raises(UserError, match="signature|signer|key"):  # signed, but not with the fleet's release key
        run_rollout(fleet, trained_bundle[1], canary=0.3, frames=5, tolerance=0.1, timeout=5)
    with pytest.raises(UserError, match="not above"):  # release 1 is what the fleet was provisioned with
        run_rollout(fleet, fleet.release(1) / "bundle", canary=0.3, frames=5, tolerance=0.1, timeout=5)


def test_the_broker_refuses_a_wrong_password_in_one_line(fleet):
    from metaedge.sdk.errors import UserError

    with pytest.raises(UserError, match="refused dev-0000"):
        broker.connect("dev-0000", "not-the-password", fleet.spec().port)
