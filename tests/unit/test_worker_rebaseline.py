"""Configuration and reference changes re-baseline exactly the detectors they touch.

A shard restored from snapshot + WAL, or handed a stream by a shard on another
configuration, compares every detector's identity (type, parameters, reference) with
what the monitor's spec builds now: changed detectors start again, unchanged ones keep
their state, added ones start empty, removed ones are dropped; the shard never stops.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftwarden.common import names
from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec, detector_identity
from driftwarden.ingest import wire

MONITOR = "ns/demo"
M1 = ShardMap(monitor=MONITOR, epoch=1, shards=1)
F0, F1 = names.feature_stream("f0"), names.feature_stream("f1")


def factory_of(configs: list[DetectorConfig]):
    def build(stream: StreamSpec) -> dict[str, Any]:
        return {
            c.type.value: make_detector(
                c, reference=stream.reference, kind="numeric", window=50, evaluate_every=10
            )
            for c in configs
        }

    return build


KS_IKS = [DetectorConfig(type=DetectorType.KS, alpha=0.05), DetectorConfig(type=DetectorType.IKS)]


def plan_of(configs: list[DetectorConfig], references: dict[str, np.ndarray]) -> MonitorPlan:
    streams = {n: StreamSpec(n, "numeric", ref) for n, ref in references.items()}
    return MonitorPlan(MONITOR, streams, factory_of(configs))


def references(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {F0: rng.normal(size=200), F1: rng.normal(size=200)}


def batches(count: int, seed: int = 1, start_seq: int = 1) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out, seq = [], start_seq
    for step in range(count):
        segs = []
        for stream in (F0, F1):
            segs.append(
                wire.Segment(
                    stream, seq, wire.KIND_VALUES, float(step), {"v": rng.normal(0.7, 1, 30)}
                )
            )
            seq += 1
        out.append(wire.encode(wire.Batch("model-0", 1, segs, MONITOR)))
    return out


def states(worker: ShardWorker) -> dict[str, dict[str, Any]]:
    return {s: st["detectors"] for s, st in worker.fingerprint().items()}


def fed_worker(plan: MonitorPlan, data_dir: Path, *, snapshot_at: int | None = None) -> ShardWorker:
    worker = ShardWorker(plan, 0, shard_map=M1, data_dir=data_dir)
    for i, body in enumerate(batches(12)):
        worker.ingest(body)
        if i == snapshot_at:
            worker.take_snapshot()
    worker.wal.sync()
    return worker


@pytest.mark.parametrize("snapshot_at", [None, 5, 11])
def test_changed_parameters_rebaseline_that_detector_and_keep_the_others(
    tmp_path: Path, snapshot_at: int | None
) -> None:
    before = fed_worker(plan_of(KS_IKS, references()), tmp_path, snapshot_at=snapshot_at)
    saved = states(before)
    assert all(saved[s]["ks"]["n_seen"] == 360 for s in (F0, F1))
    new_configs = [DetectorConfig(type=DetectorType.KS, alpha=0.01), KS_IKS[1]]
    after = ShardWorker(plan_of(new_configs, references()), 0, shard_map=M1, data_dir=tmp_path)
    now = states(after)
    for stream in (F0, F1):
        assert now[stream]["iks"] == saved[stream]["iks"]  # unchanged: state kept exactly
        assert now[stream]["ks"]["n_seen"] == 0  # changed alpha: starts again
        assert now[stream]["ks"]["params"]["alpha"] == 0.01
        assert after.streams[stream].values_total == before.streams[stream].values_total
    assert after.counters.rebaselines == {(F0, "ks", "changed"): 1, (F1, "ks", "changed"): 1}


def test_a_new_reference_rebaselines_only_the_streams_whose_reference_changed(
    tmp_path: Path,
) -> None:
    refs = references()
    before = fed_worker(plan_of(KS_IKS, refs), tmp_path, snapshot_at=4)
    saved = states(before)
    new_refs = {F0: refs[F0], F1: refs[F1] + 3.0}  # a new bundle moved f1's reference
    after = ShardWorker(plan_of(KS_IKS, new_refs), 0, shard_map=M1, data_dir=tmp_path)
    assert states(after)[F0] == saved[F0]
    assert {d["n_seen"] for d in states(after)[F1].values()} == {0}
    assert after.counters.rebaselines == {(F1, "iks", "changed"): 1, (F1, "ks", "changed"): 1}
    # the live histogram is over the reference's deciles: new bounds, new counts
    assert after.streams[F1].hist.sum() == 0
    assert after.streams[F0].hist.sum() == before.streams[F0].hist.sum() > 0


@pytest.mark.parametrize("snapshot_at", [None, 3])
def test_removing_and_adding_detectors_never_stops_a_shard(
    tmp_path: Path, snapshot_at: int | None
) -> None:
    before = fed_worker(plan_of(KS_IKS, references()), tmp_path, snapshot_at=snapshot_at)
    saved = states(before)
    new_configs = [KS_IKS[0], DetectorConfig(type=DetectorType.PAGE_HINKLEY)]  # iks out, PH in
    after = ShardWorker(plan_of(new_configs, references()), 0, shard_map=M1, data_dir=tmp_path)
    for stream in (F0, F1):
        assert list(after.streams[stream].detectors) == ["ks", "pageHinkley"]
        assert states(after)[stream]["ks"] == saved[stream]["ks"]
        assert states(after)[stream]["pageHinkley"]["n_seen"] == 0
    assert after.counters.rebaselines == {
        (s, d, c): 1 for s in (F0, F1) for d, c in (("iks", "removed"), ("pageHinkley", "added"))
    }
    # and it keeps ingesting
    assert after.ingest(batches(1, seed=9, start_seq=1000)[0]).values == 60


@pytest.mark.parametrize("snapshot_after_change", [False, True])
def test_a_rebaseline_replays_identically_after_a_crash(
    tmp_path: Path, snapshot_after_change: bool
) -> None:
    fed_worker(plan_of(KS_IKS, references()), tmp_path, snapshot_at=5)
    new_plan = plan_of([DetectorConfig(type=DetectorType.KS, alpha=0.01), KS_IKS[1]], references())
    live = ShardWorker(new_plan, 0, shard_map=M1, data_dir=tmp_path)
    for i, body in enumerate(batches(6, seed=3, start_seq=500)):
        live.ingest(body)
        if snapshot_after_change and i == 2:
            live.take_snapshot()
    live.wal.sync()
    # no close(): the process "dies"; the restart replays the re-baseline where it was logged
    again = ShardWorker(new_plan, 0, shard_map=M1, data_dir=tmp_path)
    assert again.fingerprint() == live.fingerprint()
    assert again.counters.rebaselines == {}  # nothing left to change


def test_a_stream_handed_over_from_a_shard_on_the_old_configuration_is_rebaselined(
    tmp_path: Path,
) -> None:
    old_plan = plan_of(KS_IKS, references())
    new_plan = plan_of([DetectorConfig(type=DetectorType.KS, alpha=0.01), KS_IKS[1]], references())
    m2 = M1.advance(2)
    old = ShardWorker(old_plan, 0, shard_map=M1)
    for body in batches(8):
        old.ingest(body)
    new = ShardWorker(new_plan, 1, shard_map=m2, data_dir=tmp_path)
    old.adopt_map(m2)
    moved = [s for s, _, _ in old.outgoing()]
    assert moved
    for stream, _, generation in old.outgoing():
        sent = old.handoff_payload(stream)
        saved = sent["state"]["detectors"]
        body = json.dumps(sent).encode()
        assert new.receive_handoff(json.loads(body), body) == "installed"
        old.handoff_acked(stream, generation)
        held = new.fingerprint([stream])[stream]["detectors"]
        assert held["iks"] == saved["iks"] and held["ks"]["n_seen"] == 0
        assert new.counters.rebaselines[(stream, "ks", "changed")] == 1
    restarted = ShardWorker(new_plan, 1, shard_map=m2, data_dir=tmp_path)
    assert restarted.fingerprint() == new.fingerprint()


@pytest.mark.parametrize("detector", list(DetectorType))
def test_a_detectors_identity_is_its_configuration_not_what_it_has_seen(
    detector: DetectorType,
) -> None:
    rng = np.random.default_rng(4)
    if detector in (DetectorType.MMD, DetectorType.NM_DDM):
        kind, ref, data = "embedding", rng.normal(size=(60, 3)), rng.normal(size=(80, 3))
    elif detector in (DetectorType.CHI2,):
        kind = "categorical"
        ref, data = list(rng.choice(["a", "b", "c"], 200)), list(rng.choice(["a", "b"], 300))
    elif detector in (DetectorType.DDM, DetectorType.EDDM, DetectorType.ERROR_RATE):
        kind, ref, data = "numeric", rng.integers(0, 2, 200) * 1.0, rng.integers(0, 2, 300) * 1.0
    else:
        kind, ref, data = "numeric", rng.random(200), rng.random(300) ** 0.3

    def build(config: DetectorConfig, reference: Any = ref) -> Any:
        return make_detector(config, reference=reference, kind=kind, window=50, evaluate_every=10)

    config = DetectorConfig(type=detector)
    det = build(config)
    fresh = detector_identity(det.to_state())
    det.update_many(data if kind != "embedding" else np.asarray(data))
    assert detector_identity(det.to_state()) == fresh == detector_identity(build(config).to_state())
    # the reference is part of what a detector compares with, hence of its identity;
    # the error-rate detectors of the river family learn their baseline from the stream
    other = ref[::-1][:150] if kind != "embedding" else ref[:40]
    learns_baseline = detector in (
        DetectorType.DDM,
        DetectorType.EDDM,
        DetectorType.HDDM_A,
        DetectorType.HDDM_W,
        DetectorType.ADWIN,
    )
    assert (detector_identity(build(config, other).to_state()) == fresh) == learns_baseline
    # and so are its parameters, e.g. the monitor's window for the windowed ones
    if "window" in det.to_state()["params"]:
        wider = make_detector(config, reference=ref, kind=kind, window=70, evaluate_every=10)
        assert detector_identity(wider.to_state()) != fresh
