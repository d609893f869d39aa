"""The numeric values a bundle's model accepts: ``input_limits(feature) -> (low, high)``.

A model cannot take every finite float: a scikit-learn tree casts its (scaled) input
to float32 and refuses anything past 3.4e38, and a linear model turns a huge input
into an infinite prediction. The model server therefore refuses values outside these
limits with a 422 naming the field and the limit, and states them in its OpenAPI
document (``minimum``/``maximum``).

The limits are wide on purpose: drift is exactly what must reach the detectors, so a
value outside the training range but inside the limits is served (and counted as out
of range). They extend the training range ``[min, max]`` recorded in ``bundle.json``
by :data:`LIMIT_SPANS` times its span on each side, which keeps every scaled input of
the built-in models within a few thousand (far from any overflow) while admitting
every drift scenario. A feature without a recorded range gets float32's finite range,
the widest any of the supported model formats can take.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal

import numpy as np

from driftwarden.bundles.manifest import FeatureSpec

# How many training-range spans the accepted values reach past each end of the range.
LIMIT_SPANS = 100
# float32's largest finite value: scikit-learn trees refuse anything beyond it.
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _round_outward(value: float, up: bool) -> float:
    # Three significant digits, rounded away from the training range, so limits read
    # well in messages and schemas (-481 rather than -480.81) and only ever widen.
    # Decimal rounding is exact; converting back picks the float nearest to it, and no
    # float lies between the two, so the limit still contains ``value``.
    exact = Decimal(value)
    step = Decimal(1).scaleb(exact.adjusted() - 2)
    return float(exact.quantize(step, rounding=ROUND_CEILING if up else ROUND_FLOOR))


def input_limits(feature: FeatureSpec) -> tuple[float, float]:
    """Return the closed interval of values ``feature`` accepts (a numeric feature)."""
    if feature.type != "numeric":
        raise ValueError(f"feature {feature.name!r} is {feature.type}: it has no numeric limits")
    if feature.min is None or feature.max is None:
        return -FLOAT32_MAX, FLOAT32_MAX
    # A constant feature has no span: fall back to its magnitude (or 1 around zero).
    span = feature.max - feature.min or max(abs(feature.min), 1.0)
    margin = LIMIT_SPANS * span
    return _round_outward(feature.min - margin, up=False), _round_outward(
        feature.max + margin, up=True
    )


def in_training_range(feature: FeatureSpec, values: np.ndarray) -> np.ndarray:
    """Return a boolean mask: which ``values`` lie inside ``feature``'s training range."""
    inside = np.ones(values.shape, dtype=bool)
    if feature.min is not None:
        inside &= values >= feature.min
    if feature.max is not None:
        inside &= values <= feature.max
    return inside
