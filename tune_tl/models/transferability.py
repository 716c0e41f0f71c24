"""LogME: how well frozen features suit a labelled target task, without training (You et al., ICML 2021).

For each class ``k`` LogME fits a Bayesian linear regression from the features ``F`` (n × D) to the one-hot
column ``y_k``: weights ``m ~ N(0, α⁻¹ I)``, targets ``y ~ N(F m, β⁻¹ I)``. The *evidence* ``p(y | F, α, β)``
integrates the weights out, so it rewards features that explain the labels with small weights and little
noise, with no hyperparameter and no held-out split. LogME maximises the evidence over ``α, β`` (MacKay's
fixed-point iteration, the paper's Algorithm 1) and reports ``log p / n`` averaged over the classes.
Higher is better; only the order of scores over backbones on the same data means anything.

Everything runs in the singular-vector basis of ``F`` (one thin SVD, then O(min(n, D)) per iteration), so
it takes well under a second for a few thousand images with 1280 features.

    >>> score = logme(features, labels)  # features: (n, D) float array, labels: (n,) ints
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class _Spectrum:
    """``F = U diag(s) Vᵀ`` reduced to what the evidence needs."""

    n: int
    dim: int
    sigma: np.ndarray  # squared singular values, length r = min(n, D)
    s: np.ndarray  # singular values


@dataclass(frozen=True)
class Evidence:
    """One target's maximised evidence and the precisions that maximise it."""

    log_evidence: float  # log p(y | F, α, β) / n
    alpha: float  # prior precision of the weights
    beta: float  # precision of the label noise


def logme(features: np.ndarray, labels: np.ndarray) -> float:
    """LogME of ``features`` (n × D) for integer class ``labels`` (n,): mean over classes of the maximised
    log evidence per sample. Features are used as given (no centring), as in the paper."""
    f = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    if f.ndim != 2 or len(f) != len(labels):
        raise ValueError(f"features must be (n, D) with n = len(labels); got {f.shape} and {labels.shape}")
    if not np.isfinite(f).all():
        raise ValueError("features contain NaN or infinity")
    spectrum, u = spectrum_of(f)
    scores = [maximise_evidence(spectrum, u, (labels == k).astype(np.float64)).log_evidence for k in np.unique(labels)]
    return float(np.mean(scores))


def maximise_evidence(spectrum: _Spectrum, u: np.ndarray, y: np.ndarray, tol: float = 1e-8, max_iter: int = 1000) -> Evidence:
    """Fixed-point iteration for ``α, β`` (``γ = Σ βσ/(α+βσ)``, ``α = γ/|m|²``, ``β = (n-γ)/|Fm-y|²``)."""
    z = u.T @ y  # y's coordinates in F's column space
    outside = max(float(y @ y - z @ z), 0.0)  # the part of y no weights can fit
    alpha, beta = 1.0, 1.0
    for _ in range(max_iter):
        m_sq, residual = _fit(spectrum, z, outside, alpha, beta)
        gamma = float(np.sum(beta * spectrum.sigma / (alpha + beta * spectrum.sigma)))
        new_alpha = gamma / max(m_sq, 1e-300)
        new_beta = max(spectrum.n - gamma, 1e-300) / max(residual, 1e-300)  # n ≈ γ when the labels are fitted exactly
        converged = abs(new_alpha / new_beta - alpha / beta) <= tol * (alpha / beta)
        alpha, beta = new_alpha, new_beta
        if converged:
            break
    return Evidence(log_evidence(spectrum, z, outside, alpha, beta), alpha, beta)


def log_evidence(spectrum: _Spectrum, z: np.ndarray, outside: float, alpha: float, beta: float) -> float:
    """``log p(y | F, α, β) / n`` (Bishop, PRML eq. 3.86) through the SVD."""
    n, dim, sigma = spectrum.n, spectrum.dim, spectrum.sigma
    m_sq, residual = _fit(spectrum, z, outside, alpha, beta)
    log_det = float(np.sum(np.log(alpha + beta * sigma))) + (dim - len(sigma)) * np.log(alpha)
    total = (n / 2 * np.log(beta) + dim / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
             - beta / 2 * residual - alpha / 2 * m_sq - log_det / 2)
    return float(total / n)


def spectrum_of(features: np.ndarray) -> tuple[_Spectrum, np.ndarray]:
    """The SVD pieces of ``features`` that :func:`maximise_evidence` and :func:`log_evidence` take."""
    f = np.asarray(features, dtype=np.float64)
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    return _Spectrum(len(f), f.shape[1], s**2, s), u


def _fit(spectrum: _Spectrum, z: np.ndarray, outside: float, alpha: float, beta: float) -> tuple[float, float]:
    """``|m|²`` and ``|F m - y|²`` for the posterior mean ``m = β (αI + βFᵀF)⁻¹ Fᵀ y``."""
    shrink = 1.0 / (alpha + beta * spectrum.sigma)
    m_sq = float(np.sum((beta * spectrum.s * z * shrink) ** 2))
    residual = float(np.sum((alpha * z * shrink) ** 2)) + outside
    return m_sq, residual
