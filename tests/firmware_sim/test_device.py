"""The device in-process with the real ONNX backend: update state machine, uploads, frames, bad input."""

import hashlib

import numpy as np
import pytest

from metaedge.deploy.bundle import pack, read_bundle
from metaedge.deploy.manifest import Selection
from metaedge.firmware_sim.device import Device, DeviceError
from metaedge.firmware_sim.flash import Flash
from metaedge.firmware_sim.profile import PROFILES

PROFILE = PROFILES["edge-small"]
KEYS: list = []


@pytest.fixture(autouse=True)
def _keys(trusted):
    KEYS[:] = trusted


@pytest.fixture
def image(trained_bundle):
    return pack(read_bundle(trained_bundle[1]))


def upload(device, image, chunk=4096):
    digest = hashlib.sha256(image).hexdigest()
    result = {}
    for offset in range(0, len(image), chunk):
        result = device.upload(offset, len(image), digest, image[offset : offset + chunk])
    return result


def deploy(device, image, confirm=True):
    result = upload(device, image)
    device.test(result["sha256"])
    booted = device.reset()
    assert booted["mode"] == "trial", booted
    if confirm:
        device.confirm()
    return result


def frame(device, n_pilots=8, n=100, seed=0):
    rng = np.random.default_rng(seed)
    return device.frame({"pilots": rng.normal(0, 2, (n_pilots, 2)).astype(np.float32), "payload": rng.normal(0, 2, (n, 2)).astype(np.float32)})


def test_fresh_device_serves_management_only(tmp_path):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    assert device.running.mode == "none" and device.list_images()["images"][0]["valid"] is False
    with pytest.raises(DeviceError, match="no image is running"):
        frame(device)


def test_update_cycle_and_persistence(tmp_path, image):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    telemetry, out = frame(device)
    assert out["decisions"].shape == (100,) and telemetry["steps"] == 2 and telemetry["slot"] == 0  # the bundle's K
    info = device.info()
    assert info["task"]["classes"] == 16 and info["resources"]["parameters"] == 1896  # 2+10 → 10 → 30 → 30 → 16
    assert np.all((out["confidence"] > 0) & (out["confidence"] <= 1))
    # a restart (new process, same flash) boots the confirmed image
    again = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    assert again.running.mode == "confirmed" and again.running.slot == 0
    np.testing.assert_array_equal(frame(again)[1]["decisions"], out["decisions"])


def test_unconfirmed_update_reverts_on_the_next_boot(tmp_path, image):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    deploy(device, image, confirm=False)  # second image on trial in slot 1
    assert device.running.slot == 1 and device.running.mode == "trial"
    restarted = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)  # power cut / reboot before confirm
    assert restarted.running.slot == 0 and restarted.running.mode == "confirmed"
    assert any("revert" in e for e in restarted.stats.boots)


def test_uploads_resume_and_refuse_gaps(tmp_path, image):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    digest = hashlib.sha256(image).hexdigest()
    device.upload(0, len(image), digest, image[:1000])
    with pytest.raises(DeviceError, match="resume at 1000"):
        device.upload(2000, len(image), digest, image[2000:3000])
    assert device.upload_status()["received"] == 1000
    result = device.upload(1000, len(image), digest, image[1000:])
    assert result["complete"] and result["sha256"] == digest


@pytest.mark.parametrize("damage,fragment", [(lambda img: img[:-5] + b"XXXXX", "does not match its declared SHA-256")])
def test_corrupt_upload_is_refused_and_the_running_image_keeps_serving(tmp_path, image, damage, fragment):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    bad = damage(image)
    digest = hashlib.sha256(image).hexdigest()  # declared hash of the good image, bytes of the bad one
    with pytest.raises(DeviceError, match=fragment):
        for offset in range(0, len(bad), 4096):
            device.upload(offset, len(bad), digest, bad[offset : offset + 4096])
    assert device.list_images()["images"][1]["valid"] is False
    assert frame(device)[1]["decisions"].shape == (100,)


def test_valid_hash_of_garbage_is_refused_as_not_a_bundle(tmp_path):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    junk = b"not a bundle" * 50
    with pytest.raises(DeviceError, match="not a valid bundle"):
        device.upload(0, len(junk), hashlib.sha256(junk).hexdigest(), junk)


