"""LogME against answers computed another way: the Gaussian marginal likelihood, maximised numerically."""

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import multivariate_normal

from tune_tl.models.transferability import log_evidence, logme, maximise_evidence, spectrum_of


def _direct_log_evidence(f, y, alpha, beta):
    """log N(y; 0, β⁻¹I + α⁻¹FFᵀ) / n: the weights integrated out in closed form, no SVD, no iteration."""
    n = len(y)
    cov = np.eye(n) / beta + f @ f.T / alpha
    return multivariate_normal(mean=np.zeros(n), cov=cov).logpdf(y) / n


def _problem(n, dim, seed):
    rng = np.random.default_rng(seed)
    f = rng.normal(size=(n, dim))
    y = (f @ rng.normal(size=dim) + 0.5 * rng.normal(size=n) > 0).astype(float)
    return f, y


@pytest.mark.parametrize("n, dim", [(40, 5), (12, 30)])  # more samples than features, and fewer
def test_evidence_through_the_svd_equals_the_gaussian_marginal_likelihood(n, dim):
    f, y = _problem(n, dim, seed=0)
    spectrum, u = spectrum_of(f)
    z = u.T @ y
    for alpha, beta in [(1.0, 1.0), (0.3, 7.0), (20.0, 0.05)]:
        ours = log_evidence(spectrum, z, float(y @ y - z @ z), alpha, beta)
        assert ours == pytest.approx(_direct_log_evidence(f, y, alpha, beta), rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("n, dim", [(40, 5), (12, 30)])
def test_the_fixed_point_reaches_the_numerical_maximum_of_the_evidence(n, dim):
    f, y = _problem(n, dim, seed=1)
    spectrum, u = spectrum_of(f)
    found = maximise_evidence(spectrum, u, y)
    best = minimize(lambda p: -_direct_log_evidence(f, y, np.exp(p[0]), np.exp(p[1])), x0=[0.0, 0.0], method="Nelder-Mead",
                    options={"xatol": 1e-10, "fatol": 1e-14, "maxiter": 20000})
    assert found.log_evidence == pytest.approx(-best.fun, abs=1e-7)
    assert np.log([found.alpha, found.beta]) == pytest.approx(best.x, abs=1e-3)


def test_logme_is_the_mean_over_classes_of_each_one_hot_columns_maximised_evidence():
    rng = np.random.default_rng(2)
    f, labels = rng.normal(size=(30, 4)), rng.integers(0, 3, size=30)
    spectrum, u = spectrum_of(f)
    per_class = [maximise_evidence(spectrum, u, (labels == k).astype(float)).log_evidence for k in range(3)]
    assert logme(f, labels) == pytest.approx(np.mean(per_class))


def test_features_that_carry_the_labels_score_higher_than_noise():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, size=200)
    informative = np.eye(4)[labels] * 3 + rng.normal(size=(200, 4))
    noise = rng.normal(size=(200, 4))
    assert logme(informative, labels) > logme(noise, labels) + 0.1


def test_logme_rejects_features_that_do_not_match_the_labels():
    with pytest.raises(ValueError, match="n = len"):
        logme(np.zeros((5, 3)), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        logme(np.full((4, 3), np.nan), np.zeros(4))


def test_logme_is_finite_when_few_near_identical_images_per_class_are_fitted_exactly():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 8)  # 24 images, 1280 features: every label vector lies in the features' span
    features = np.abs(rng.normal(size=(3, 1280)))[labels] + 1e-3 * rng.normal(size=(24, 1280))
    assert np.isfinite(logme(features, labels))
