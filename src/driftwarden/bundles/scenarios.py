"""Drift scenarios: streams that start like a bundle's reference data, then shift.

>>> from driftwarden.bundles.scenarios import scenario
>>> frame, labels = scenario("iris:petal-shift", n=200, drift_at=100, seed=3)
>>> frame.shape, labels.shape
((200, 4), (200,))

``scenario(name, n, drift_at, seed, severity=1.0) -> (features, labels)`` returns
``n`` rows in stream order. Rows ``[0, drift_at)`` come from the reference world
(the distribution the bundle was trained and referenced on); rows ``[drift_at, n)``
from the shifted world. ``labels`` are the true targets (what ``/feedback`` would
send), so concept-drift scenarios change them while the features stay put.
``severity`` scales the shift (0 gives no drift; 1 is the documented shift).
The same arguments always give the same stream.

Real data sets (diamonds, diabetes, iris, digits) are resampled from the held-out
split that the bundle's reference sample and metrics come from; covariate shifts there reweight real rows (importance resampling) so every
row stays a plausible record. Insurance comes from its generator, whose conditions
change. Every scenario is listed, with its documented shift, in :data:`SCENARIOS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftwarden.bundles import datasets as ds

Kind = Literal["none", "data", "concept"]
_Sample = tuple[pd.DataFrame, np.ndarray]
_World = Callable[[int, np.random.Generator, float], _Sample]


@dataclass(frozen=True)
class ScenarioInfo:
    """One named scenario: which bundle it feeds, what kind of drift, what shifts."""

    name: str
    bundle: str
    kind: Kind
    description: str
    shifted: _World  # draws (features, labels) from the post-drift world


# ------------------------------------------------------------------ real-data pools


@cache
def _pool(bundle: str) -> tuple[pd.DataFrame, np.ndarray]:
    # The held-out split the bundle's reference sample was drawn from.
    _, features, _, target = ds.holdout_split(bundle)
    return features.reset_index(drop=True), target.to_numpy()


def _resample(
    bundle: str, n: int, rng: np.random.Generator, weights: np.ndarray | None = None
) -> tuple[pd.DataFrame, np.ndarray]:
    features, target = _pool(bundle)
    p = None if weights is None else weights / weights.sum()
    rows = rng.choice(len(features), size=n, replace=True, p=p)
    return features.iloc[rows].reset_index(drop=True), target[rows].copy()


def _reference_world(bundle: str) -> _World:
    if bundle == "insurance":
        return lambda n, rng, severity: _insurance(n, rng, ds.InsuranceConditions())
    return lambda n, rng, severity: _resample(bundle, n, rng)


def _tilt(column: str, bundle: str, strength: float) -> np.ndarray:
    """Importance weights that move ``column``'s mean by ~``strength`` sds (exponential tilt)."""
    values = _pool(bundle)[0][column].to_numpy(np.float64)
    z = (values - values.mean()) / values.std()
    return np.exp(strength * z - np.max(strength * z))


def _category_weights(
    bundle: str, column: str, target_mix: dict[str, float], severity: float
) -> np.ndarray:
    """Importance weights moving ``column``'s category mix toward ``target_mix``."""
    values = _pool(bundle)[0][column].to_numpy()
    current = pd.Series(values).value_counts(normalize=True)
    # Interpolate in mixture space so severity 0 is the original mix.
    wanted = {
        c: (1 - severity) * current.get(c, 0.0) + severity * target_mix.get(c, 0.0)
        for c in current.index
    }
    return np.array([wanted[v] / current[v] for v in values])


# ---------------------------------------------------------------------- diamonds