def test_oversized_and_misfit_images_are_refused(tmp_path, image):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    with pytest.raises(DeviceError, match="does not fit the"):
        device.upload(0, PROFILE.slot_size * 4, "00" * 32, b"x")
    tiny = Device(tmp_path / "tiny", "onnx", type(PROFILE)(**{**PROFILE.to_dict(), "ram": 10_000}), trusted_keys=KEYS)
    with pytest.raises(DeviceError, match="needs .* bytes of RAM"):
        upload(tiny, image)


def test_chunk_past_the_declared_length_is_refused(tmp_path, image):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    digest = hashlib.sha256(image).hexdigest()
    with pytest.raises(DeviceError, match="runs past the declared image length"):
        device.upload(0, 100, digest, image[:200])


def test_wrong_target_is_refused(tmp_path, image):
    device = Device(tmp_path, "loihi", PROFILE, trusted_keys=KEYS)
    with pytest.raises(DeviceError, match="wrong target"):
        upload(device, image)


def test_a_trial_that_fails_its_selftest_reverts_at_once(tmp_path, image, monkeypatch):
    from metaedge.backends.onnx import OnnxBackend

    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    result = upload(device, image)
    device.test(result["sha256"])
    monkeypatch.setattr(OnnxBackend, "selftest", lambda self: type("R", (), {"passed": False})())
    booted = device.reset()
    assert booted["mode"] == "none" or booted["slot"] == 0
    monkeypatch.undo()
    assert Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS).running.slot == 0


def test_torn_trailer_write_keeps_the_previous_boot_state(tmp_path, image):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    flash = Flash(tmp_path / "flash.img", PROFILE.slot_size)
    state = flash.boot_state()
    newest = 2 * PROFILE.slot_size + (state.sequence % 2) * 64
    flash.write(newest + 12, b"\x07\x07")  # a torn write: slot fields changed, CRC no longer matches
    older = flash.boot_state()
    assert older.sequence == state.sequence - 1


@pytest.mark.parametrize(
    "arrays,fragment",
    [
        ({"pilots": np.full((4, 2), np.nan, np.float32)}, "NaN or infinite"),
        ({"pilots": np.zeros((0, 2), np.float32)}, "takes 1 to"),
        ({"pilots": np.zeros((300, 2), np.float32)}, "takes 1 to 256"),
        ({"pilots": np.zeros((4, 3), np.float32)}, "shape \\[n, 2\\]"),
        ({"pilots": np.zeros((4, 2), np.float64)}, "float32"),
        ({"payload": np.zeros((20_000, 2), np.float32)}, "takes 1 to 16384"),
        ({"labels": np.array([0, 1, 2, 99], np.int32)}, "must lie in \\[0, 16\\)"),
        ({"labels": np.array([0, 1], np.int32)}, "one class per pilot"),
        ({"pilots": None}, "must be a float32 array"),
        ({"payload": None}, "must be a float32 array"),
        ({"labels": np.array([0.0, 1.0, 2.0, 3.0], np.float32)}, "labels"),
    ],
)
def test_malformed_frames_are_refused_and_the_device_keeps_serving(tmp_path, image, arrays, fragment):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    good = {"pilots": np.zeros((4, 2), np.float32), "payload": np.zeros((10, 2), np.float32)}
    with pytest.raises(DeviceError, match=fragment):
        device.frame({**good, **arrays})
    assert device.frame(good)[1]["decisions"].shape == (10,)


def test_frames_use_the_known_pilot_sequence_when_labels_are_omitted(tmp_path, image, trained_bundle):
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    sequence = read_bundle(trained_bundle[1]).manifest.raw["task"]["pilot_sequence"]
    rng = np.random.default_rng(0)
    pilots, payload = rng.normal(0, 2, (5, 2)).astype(np.float32), rng.normal(0, 2, (30, 2)).astype(np.float32)
    implicit = device.frame({"pilots": pilots, "payload": payload})[1]
    explicit = device.frame({"pilots": pilots, "payload": payload, "labels": np.array(sequence[:5], np.int32)})[1]
    np.testing.assert_array_equal(implicit["decisions"], explicit["decisions"])


