"""The learned link (monograph §5.3): channel, encoder, simulator draws, meta-learning, benchmark, export."""

import json

import numpy as np
import pytest
import torch

from metaedge.sdk.cli.main import main
from metaedge.sdk.families.link import model as autoencoder
from metaedge.sdk.families.link.learning import LinkBench, bler_curve, initial, inner_loop, onehot, train
from metaedge.sdk.families.link.model import task_loss
from metaedge.sdk.families.link.task import LinkConfig, LinkTasks
from metaedge.sdk.meta import get_algorithm, meta_gradient
from metaedge.sdk.meta.core import InnerLoop, adapt
from metaedge.sdk.meta.reference import per_task_meta_gradient


def complex_of(real: np.ndarray) -> np.ndarray:
    half = real.shape[-1] // 2
    return real[..., :half] + 1j * real[..., half:]


def test_channel_is_the_truncated_convolution_of_eq_5_11():
    rng = np.random.default_rng(0)
    x, h, w = (rng.standard_normal((5, d)).astype(np.float32) for d in (8, 6, 8))
    y = autoencoder.channel(torch.from_numpy(x), torch.from_numpy(h), torch.from_numpy(w)).numpy()
    for i in range(5):
        expected = np.convolve(complex_of(h[i]), complex_of(x[i]))[:4] + complex_of(w[i])
        np.testing.assert_allclose(complex_of(y[i]), expected, atol=1e-5)


def test_codewords_have_unit_power_per_channel_use():
    theta = initial("maml", LinkBench())
    codewords = autoencoder.encode(theta, torch.eye(16))
    np.testing.assert_allclose((codewords**2).sum(-1).numpy(), 4.0, rtol=1e-5)
    assert len(set(map(tuple, codewords.detach().numpy().round(4)))) == 16


def test_channels_and_noise_follow_the_published_statistics():
    env = LinkTasks(LinkConfig(), seed=3)
    taps = env.channels("train", 20_000)
    assert taps.var(0) == pytest.approx(np.full(6, 1 / 6), rel=0.05)  # each tap CN(0, 1/3)
    noise = env.noise((20_000,), env.rng("train", 1))
    assert noise.var() == pytest.approx(LinkConfig().noise_var / 2, rel=0.03)  # N0/2 per real dimension
    assert LinkConfig().noise_var == pytest.approx(1 / 10**1.5)  # Eb = n/k = 1, Eb/N0 = 15 dB
    assert not np.isin(env.channels("test", 50), env.channels("train", 1000)).any()


def test_the_loss_differentiates_through_the_channel_into_the_encoder():
    theta = initial("maml", LinkBench())
    env = LinkTasks()
    rng = env.rng("train", 0)
    x = torch.from_numpy(env.draws(env.channels("train", 1), env.pilots(16), rng)[0])
    grads = torch.func.grad(task_loss)(theta, x, onehot(env.pilots(16), 16))
    assert all(grads[k].abs().sum() > 0 for k in theta if k.startswith(autoencoder.ENCODER))


def test_batched_maml_on_the_link_equals_the_per_task_loop():
    theta = initial("maml", LinkBench())
    env = LinkTasks()
    rng = env.rng("train", 0)
    channels = env.channels("train", 3)
    va = env.messages((3, 16), rng)
    batch = (
        torch.from_numpy(env.draws(channels, env.pilots(16), rng)),
        onehot(np.tile(env.pilots(16), (3, 1)), 16),
        torch.from_numpy(env.draws(channels, va, rng)),
        onehot(va, 16),
    )
    inner = InnerLoop(lr=0.1, steps=2, loss=task_loss)
    batched, _ = meta_gradient(get_algorithm("maml").objective, theta, batch, inner)
    looped, _ = per_task_meta_gradient(theta, batch, inner, second_order=True)
    for k in theta:
        torch.testing.assert_close(batched[k], looped[k], atol=1e-6, rtol=1e-4)


def test_a_deployable_receiver_adapts_only_the_decoder():
    theta = initial("maml-rx", LinkBench())
    env = LinkTasks()
    x = torch.from_numpy(env.draws(env.channels("test", 1), env.pilots(16), env.rng("test", 0))[0])
    adapted = adapt(theta, x, onehot(env.pilots(16), 16), inner_loop("maml-rx", theta, LinkBench()))
    for k in theta:
        assert torch.equal(adapted[k], theta[k]) == k.startswith(autoencoder.ENCODER)


def test_meta_learning_beats_random_initialisation_after_one_step():
    cfg = LinkBench(iterations=300, test_channels=30, test_messages=1000)
    one_step = {m: bler_curve(m, train(m, cfg), cfg, steps=(1,))["1"]["ser"] for m in ("maml-rx", "scratch")}
    assert one_step["maml-rx"] < 0.6 < 0.85 < one_step["scratch"]


def test_bench_link_quick_writes_json_and_plot(tmp_path, capsys):
    plot = tmp_path / "link.png"
    assert main(["bench", "link", "--quick", "--algos", "maml-rx,joint,scratch", "--plot", str(plot), "--json", "--quiet"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["methods"] == ["maml-rx", "joint", "scratch"]
    assert set(report["bler"]["joint"]) == {"0", "1", "2", "5"}
    assert all(0 <= p["ser"] <= 1 for curve in report["bler"].values() for p in curve.values())
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bench", "link", "--algos", "maml,nope"], "unknown algorithm 'nope'"),
        (["bench", "link", "--inner-steps", "1,-2"], "must list integers of at least 0"),
        (["train", "link", "--out", "X", "--algo", "reptile"], "--algo: invalid choice: 'reptile'"),
        (["train", "link", "--out", "X", "--taps", "9"], "--taps 9 must lie in 1..uses"),
        (["train", "link", "--out", "X", "--inner-lr", "-1"], "--inner-lr -1.0 must be a positive number"),
    ],
)
def test_bad_link_flags_get_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.fixture(scope="module")
def link_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("link") / "run"
    assert main(["train", "link", "--out", str(run), "--iterations", "60", "--val-every", "30", "--inner-steps", "2", "--quiet"]) == 0
    return run


