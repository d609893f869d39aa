"""Chi-square, KL, JS and PSI against scipy; unseen categories, zero counts, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.stats as ss
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.distance import jensenshannon

from driftwarden.detectors import (
    PSI,
    Chi2,
    DetectorInputError,
    JensenShannon,
    KLDivergence,
    detector_from_state,
)
from driftwarden.detectors.categorical import UNSEEN

CLASSES = [Chi2, KLDivergence, JensenShannon, PSI]


@st.composite
def category_streams(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    k_ref = draw(st.integers(1, 6))
    ref_p = rng.dirichlet(np.ones(k_ref))
    ref = rng.choice([f"c{i}" for i in range(k_ref)], size=draw(st.integers(1, 300)), p=ref_p)
    # the stream may use categories the reference never had
    k_live = draw(st.integers(1, 8))
    live_p = rng.dirichlet(np.ones(k_live) * draw(st.floats(0.2, 5)))
    stream = rng.choice([f"c{i}" for i in range(k_live)], size=draw(st.integers(0, 300)), p=live_p)
    return ref, stream, draw(st.integers(1, 60)), draw(st.integers(1, 30))


def expected_counts(ref, window):
    cats = sorted(set(ref.tolist()))
    ref_counts = np.array([np.sum(ref == c) for c in cats] + [0])
    win_counts = np.array(
        [np.sum(window == c) for c in cats] + [int(np.sum(~np.isin(window, cats)))]
    )
    return ref_counts, win_counts


@settings(max_examples=30, deadline=None)
@given(data=category_streams())
def test_statistics_equal_scipy_at_every_evaluation(data):
    ref, stream, window, every = data
    dets = [cls(ref, window=window, evaluate_every=every) for cls in CLASSES]
    evs = [d.update_many(stream) for d in dets]
    # scipy at up to 15 evenly spread evaluations per example
    picks = np.unique(np.linspace(0, len(evs[0]) - 1, num=min(len(evs[0]), 15)).astype(int))
    for i, pos in zip(picks, evs[0].position[picks], strict=False):
        win = stream[pos - window : pos]
        rc, wc = expected_counts(ref, win)
        # chi-square: scipy's contingency test on the buckets seen in either sample
        keep = (rc + wc) > 0
        if keep.sum() > 1:
            r = ss.chi2_contingency(np.array([rc[keep], wc[keep]]), correction=False)
            np.testing.assert_allclose(evs[0].statistic[i], r.statistic, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(evs[0].p_value[i], r.pvalue, rtol=1e-9, atol=1e-15)
        else:
            assert evs[0].statistic[i] == 0.0 and evs[0].p_value[i] == 1.0
        a = (wc + 0.5) / (wc + 0.5).sum()
        e = (rc + 0.5) / (rc + 0.5).sum()
        np.testing.assert_allclose(evs[1].statistic[i], ss.entropy(a, e), rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(
            evs[2].statistic[i], jensenshannon(wc, rc, base=2), rtol=1e-7, atol=1e-7
        )
        np.testing.assert_allclose(
            evs[3].statistic[i], ss.entropy(a, e) + ss.entropy(e, a), rtol=1e-10, atol=1e-13
        )


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), bins=st.integers(2, 20))
def test_numeric_binning_uses_reference_quantiles(seed, bins):
    rng = np.random.default_rng(seed)
    ref = rng.normal(size=500)
    stream = rng.normal(0.3, 1.2, size=200)
    det = PSI(ref, value_kind="numeric", bins=bins, window=200, evaluate_every=200)
    ev = det.update_many(stream)
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    rc = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    wc = np.bincount(np.searchsorted(edges, stream, side="right"), minlength=edges.size + 1)
    a, e = (wc + 0.5) / (wc + 0.5).sum(), (rc + 0.5) / (rc + 0.5).sum()
    np.testing.assert_allclose(ev.statistic[0], ss.entropy(a, e) + ss.entropy(e, a), rtol=1e-10)
    assert det.window_counts().sum() == 200


def test_unseen_categories_go_to_their_own_bucket_and_raise_drift():
    ref = ["a"] * 600 + ["b"] * 400
    det = Chi2(ref, window=100, evaluate_every=100)
    assert det.buckets == ["a", "b", UNSEEN]
    ev = det.update_many(["a"] * 50 + ["b"] * 30 + ["new"] * 20)
    assert det.window_counts().tolist() == [50, 30, 20]
    assert ev.drift[0]
    kl = KLDivergence(ref, window=100, evaluate_every=100)
    assert np.isfinite(kl.update_many(["zzz"] * 100).statistic[0])  # smoothed, finite


def test_categories_compare_as_strings():
    det = PSI([1, 2, 2, 3], window=3, evaluate_every=3)
    det.update_many([1, "2", np.int64(3)])
    assert det.window_counts().tolist() == [1, 1, 1, 0]


@pytest.mark.parametrize("cls", CLASSES)
@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), cut=st.integers(0, 400))
def test_state_round_trip_and_batching(cls, seed, cut):
    rng = np.random.default_rng(seed)
    ref = rng.choice(list("abcd"), size=300)
    stream = rng.choice(list("abcde"), size=400, p=[0.1, 0.2, 0.3, 0.3, 0.1])
    whole = cls(ref, window=50, evaluate_every=7)
    ev = whole.update_many(stream)
    part = cls(ref, window=50, evaluate_every=7)
    first = part.update_many(stream[:cut])
    restored = detector_from_state(json.loads(json.dumps(part.to_state(), allow_nan=False)))
    second = restored.update_many(stream[cut:])
    assert type(ev).concat([first, second], ev.threshold) == ev
    assert restored.to_state() == whole.to_state()
    single = cls(ref, window=50, evaluate_every=7)
    for x in stream[:60]:
        single.update(x)
    head = cls(ref, window=50, evaluate_every=7)
    head.update_many(stream[:60])
    assert single.to_state() == head.to_state()


@pytest.mark.parametrize("cls", CLASSES)
def test_missing_values_empty_batches_and_wrong_types(cls):
    det = cls(["a", "b"], window=5, evaluate_every=5)
    with pytest.raises(DetectorInputError, match=r"missing value\(s\).*index 1"):
        det.update_many(["a", None, "b"])
    with pytest.raises(DetectorInputError, match="missing"):
        det.update_many(["a", float("nan")])
    with pytest.raises(TypeError, match="categories must be"):
        det.update_many([{"a": 1}])
    with pytest.raises(DetectorInputError, match="1-d batch"):
        det.update_many([["a"], ["b"]])
    assert len(det.update_many([])) == 0 and det.n_seen == 0
    omit = cls(["a", "b"], window=5, evaluate_every=5, nan_policy="omit")
    omit.update_many(["a", None, "b"])
    assert omit.n_seen == 2 and omit.n_dropped == 1
    numeric = cls(np.arange(10.0), value_kind="numeric", window=5)
    with pytest.raises(TypeError, match="must be numeric"):
        numeric.update_many(["x"])
    with pytest.raises(DetectorInputError, match="non-finite"):
        numeric.update_many([1.0, np.inf])


def test_bad_construction():
    with pytest.raises(ValueError, match="no \\(non-missing\\) categories"):
        Chi2([None, None])
    with pytest.raises(ValueError, match="value_kind"):
        PSI(["a"], value_kind="text")
    with pytest.raises(ValueError, match="alpha"):
        Chi2(["a"], alpha=2.0)