def test_labels_that_break_the_declared_pilot_sequence_are_refused(tmp_path, image, trained_bundle):
    """Spec 1.1's pilot contract: the receiver was trained on pilots in the declared order and relies on it."""
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    sequence = np.resize(read_bundle(trained_bundle[1]).manifest.raw["task"]["pilot_sequence"], 8)
    rng = np.random.default_rng(0)
    pilots, payload = rng.normal(0, 2, (8, 2)).astype(np.float32), rng.normal(0, 2, (30, 2)).astype(np.float32)
    device.frame({"pilots": pilots, "payload": payload, "labels": sequence.astype(np.int32)})  # the declared order: fine
    shuffled = np.roll(sequence, 1).astype(np.int32)
    with pytest.raises(DeviceError, match="pilot labels break the bundle's pilot sequence"):
        device.frame({"pilots": pilots, "payload": payload, "labels": shuffled})


def test_a_bundle_trained_for_arbitrary_pilots_takes_any_labels_and_needs_them(tmp_path, make_variant, trained_bundle):
    manifest = read_bundle(trained_bundle[1]).manifest.raw
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, pack(read_bundle(make_variant(task={**manifest["task"], "pilot_sequence": None}))))
    rng = np.random.default_rng(1)
    pilots, payload = rng.normal(0, 2, (8, 2)).astype(np.float32), rng.normal(0, 2, (30, 2)).astype(np.float32)
    labels = rng.integers(0, manifest["task"]["classes"], 8).astype(np.int32)
    assert device.frame({"pilots": pilots, "payload": payload, "labels": labels})[1]["decisions"].shape == (30,)
    with pytest.raises(DeviceError, match="no known pilot sequence: send 'labels'"):
        device.frame({"pilots": pilots, "payload": payload})


def _diverging(monkeypatch):
    """Make every adaptation blow up after its real steps (the adapted parameters × 10⁶)."""
    import onnxruntime as ort

    from metaedge.backends.onnx import OnnxBackend

    real_adapt = OnnxBackend.adapt

    def exploding(self, pilots, labels):
        report = real_adapt(self, pilots, labels)
        for name in self.adapted_names:
            self.current[name] = ort.OrtValue.ortvalue_from_numpy(self.current[name].numpy() * 1e6)
        return report

    monkeypatch.setattr(OnnxBackend, "adapt", exploding)


def test_a_diverging_adaptation_falls_back_to_the_classical_receiver_never_to_theta(tmp_path, image, trained_bundle, monkeypatch):
    from metaedge.backends.classical import mmse_ml

    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    task = read_bundle(trained_bundle[1]).manifest.task
    rng = np.random.default_rng(3)
    payload = rng.normal(0, 2, (400, 2)).astype(np.float32)
    pilots = rng.normal(0, 2, (8, 2)).astype(np.float32)
    _diverging(monkeypatch)
    telemetry, out = device.frame({"pilots": pilots, "payload": payload})
    assert telemetry["receiver"] == "classical" and telemetry["fallback"].startswith("adaptation diverged (pilot loss")
    labels = np.resize(np.asarray(task.pilot_sequence), 8)
    points = np.asarray(task.fallback.constellation)
    classical = mmse_ml(points, task.fallback.noise_var, task.fallback.channel_var, pilots, labels, payload)
    np.testing.assert_array_equal(out["decisions"], classical.argmax(-1))
    assert (device.stats_report()["fallbacks"], device.stats_report()["diverged"]) == (1, 1)


def test_a_bundle_without_a_classical_receiver_keeps_the_adapted_receiver_and_reports_the_divergence(
    tmp_path, make_variant, trained_bundle, monkeypatch
):
    task = dict(read_bundle(trained_bundle[1]).manifest.raw["task"])
    del task["fallback"]  # as a 1.0 bundle, or a family without a classical receiver
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, pack(read_bundle(make_variant(task=task))))
    rng = np.random.default_rng(3)
    payload, pilots = rng.normal(0, 2, (400, 2)).astype(np.float32), rng.normal(0, 2, (8, 2)).astype(np.float32)
    device.backend.reset()
    theta_decisions = device.backend.predict(payload).argmax(-1)
    _diverging(monkeypatch)
    telemetry, out = device.frame({"pilots": pilots, "payload": payload})
    assert telemetry["receiver"] == "learned" and telemetry["fallback"].startswith("adaptation diverged")
    backend = device.backend
    backend.reset()
    backend.adapt(pilots, np.resize(np.asarray(read_bundle(trained_bundle[1]).manifest.task.pilot_sequence), 8))
    np.testing.assert_array_equal(out["decisions"], backend.predict(payload).argmax(-1))  # the adapted receiver's decisions
    assert (out["decisions"] != theta_decisions).any()  # … which are not θ's
    assert (device.stats_report()["fallbacks"], device.stats_report()["diverged"]) == (0, 1)


