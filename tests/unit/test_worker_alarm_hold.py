"""An alarm of a detector without a p-value holds its stream's verdict for alarmHold.

The e-detectors (and Page-Hinkley, the DDM family) restart their evidence on the value after an alarm, so
their own verdict lasts one value; without the hold the exported drift state would be
0 at nearly every scrape and no alert could hold for ``alerts.for``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DetectorConfig, DetectorType, DriftMonitorSpec
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker.metrics import collect_rows
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire

pytestmark = pytest.mark.unit

MONITOR = "ns/hold"
F0 = names.feature_stream("f0")
HOLD = 600.0
T0 = 1_800_000_000.0  # the alarming batch's timestamp


def _plan(config: DetectorConfig) -> MonitorPlan:
    ref = np.random.default_rng(0).normal(size=500)

    def build(stream: StreamSpec) -> dict[str, Any]:
        det = make_detector(config, reference=stream.reference, kind="numeric", window=100)
        return {config.type.value: det}

    return MonitorPlan(MONITOR, {F0: StreamSpec(F0, "numeric", ref)}, build, alarm_hold_s=HOLD)


def _feed(worker: ShardWorker, values: np.ndarray, ts: float, seq: int) -> None:
    seg = wire.Segment(F0, seq, wire.KIND_VALUES, ts, {"v": values})
    worker.ingest(wire.encode(wire.Batch("model-0", 1, [seg], MONITOR)))


@pytest.mark.parametrize(
    "config",
    [
        DetectorConfig(type=DetectorType.MIXTURE_CUSUM),
        DetectorConfig(type=DetectorType.MULTINOMIAL_CUSUM),
    ],
    ids=lambda c: c.type.value,
)
def test_an_alarm_holds_the_verdict_for_alarm_hold_then_lets_go(
    tmp_path: Path, config: DetectorConfig
) -> None:
    worker = ShardWorker(
        _plan(config), 0, shard_map=ShardMap(monitor=MONITOR, epoch=1, shards=1), data_dir=tmp_path
    )
    rng = np.random.default_rng(1)
    # a 3-sigma shift alarms; the batch ends on in-control values, so the detector's
    # own verdict on its last value is no drift
    _feed(worker, np.concatenate([rng.normal(3, 1, 400), rng.normal(0, 1, 5)]), T0, 1)
    [row] = collect_rows(worker, now=T0 + 1)
    assert worker.streams[F0].last_drift_ts[config.type.value] == T0
    assert row.result.p_value is None
    assert row.drift, "an alarm within alarmHold is a drifting verdict"
    [held] = collect_rows(worker, now=T0 + HOLD - 1)
    assert held.drift
    [expired] = collect_rows(worker, now=T0 + HOLD + 1)
    assert expired.drift == bool(worker.streams[F0].detectors[config.type.value].result.drift)


def test_the_default_hold_outlasts_alerts_for_and_a_shorter_one_is_refused() -> None:
    base = {"model": {"bundle": "builtin://diamonds"}}
    assert DriftMonitorSpec.model_validate(base).alarm_hold_seconds() == 900.0
    long_for = {**base, "alerts": {"for": "30m"}}
    assert DriftMonitorSpec.model_validate(long_for).alarm_hold_seconds() == 3600.0
    explicit = {**base, "detectors": {"alarmHold": "20m"}}
    assert DriftMonitorSpec.model_validate(explicit).alarm_hold_seconds() == 1200.0
    with pytest.raises(ValueError, match="alarmHold must be longer than alerts.for"):
        DriftMonitorSpec.model_validate({**base, "detectors": {"alarmHold": "5m"}})


def _alarms_exported(worker: ShardWorker) -> dict[str, float]:
    from driftwarden.drift_worker.metrics import WorkerCollector

    out = {}
    for family in WorkerCollector(worker, {"": 1}).collect():
        for sample in family.samples:
            if sample.name == names.M_STREAM_ALARMS:
                out[sample.labels[names.LABEL_DETECTOR]] = sample.value
    return out


def test_alarms_are_counted_per_stream_and_detector_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    config = DetectorConfig(type=DetectorType.PAGE_HINKLEY)
    shard_map = ShardMap(monitor=MONITOR, epoch=1, shards=1)
    worker = ShardWorker(_plan(config), 0, shard_map=shard_map, data_dir=tmp_path)
    assert _alarms_exported(worker) == {"pageHinkley": 0.0}
    rng = np.random.default_rng(1)
    # shifts after in-control stretches: Page-Hinkley alarms, restarts, and alarms again
    values = np.concatenate([rng.normal(m, 1, 600) for m in (0, 3, 0, -3)])
    _feed(worker, values, T0, 1)
    alone = _plan(config).factory(worker.plan.streams[F0])["pageHinkley"]
    expected = len(alone.update_many(values).alarms)
    assert expected >= 2, "the shift must alarm more than once"
    assert worker.streams[F0].alarms == {"pageHinkley": expected}
    assert _alarms_exported(worker) == {"pageHinkley": float(expected)}
    worker.close()
    # replayed from the log on the next start: the same count, not zero, not twice
    again = ShardWorker(_plan(config), 0, shard_map=shard_map, data_dir=tmp_path)
    assert _alarms_exported(again) == {"pageHinkley": float(expected)}
    again.close()
