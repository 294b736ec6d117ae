"""The weight-draw generator a Gaussian bundle names (spec §7.4): exact against a scalar oracle, standard normal,
laid out as specified, and checked before a device uses it."""

import math

import numpy as np
import pytest

from metaedge.deploy.noise import GENERATOR, MAX_DRAWS, standard_normal, weight_draws, weight_noise

MASK = (1 << 64) - 1


def oracle(seed: int, count: int) -> list[float]:
    """The spec's recipe, value by value with Python integers and floats (no numpy)."""
    values = []
    for i in range(1, count + 1):
        z = (seed + i * 0x9E3779B97F4A7C15) & MASK
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        u1, u2 = ((z >> 32) + 0.5) / 2**32, ((z & 0xFFFFFFFF) + 0.5) / 2**32
        values.append(math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2))
    return values


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**64 - 1])
def test_the_stream_follows_the_specified_recipe(seed):
    np.testing.assert_allclose(standard_normal(seed, 500), np.float32(oracle(seed, 500)), rtol=0, atol=1e-6)


def test_the_stream_is_standard_normal():
    x = standard_normal(7, 400_000).astype(np.float64)
    assert abs(x.mean()) < 0.01 and abs(x.std() - 1) < 0.01
    # the normal's quantiles: P(x < −1.96) = P(x > 1.96) = 2.5 %, P(|x| < 1) = 68.27 %
    assert abs((x < -1.96).mean() - 0.025) < 0.002 and abs((x > 1.96).mean() - 0.025) < 0.002
    assert abs((np.abs(x) < 1).mean() - 0.6827) < 0.005
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.01  # neighbours independent
    assert not np.array_equal(standard_normal(0, 100), standard_normal(1, 100))


def test_draws_are_laid_out_row_by_row_in_the_listed_order():
    shapes = [("a", (2, 3)), ("b", (4,))]
    noise = weight_noise(5, 3, shapes)
    rows = standard_normal(5, 3 * 10).reshape(3, 10)
    assert noise["a"].shape == (3, 2, 3) and noise["b"].shape == (3, 4)
    np.testing.assert_array_equal(noise["a"][1], rows[1, :6].reshape(2, 3))
    np.testing.assert_array_equal(noise["b"][2], rows[2, 6:])


def section(**changes):
    base = {"generator": GENERATOR, "parameters": ["w"], "adapt": {"seed": 0, "draws": 2}, "predict": {"seed": 1, "draws": 3}}
    return {**base, **changes}


def test_a_section_defines_both_streams_and_bad_ones_are_refused():
    params = {"w": np.zeros((2, 2), np.float32), "logstd.w": np.zeros((2, 2), np.float32)}
    draws = weight_draws(section(), params)
    assert draws["adapt"]["w"].shape == (2, 2, 2) and draws["predict"]["w"].shape == (3, 2, 2)
    assert weight_draws(None, params) == {}
    for bad, fragment in [
        (section(generator="pcg64"), "generator"),
        (section(parameters=["v"]), "parameters"),
        (section(parameters=["w", "w"]), "parameters"),
        (section(parameters=[]), "parameters"),
        (section(adapt={"seed": 0, "draws": MAX_DRAWS + 1}), "noise.adapt"),
        (section(predict={"seed": 2**64, "draws": 1}), "noise.predict"),
        (section(predict={"seed": True, "draws": 1}), "noise.predict"),
        (section(adapt=[0, 2]), "noise.adapt"),
        ([], "generator"),
    ]:
        with pytest.raises(ValueError, match=fragment):
            weight_draws(bad, params)


def test_the_lava_environment_draws_the_same_values():
    """Python 3.10 with numpy < 2 (whose integer promotion rules differ) generates the very same float32 values."""
    import os
    import subprocess
    from pathlib import Path

    lava = os.environ.get("METAEDGE_LAVA_PYTHON") or str(Path(__file__).resolve().parents[2] / ".venv-lava" / "bin" / "python")
    script = (
        "import sys, numpy; from metaedge.deploy.noise import standard_normal; "
        "sys.stdout.write(numpy.__version__ + ' ' + standard_normal(2**64 - 3, 1000).tobytes().hex())"
    )
    result = subprocess.run([lava, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    version, values = result.stdout.split()
    assert version.startswith("1.") and values == standard_normal(2**64 - 3, 1000).tobytes().hex()
