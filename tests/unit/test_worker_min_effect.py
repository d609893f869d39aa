"""A detector's own minEffect and alpha reach the worker's decision (issue 13, item 2).

minEffect gates every detector that reports an effect size, whatever the multiple-testing
method; a per-detector alpha must also be met under Benjamini-Hochberg and Bonferroni. The
CRD refuses minEffect on detectors without an effect size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import MIN_EFFECT_DETECTORS, DetectorType, DriftMonitorSpec
from driftwarden.detectors.base import DetectorResult
from driftwarden.drift_worker.metrics import Row, WorkerCollector, decide
from driftwarden.drift_worker.plan import MonitorPlan, detector_gates, spec_factory
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire

pytestmark = pytest.mark.unit

MONITOR = "ns/effects"
NUM = names.feature_stream("x")
CAT = names.feature_stream("c")


def _worker(tmp_path: Path, detectors: dict[str, Any]) -> ShardWorker:
    rng = np.random.default_rng(0)
    streams = {
        NUM: StreamSpec(NUM, "numeric", rng.normal(size=2000)),
        CAT: StreamSpec(
            CAT,
            "categorical",
            [str(x) for x in rng.choice(list("abc"), 2000)],
            categories=("a", "b", "c"),
        ),
    }
    spec = DriftMonitorSpec.model_validate(
        {
            "model": {"bundle": "builtin://diamonds"},
            "workers": {"window": 500, "evaluateEvery": 500},
            "detectors": {"minSamples": 1, **detectors},
        }
    )
    plan = MonitorPlan(
        MONITOR,
        streams,
        spec_factory(spec, tests_in_monitor=2),
        min_samples=1,
        gates=detector_gates(spec, streams),
    )
    worker = ShardWorker(
        plan, 0, shard_map=ShardMap(monitor=MONITOR, epoch=1, shards=1), data_dir=tmp_path
    )
    rng = np.random.default_rng(1)
    # a clear but modest shift on both streams
    segs = [
        wire.Segment(NUM, 1, wire.KIND_VALUES, 1.0, {"v": rng.normal(0.6, 1, 500)}),
        wire.Segment(
            CAT,
            1,
            wire.KIND_VALUES,
            1.0,
            {"v": [str(x) for x in rng.choice(list("abc"), 500, p=[0.5, 0.3, 0.2])]},
        ),
    ]
    worker.ingest(wire.encode(wire.Batch("model-0", 1, segs, MONITOR)))
    return worker


def _flags(worker: ShardWorker) -> dict[tuple[str, str], bool]:
    rows, flags = WorkerCollector(worker, {"": 2}).decisions()
    for r in rows:
        assert r.result.drift, f"{r.detector} on {r.stream} must alarm on its own rule"
    return flags


@pytest.mark.parametrize("method", ["benjaminiHochberg", "none"])
def test_min_effect_gates_divergences_and_chi2_in_the_worker(tmp_path: Path, method: str) -> None:
    detectors = {"numeric": [{"type": "psi"}], "categorical": [{"type": "chi2", "alpha": 0.01}]}
    plain = _flags(_worker(tmp_path / "plain", {**detectors, "multipleTesting": method}))
    assert plain == {(NUM, "psi"): True, (CAT, "chi2"): True}
    gated = {
        "numeric": [{"type": "psi", "minEffect": 5.0}],
        "categorical": [{"type": "chi2", "alpha": 0.01, "minEffect": 0.9}],
        "multipleTesting": method,
    }
    assert _flags(_worker(tmp_path / "gated", gated)) == {
        (NUM, "psi"): False,
        (CAT, "chi2"): False,
    }


def test_chi2_reports_cramers_v() -> None:
    from scipy.stats import chi2_contingency

    from driftwarden.detectors.categorical import Chi2

    ref = ["a"] * 500 + ["b"] * 300 + ["c"] * 200
    det = Chi2(ref, window=200, evaluate_every=200, alpha=0.01)
    det.update_many(["a"] * 50 + ["b"] * 50 + ["c"] * 100)
    table = np.array([[500, 300, 200], [50, 50, 100]])
    chi2 = chi2_contingency(table, correction=False)[0]
    assert det.result.effect_size == pytest.approx(np.sqrt(chi2 / table.sum()))


def _row(stream: str, p: float, alpha: float | None) -> Row:
    result = DetectorResult(statistic=0.5, p_value=p, threshold=0.05, drift=p < 0.05, n_seen=500)
    return Row(stream, "ks", result, 500, alpha=alpha)


@pytest.mark.parametrize("method", ["benjaminiHochberg", "bonferroni"])
def test_a_detectors_alpha_must_also_be_met_under_multiple_testing(method: str) -> None:
    loose = [_row("a", 0.004, None), _row("b", 0.3, None)]
    assert decide(loose, method=method, fdr=0.05, min_samples=0, tests_in_monitor=2)[("a", "ks")]
    strict = [_row("a", 0.004, 0.001), _row("b", 0.3, None)]
    flags = decide(strict, method=method, fdr=0.05, min_samples=0, tests_in_monitor=2)
    assert flags[("a", "ks")] is False
    met = [_row("a", 0.0005, 0.001), _row("b", 0.3, None)]
    assert decide(met, method=method, fdr=0.05, min_samples=0, tests_in_monitor=2)[("a", "ks")]


def test_the_crd_refuses_min_effect_where_no_effect_size_is_reported() -> None:
    base = {"model": {"bundle": "builtin://diamonds"}}
    for t in DetectorType:
        stream = {
            DetectorType.MMD: "embedding",
            DetectorType.NM_DDM: "embedding",
            DetectorType.CHI2: "categorical",
        }.get(
            t,
            "concept"
            if t.value in ("relativeMse", "errorRate", "ddm", "eddm", "hddmA", "hddmW", "adwin")
            else "numeric",
        )
        spec = {**base, "detectors": {stream: [{"type": t.value, "minEffect": 0.1}]}}
        if t in MIN_EFFECT_DETECTORS:
            DriftMonitorSpec.model_validate(spec)
        else:
            with pytest.raises(
                ValidationError,
                match="minEffect applies only to detectors of type ks, iks, chi2, psi, kl, js, relativeMse, errorRate",
            ):
                DriftMonitorSpec.model_validate(spec)
    schema = DriftMonitorSpec.model_json_schema(by_alias=True)
    rules = schema["$defs"]["DetectorConfig"]["x-kubernetes-validations"]
    [rule] = [r for r in rules if "minEffect" in r["rule"]]
    assert "'pageHinkley'" not in rule["rule"] and "'psi'" in rule["rule"]
