"""Decision rules on a shard: the detectors package's rules over the monitor's tests."""

from __future__ import annotations

import numpy as np
from scipy.stats import false_discovery_control

from driftwarden.detectors.base import DetectorResult
from driftwarden.drift_worker.metrics import Row, decide


def row(
    stream: str, p: float | None, drift: bool = True, n: int = 500, detector: str = "ks"
) -> Row:
    result = DetectorResult(statistic=0.5, p_value=p, threshold=0.01, drift=drift, n_seen=n)
    return Row(stream, detector, result, n)


def test_one_shard_holding_everything_matches_scipy_bh() -> None:
    rng = np.random.default_rng(3)
    for _ in range(30):
        p = np.concatenate([rng.uniform(size=12), rng.uniform(0, 0.01, size=4)])
        rows = [row(f"s{i}", float(v)) for i, v in enumerate(p)]
        flags = decide(
            rows, method="benjaminiHochberg", fdr=0.05, min_samples=0, tests_in_monitor=len(p)
        )
        expected = false_discovery_control(p, method="bh") <= 0.05
        assert [flags[(f"s{i}", "ks")] for i in range(len(p))] == expected.tolist()


def test_tests_on_other_shards_count_as_not_significant() -> None:
    rows = [row("a", 0.001), row("b", 0.004), row("c", 0.3)]
    alone = decide(rows, method="benjaminiHochberg", fdr=0.05, min_samples=0, tests_in_monitor=3)
    assert [alone[(s, "ks")] for s in "abc"] == [True, True, False]
    # the same p-values among 40 tests of the monitor: only the smallest survives,
    # exactly what BH over all 40 gives when the other 37 are not significant
    shared = decide(rows, method="benjaminiHochberg", fdr=0.05, min_samples=0, tests_in_monitor=40)
    expected = (
        false_discovery_control(np.array([0.001, 0.004, 0.3] + [1.0] * 37), method="bh")[:3] <= 0.05
    )
    assert [shared[(s, "ks")] for s in "abc"] == expected.tolist() == [True, False, False]


def test_gate_sequential_detectors_and_methods() -> None:
    rows = [
        row("a", 0.0001),
        row("b", 0.02),
        row("c", 0.0001, n=10),
        row("d", None, detector="ddm"),
    ]
    bh = decide(rows, method="benjaminiHochberg", fdr=0.05, min_samples=200, tests_in_monitor=10)
    assert bh == {("a", "ks"): True, ("b", "ks"): False, ("c", "ks"): False, ("d", "ddm"): True}
    none = decide(rows, method="none", fdr=0.05, min_samples=200, tests_in_monitor=10)
    assert none[("b", "ks")] is True and none[("c", "ks")] is False  # the gate still applies
    bonf = decide(rows, method="bonferroni", fdr=0.05, min_samples=200, tests_in_monitor=100)
    assert bonf[("a", "ks")] is True and bonf[("b", "ks")] is False
    quiet = decide(
        [row("a", 0.5, drift=False)], method="none", fdr=0.05, min_samples=1, tests_in_monitor=1
    )
    assert quiet[("a", "ks")] is False
