"""Linear channel prediction meta-learned in closed form (monograph §5.4, eq. 5.18–5.24, with the
ridge-regression iMAML of §2.2.3, eq. 2.9–2.12). numpy only: every solution is a linear solve, so the
same code fits a frame's predictor on a device (``backends.linear``) and meta-learns its bias on the host.

A predictor W maps the window x_i = vec([h_i, …, h_{i−L+1}]) (row vector, SL entries) to the channel
δ slots ahead, ĥ_{i+δ} = x_i W (W = conj φ of eq. 5.19). The loss is the mean squared error over the N
samples (eq. 5.20), so the proximal ridge solution toward a bias Θ is
W = (XᴴX/N + λ/2 I)⁻¹ (XᴴY/N + λ/2 Θ) (eq. 2.11 with the samples scaled by 1/√N). Three ways to
set Θ: conventional learning (Θ = 0), joint learning on the pooled meta-training frames (eq. 5.25), and
meta-learning (eq. 5.22, solved in closed form by eq. 2.12).

The long-short-term decomposition (eq. 5.24) writes h_l = B d_l: B (S × R) spans the frame's dominant
spatial-delay subspace, estimated from the channels the frame has seen (top-R eigenvectors of their
sample covariance), and d_l = Bᴴ h_l are R path amplitudes. One short filter w (L taps), shared by the
R paths, predicts every amplitude from its own past; ĥ = B d̂. It has L parameters instead of S²L, so
few samples fit it and its meta-learned bias cannot overfit the meta-training frames. R is a number,
chosen by Akaike's criterion on each frame's eigenvalues (Wax–Kailath), or by the meta-validation
loss ("meta").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from metaedge.deploy.manifest import Holdout

SCHEMES = ("conventional", "joint", "meta")
FORMS = ("naive", "lstd")


@dataclass(frozen=True)
class Window:
    length: int = 5  # L (the published N = 5 past channels)
    lag: int = 3  # δ

    def inputs(self, channels: np.ndarray, first: int, count: int) -> np.ndarray:
        """Windows [..., count, L·S] ending at slots first … first+count−1 of ``channels`` [..., T, S]; a window
        holds slots i−L+1 … i, newest first."""
        idx = first + np.arange(count)[:, None] - np.arange(self.length)[None, :]  # [count, L]
        x = channels[..., idx, :]  # [..., count, L, S]
        return x.reshape(*x.shape[:-2], -1)

    def targets(self, channels: np.ndarray, first: int, count: int) -> np.ndarray:
        """The channels δ slots after each window's end: [..., count, S]."""
        return channels[..., first + self.lag : first + self.lag + count, :]

    def pairs(self, channels: np.ndarray, first: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inputs(channels, first, count), self.targets(channels, first, count)

    def slots(self, samples: int) -> int:
        """Channels needed for ``samples`` input/target pairs: N + L + δ − 1."""
        return samples + self.length + self.lag - 1


def per_sample(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows scaled by 1/√N, N = the frame's non-zero rows, so that sums of squares become the mean of eq. 5.20."""
    rows = np.maximum((np.abs(x).sum(-1) > 0).sum(-1), 1)[..., None, None]
    return x / np.sqrt(rows), y / np.sqrt(rows)


def ridge(x: np.ndarray, y: np.ndarray, lam: float, bias: np.ndarray | None = None) -> np.ndarray:
    """argmin_W ‖XW − Y‖² + λ/2 ‖W − Θ‖² (eq. 2.11), batched over leading axes."""
    d = x.shape[-1]
    a = np.swapaxes(x.conj(), -1, -2) @ x + lam / 2 * np.eye(d)
    b = np.swapaxes(x.conj(), -1, -2) @ y
    if bias is not None:
        b = b + lam / 2 * bias
    return np.linalg.solve(a, b)


def meta_bias(x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray, lam: float) -> np.ndarray:
    """Θ minimising Σ_k ‖X_va,k W_k(Θ) − Y_va,k‖² with W_k the ridge solution toward Θ (eq. 2.12): with
    A_k = X_tr,kᴴ X_tr,k + λ/2 I, the validation residual is X̃_k Θ − Ỹ_k with X̃_k = λ/2 X_va,k A_k⁻¹ and
    Ỹ_k = Y_va,k − X_va,k A_k⁻¹ X_tr,kᴴ Y_tr,k; Θ is the least-squares solution over all frames."""
    d = x_tr.shape[-1]
    a = np.swapaxes(x_tr.conj(), -1, -2) @ x_tr + lam / 2 * np.eye(d)
    a_inv_xva = np.swapaxes(np.linalg.solve(np.swapaxes(a, -1, -2), np.swapaxes(x_va, -1, -2)), -1, -2)  # X_va A⁻¹
    x_tilde = lam / 2 * a_inv_xva
    y_tilde = y_va - a_inv_xva @ (np.swapaxes(x_tr.conj(), -1, -2) @ y_tr)
    return np.linalg.lstsq(x_tilde.reshape(-1, d), y_tilde.reshape(-1, y_tilde.shape[-1]), rcond=None)[0]


def joint_bias(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Θ minimising the pooled loss of all meta-training frames (eq. 5.25)."""
    return np.linalg.lstsq(x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1]), rcond=None)[0]


def subspace(channels: np.ndarray, rank: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvectors (columns, descending) and eigenvalues of each frame's sample covariance of ``channels``
    [..., T, S]; the first ``rank`` if given."""
    cov = np.swapaxes(channels, -1, -2) @ channels.conj() / channels.shape[-2]
    values, vectors = np.linalg.eigh(cov)
    values, vectors = values[..., ::-1], vectors[..., ::-1]
    return (vectors, values) if rank is None else (vectors[..., :rank], values[..., :rank])


def aic_rank(values: np.ndarray, samples: int) -> np.ndarray:
    """Wax–Kailath AIC: the number of signal eigenvalues, per frame, from descending eigenvalues [..., S]
    of a covariance estimated from ``samples`` vectors."""
    s = min(values.shape[-1], samples - 1)  # with T ≤ S samples only T − 1 eigenvalues are informative
    lam = np.clip(values[..., :s], 1e-12, None)
    scores = []
    for r in range(s):
        tail = lam[..., r:]
        log_ratio = np.log(tail).mean(-1) - np.log(tail.mean(-1))  # log(geometric / arithmetic mean)
        scores.append(-2 * samples * (s - r) * log_ratio + 2 * r * (2 * s - r))
    return np.argmin(np.stack(scores, -1), -1)


def amplitudes(channels: np.ndarray, basis: np.ndarray) -> np.ndarray:
    """d_l = Bᴴ h_l for every slot: [..., T, R]."""
    return channels @ basis.conj()


def path_inputs(window: Window, d: np.ndarray, first: int, count: int) -> np.ndarray:
    """Per-path scalar windows of the amplitudes d [..., T, R]: [..., R·count, L] (path-major)."""
    return window.inputs(np.moveaxis(d, -1, -2)[..., None], first, count).reshape(*d.shape[:-2], -1, window.length)


def path_targets(window: Window, d: np.ndarray, first: int, count: int) -> np.ndarray:
    return window.targets(np.moveaxis(d, -1, -2)[..., None], first, count).reshape(*d.shape[:-2], -1, 1)


def lstd_basis(seen: np.ndarray, rank: int | str) -> tuple[np.ndarray, np.ndarray]:
    """Each frame's basis B [..., S, S] from the channels it has seen [..., T, S], and a mask [..., S] of its first
    R paths: R a number, or "aic" (Akaike's criterion per frame)."""
    basis, values = subspace(seen)
    s = basis.shape[-1]
    r = aic_rank(values, seen.shape[-2]) if rank == "aic" else np.full(values.shape[:-1], int(rank))
    return basis, (np.arange(s) < np.clip(r, 1, s)[..., None]).astype(float)


def training_pairs(
    form: str, window: Window, channels: np.ndarray, first: int, count: int, basis: np.ndarray | None = None, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Regression pairs of windows ending at first … first+count−1: channel windows (naive) or per-path amplitude
    windows (lstd; masked paths are zero rows, which no least-squares fit sees)."""
    if form == "naive":
        return window.pairs(channels, first, count)
    d = amplitudes(channels, basis) * mask[..., None, :]
    return path_inputs(window, d, first, count), path_targets(window, d, first, count)


def fit(
    form: str, window: Window, lam: float, channels: np.ndarray, samples: int, bias: np.ndarray | None, rank: int | str
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A frame's predictor from its first ``samples`` windows (the channels of slots 0 … N + L + δ − 2): the ridge
    solution toward ``bias`` (eq. 2.11, mean loss), with, for lstd, the basis and mask from those same slots.
    Returns (filters, basis, mask); batched over leading axes."""
    basis = mask = None
    if form == "lstd":
        basis, mask = lstd_basis(channels[..., : window.slots(samples), :], rank)
    x, y = training_pairs(form, window, channels, window.length - 1, samples, basis, mask)
    return ridge(*per_sample(x, y), lam, bias), basis, mask


def holdout_errors(
    form: str, window: Window, lam: float, channels: np.ndarray, samples: int, biases: list, rank: int | str, holdout: int
) -> list[np.ndarray]:
    """For each bias (None: conventional, Θ = 0), the mean squared error, per frame, of the predictor fitted toward it on
    the first ``samples − holdout`` windows of ``channels`` [..., T, S] when it predicts the targets of the last
    ``holdout`` windows: those targets are channels the frame already carries, so the comparison needs no label."""
    fitted = samples - holdout
    history = channels[..., fitted : fitted + window.length - 1 + holdout, :]
    truth = window.targets(channels, window.length - 1 + fitted, holdout)
    errors = []
    for bias in biases:
        predicted = predict(form, window, *fit(form, window, lam, channels, fitted, bias, rank), history)
        errors.append((np.abs(predicted - truth) ** 2).sum(-1).mean(-1))
    return errors


def holdout_choice(
    form: str, window: Window, lam: float, channels: np.ndarray, samples: int, bias: np.ndarray, rank: int | str, holdout: Holdout
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Per frame, whether the conventional predictor (Θ = 0) replaces the one fitted toward ``bias`` (bundle-format.md
    §15.5): its error on the last ``holdout.windows`` pilot windows is below the learned one's by more than
    ``holdout.margin``; with ``samples ≤ windows`` there is nothing to hold out, and the learned one stays. Also both
    errors."""
    if samples <= holdout.windows:
        return np.zeros(channels.shape[:-2], bool), None, None
    learned, conventional = holdout_errors(form, window, lam, channels, samples, [bias, None], rank, holdout.windows)
    return conventional < (1.0 - holdout.margin) * learned, learned, conventional


def fit_selected(
    form: str, window: Window, lam: float, channels: np.ndarray, samples: int, bias: np.ndarray | None, rank: int | str, holdout: Holdout | None
) -> tuple[tuple, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``fit`` toward each frame's chosen bias: Θ, or 0 where the hold-out selection picks the conventional predictor
    (none without ``holdout`` or without a bias). Returns the fit, the per-frame choice and both hold-out errors."""
    conventional, learned, other = np.zeros(channels.shape[:-2], bool), None, None
    if holdout is not None and bias is not None:
        conventional, learned, other = holdout_choice(form, window, lam, channels, samples, bias, rank, holdout)
        bias = np.where(conventional[..., None, None], 0.0, bias)
    return fit(form, window, lam, channels, samples, bias, rank), conventional, learned, other


def predict(form: str, window: Window, filters: np.ndarray, basis: np.ndarray | None, mask: np.ndarray | None, history: np.ndarray) -> np.ndarray:
    """ĥ δ slots after the end of every full window in ``history`` [..., T, S]: [..., T − L + 1, S]."""
    count = history.shape[-2] - window.length + 1
    if form == "naive":
        return window.inputs(history, window.length - 1, count) @ filters
    d = amplitudes(history, basis) * mask[..., None, :]
    d_hat = (path_inputs(window, d, window.length - 1, count) @ filters).reshape(*d.shape[:-2], d.shape[-1], count)
    return np.swapaxes(d_hat, -1, -2) @ np.swapaxes(basis, -1, -2)


def nmse(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """‖ĥ − h‖² / ‖h‖² per prediction."""
    return (np.abs(predicted - true) ** 2).sum(-1) / (np.abs(true) ** 2).sum(-1)