def _diamonds_carat(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    return _resample("diamonds", n, rng, _tilt("carat", "diamonds", 0.8 * severity))


def _diamonds_cut(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    mix = {"Fair": 0.35, "Good": 0.35, "Very Good": 0.15, "Premium": 0.1, "Ideal": 0.05}
    return _resample("diamonds", n, rng, _category_weights("diamonds", "cut", mix, severity))


def _diamonds_inflation(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    features, price = _resample("diamonds", n, rng)
    return features, price * (1.0 + 0.35 * severity)


# ---------------------------------------------------------------------- diabetes


def _diabetes_bmi(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    return _resample("diabetes", n, rng, _tilt("bmi", "diabetes", 0.9 * severity))


def _diabetes_concept(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    features, progression = _resample("diabetes", n, rng)
    bmi = features["bmi"].to_numpy(np.float64)
    pool_bmi = _pool("diabetes")[0]["bmi"]
    z = (bmi - pool_bmi.mean()) / pool_bmi.std()
    # BMI's effect on progression doubles (about +40 points per sd of BMI).
    return features, progression + 40.0 * severity * z


# -------------------------------------------------------------------------- iris


def _iris_petal(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    features, species = _resample("iris", n, rng)
    pool = _pool("iris")[0]
    for column in ("petal_length", "petal_width"):
        features[column] = features[column] + 0.5 * severity * pool[column].std()
    return features, species


def _iris_swap(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    features, species = _resample("iris", n, rng)
    swap = rng.random(n) < severity  # severity = share of affected rows
    out = species.copy()
    out[swap & (species == "versicolor")] = "virginica"
    out[swap & (species == "virginica")] = "versicolor"
    return features, out


# ------------------------------------------------------------------------ digits


def _digits_brightness(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    features, digits = _resample("digits", n, rng)
    gain, offset = 1.0 + 0.5 * severity, 3.0 * severity
    bright = np.clip(features.to_numpy(np.float64) * gain + offset, 0.0, ds.DIGITS_MAX)
    return pd.DataFrame(bright, columns=features.columns), digits


def _digits_rotation(n: int, rng: np.random.Generator, severity: float) -> _Sample:
    from scipy.ndimage import rotate

    features, digits = _resample("digits", n, rng)
    images = ds.digits_to_images(features)
    rotated = rotate(images, 30.0 * severity, axes=(2, 1), reshape=False, order=1, mode="constant")
    return ds.images_to_digits(np.clip(rotated, 0.0, ds.DIGITS_MAX)), digits


# --------------------------------------------------------------------- insurance


def _insurance(n: int, rng: np.random.Generator, conditions: ds.InsuranceConditions) -> _Sample:
    generator = ds.InsuranceGenerator(seed=int(rng.integers(2**31)), conditions=conditions)
    features, risk = generator.sample(n)
    return features, risk.to_numpy(dtype=object)


def _insurance_world(**changes_at_full_severity: float | tuple[float, ...]) -> _World:
    reference = ds.InsuranceConditions()

    def world(n: int, rng: np.random.Generator, severity: float) -> _Sample:
        changes: dict[str, Any] = {}
        for key, target in changes_at_full_severity.items():
            base = getattr(reference, key)
            if isinstance(target, tuple):
                changes[key] = tuple(
                    b + severity * (t - b) for b, t in zip(base, target, strict=False)
                )
            else:
                changes[key] = base + severity * (target - base)
        return _insurance(n, rng, reference.replace(**changes))

    return world


def _none(bundle: str) -> ScenarioInfo:
    return ScenarioInfo(
        f"{bundle}:none",
        bundle,
        "none",
        "no drift: the whole stream comes from the reference world (false-alarm checks)",
        _reference_world(bundle),
    )


SCENARIOS: dict[str, ScenarioInfo] = {
    s.name: s
    for s in [
        _none("diamonds"),
        ScenarioInfo(
            "diamonds:carat-shift",
            "diamonds",
            "data",
            "mean/variance shift: stones resampled toward larger carats (exponential tilt of "
            "0.8 sd), so carat, x, y, z and the predicted price all move up; prices stay real",
            _diamonds_carat,
        ),
        ScenarioInfo(
            "diamonds:cut-mix",
            "diamonds",
            "data",
            "new category mix: cut becomes 35% Fair, 35% Good, 15% Very Good, 10% Premium, "
            "5% Ideal (reference: ~3/9/22/26/40%)",
            _diamonds_cut,
        ),
        ScenarioInfo(
            "diamonds:price-inflation",
            "diamonds",
            "concept",
            "concept drift: features unchanged, true prices 35% higher for the same stone",
            _diamonds_inflation,
        ),
        _none("diabetes"),
        ScenarioInfo(
            "diabetes:bmi-shift",
            "diabetes",
            "data",
            "mean shift: patients resampled toward higher BMI (tilt of 0.9 sd)",
            _diabetes_bmi,
        ),
        ScenarioInfo(
            "diabetes:bmi-effect",
            "diabetes",
            "concept",
            "concept drift: features unchanged, progression gains 40 points per sd of BMI",
            _diabetes_concept,
        ),
        _none("iris"),
        ScenarioInfo(
            "iris:petal-shift",
            "iris",
            "data",
            "mean shift: petal length and width +0.5 sd (measurement bias)",
            _iris_petal,
        ),
        ScenarioInfo(
            "iris:label-swap",
            "iris",
            "concept",
            "concept drift: versicolor and virginica labels swapped (severity = share of rows)",
            _iris_swap,
        ),
        _none("digits"),
        ScenarioInfo(
            "digits:brightness",
            "digits",
            "data",
            "image brightness: intensity x1.5 + 3, clipped to 16",
            _digits_brightness,
        ),
        ScenarioInfo(
            "digits:rotation",
            "digits",
            "data",
            "image rotation: every digit rotated 30 degrees counter-clockwise",
            _digits_rotation,
        ),
        _none("insurance"),
        ScenarioInfo(
            "insurance:older-drivers",
            "insurance",
            "data",
            "mean shift: driver age mean 45 -> 60 years",
            _insurance_world(age_mean=60.0),
        ),
        ScenarioInfo(
            "insurance:mileage-spread",
            "insurance",
            "data",
            "variance shift: log annual-miles sd 0.45 -> 0.8 (same median)",
            _insurance_world(miles_sigma=0.8),
        ),
        ScenarioInfo(
            "insurance:braking-rollout",
            "insurance",
            "data",
            "new category mix: emergency braking share 55% -> 95%, region mix urban-heavy "
            "(45/35/20% -> 70/20/10%)",
            _insurance_world(braking_share=0.95, region_mix=(0.70, 0.20, 0.10)),
        ),
        ScenarioInfo(
            "insurance:braking-ineffective",
            "insurance",
            "concept",
            "concept drift: emergency braking stops lowering risk (effect -0.9 -> 0) and "
            "mileage matters twice as much (1.1 -> 2.2); applicants unchanged",
            _insurance_world(braking_effect=0.0, miles_effect=2.2),
        ),
    ]
}


def scenario(
    name: str, n: int = 2000, drift_at: int = 1000, seed: int = 0, severity: float = 1.0
) -> tuple[pd.DataFrame, np.ndarray]:
    """Return ``n`` rows (features, true labels): reference world, then shifted from ``drift_at``."""
    if name not in SCENARIOS:
        raise KeyError(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
    if n < 0 or not 0 <= drift_at <= n:
        raise ValueError(
            f"scenario {name!r}: need 0 <= drift_at <= n, got n={n}, drift_at={drift_at}"
        )
    if severity < 0:
        raise ValueError(f"scenario {name!r}: severity must be >= 0, got {severity}")
    info = SCENARIOS[name]
    rng = np.random.default_rng(seed)
    before = _reference_world(info.bundle)(drift_at, rng, 0.0)
    after = info.shifted(n - drift_at, rng, severity)
    features = pd.concat([before[0], after[0]], ignore_index=True)
    labels = np.concatenate([before[1], after[1]])
    return features, labels


def scenarios_for(bundle: str) -> list[ScenarioInfo]:
    """Return the scenarios that feed ``bundle``."""
    return [s for s in SCENARIOS.values() if s.bundle == bundle]
