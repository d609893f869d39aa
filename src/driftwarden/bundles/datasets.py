"""Training data for the built-in bundles, from files inside installed packages only.

Nothing here downloads: diamonds comes from the plotnine wheel
(``plotnine/data/diamonds.csv``), diabetes, iris and digits from scikit-learn's
bundled copies, and insurance from :class:`InsuranceGenerator`, a synthetic
generator whose distribution and label relationship can be shifted on purpose.
Every loader returns ``(features, target)`` with categorical columns as ``str``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

DIAMONDS_CATEGORIES: dict[str, list[str]] = {
    "cut": ["Fair", "Good", "Very Good", "Premium", "Ideal"],
    "color": ["D", "E", "F", "G", "H", "I", "J"],
    "clarity": ["I1", "SI2", "SI1", "VS2", "VS1", "VVS2", "VVS1", "IF"],
}
DIAMONDS_NUMERIC = ["carat", "depth", "table", "x", "y", "z"]
DIAMONDS_FEATURES = ["carat", "cut", "color", "clarity", "depth", "table", "x", "y", "z"]

DIGITS_SIDE = 8
DIGITS_MAX = 16.0
DIGITS_FEATURES = [f"pixel_{r}_{c}" for r in range(DIGITS_SIDE) for c in range(DIGITS_SIDE)]


def load_diamonds() -> tuple[pd.DataFrame, pd.Series]:
    """Return the 53,940 diamonds (features, price in USD) shipped with plotnine."""
    source = resources.files("plotnine") / "data" / "diamonds.csv"
    if not source.is_file():
        raise FileNotFoundError(
            f"{source} is missing: the diamonds bundle needs the plotnine wheel's package "
            "data; reinstall plotnine (pip install --force-reinstall plotnine)"
        )
    with source.open("rb") as handle:
        frame = pd.read_csv(handle, dtype=dict.fromkeys(DIAMONDS_CATEGORIES, str))
    for name in DIAMONDS_NUMERIC:
        frame[name] = frame[name].astype(np.float64)
    return frame[DIAMONDS_FEATURES].copy(), frame["price"].astype(np.float64).rename("price")


def load_diabetes() -> tuple[pd.DataFrame, pd.Series]:
    """Return scikit-learn's 442 diabetes patients, unscaled (features, one-year progression)."""
    from sklearn.datasets import load_diabetes as _load

    data = _load(as_frame=True, scaled=False)
    features = data.frame.drop(columns="target").astype(np.float64)
    return features, data.frame["target"].astype(np.float64).rename("progression")


IRIS_FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def load_iris() -> tuple[pd.DataFrame, pd.Series]:
    """Return the 150 iris flowers (measurements in cm, species name)."""
    from sklearn.datasets import load_iris as _load

    data = _load()
    features = pd.DataFrame(np.asarray(data.data, dtype=np.float64), columns=IRIS_FEATURES)
    species = pd.Series(np.asarray(data.target_names)[data.target], name="species").astype(str)
    return features, species


def load_digits() -> tuple[pd.DataFrame, pd.Series]:
    """Return the 1,797 8x8 handwritten digits (64 pixel intensities 0..16, digit as str)."""
    from sklearn.datasets import load_digits as _load

    data = _load()
    features = pd.DataFrame(np.asarray(data.data, dtype=np.float64), columns=DIGITS_FEATURES)
    return features, pd.Series(data.target.astype(str), name="digit")


def digits_to_images(frame: pd.DataFrame) -> np.ndarray:
    """Return the pixel columns of ``frame`` as an ``(n, 8, 8)`` float array."""
    return frame[DIGITS_FEATURES].to_numpy(dtype=np.float64).reshape(-1, DIGITS_SIDE, DIGITS_SIDE)


def images_to_digits(images: np.ndarray) -> pd.DataFrame:
    """Return ``(n, 8, 8)`` images as a frame of the 64 pixel columns."""
    flat = np.asarray(images, dtype=np.float64).reshape(len(images), DIGITS_SIDE * DIGITS_SIDE)
    return pd.DataFrame(flat, columns=DIGITS_FEATURES)


# Held-out share and stratification of each real data set's test split. Trainers
# measure metrics and draw the reference sample from it; scenarios resample it, so a
# scenario's pre-drift rows match the reference exactly in distribution.
HOLDOUT: dict[str, tuple[float, bool]] = {
    "diamonds": (0.2, False),
    "diabetes": (0.4, False),
    "iris": (0.5, True),
    "digits": (0.3, True),
}
SPLIT_SEED = 0


def holdout_split(name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.Series, pd.Series]:
    """Return ``(X_train, X_test, y_train, y_test)`` of real data set ``name``, fixed seed."""
    from sklearn.model_selection import train_test_split

    loader = {
        "diamonds": load_diamonds,
        "diabetes": load_diabetes,
        "iris": load_iris,
        "digits": load_digits,
    }[name]
    X, y = loader()
    share, stratify = HOLDOUT[name]
    return train_test_split(
        X, y, test_size=share, random_state=SPLIT_SEED, stratify=y if stratify else None
    )


# --------------------------------------------------------------------------- insurance

INSURANCE_CATEGORIES: dict[str, list[str]] = {
    "emergency_braking": ["no", "yes"],
    "region": ["urban", "suburban", "rural"],
    "vehicle_type": ["sedan", "hatchback", "suv", "van", "sports"],
}
INSURANCE_NUMERIC = [
    "driver_age",
    "annual_miles",
    "vehicle_power_kw",
    "vehicle_age",
    "prior_claims",
]
INSURANCE_FEATURES = [
    "driver_age",
    "annual_miles",
    "vehicle_power_kw",
    "vehicle_age",
    "prior_claims",
    "emergency_braking",
    "region",
    "vehicle_type",
]
INSURANCE_CLASSES = ["low", "medium", "high"]