def test_a_link_run_exports_a_receiver_bundle_with_the_codebook(link_run, tmp_path):
    from metaedge.backends.onnx import OnnxBackend
    from metaedge.deploy.bundle import read_bundle
    from metaedge.deploy.tensors import load

    assert main(["export", str(link_run), "--out", str(tmp_path / "b")]) == 0
    bundle = read_bundle(tmp_path / "b")
    m = bundle.manifest.raw
    assert m["task"]["name"] == "link" and len(m["task"]["features"]) == 8 and m["task"]["classes"] == 16
    assert m["model"]["sizes"] == [8, 16, 16] and m["model"]["rtn"] == [8, 8, 8, 6] and m["algorithm"]["inner_steps"] == 2
    book = np.asarray(m["task"]["codebook"])
    theta = {k: torch.from_numpy(v) for k, v in load(link_run / "theta.safetensors")[0].items()}
    np.testing.assert_allclose(book, autoencoder.encode(theta, torch.eye(16)).numpy(), atol=1e-6)
    backend = OnnxBackend()
    backend.load(bundle)
    assert backend.selftest().passed
    # the device's decisions equal the host's decoder adapted the same way on the same received pilots
    from metaedge.sdk.families.link.export import link_frames, receiver_params

    pilots, labels, payload, _ = link_frames(m["task"], 1, 16, 200, seed=5)
    backend.reset()
    backend.adapt(pilots[0], labels[0])
    on_device = backend.predict(payload[0]).argmax(-1)
    decoder = receiver_params(theta)  # the default receiver: the decoder and its radio-transformer network
    assert set(decoder) == set(autoencoder.part(theta, autoencoder.DECODER)) and any(k.startswith("rtn.") for k in decoder)
    host = adapt(decoder, torch.from_numpy(pilots[0]), onehot(labels[0], 16), InnerLoop(lr=0.1, steps=2, loss=autoencoder.receiver_loss))
    expected = autoencoder.receiver_log_probs(host, torch.from_numpy(payload[0])).argmax(-1).numpy()
    assert (on_device == expected).mean() > 0.99  # float32 ties aside


def test_a_run_that_adapts_the_encoder_is_not_exported(tmp_path, capsys):
    run = tmp_path / "full"
    assert main(["train", "link", "--algo", "maml", "--out", str(run), "--iterations", "2", "--val-every", "2", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(tmp_path / "b")]) == 2
    assert "metaedge train link --algo maml-rx" in capsys.readouterr().err


def test_the_radio_transformer_is_an_inverse_filter_before_the_decoder():
    theta = initial("maml", LinkBench(rtn_taps=3))
    decoder = autoencoder.part(theta, autoencoder.DECODER)
    y = torch.randn(7, 8)
    # an RTN whose output layer always says w = [1, 0, 0] leaves y as it is
    identity = {**decoder, "rtn.l2.weight": torch.zeros(8, 6), "rtn.l2.bias": torch.tensor([1.0, 0, 0, 0, 0, 0])}
    torch.testing.assert_close(autoencoder.equalised(identity, y), y)
    # w = [0, 1, 0] delays the block by one use
    delay = {**decoder, "rtn.l2.weight": torch.zeros(8, 6), "rtn.l2.bias": torch.tensor([0.0, 1, 0, 0, 0, 0])}
    shifted = autoencoder.equalised(delay, y)
    torch.testing.assert_close(shifted[:, 1:4], y[:, 0:3])
    torch.testing.assert_close(shifted[:, 5:8], y[:, 4:7])
    assert float(shifted[:, 0].abs().max()) == 0.0


def test_a_receiver_with_a_radio_transformer_exports_and_adapts_on_the_device(tmp_path):
    from metaedge.backends.onnx import OnnxBackend
    from metaedge.deploy.bundle import read_bundle
    from metaedge.deploy.tensors import load
    from metaedge.sdk.families.link.export import link_frames, receiver_params

    run = tmp_path / "run"
    assert main(["train", "link", "--algo", "metasgd-rx", "--out", str(run), "--iterations", "20", "--val-every", "20", "--quiet"]) == 0
    assert main(["export", str(run), "--out", str(tmp_path / "b")]) == 0
    bundle = read_bundle(tmp_path / "b")
    assert bundle.manifest.raw["model"]["rtn"] == [8, 8, 8, 6]
    backend = OnnxBackend()
    backend.load(bundle)
    assert backend.selftest().passed
    theta = {k: torch.from_numpy(v) for k, v in load(run / "theta.safetensors")[0].items()}
    pilots, labels, payload, _ = link_frames(bundle.manifest.raw["task"], 1, 16, 100, seed=2)
    backend.reset()
    backend.adapt(pilots[0], labels[0])
    host = adapt(
        receiver_params(theta), torch.from_numpy(pilots[0]), onehot(labels[0], 16), InnerLoop(lr=0.1, steps=1, loss=autoencoder.receiver_loss)
    )  # Meta-SGD's lr.*
    expected = autoencoder.receiver_log_probs(host, torch.from_numpy(payload[0])).exp().detach().numpy()
    np.testing.assert_allclose(backend.predict(payload[0]), expected, atol=1e-5)
