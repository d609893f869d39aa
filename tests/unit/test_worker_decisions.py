"""Decision rules on a shard: minimum-sample gate and multiple testing across the monitor."""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control

from driftwarden.drift_worker.metrics import Row, benjamini_hochberg, decide


def test_bh_matches_scipy() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = np.concatenate([rng.uniform(size=20), rng.uniform(0, 0.01, size=5)])
        adjusted = false_discovery_control(p, method="bh")
        assert benjamini_hochberg(p.tolist(), 0.05) == (adjusted <= 0.05).tolist()


def test_tests_on_other_shards_count_as_not_significant() -> None:
    p = [0.001, 0.004, 0.3]
    assert benjamini_hochberg(p, 0.05) == [True, True, False]
    # the same p-values among 40 tests of the monitor: only the smallest survives
    assert benjamini_hochberg(p, 0.05, m=40) == [True, False, False]
    expected = false_discovery_control(np.array(p + [1.0] * 37), method="bh")[:3] <= 0.05
    assert benjamini_hochberg(p, 0.05, m=40) == expected.tolist()


def row(stream: str, p: float | None, drift: bool = True, values: int = 500, detector: str = "ks") -> Row:
    return Row(stream, detector, 0.5, p, drift, values, values)


def test_gate_and_methods() -> None:
    rows = [row("a", 0.0001), row("b", 0.02), row("c", 0.0001, values=10), row("d", None, detector="ddm")]
    bh = decide(rows, method="benjaminiHochberg", fdr=0.05, min_samples=200, tests_in_monitor=10)
    assert bh == {("a", "ks"): True, ("b", "ks"): False, ("c", "ks"): False, ("d", "ddm"): True}
    none = decide(rows, method="none", fdr=0.05, min_samples=200, tests_in_monitor=3)
    assert none[("b", "ks")] is True and none[("c", "ks")] is False  # the gate still applies
    bonf = decide(rows, method="bonferroni", fdr=0.05, min_samples=200, tests_in_monitor=100)
    assert bonf[("a", "ks")] is True and bonf[("b", "ks")] is False
    quiet = decide([row("a", 0.0001, drift=False)], method="none", fdr=0.05, min_samples=1, tests_in_monitor=1)
    assert quiet[("a", "ks")] is False  # no alarm from the detector, no drift
