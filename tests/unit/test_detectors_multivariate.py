"""MMD and NM-DDM: statistics against independent scipy computations, calibration, state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import cdist, pdist
from scipy.special import logsumexp

from driftwarden.detectors import MMD, NMDDM, DetectorInputError, detector_from_state


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 6), shift=st.floats(0, 1))
def test_mmd_statistic_equals_scipy_gaussian_kernel(seed, dim, shift):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(60, dim))
    stream = rng.normal(shift, size=(40, dim))
    det = MMD(ref, window=40, evaluate_every=40, permutations=20, device="cpu")
    ev = det.update_many(stream)
    sigma = np.median(pdist(ref))

    def k(a, b):
        return np.exp(-cdist(a, b, "sqeuclidean") / (2 * sigma**2))

    expected = k(stream, stream).mean() + k(ref, ref).mean() - 2 * k(stream, ref).mean()
    np.testing.assert_allclose(ev.statistic[0], expected, rtol=1e-9, atol=1e-12)
    assert 1 / 21 <= ev.p_value[0] <= 1.0


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), dim=st.integers(1, 8), shift=st.floats(0, 1))
def test_nmddm_statistic_equals_scipy_kde_log_ratio(seed, dim, shift):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=(50, dim))
    stream = rng.normal(shift, size=(30, dim))
    det = NMDDM(ref, window=30, evaluate_every=30, permutations=20, device="cpu")
    ev = det.update_many(stream)

    def summ(x):
        return x if dim == 1 else np.column_stack([x.mean(1), x.std(1, ddof=1)])

    zr, zw = summ(ref), summ(stream)
    pooled = np.vstack([zr, zw])
    n, d = pooled.shape
    cov = np.atleast_2d(np.cov(pooled.T)) * n ** (-2.0 / (d + 4)) + 1e-12 * np.eye(d)
    mvn = ss.multivariate_normal(mean=np.zeros(d), cov=cov)
    logk = mvn.logpdf((zw[:, None, :] - pooled[None, :, :]).reshape(-1, d)).reshape(len(zw), n)
    n_ref = len(zr)
    lw = logk[:, n_ref:].copy()
    np.fill_diagonal(lw, -np.inf)  # leave-one-out
    log_fw = logsumexp(lw, axis=1) - np.log(len(zw) - 1)
    log_fr = logsumexp(logk[:, :n_ref], axis=1) - np.log(n_ref)
    np.testing.assert_allclose(ev.statistic[0], np.mean(log_fw - log_fr), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("cls", [MMD, NMDDM])
def test_calibration_no_drift_and_power(cls):
    """Under no drift the alarm rate stays near alpha; a 1-sigma shift is found."""
    alpha, runs = 0.1, 40
    alarms = 0
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        det = cls(rng.normal(size=(60, 4)), window=30, evaluate_every=30, alpha=alpha,
                  permutations=50, seed=seed, device="cpu")  # fmt: skip
        alarms += int(det.update_many(rng.normal(size=(30, 4))).drift[0])
    assert alarms / runs <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / runs)
    rng = np.random.default_rng(999)
    det = cls(rng.normal(size=(100, 4)), window=60, evaluate_every=60, seed=1, device="cpu")
    assert det.update_many(rng.normal(1.0, 2.0, size=(60, 4))).drift[0]


@pytest.mark.parametrize("cls", [MMD, NMDDM])
def test_seeded_determinism_state_round_trip_and_batching(cls):
    rng = np.random.default_rng(4)
    ref = rng.normal(size=(80, 3))
    stream = rng.normal(0.2, size=(120, 3))
    kw = {"window": 30, "evaluate_every": 20, "permutations": 30, "seed": 7, "device": "cpu"}
    whole = cls(ref, **kw)
    ev = whole.update_many(stream)
    again = cls(ref, **kw)
    assert again.update_many(stream) == ev  # same seed, same p-values
    part = cls(ref, **kw)
    a = part.update_many(stream[:53])
    restored = detector_from_state(json.loads(json.dumps(part.to_state(), allow_nan=False)))
    b = restored.update_many(stream[53:])
    assert type(ev).concat([a, b], ev.threshold) == ev
    assert restored.to_state() == whole.to_state()
    single = cls(ref, **kw)
    for row in stream[:45]:
        single.update_many(row[None, :])
    head = cls(ref, **kw)
    head.update_many(stream[:45])
    assert single.to_state() == head.to_state()


@pytest.mark.parametrize("cls", [MMD, NMDDM])
def test_bad_input(cls):
    det = cls(np.random.default_rng(0).normal(size=(20, 3)), window=5, device="cpu")
    with pytest.raises(DetectorInputError, match="dimension 2 differs"):
        det.update_many(np.zeros((4, 2)))
    with pytest.raises(DetectorInputError, match="NaN/inf.*row 1"):
        det.update_many([[0, 0, 0], [np.nan, 0, 0]])
    with pytest.raises(TypeError, match="numeric"):
        det.update_many(np.array([["a", "b", "c"]]))
    assert len(det.update_many(np.zeros((0, 3)))) == 0 and det.n_seen == 0
    det.update_many([1.0, 2.0, 3.0])  # one vector as a flat row
    assert det.n_seen == 1
    with pytest.raises(ValueError, match="at least 2"):
        cls(np.zeros((1, 3)))
