"""The demodulation task generator against the published setup's formulas and statistics."""

import json

import numpy as np
import pytest

from metaedge.sdk.families.demod.task import (
    ConfigError,
    DemodConfig,
    DemodTasks,
    Devices,
    config_of_conditions,
    iq_imbalance,
    qam_constellation,
    task_section,
)


@pytest.mark.parametrize("order,energy", [(4, 2.0), (16, 10.0), (64, 42.0)])
def test_qam_energy_and_levels(order, energy):
    points = qam_constellation(order)
    assert len(set(points)) == order
    assert np.mean(np.abs(points) ** 2) == pytest.approx(energy)
    assert DemodConfig(order=order).energy == pytest.approx(energy)


def test_16qam_is_on_odd_integers():
    points = qam_constellation(16)
    assert set(points.real) == {-3.0, -1.0, 1.0, 3.0} and set(points.imag) == {-3.0, -1.0, 1.0, 3.0}


def test_iq_imbalance_formula():
    s = np.array([1 + 3j, -3 - 1j])
    eps, delta = 0.1, np.deg2rad(10.0)
    x = iq_imbalance(s, eps, delta)
    c, si = np.cos(delta), np.sin(delta)
    expected_i = (1 + eps) * (c * s.real - si * s.imag)
    expected_q = (1 - eps) * (c * s.imag - si * s.real)
    np.testing.assert_allclose(x.real, expected_i)
    np.testing.assert_allclose(x.imag, expected_q)
    np.testing.assert_allclose(iq_imbalance(s, 0.0, 0.0), s)


def test_distorted_constellation_keeps_average_energy():
    tasks = DemodTasks(seed=3)
    points = tasks.distorted_constellation(tasks.devices("train", 50))
    np.testing.assert_allclose(np.mean(np.abs(points) ** 2, axis=1), 10.0, rtol=1e-12)
    assert not np.allclose(points, tasks.constellation)  # the imbalance did change the points


def test_impairment_and_channel_distributions():
    devices = DemodTasks(seed=1).devices("train", 20000)
    mean_beta = 5 / 7
    assert devices.eps.min() >= 0 and devices.eps.max() <= 0.15
    assert devices.eps.mean() == pytest.approx(0.15 * mean_beta, rel=0.02)
    assert np.rad2deg(devices.delta).max() <= 15.0
    assert np.rad2deg(devices.delta).mean() == pytest.approx(15.0 * mean_beta, rel=0.02)
    assert np.mean(np.abs(devices.h) ** 2) == pytest.approx(1.0, rel=0.03)
    assert abs(np.mean(devices.h)) < 0.03  # zero-mean complex Gaussian


def test_noise_variance_matches_snr():
    """SNR 20 dB with Es = 10: noise variance 0.05 per real dimension."""
    tasks = DemodTasks(DemodConfig(), seed=0)
    assert tasks.config.noise_var == pytest.approx(0.1)
    ideal = Devices(eps=np.zeros(4), delta=np.zeros(4), h=np.ones(4, complex))
    labels = np.random.default_rng(0).integers(0, 16, size=(4, 50_000))
    y = tasks.transmit(ideal, labels, np.random.default_rng(1))
    residual = y - np.stack([tasks.constellation[labels].real, tasks.constellation[labels].imag], -1)
    assert residual.var(axis=(0, 1)) == pytest.approx([0.05, 0.05], rel=0.02)


def test_received_signal_is_channel_times_distorted_symbol():
    tasks = DemodTasks(DemodConfig(snr_db=200.0), seed=0)  # noiseless
    devices = tasks.devices("test", 3)
    labels = np.arange(16)[None].repeat(3, 0)
    y = tasks.transmit(devices, labels, np.random.default_rng(0))
    expected = devices.h[:, None] * tasks.distorted_constellation(devices)
    np.testing.assert_allclose(y[..., 0] + 1j * y[..., 1], expected, atol=1e-5)


def test_seeded_and_splits_never_overlap():
    a, b = DemodTasks(seed=5), DemodTasks(seed=5)
    np.testing.assert_array_equal(a.devices("train", 10).h, b.devices("train", 10).h)
    train, val, test = (a.devices(s, 1000) for s in ("train", "val", "test"))
    assert not set(train.h) & set(test.h) and not set(train.h) & set(val.h) and not set(val.h) & set(test.h)
    assert not np.array_equal(DemodTasks(seed=6).devices("train", 10).h, a.devices("train", 10).h)


