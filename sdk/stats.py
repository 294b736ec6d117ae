"""Statistics shared by host-side evaluation and device runs, and the text tables reports are read in; numpy (and
scipy for Student's t quantiles)."""

from __future__ import annotations

import numpy as np


def summarise(per_device: np.ndarray) -> dict:
    """Mean and a 95 % normal interval over devices (of SERs or of paired SER differences).

    Devices are the independent unit: symbol errors within a device are correlated through
    its channel and impairments.
    """
    mean = float(per_device.mean())
    half = 1.96 * float(per_device.std(ddof=1)) / np.sqrt(len(per_device)) if len(per_device) > 1 else float("nan")
    return {"ser": mean, "ci95": [mean - half, mean + half]}


def paired_text(difference: dict, digits: int = 2) -> str:
    """A paired difference {"diff", "ci95"} as "+0.24 [+0.13, +0.35]"."""
    low, high = difference["ci95"]
    return f"{difference['diff']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"


def percentiles(values, quantiles=(50, 90, 99), scale: float = 1.0) -> dict:
    """{"p50": …, "p90": …} of ``values`` times ``scale`` (e.g. 1e6 for seconds → µs)."""
    return {f"p{q}": float(np.percentile(values, q) * scale) for q in quantiles}


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns aligned: the first to the left, the others (numbers) to the right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def t_quantile(df: float) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (a 95 % two-sided interval)."""
    from scipy import stats

    return float(stats.t.ppf(0.975, df))


def paired_interval(differences: np.ndarray) -> dict:
    """{"diff", "ci95"}: the mean of paired differences over devices and its 95 % interval, Student's t with n − 1
    degrees of freedom (the unit is the device, and there may be few)."""
    mean, n = float(differences.mean()), len(differences)
    half = t_quantile(n - 1) * float(differences.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    return {"diff": mean, "ci95": [mean - half, mean + half]}


def welch_interval(a: np.ndarray, b: np.ndarray) -> dict:
    """{"diff", "ci95"}: mean(a) − mean(b) with its 95 % interval, Welch's standard error and Welch–Satterthwaite
    degrees of freedom (two groups of devices, unequal variances, possibly few devices)."""
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    diff, se = float(a.mean() - b.mean()), float(np.sqrt(va + vb))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)) if va + vb > 0 else float(len(a) + len(b) - 2)
    half = t_quantile(df) * se
    return {"diff": diff, "ci95": [diff - half, diff + half]}
