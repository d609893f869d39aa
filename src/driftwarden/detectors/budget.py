"""False-alarm budgets: from a monitor's budget to each test's threshold, and back.

A budget B is the expected number of values (per stream) between two false alarms
when nothing changes — the average run length ARL₀ — not a per-test α repeated
forever. The monitor states one budget for itself as a whole
(``spec.detectors.valuesPerFalseAlarm``); these functions turn it into thresholds.

**Monitor-wide guarantee (budget split, e-d-Bonferroni).** A monitor with m
budgeted tests gives each the budget m·B (:func:`split_budget`). A test with
ARL₀ ≥ m·B that restarts after each alarm raises at most 1/(m·B) false alarms per
value on average, so the monitor raises at most m/(m·B) = 1/B per row of values:
one false alarm per B values per stream, whatever the dependence between
streams (the expectation of a sum is the sum of expectations). This is the
e-d-Bonferroni rule of Dandapanthula & Ramdas, "Multiple testing in multi-stream
sequential change detection" (2025), and it is the same on 1 or N shards: every
threshold is fixed when the detector is built, from the monitor's test count.

For e-detectors the split is also available at decision time over their
e-values (:func:`e_bonferroni_alarms`, :func:`e_bh_alarms`), for a monitor-wide
decision that sees every stream's statistic at once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from scipy import optimize

from .base import DetectorResult


def split_budget(monitor_budget: float, n_tests: int) -> float:
    """Each test's budget (ARL₀, values) so that ``n_tests`` tests keep ``monitor_budget``."""
    if not monitor_budget > 1:
        raise ValueError(f"split_budget: monitor_budget must be > 1, got {monitor_budget!r}")
    if n_tests < 1:
        raise ValueError(f"split_budget: n_tests must be at least 1, got {n_tests!r}")
    return float(monitor_budget) * int(n_tests)


def alpha_per_evaluation(budget: float, evaluate_every: int) -> float:
    """Per-evaluation α of a windowed test run every ``evaluate_every`` values, for ``budget``.

    A test at level α every k values alarms on at most α/k of the values under no
    change, so α = k/B keeps its rate of alarms (hence of rising edges) below 1/B.
    """
    return min(0.5, evaluate_every / float(budget))


def cusum_arl(threshold: float, drift: float) -> float:
    """Siegmund's ARL₀ of a one-sided CUSUM on N(0, 1) values with reference value ``drift``.

    For S_t = max(0, S_{t-1} + x_t − k) alarming at S_t > h:
    ARL₀ ≈ (exp(2k·b) − 2k·b − 1)/(2k²) with b = h + 1.166 (Siegmund, Sequential
    Analysis, 1985, eq. 2.57 with the ρ-correction).
    """
    return math.exp(min(log_cusum_arl(threshold, drift), 700.0))


def log_cusum_arl(threshold: float, drift: float) -> float:
    """log of :func:`cusum_arl`, without overflow for large thresholds."""
    k = float(drift)
    b = threshold + 1.166
    if k <= 0:
        return 2.0 * math.log(b)
    x = 2.0 * k * b
    # exp(x) − x − 1 = exp(x)·(1 − (x + 1)·exp(−x))
    log_num = (
        x + math.log1p(-(x + 1.0) * math.exp(-x)) if x > 1e-3 else 2.0 * math.log(x) - math.log(2.0)
    )
    return log_num - math.log(2.0 * k * k)


def page_hinkley_threshold(delta: float, budget: float, *, two_sided: bool = True) -> float:
    """Page-Hinkley's λ on standardised values (no fading) for ARL₀ = ``budget``.

    Page-Hinkley without fading is a CUSUM with reference value δ around the
    running mean; a two-sided test alarms when either side does, so each side
    gets twice the budget. λ solves Siegmund's approximation (:func:`cusum_arl`).
    """
    if not delta > 0:
        raise ValueError(f"page_hinkley_threshold: delta must be > 0, got {delta!r}")
    target = float(budget) * (2.0 if two_sided else 1.0)
    log_target = math.log(target)
    return float(optimize.brentq(lambda h: log_cusum_arl(h, delta) - log_target, 0.0, 1e5))


# --------------------------------------------------------------------------- monitor-wide


def _log_e_values(results: Mapping[str, DetectorResult]) -> dict[str, float]:
    """Budget-normalised log e-values of the e-detectors among ``results``.

    An e-detector alarms at statistic ≥ threshold; log(budget) − threshold ≥ 0 is
    what calibration took off Ville's threshold, so statistic − threshold +
    log(budget) is the statistic on the scale where Ville's bound reads ARL₀ ≥ e^x.
    """
    out = {}
    for name, r in results.items():
        if r.budget is not None and r.evaluated and not math.isnan(r.statistic):
            out[name] = r.statistic - r.threshold + math.log(r.budget)
    return out


def e_bonferroni_alarms(
    results: Mapping[str, DetectorResult], monitor_budget: float
) -> dict[str, bool]:
    """Streams whose e-detector alarms when the monitor's budget is split over them now.

    For the m e-detectors in ``results``, stream i alarms when its budget-normalised
    e-value reaches m·B (:func:`split_budget`). Keeps the monitor-wide budget B
    under arbitrary dependence (module docstring). Results without a budget are
    left out.
    """
    log_e = _log_e_values(results)
    if not log_e:
        return {}
    bar = math.log(split_budget(monitor_budget, len(log_e)))
    return {name: v >= bar for name, v in log_e.items()}


def e_bh_alarms(results: Mapping[str, DetectorResult], monitor_budget: float) -> dict[str, bool]:
    """e-BH over the e-detectors' current e-values at level 1/``monitor_budget``.

    Sort the m budget-normalised e-values decreasingly; alarm on the k largest for the
    largest k with e_(k) ≥ m·B/k (Wang & Ramdas, e-BH, JRSS-B 2022). At each time
    this controls the false-discovery rate at 1/B under arbitrary dependence; applied
    to e-detectors over time it is the e-d-BH procedure of Dandapanthula & Ramdas
    (2025), whose guarantee is on error over patience, not on a per-stream ARL₀. It
    alarms on at least every stream e-Bonferroni alarms on, and on more when many
    streams move together.
    """
    log_e = _log_e_values(results)
    if not log_e:
        return {}
    names = list(log_e)
    values = np.array([log_e[n] for n in names])
    m = len(names)
    order = np.argsort(-values, kind="stable")
    ranks = np.arange(1, m + 1)
    ok = values[order] >= math.log(monitor_budget) + math.log(m) - np.log(ranks)
    k = int(np.max(np.flatnonzero(ok)) + 1) if ok.any() else 0
    chosen = set(order[:k].tolist())
    return {n: i in chosen for i, n in enumerate(names)}


__all__ = [
    "alpha_per_evaluation",
    "cusum_arl",
    "e_bh_alarms",
    "e_bonferroni_alarms",
    "page_hinkley_threshold",
    "split_budget",
]