def _frame_of(task, rng, pilots: int, payload: int, **shift) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One frame of a fresh device of the bundle's task (changed by ``shift``): pilots, their labels, payload, its labels."""
    from metaedge.sdk.families.demod.task import DemodTasks, config_of_conditions

    tasks = DemodTasks(config_of_conditions(task.raw, pilots=pilots, payload=payload).replace(**shift), seed=int(rng.integers(1 << 30)))
    frame = tasks.frames(tasks.devices("test", 1), pilots, payload, rng)
    return frame.x_tr[0], frame.y_tr[0], frame.x_va[0], frame.y_va[0]


def test_the_classical_receiver_decides_a_frame_whose_learned_decisions_split_it_worse(tmp_path, image, trained_bundle, monkeypatch):
    """A learned receiver whose payload decisions merge neighbouring classes leaves a larger frame residual: the
    classical receiver decides that frame, and the telemetry says so with both residuals."""
    from metaedge.backends.onnx import OnnxBackend

    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    task = read_bundle(trained_bundle[1]).manifest.task
    pilots, labels, payload, truth = _frame_of(task, np.random.default_rng(5), 16, 400)
    real_predict = OnnxBackend.predict

    def merging(self, samples):
        probs = real_predict(self, samples)
        return np.eye(probs.shape[-1], dtype=probs.dtype)[probs.argmax(-1) // 2 * 2]  # classes 2k and 2k+1 merged

    monkeypatch.setattr(OnnxBackend, "predict", merging)
    telemetry, out = device.frame({"pilots": pilots, "payload": payload, "labels": labels.astype(np.int32)})
    residuals = telemetry["residuals"]
    assert telemetry["receiver"] == "classical" and residuals["classical"] < 0.95 * residuals["learned"]
    assert telemetry["fallback"].startswith("frame residual") and telemetry["select_us"] > 0
    assert (out["decisions"] != truth).mean() < 0.2  # 16 pilots at 20 dB: the classical receiver decodes this frame
    assert (device.stats_report()["fallbacks"], device.stats_report()["diverged"]) == (1, 0)


def test_the_learned_receiver_keeps_frames_it_splits_as_well(tmp_path, image, trained_bundle):
    """Without a reason to doubt it, the adapted receiver decides: its decisions are the frame's whenever its residual
    is not clearly above the classical one's (the margin of task.fallback.select)."""
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    task = read_bundle(trained_bundle[1]).manifest.task
    assert task.fallback.select == Selection(margin=0.05, samples=256)
    rng = np.random.default_rng(6)
    for _ in range(5):
        pilots, labels, payload, _ = _frame_of(task, rng, 8, 400)
        telemetry, out = device.frame({"pilots": pilots, "payload": payload, "labels": labels.astype(np.int32)})
        r = telemetry["residuals"]
        assert telemetry["receiver"] == ("classical" if r["classical"] < 0.95 * r["learned"] else "learned")
        if telemetry["receiver"] == "learned":
            assert telemetry["fallback"] is None


def _selecting(run_dir, select) -> tuple:
    import torch

    from metaedge.sdk.families.demod.receivers import LearnedReceiver, ModelBasedReceiver, SelectingReceiver
    from metaedge.sdk.families.demod.task import DemodTasks
    from metaedge.sdk.families.demod.training import configs_from_run
    from metaedge.sdk.rundir import load_run

    run = load_run(run_dir)
    task, train = configs_from_run(run.config)
    learned = LearnedReceiver("learned", {k: torch.from_numpy(v) for k, v in run.theta.items()}, train.inner(), task.order)
    classical = ModelBasedReceiver(DemodTasks(task).constellation, task.noise_var, task.channel_var)
    return SelectingReceiver(learned, classical, select), task


def test_the_host_scores_exactly_the_rule_the_device_applies(tmp_path, trained_bundle, make_variant):
    """The same frames through the host's selecting receiver and a device running the bundle: the same receiver
    decides each frame and the decisions agree (float32 ONNX against torch may split a near-tie)."""
    run_dir, bundle_dir = trained_bundle
    task_section = dict(read_bundle(bundle_dir).manifest.raw["task"])
    margin = 0.93  # a barely trained receiver (classical residuals 1-12 % of its own): both receivers decide some frames
    task_section["fallback"] = {**task_section["fallback"], "select": {"rule": "frame-residual", "margin": margin, "samples": 200}}
    device = Device(tmp_path / "device", "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, pack(read_bundle(make_variant(task=task_section))))
    from metaedge.sdk.families.demod.shift import SHIFTS
    from metaedge.sdk.families.demod.task import DemodTasks

    selecting, task = _selecting(run_dir, Selection(margin, 200))
    receivers = []
    for k, shift in enumerate(("trained", "iq-none", "snr-25", "iq-stronger")):
        tasks = DemodTasks(task.replace(**SHIFTS[shift][1]), seed=40 + k)
        frames = tasks.frames(tasks.devices("test", 5), 8, 300, tasks.rng("test", 1))
        host = selecting.probabilities(frames.x_tr, frames.y_tr, frames.x_va).argmax(-1)
        chosen = selecting.decided[8][-1]
        for i in range(5):
            arrays = {"pilots": frames.x_tr[i], "payload": frames.x_va[i], "labels": frames.y_tr[i].astype(np.int32)}
            telemetry, out = device.frame(arrays)
            receivers.append(telemetry["receiver"])
            ratio = telemetry["residuals"]["classical"] / telemetry["residuals"]["learned"]
            if abs(ratio - (1 - margin)) > 0.01 * (1 - margin):  # not a near-tie, where float32 rounding may decide
                assert telemetry["receiver"] == ("classical" if chosen[i] else "learned"), (shift, i, telemetry["residuals"])
            assert (out["decisions"] == host[i]).mean() > 0.99
    assert set(receivers) == {"learned", "classical"}, receivers


def test_a_one_step_bundle_is_served_by_its_fused_frame(tmp_path, trained_bundle):
    """The device runs a one-step bundle's frame graph and still guards the adaptation: the decisions equal those of
    the stepping path on the same frame."""
    from metaedge.sdk.targets import export

    one = pack(export("onnx", trained_bundle[0], tmp_path / "one", inner_steps=1, key=None))
    device = Device(tmp_path / "fused", "onnx", PROFILE, trusted_keys=KEYS, allow_unsigned=True)
    deploy(device, one)
    telemetry, out = frame(device)
    assert telemetry["fused"] is True and telemetry["infer_us"] == 0.0 and telemetry["steps"] == 1
    device.backend.frame_session = None  # the same device, stepping instead
    stepped_telemetry, stepped = frame(device)
    assert stepped_telemetry["fused"] is False
    assert np.array_equal(out["decisions"], stepped["decisions"])
    np.testing.assert_allclose(out["confidence"], stepped["confidence"], atol=1e-5)


class ProtocolOnly:
    """A real ONNX backend seen through the backend protocol alone: the device must need nothing else."""

    target = "onnx"

    def __init__(self, inner) -> None:
        self._inner, self.calls = inner, []

    @classmethod
    def configure(cls, threads, options):
        from metaedge.backends.onnx import OnnxBackend

        return cls(OnnxBackend.configure(threads, options))

    def __getattr__(self, name):
        raise AssertionError(f"the device used '{name}', which is not in the backend protocol")

    @classmethod
    def inspect(cls, bundle):
        from metaedge.backends.onnx import OnnxBackend

        OnnxBackend.inspect(bundle)

    def load(self, bundle):
        self.calls.append("load")
        return self._inner.load(bundle)

    def frame(self, frame):
        self.calls.append("frame")
        return self._inner.frame(frame)

    def selftest(self):
        self.calls.append("selftest")
        return self._inner.selftest()

    def close(self):
        self.calls.append("close")
        self._inner.close()


def test_the_device_serves_through_the_backend_protocol_alone(tmp_path, image, monkeypatch):
    from metaedge.backends import registry

    monkeypatch.setitem(registry._BACKENDS, "onnx", ProtocolOnly)
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    telemetry, out = frame(device)
    assert out["decisions"].shape == (100,) and telemetry["steps"] == 2
    assert device.info()["resources"]["parameters"] == 1896 and device.stats_report()["frames"] == 1
    assert device.backend.calls == ["load", "selftest", "frame"]
    device.reset()
    assert device.backend.calls == ["load", "selftest"]  # a reset closed the old receiver and booted it again


def test_informative_task_members_do_not_change_how_a_bundle_runs(tmp_path, make_variant, trained_bundle):
    """bundle-format §4: `conditions`, `channel` and `phase_max_deg` say what a bundle was trained for; a device
    decides the same frames the same way whatever they say (phase_max_deg means nothing for a Rayleigh channel)."""
    task = read_bundle(trained_bundle[1]).manifest.raw["task"]
    told = {**task, "channel": "rayleigh", "phase_max_deg": 180, "conditions": {"snr_db": 99, "note": "anything"}}
    decided = []
    for k, variant in enumerate((make_variant(), make_variant(task=told))):
        device = Device(tmp_path / str(k), "onnx", PROFILE, trusted_keys=KEYS)
        deploy(device, pack(read_bundle(variant)))
        decided.append(frame(device, seed=3)[1]["decisions"])
    np.testing.assert_array_equal(*decided)


def test_no_upload_while_an_image_is_on_trial(tmp_path, image, make_variant):
    """device-protocol §3.1: the trial must end (confirm or reset) before another image may be uploaded."""
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS)
    deploy(device, image)
    deploy(device, pack(read_bundle(make_variant(security_counter=1))), confirm=False)
    with pytest.raises(DeviceError, match="on trial"):
        upload(device, image)


def test_target_and_resources_are_checked_again_at_start(tmp_path, image):
    """device-protocol §4.3: a confirmed image that no longer fits its device (a smaller profile, another target)
    does not start; the device serves management requests."""
    import dataclasses

    deploy(Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS), image)
    smaller = Device(tmp_path, "onnx", dataclasses.replace(PROFILE, ram=1 << 10), trusted_keys=KEYS)
    assert smaller.running.mode == "none" and any("does not fit" in event for event in smaller.stats_report()["boot_events"])
    other = Device(tmp_path, "linear", PROFILE, trusted_keys=KEYS)
    assert other.running.mode == "none" and any("wrong target" in event for event in other.stats_report()["boot_events"])


