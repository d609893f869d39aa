"""The DriftMonitor status says what the alerts say (issue 13, item 7).

DataDrift is the data-drift alert's rule: the share of feature streams whose verdict is
drift against ``alerts.dataDriftShare``; ``lastDriftTime`` comes from verdicts (after the
minimum-sample gate and multiple testing), not from raw alarms.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

import httpx
import numpy as np
import pytest

from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker.metrics import WorkerCollector, status_document
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.operator.status import DriftObservation, Observation, compute_status
from driftwarden.operator.workers import probe_workers
from driftwarden.testing.operator import fake_stream, fake_worker_status
from support.operator import monitor as _monitor

pytestmark = pytest.mark.unit

NOW = dt.datetime(2026, 11, 23, 10, 0, tzinfo=dt.UTC)
FEATURES = tuple(names.feature_stream(f"f{i}") for i in range(10))


def _conditions(status: dict) -> dict[str, dict]:
    return {c["type"]: c for c in status["conditions"]}


def _status(drifting: tuple[str, ...], share: float = 0.3) -> dict[str, dict]:
    monitor = _monitor({"model": {"bundle": "builtin://d"}, "alerts": {"dataDriftShare": share}})
    drift = DriftObservation(
        shards_asked=2, shards_answered=2, drifting=drifting, feature_streams=len(FEATURES)
    )
    return _conditions(compute_status(monitor, {}, Observation(2, 1, drift=drift), NOW))


def test_data_drift_is_true_only_at_the_alerts_share_of_features() -> None:
    below = _status((*FEATURES[:2], names.STREAM_PREDICTION, names.STREAM_PERFORMANCE))
    assert (below["DataDrift"]["status"], below["DataDrift"]["reason"]) == (
        "False",
        "BelowDataDriftShare",
    )
    assert "2 of 10 feature streams" in below["DataDrift"]["message"]
    assert below["ConceptDrift"]["status"] == "True"
    at = _status(FEATURES[:3])
    assert at["DataDrift"]["status"] == "True" and "3 of 10" in at["DataDrift"]["message"]
    # prediction drift alone has its own alert: not data drift
    assert _status((names.STREAM_PREDICTION,))["DataDrift"]["status"] == "False"


def test_probe_counts_live_feature_streams_for_the_share() -> None:
    streams = {f: fake_stream(drift=i == 0) for i, f in enumerate(FEATURES[:4])}
    streams[names.STREAM_PREDICTION] = fake_stream(drift=False)

    def handler(request: httpx.Request) -> httpx.Response:
        doc = fake_worker_status("ml/diamonds", 0, 1, streams)
        return httpx.Response(200, content=doc.to_json())

    async def go() -> DriftObservation:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            return await probe_workers(
                http,
                "http://w-{ordinal}/status",
                monitor="diamonds",
                namespace="ml",
                shards=1,
                timeout=1.0,
            )

    obs = asyncio.run(go())
    assert obs.feature_streams == 4 and obs.drifting == (FEATURES[0],)


def test_last_drift_time_ignores_alarms_the_decision_set_aside(tmp_path: Path) -> None:
    monitor, stream, t0 = "ns/verdicts", FEATURES[0], 1_800_000_000.0
    ref = np.random.default_rng(0).normal(size=500)
    config = DetectorConfig(type=DetectorType.MIXTURE_CUSUM)

    def build(spec: StreamSpec) -> dict:
        return {"mixtureCusum": make_detector(config, reference=spec.reference, window=100)}

    def worker(min_samples: int, where: Path) -> ShardWorker:
        plan = MonitorPlan(
            monitor, {stream: StreamSpec(stream, "numeric", ref)}, build, min_samples=min_samples
        )
        w = ShardWorker(
            plan, 0, shard_map=ShardMap(monitor=monitor, epoch=1, shards=1), data_dir=where
        )
        values = np.random.default_rng(1).normal(3, 1, 400)
        seg = wire.Segment(stream, 1, wire.KIND_VALUES, t0, {"v": values})
        w.ingest(wire.encode(wire.Batch("model-0", 1, [seg], monitor)))
        return w

    confirmed = worker(1, tmp_path / "a")
    doc = status_document(confirmed, WorkerCollector(confirmed, {"": 1}))
    assert doc.streams[stream].drift and doc.streams[stream].last_drift_time == t0
    # the same raw alarm, but the stream is below minSamples: no verdict, no drift time
    gated = worker(10_000, tmp_path / "b")
    assert gated.streams[stream].last_drift_ts["mixtureCusum"] == t0
    doc = status_document(gated, WorkerCollector(gated, {"": 1}))
    assert doc.streams[stream].detectors["mixtureCusum"].alarm
    assert not doc.streams[stream].drift and doc.streams[stream].last_drift_time is None
    assert doc.last_drift_time() is None
    confirmed.close()
    gated.close()