@dataclass(frozen=True)
class InsuranceConditions:
    """The population and the risk relationship the generator draws from.

    The defaults are the reference world. Change population fields for data drift
    (covariate shift) and ``braking_effect`` / ``miles_effect`` for concept drift: the
    same driver then has a different risk class.
    """

    age_mean: float = 45.0
    age_sd: float = 14.0
    miles_median: float = 11_000.0
    miles_sigma: float = 0.45
    power_mean_kw: float = 110.0
    power_sd_kw: float = 35.0
    vehicle_age_mean: float = 6.0
    claims_rate: float = 0.3
    braking_share: float = 0.55
    region_mix: tuple[float, float, float] = (0.45, 0.35, 0.20)
    vehicle_mix: tuple[float, float, float, float, float] = (0.38, 0.22, 0.25, 0.08, 0.07)
    # Risk relationship (log-odds-like score per unit).
    braking_effect: float = -0.9
    miles_effect: float = 1.1
    power_effect: float = 0.012
    noise_sd: float = 0.45

    def replace(self, **changes: Any) -> InsuranceConditions:
        return dataclasses.replace(self, **changes)


@dataclass
class InsuranceGenerator:
    """Draws synthetic motor-insurance applicants and their risk class.

    >>> gen = InsuranceGenerator(seed=1)
    >>> frame, risk = gen.sample(5)
    >>> list(frame.columns) == INSURANCE_FEATURES, sorted(set(risk) - set(INSURANCE_CLASSES))
    (True, [])
    """

    seed: int = 0
    conditions: InsuranceConditions = field(default_factory=InsuranceConditions)

    def __post_init__(self) -> None:
        self._rng = np.random.default_rng(self.seed)

    def sample(
        self, n: int, conditions: InsuranceConditions | None = None
    ) -> tuple[pd.DataFrame, pd.Series]:
        """Return ``n`` applicants (features) and their risk class (low|medium|high)."""
        c = conditions or self.conditions
        rng = self._rng
        age = np.clip(np.rint(rng.normal(c.age_mean, c.age_sd, n)), 18, 95)
        miles = np.round(np.exp(rng.normal(np.log(c.miles_median), c.miles_sigma, n)), 0)
        power = np.round(np.clip(rng.normal(c.power_mean_kw, c.power_sd_kw, n), 40, 450), 1)
        vehicle_age = np.clip(rng.poisson(c.vehicle_age_mean, n), 0, 30).astype(np.float64)
        claims = rng.poisson(c.claims_rate, n).astype(np.float64)
        braking = np.where(rng.random(n) < c.braking_share, "yes", "no")
        region = rng.choice(INSURANCE_CATEGORIES["region"], size=n, p=_normalised(c.region_mix))
        vehicle = rng.choice(
            INSURANCE_CATEGORIES["vehicle_type"], size=n, p=_normalised(c.vehicle_mix)
        )
        frame = pd.DataFrame(
            {
                "driver_age": age,
                "annual_miles": miles,
                "vehicle_power_kw": power,
                "vehicle_age": vehicle_age,
                "prior_claims": claims,
                "emergency_braking": braking.astype(str),
                "region": region.astype(str),
                "vehicle_type": vehicle.astype(str),
            }
        )
        return frame, self.risk(frame, c)

    def risk(self, frame: pd.DataFrame, conditions: InsuranceConditions | None = None) -> pd.Series:
        """Return the risk class of each applicant under ``conditions`` (noise included)."""
        c = conditions or self.conditions
        score = _risk_score(frame, c) + self._rng.normal(0.0, c.noise_sd, len(frame))
        labels = np.asarray(INSURANCE_CLASSES)[np.digitize(score, _RISK_CUTS)]
        return pd.Series(labels, name="risk", index=frame.index).astype(str)


# Score cut points between low|medium and medium|high: about 50% / 33% / 17% in the
# reference world.
_RISK_CUTS = np.array([0.0, 1.0])
_REGION_EFFECT = {"urban": 0.45, "suburban": 0.0, "rural": -0.25}
_VEHICLE_EFFECT = {"sedan": 0.0, "hatchback": -0.1, "suv": 0.15, "van": 0.25, "sports": 0.9}


def _risk_score(frame: pd.DataFrame, c: InsuranceConditions) -> np.ndarray:
    age = frame["driver_age"].to_numpy(np.float64)
    young = np.clip((26.0 - age) / 8.0, 0.0, None)  # risk climbs steeply under 26
    senior = np.clip((age - 72.0) / 10.0, 0.0, None)
    return (
        -0.15
        + 1.4 * young
        + 0.6 * senior
        + c.miles_effect * np.log(frame["annual_miles"].to_numpy(np.float64) / 11_000.0)
        + c.power_effect * (frame["vehicle_power_kw"].to_numpy(np.float64) - 110.0)
        + 0.02 * frame["vehicle_age"].to_numpy(np.float64)
        + 0.55 * frame["prior_claims"].to_numpy(np.float64)
        + c.braking_effect * (frame["emergency_braking"].to_numpy() == "yes")
        + frame["region"].map(_REGION_EFFECT).to_numpy(np.float64)
        + frame["vehicle_type"].map(_VEHICLE_EFFECT).to_numpy(np.float64)
    )


def _normalised(weights: tuple[float, ...]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"category mix {weights} must be non-negative with a positive sum")
    return w / w.sum()


def load_insurance(n: int = 20_000, seed: int = 0) -> tuple[pd.DataFrame, pd.Series]:
    """Return ``n`` synthetic applicants from the reference world and their risk class."""
    return InsuranceGenerator(seed=seed).sample(n)