def test_the_working_set_rule_admits_an_image_that_just_fits(tmp_path, image):
    """device-protocol §5: θ twice, the graphs, one full frame — a profile with exactly that much RAM takes the
    image, one byte less refuses it."""
    import dataclasses

    from metaedge.deploy.bundle import unpack
    from metaedge.firmware_sim.profile import required_ram

    need = required_ram(unpack(image).manifest, PROFILE)
    deploy(Device(tmp_path / "fits", "onnx", dataclasses.replace(PROFILE, ram=need), trusted_keys=KEYS), image)
    with pytest.raises(DeviceError, match=f"needs {need:,} bytes of RAM"):
        upload(Device(tmp_path / "short", "onnx", dataclasses.replace(PROFILE, ram=need - 1), trusted_keys=KEYS), image)


def test_a_decision_between_equal_probabilities_is_the_lowest_class(tmp_path, make_variant, trained_bundle, monkeypatch):
    """bundle-format §6 step 4: decisions are the argmax, ties to the lowest class index."""
    from metaedge.backends.onnx.backend import OnnxBackend

    task = {k: v for k, v in read_bundle(trained_bundle[1]).manifest.raw["task"].items() if k != "fallback"}  # the learned receiver decides
    device = Device(tmp_path, "onnx", PROFILE, trusted_keys=KEYS, containment=None)
    deploy(device, pack(read_bundle(make_variant(task=task))))
    tied = np.full((100, 16), 1 / 16)
    tied[50:, 3:5] = 0.2  # the second half: classes 3 and 4 tie above the rest
    monkeypatch.setattr(OnnxBackend, "predict", lambda self, samples: tied[: len(samples)])
    decisions = frame(device)[1]["decisions"]
    assert decisions[:50].tolist() == [0] * 50 and decisions[50:].tolist() == [3] * 50


def test_the_protocols_built_in_profiles_are_the_devices():
    """device-protocol §5 names the built-in profiles and their limits; they are the ones a device runs with."""
    from pathlib import Path

    spec = " ".join((Path(__file__).resolve().parents[2] / "docs" / "device-protocol.md").read_text().split())
    for p in PROFILES.values():
        ram = f"{p.ram >> 20} MiB" if p.ram >= 1 << 20 else f"{p.ram >> 10} KiB"
        assert f"`{p.name}` ({p.slot_size >> 10} KiB slots, {ram}, {p.max_pilots} pilots, {p.max_symbols} symbols)" in spec, p
