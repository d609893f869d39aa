"""Build detectors from a monitor's ``DetectorConfig``, and restore them from state."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from driftwarden.common.spec import DetectorConfig, DetectorType

from .base import Detector
from .budget import alpha_per_evaluation, page_hinkley_threshold
from .categorical import PSI, Chi2, JensenShannon, KLDivergence
from .concept import ErrorRateIncrease, RelativeMSE
from .edetectors import DEFAULT_BUDGET, DEFAULT_SHAPE_BINS, MixtureCUSUM, MultinomialCUSUM
from .ks import IKS, KSWindow
from .multivariate import MMD, NMDDM
from .sequential import ADWIN, DDM, EDDM, HDDMA, HDDMW, PageHinkley

#: The shape of the values a detector reads: numeric or categorical values, or
#: embedding vectors. Not the stream kind (``drift_worker.streams.StreamKind``): a
#: performance stream's values (per-sample errors) are numeric here. Concept-drift
#: detectors take per-sample errors whatever it is.
ValueKind = Literal["numeric", "categorical", "embedding"]

DETECTOR_CLASSES: dict[str, type[Detector]] = {
    cls.kind: cls
    for cls in (
        KSWindow, IKS, PageHinkley, DDM, EDDM, HDDMA, HDDMW, ADWIN, Chi2, KLDivergence,
        JensenShannon, PSI, RelativeMSE, ErrorRateIncrease, MMD, NMDDM, MixtureCUSUM,
        MultinomialCUSUM,
    )
}  # fmt: skip
assert {t.value for t in DetectorType} == set(DETECTOR_CLASSES), "every DetectorType needs a class"

# Defaults when the DetectorConfig leaves a field unset (documented in docs/detectors.md).
# Tests with a per-test alpha get alpha from the budget when alpha is unset:
# alpha_per_evaluation(budget, evaluate_every) for windowed tests, 1/budget for IKS.
# Page-Hinkley on a feature standardised by its reference: delta = half of a 0.5 sigma
# shift, no fading (river's fading factor 0.9999 multiplies the false-alarm rate by
# ~90), lambda from the budget (page_hinkley_threshold; 25 at delta 0.25 is ~2e6).
DEFAULT_PH_DELTA = 0.25
PH_FADING = 1.0
DEFAULT_ADWIN_DELTA = 0.002
DEFAULT_BINS = 10
# Embedding tests cost O(permutations * (window + reference)^2) per evaluation: cap the window.
MAX_EMBEDDING_WINDOW = 500
DEFAULT_PERMUTATIONS = 200


def _need_reference(config: DetectorConfig, reference: np.ndarray | None) -> np.ndarray:
    if reference is None or np.size(reference) == 0:
        raise ValueError(
            f"detector {config.type.value!r} compares against a reference sample, but none was "
            "given; the model bundle's reference.csv must hold this stream's column"
        )
    return np.asarray(reference)


def make_detector(
    config: DetectorConfig,
    *,
    reference: np.ndarray | None,
    kind: ValueKind = "numeric",
    window: int = 1000,
    evaluate_every: int = 100,
    seed: int = 0,
    nan_policy: str = "raise",
    budget: float = DEFAULT_BUDGET,
) -> Detector:
    """A detector for ``config`` on one stream, with defaults for unset fields.

    Args:
        config: the monitor's detector entry (type and optional parameters).
        reference: the stream's reference sample from the model bundle (values,
            categories, per-sample errors for concept drift, or an embedding
            matrix); required by every detector that compares with a reference.
        kind: the shape of the stream's values (see :data:`ValueKind`).
        window: sliding-window length (``spec.workers.window``).
        evaluate_every: values between windowed tests (``spec.workers.evaluateEvery``).
        seed: seed of detectors that draw random numbers (permutation tests);
            derive it from the stream name so replicas agree.
        nan_policy: "raise" or "omit" for numeric input with NaN/inf.
        budget: this test's false-alarm budget, values between false alarms (ARL₀);
            the monitor's ``valuesPerFalseAlarm`` split over its tests
            (:func:`.budget.split_budget`). Thresholds and alphas the config leaves
            unset follow from it; divergences (kl, js, psi), the error-stream
            detectors (ddm family, adwin) and the embedding tests do not use it.
    """
    t = config.type
    if t is DetectorType.MIXTURE_CUSUM:
        return MixtureCUSUM(
            _need_reference(config, reference),
            budget=budget,
            threshold=config.threshold,
            nan_policy=nan_policy,
        )
    if t is DetectorType.MULTINOMIAL_CUSUM:
        if kind == "embedding":
            raise ValueError("detector 'multinomialCusum' works on one column, not on embeddings")
        return MultinomialCUSUM(
            _need_reference(config, reference),
            budget=budget,
            threshold=config.threshold,
            value_kind=kind,
            bins=config.bins or DEFAULT_SHAPE_BINS,
            nan_policy=nan_policy,
        )
    if t is DetectorType.KS:
        return KSWindow(
            reference=_need_reference(config, reference),
            window=window,
            evaluate_every=evaluate_every,
            alpha=(
                config.alpha
                if config.alpha is not None
                else alpha_per_evaluation(budget, evaluate_every)
            ),
            min_effect=config.min_effect or 0.0,
            nan_policy=nan_policy,
        )
    if t is DetectorType.IKS:
        return IKS(
            reference=_need_reference(config, reference),
            window=window,
            alpha=config.alpha if config.alpha is not None else 1.0 / budget,
            min_effect=config.min_effect or 0.0,
            nan_policy=nan_policy,
        )
    if t is DetectorType.PAGE_HINKLEY:
        loc, scale = 0.0, 1.0
        if reference is not None and np.size(reference) > 1:
            ref = np.asarray(reference, dtype=float)
            ref = ref[np.isfinite(ref)]
            loc, scale = float(np.mean(ref)), float(np.std(ref, ddof=1))
            if not scale > 0:
                raise ValueError(
                    "detector 'pageHinkley': the reference sample is constant, so it cannot be "
                    "standardised; use a categorical detector or drop the feature"
                )
        delta = config.delta if config.delta is not None else DEFAULT_PH_DELTA
        if config.threshold is not None:
            ph_lambda = config.threshold
        elif delta > 0:
            ph_lambda = page_hinkley_threshold(delta, budget)
        else:
            raise ValueError(
                "detector 'pageHinkley': delta 0 has no threshold that keeps a false-alarm "
                "budget (the statistic drifts upwards forever); set delta > 0 or a threshold"
            )
        return PageHinkley(
            delta=delta,
            threshold=ph_lambda,
            alpha=PH_FADING,
            budget=budget if config.threshold is None else None,
            loc=loc,
            scale=scale,
            nan_policy=nan_policy,
        )
    if t is DetectorType.DDM:
        return DDM(nan_policy=nan_policy)
    if t is DetectorType.EDDM:
        return EDDM(nan_policy=nan_policy)
    if t is DetectorType.HDDM_A:
        drift_conf = config.alpha if config.alpha is not None else 0.001
        return HDDMA(
            drift_confidence=drift_conf,
            warning_confidence=min(5 * drift_conf, 0.5),
            nan_policy=nan_policy,
        )
    if t is DetectorType.HDDM_W:
        drift_conf = config.alpha if config.alpha is not None else 0.001
        return HDDMW(
            drift_confidence=drift_conf,
            warning_confidence=min(5 * drift_conf, 0.5),
            nan_policy=nan_policy,
        )
    if t is DetectorType.ADWIN:
        # ADWIN's delta is a confidence: spec.delta if given, else alpha, else river's 0.002
        adwin_delta = next(
            (v for v in (config.delta, config.alpha) if v is not None), DEFAULT_ADWIN_DELTA
        )
        if not 0 < adwin_delta < 1:
            raise ValueError(f"detector 'adwin': delta must be in (0, 1), got {adwin_delta!r}")
        return ADWIN(
            delta=adwin_delta,
            nan_policy=nan_policy,
        )
    if t in (DetectorType.CHI2, DetectorType.KL, DetectorType.JS, DetectorType.PSI):
        if kind == "embedding":
            raise ValueError(f"detector {t.value!r} works on one column, not on embeddings")
        cls = {
            DetectorType.CHI2: Chi2,
            DetectorType.KL: KLDivergence,
            DetectorType.JS: JensenShannon,
            DetectorType.PSI: PSI,
        }[t]
        common: dict[str, Any] = {
            "window": window,
            "evaluate_every": evaluate_every,
            "value_kind": kind,
            "bins": config.bins or DEFAULT_BINS,
            "nan_policy": nan_policy,
        }
        ref = _need_reference(config, reference)
        if cls is Chi2:
            chi2_alpha = (
                config.alpha
                if config.alpha is not None
                else alpha_per_evaluation(budget, evaluate_every)
            )
            return Chi2(ref, alpha=chi2_alpha, **common)
        return cls(ref, threshold=config.threshold, **common)
    if t is DetectorType.RELATIVE_MSE:
        return RelativeMSE(
            _need_reference(config, reference),
            window=window,
            evaluate_every=evaluate_every,
            min_increase=config.threshold if config.threshold is not None else 0.2,
            alpha=config.alpha if config.alpha is not None else 0.01,
            nan_policy=nan_policy,
        )
    if t is DetectorType.ERROR_RATE:
        return ErrorRateIncrease(
            _need_reference(config, reference),
            window=window,
            evaluate_every=evaluate_every,
            min_increase=config.threshold if config.threshold is not None else 0.05,
            alpha=config.alpha if config.alpha is not None else 0.01,
            nan_policy=nan_policy,
        )
    if t in (DetectorType.MMD, DetectorType.NM_DDM):
        cls = MMD if t is DetectorType.MMD else NMDDM
        return cls(
            _need_reference(config, reference),
            window=min(window, MAX_EMBEDDING_WINDOW),
            evaluate_every=evaluate_every,
            alpha=config.alpha if config.alpha is not None else 0.01,
            permutations=config.permutations or DEFAULT_PERMUTATIONS,
            seed=seed,
            nan_policy=nan_policy,
        )
    raise ValueError(f"detector type {t.value!r} has no implementation")  # pragma: no cover


def detector_from_state(state: dict[str, Any]) -> Detector:
    """The detector a ``to_state()`` dict describes, whatever its class."""
    kind = state.get("detector")
    cls = DETECTOR_CLASSES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(
            f"unknown detector {kind!r} in saved state; known: {sorted(DETECTOR_CLASSES)}"
        )
    return cls.from_state(state)