def test_frames_shapes_and_split():
    tasks = DemodTasks(seed=0)
    batch = tasks.frames(tasks.devices("train", 7), 4, 160, np.random.default_rng(0))
    assert batch.x_tr.shape == (7, 4, 2) and batch.x_va.shape == (7, 160, 2)
    assert batch.y_tr.shape == (7, 4) and batch.y_va.shape == (7, 160)
    assert batch.x_tr.dtype == np.float32 and batch.y_tr.max() < 16


@pytest.mark.parametrize(
    "changes,fragment",
    [
        ({"pilots": 15_000, "val_pilots": 10_000}, "exceed the frame"),
        ({"order": 8}, "not a square QAM order"),
        ({"snr_db": float("nan")}, "not a finite number"),
        ({"pilots": 0}, "at least 1"),
        ({"eps_max": 1.5}, "eps_max"),
        ({"beta_a": -1.0}, "shape parameters"),
        ({"channel_var": -0.5}, "channel variance"),
        ({"channel": "awgn"}, "channel 'awgn' is unknown; use rayleigh, rician, phase"),
        ({"k_factor_db": float("inf")}, "k_factor_db inf is not a finite number"),
    ],
)
def test_impossible_configurations_are_refused(changes, fragment):
    with pytest.raises(ConfigError, match=fragment):
        DemodConfig(**changes)


def test_fixed_pilot_sequence_is_known_and_covers_the_constellation():
    from metaedge.sdk.families.demod.task import pilot_symbols

    tasks = DemodTasks(DemodConfig(), seed=0)
    batch = tasks.frames(tasks.devices("train", 6), 20, 50, np.random.default_rng(0))
    np.testing.assert_array_equal(batch.y_tr, np.broadcast_to(pilot_symbols(16, 20), (6, 20)))
    assert sorted(pilot_symbols(16)) == list(range(16))  # every run of M pilots covers the constellation
    np.testing.assert_array_equal(pilot_symbols(16, 20)[16:], pilot_symbols(16)[:4])
    assert len(set(batch.y_va[0])) > 8  # payload/validation symbols stay random


def test_random_pilot_sequence_differs_per_device():
    tasks = DemodTasks(DemodConfig(pilot_sequence="random"), seed=0)
    batch = tasks.frames(tasks.devices("train", 6), 16, 10, np.random.default_rng(0))
    assert not all(np.array_equal(batch.y_tr[0], row) for row in batch.y_tr[1:])


def test_a_rician_channel_has_a_line_of_sight_of_random_phase_and_the_stated_power():
    """h = √(vK/(K+1))·e^{jφ} + CN(0, v/(K+1)): E|h|² = v, and with K = 10 dB |h| stays near √v (few deep fades)."""
    rician = DemodTasks(DemodConfig(channel="rician", k_factor_db=10.0, channel_var=2.0), seed=1).devices("train", 20000).h
    rayleigh = DemodTasks(DemodConfig(channel_var=2.0), seed=1).devices("train", 20000).h
    assert np.mean(np.abs(rician) ** 2) == pytest.approx(2.0, rel=0.02)
    assert abs(np.mean(rician)) < 0.05  # the line of sight's phase is uniform
    k = 10.0
    assert np.var(np.abs(rician) ** 2) == pytest.approx(4.0 * (2 * k + 1) / (k + 1) ** 2, rel=0.05)  # var |h|² = v²(2K+1)/(K+1)²
    assert np.mean(np.abs(rician) ** 2 < 0.2) < 0.1 * np.mean(np.abs(rayleigh) ** 2 < 0.2)  # deep fades are rare


@pytest.mark.parametrize("channel", ["rayleigh", "rician", "phase"])
def test_the_training_conditions_in_the_manifest_give_back_the_task(channel):
    """A bundle records what it was trained for (spec 1.1, §4.1); ``metaedge run`` rebuilds the task from it."""
    task = DemodConfig(snr_db=17.0, eps_max=0.1, delta_max_deg=9.0, beta_a=2.0, beta_b=5.0, channel=channel, phase_max_deg=40.0, k_factor_db=6.0)
    section = json.loads(json.dumps(task_section(task)))
    assert ("phase_max_deg" in section) == (channel == "phase")  # meaningless for a Rayleigh channel: left out
    rebuilt = config_of_conditions(section, pilots=8)
    fields = ("order", "snr_db", "eps_max", "delta_max_deg", "beta_a", "beta_b", "channel", "channel_var")
    assert all(getattr(rebuilt, f) == getattr(task, f) for f in fields)
    assert channel != "phase" or rebuilt.phase_max_deg == 40.0
    assert channel != "rician" or (rebuilt.k_factor_db == 6.0 and section["conditions"]["channel"]["k_factor_db"] == 6.0)
