"""Decision rules across a monitor's streams at one evaluation.

A monitor with 200 features tested at α = 0.01 each would alarm on some
feature most of the time by chance alone. :func:`decide` turns the latest
result of every stream into trustworthy alarms:

1. **Minimum-sample gate** — a stream that has seen fewer than ``min_samples``
   values never alarms.
2. **Minimum effect** — optionally, a stream whose effect size (KS D, PSI, or
   Wasserstein distance in reference standard deviations, see
   :func:`wasserstein_sigma`) is below ``min_effect`` never alarms, so a large
   window does not alarm on a negligible shift.
3. **Multiple-testing control** over the streams that report a p-value:
   Benjamini–Hochberg at false-discovery rate ``fdr`` (default), Bonferroni at
   family-wise level ``fdr``, or none (each stream's own ``drift``). Streams
   without a p-value (sequential detectors, divergences) keep their own
   threshold decision. A stream given its own level ``alpha`` alarms only when
   its p-value is also below it: the detector's rule and the monitor's rule
   must both reject.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import stats

from .base import DetectorResult

METHODS = ("benjaminiHochberg", "bonferroni", "none")


def benjamini_hochberg(p_values: np.ndarray, fdr: float) -> np.ndarray:
    """Which hypotheses Benjamini–Hochberg rejects at false-discovery rate ``fdr``.

    Rejects the k smallest p-values, k the largest i with p_(i) <= i·fdr/m.
    NaN p-values are never rejected and do not count towards m.
    """
    p = np.asarray(p_values, dtype=float)
    reject = np.zeros(p.shape, bool)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return reject
    # Step-up via BH-adjusted p-values, p_(i)·m/i made monotone from the top: the same
    # set as "the k smallest, k the largest i with p_(i) <= i·fdr/m", computed with
    # the arithmetic of scipy.stats.false_discovery_control so boundary cases agree.
    order = np.argsort(p[ok], kind="stable")
    adjusted = p[ok][order] * (m / np.arange(1, m + 1, dtype=float))
    adjusted = np.minimum.accumulate(adjusted[::-1])[::-1]
    reject[np.flatnonzero(ok)[order]] = np.clip(adjusted, 0.0, 1.0) <= fdr
    return reject


def bonferroni(p_values: np.ndarray, alpha: float) -> np.ndarray:
    """Which hypotheses Bonferroni rejects at family-wise level ``alpha`` (NaN never)."""
    p = np.asarray(p_values, dtype=float)
    ok = np.isfinite(p)
    m = int(ok.sum())
    return ok & (p <= alpha / max(m, 1))


def _below(p: float | None, level: float) -> bool:
    return p is not None and bool(p < level)


def wasserstein_sigma(reference: np.ndarray, window: np.ndarray) -> float:
    """Wasserstein-1 distance between window and reference, in reference standard deviations."""
    ref = np.asarray(reference, dtype=float)
    sd = float(np.std(ref, ddof=1)) if ref.size > 1 else 0.0
    if not sd > 0:
        raise ValueError("wasserstein_sigma: the reference is constant; its sigma is 0")
    return float(stats.wasserstein_distance(ref, np.asarray(window, dtype=float)) / sd)


@dataclass(frozen=True, slots=True)
class StreamDecision:
    """One stream's verdict at an evaluation, and why."""

    drift: bool
    reason: (
        str  # "drift", "no-drift", "not-evaluated", "min-samples", "min-effect", "multiple-testing"
    )
    p_value: float | None
    effect_size: float | None


def decide(
    results: Mapping[str, DetectorResult],
    *,
    method: str = "benjaminiHochberg",
    fdr: float = 0.05,
    min_samples: int = 0,
    min_effect: float | Mapping[str, float] | None = None,
    alpha: float | Mapping[str, float] | None = None,
) -> dict[str, StreamDecision]:
    """Alarms for every stream of one monitor, after gates and multiple-testing control.

    Args:
        results: the latest :class:`DetectorResult` per stream (key: stream name).
        method: "benjaminiHochberg", "bonferroni" or "none".
        fdr: false-discovery rate for BH, family-wise level for Bonferroni.
        min_samples: values a stream must have seen before it may alarm.
        min_effect: smallest effect size that may alarm, one for all streams or
            per stream; streams without an effect size are not gated by it.
        alpha: a per-test level, one for all streams or per stream: under BH or
            Bonferroni a stream with one alarms only if its p-value is also below it
            (with method "none" the detector's own ``drift``, made at its level, decides).
    """
    if method not in METHODS:
        raise ValueError(f"decide: method must be one of {METHODS}, got {method!r}")
    if not 0 < fdr < 1:
        raise ValueError(f"decide: fdr must be in (0, 1), got {fdr!r}")
    names = list(results)
    tested = [n for n in names if results[n].p_value is not None and results[n].evaluated]
    pvals = np.array([results[n].p_value for n in tested], dtype=float)
    if method == "benjaminiHochberg":
        rejected = dict(zip(tested, benjamini_hochberg(pvals, fdr).tolist(), strict=False))
    elif method == "bonferroni":
        rejected = dict(zip(tested, bonferroni(pvals, fdr).tolist(), strict=False))
    else:
        rejected = {n: results[n].drift for n in tested}
    out: dict[str, StreamDecision] = {}
    for n in names:
        r = results[n]
        floor = min_effect.get(n) if isinstance(min_effect, Mapping) else min_effect
        if not r.evaluated:
            out[n] = StreamDecision(False, "not-evaluated", r.p_value, r.effect_size)
        elif r.n_seen < min_samples:
            out[n] = StreamDecision(False, "min-samples", r.p_value, r.effect_size)
        elif floor is not None and r.effect_size is not None and r.effect_size < floor:
            out[n] = StreamDecision(False, "min-effect", r.p_value, r.effect_size)
        elif n in rejected:
            level = alpha.get(n) if isinstance(alpha, Mapping) else alpha
            own = r.drift if method == "none" else (level is None or _below(r.p_value, level))
            hit = bool(rejected[n]) and own
            reason = "drift" if hit else ("multiple-testing" if r.drift else "no-drift")
            out[n] = StreamDecision(hit, reason, r.p_value, r.effect_size)
        else:
            out[n] = StreamDecision(
                r.drift, "drift" if r.drift else "no-drift", None, r.effect_size
            )
    return out


__all__ = ["StreamDecision", "benjamini_hochberg", "bonferroni", "decide", "wasserstein_sigma"]
