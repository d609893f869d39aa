"""Prometheus metrics of a shard, read from detector state at scrape time.

A custom collector (no metric objects updated on the hot path): every scrape takes
the shard lock briefly, reads each held stream's detector results and the shard's
counters, and applies the monitor's decision rules (minimum-sample gate and
multiple-testing control) to turn raw alarms into the ``driftwarden_stream_drift``
flag. Label sets are bounded: monitor, stream (from the bundle schema), detector
(from the monitor spec), shard, plus small fixed enums.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from driftwarden.common import names
from driftwarden.common.contracts import (
    BatchCounts,
    DetectorStatus,
    HandoffStatus,
    OutgoingHandoff,
    Rebaseline,
    RecoveryStatus,
    StreamStatus,
    WalStatus,
    WorkerStatus,
)
from driftwarden.detectors.base import DetectorResult
from driftwarden.detectors.decision import decide as decide_streams
from driftwarden.drift_worker.evidence import EvidenceBook, remote_tests
from driftwarden.drift_worker.shard import FROZEN, LIVE, ShardWorker
from driftwarden.drift_worker.streams import bucket_counts

M_WORKER_HANDOFFS = names.M_WORKER_HANDOFFS
M_WORKER_PENDING_HANDOFFS = names.M_WORKER_PENDING_HANDOFFS
M_WORKER_WAL_BYTES = names.M_WORKER_WAL_BYTES
M_WORKER_RECOVERY_SECONDS = names.M_WORKER_RECOVERY_SECONDS
M_WORKER_REJECTED_VALUES = names.M_WORKER_REJECTED_VALUES
M_LABEL_JOIN = names.M_LABEL_JOIN
M_LABEL_JOIN_PENDING = names.M_LABEL_JOIN_PENDING


@dataclass(frozen=True)
class Row:
    """One detector's latest result on one stream."""

    stream: str
    detector: str
    result: DetectorResult
    values_total: int
    # the detector's own minEffect and alpha where the spec sets them (MonitorPlan.gates)
    min_effect: float | None = None
    alpha: float | None = None

    @property
    def statistic(self) -> float:
        return float(self.result.statistic)

    @property
    def p_value(self) -> float | None:
        return self.result.p_value

    @property
    def drift(self) -> bool:
        return bool(self.result.drift)

    @property
    def n_seen(self) -> int:
        return int(self.result.n_seen)


def decide(
    rows: list[Row],
    *,
    method: str,
    fdr: float,
    min_samples: int,
    tests_in_monitor: int,
    remote: Mapping[tuple[str, str], DetectorResult] | None = None,
) -> dict[tuple[str, str], bool]:
    """Return the drift flag of each (stream, detector) under the monitor's decision rules.

    The rules are the detectors package's (:func:`detectors.decision.decide`: minimum
    samples, then BH / Bonferroni over the tests that report p-values). ``remote``
    holds the other shards' latest p-values (:mod:`.evidence`, one entry per test, none
    of them local); they are ranked with the local tests but only local verdicts are
    returned. Tests nobody reported (a peer that does not answer, a stream in transit)
    count as not significant (p = 1), which keeps the procedure valid (BH is monotone
    in the p-values) and makes m the monitor's number of tests, as on a single shard.
    """
    results: dict[Any, DetectorResult] = {(r.stream, r.detector): r.result for r in rows}
    if method != "none":
        for key, result in (remote or {}).items():
            results.setdefault(key, result)
    tested = sum(1 for r in results.values() if r.p_value is not None and r.evaluated)
    if method != "none":
        absent = DetectorResult(
            statistic=0.0, p_value=1.0, threshold=fdr, drift=False, n_seen=max(min_samples, 1)
        )
        for i in range(max(0, tests_in_monitor - tested)):
            results[("", f"on-another-shard-{i}")] = absent
    decisions = decide_streams(
        results,
        method=method,
        fdr=fdr,
        min_samples=min_samples,
        min_effect=_per_test(rows, "min_effect"),
        alpha=_per_test(rows, "alpha"),
    )
    return {(r.stream, r.detector): decisions[(r.stream, r.detector)].drift for r in rows}


def _per_test(rows: list[Row], setting: str) -> dict[Any, float]:
    """Return the (stream, detector) -> value map of a Row's gate field, where set."""
    out: dict[Any, float] = {}
    for r in rows:
        value = getattr(r, setting)
        if value is not None:
            out[(r.stream, r.detector)] = float(value)
    return out


def collect_rows(worker: ShardWorker, *, now: float | None = None) -> list[Row]:
    """Return the latest result of every detector on the shard's live streams.

    A detector without a p-value restarts its evidence when it alarms, so its own
    verdict lasts one value; its result reads as drifting while its last alarm
    (the alarming batch's timestamp) is within the plan's ``alarm_hold_s`` of ``now``.
    Tests with a p-value keep their own verdict: it holds while the window differs,
    and holding their raw alarms would bypass the multiple-testing control.
    """
    now = time.time() if now is None else now
    hold = worker.plan.alarm_hold_s
    rows = []
    with worker.lock:
        for name, st in worker.streams.items():
            if worker.status_of(name) != LIVE:
                continue
            for det_name, det in st.detectors.items():
                r = det.result
                alarmed = st.last_drift_ts.get(det_name)
                if (
                    r.p_value is None
                    and not r.drift
                    and alarmed is not None
                    and now - alarmed <= hold
                ):
                    r = dataclasses.replace(r, drift=True)
                gate = worker.plan.gate(name, det_name)
                rows.append(Row(name, det_name, r, st.values_total, gate.min_effect, gate.alpha))
    return rows


class WorkerCollector(Collector):
    """Exposes one shard's streams and health at scrape time."""

    def __init__(
        self,
        worker: ShardWorker,
        detectors_in_monitor: dict[str, int],
        evidence: EvidenceBook | None = None,
    ) -> None:
        """``detectors_in_monitor``: detector name -> how many streams of the monitor run it;
        ``evidence``: the peers' p-values (None: this shard's tests only, the others p = 1)."""
        self.worker = worker
        self.detectors_in_monitor = detectors_in_monitor
        self.evidence = evidence
        self.missing_peers = 0
        self._with_p_value: set[str] = set()
        self._ref_cache: dict[str, tuple[np.ndarray, float]] = {}

    @property
    def tests_in_monitor(self) -> int:
        """Return m for multiple testing: the monitor's tests that report p-values.

        Which detectors report p-values is learnt from their results here; until a
        detector has evaluated, every detector counts (conservative).
        """
        counts = self.detectors_in_monitor
        if not self._with_p_value:
            return sum(counts.values())
        return sum(n for name, n in counts.items() if name in self._with_p_value)

    def describe(self) -> list[Metric]:
        return []

    def _reference_hist(self, stream: str, edges: np.ndarray) -> tuple[np.ndarray, float]:
        cached = self._ref_cache.get(stream)
        if cached is None:
            ref = np.asarray(self.worker.plan.streams[stream].reference, dtype=np.float64)
            ref = ref[np.isfinite(ref)]
            cached = self._ref_cache[stream] = (bucket_counts(edges, ref), float(ref.sum()))
        return cached

    def decisions(self) -> tuple[list[Row], dict[tuple[str, str], bool]]:
        rows = collect_rows(self.worker)
        remote: Mapping[tuple[str, str], DetectorResult] = {}
        if self.evidence is not None:
            remote, self.missing_peers = remote_tests(
                self.evidence, ((r.stream, r.detector) for r in rows), self.peers()
            )
        self._with_p_value.update(r.detector for r in rows if r.p_value is not None)
        self._with_p_value.update(d for _, d in remote)
        plan = self.worker.plan
        flags = decide(
            rows,
            method=plan.multiple_testing,
            fdr=plan.fdr,
            min_samples=plan.min_samples,
            tests_in_monitor=self.tests_in_monitor,
            remote=remote,
        )
        return rows, flags

    def peers(self) -> list[int]:
        """Return the other shards of the current map (whose evidence this shard needs)."""
        shard_map = self.worker.map
        shards = shard_map.shards if shard_map is not None else 1
        return [k for k in range(shards) if k != self.worker.ordinal]

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        # the name only: the scrape target's namespace label carries the namespace
        monitor, shard = names.monitor_name(w.plan.monitor), str(w.ordinal)
        base = [names.LABEL_MONITOR, names.LABEL_SHARD]
        per_det = [names.LABEL_MONITOR, names.LABEL_STREAM, names.LABEL_DETECTOR, names.LABEL_SHARD]
        per_stream = [names.LABEL_MONITOR, names.LABEL_STREAM, names.LABEL_SHARD]
        rows, flags = self.decisions()

        stat = GaugeMetricFamily(
            names.M_STREAM_STATISTIC,
            "Latest test statistic per stream and detector.",
            labels=per_det,
        )
        pval = GaugeMetricFamily(
            names.M_STREAM_P_VALUE,
            "Latest p-value per stream and detector (tests with one).",
            labels=per_det,
        )
        drift = GaugeMetricFamily(
            names.M_STREAM_DRIFT,
            "1 if the detector's alarm survives the min-sample gate and multiple-testing control.",
            labels=per_det,
        )
        threshold = GaugeMetricFamily(
            names.M_STREAM_THRESHOLD,
            "Alarm threshold per stream and detector (alpha for tests with a p-value).",
            labels=per_det,
        )
        budget = GaugeMetricFamily(
            names.M_STREAM_BUDGET,
            "False-alarm budget the detector's threshold was set for: values between false "
            "alarms with no change (ARL0); detectors with a budget only.",
            labels=per_det,
        )
        for r in rows:
            labels = [monitor, r.stream, r.detector, shard]
            if not math.isnan(r.statistic):
                stat.add_metric(labels, r.statistic)
            if r.p_value is not None and not math.isnan(r.p_value):
                pval.add_metric(labels, r.p_value)
            drift.add_metric(labels, 1.0 if flags[(r.stream, r.detector)] else 0.0)
            threshold.add_metric(labels, r.result.threshold)
            if r.result.budget is not None:
                budget.add_metric(labels, r.result.budget)
        yield from (stat, pval, drift, threshold, budget)

        values = CounterMetricFamily(
            names.M_STREAM_VALUES, "Values applied per stream.", labels=per_stream
        )
        fill = GaugeMetricFamily(
            names.M_STREAM_WINDOW_FILL,
            "Fullest detector window of the stream (0..1).",
            labels=per_stream,
        )
        last = GaugeMetricFamily(
            names.M_STREAM_LAST_DRIFT,
            "Event time (unix s) of the detector's last alarm.",
            labels=per_det,
        )
        alarms = CounterMetricFamily(
            names.M_STREAM_ALARMS,
            "Alarming evaluations per stream and detector (the detector's own rule, before "
            "the min-sample gate and multiple-testing control).",
            labels=per_det,
        )
        rejected = CounterMetricFamily(
            M_WORKER_REJECTED_VALUES,
            "Values a detector refused (counted, not applied).",
            labels=per_stream,
        )
        join = CounterMetricFamily(
            M_LABEL_JOIN, "Label join outcomes.", labels=[*per_stream, "outcome"]
        )
        pending = GaugeMetricFamily(
            M_LABEL_JOIN_PENDING,
            "Predictions or labels waiting for their match.",
            labels=[*per_stream, "kind"],
        )
        live_hist = HistogramMetricFamily(
            names.M_FEATURE_LIVE,
            "Live values per reference-decile bucket (numeric streams).",
            labels=per_stream,
        )
        ref_hist = HistogramMetricFamily(
            names.M_FEATURE_REFERENCE,
            "Reference sample per reference-decile bucket (numeric streams).",
            labels=per_stream,
        )
        with w.lock:
            live = [(n, st) for n, st in w.streams.items() if w.status_of(n) == LIVE]
            for name, st in live:
                labels = [monitor, name, shard]
                values.add_metric(labels, st.values_total)
                fill.add_metric(labels, st.window_fill())
                rejected.add_metric(labels, st.rejected_values)
                if st.edges is not None and st.hist is not None:
                    live_hist.add_metric(labels, _buckets(st.edges, st.hist), st.hist_sum)
                    ref_counts, ref_sum = self._reference_hist(name, st.edges)
                    ref_hist.add_metric(labels, _buckets(st.edges, ref_counts), ref_sum)
                for det, ts in st.last_drift_ts.items():
                    last.add_metric([monitor, name, det, shard], ts)
                for det in st.detectors:
                    alarms.add_metric([monitor, name, det, shard], st.alarms.get(det, 0))
                if st.join is not None:
                    j = st.join
                    join.add_metric([*labels, "joined"], j.joined)
                    join.add_metric([*labels, "expired_prediction"], j.expired_predictions)
                    join.add_metric([*labels, "unmatched_label"], j.unmatched_labels)
                    join.add_metric([*labels, "evicted_prediction"], j.evicted_predictions)
                    join.add_metric([*labels, "evicted_label"], j.evicted_labels)
                    join.add_metric([*labels, "replaced_prediction"], j.replaced_predictions)
                    pending.add_metric([*labels, "predictions"], len(j.predictions))
                    pending.add_metric([*labels, "labels"], len(j.labels))
            frozen = sum(1 for n in w.streams if w.status_of(n) == FROZEN)
            awaiting = len(w.awaiting)
            c = w.counters
            rebaselined = sorted(c.rebaselines.items())  # a handoff may add to it meanwhile
            epoch = w.epoch
            wal_bytes = w.wal.size_bytes() if w.wal is not None else 0
            storage_errors = w.storage_errors()
        yield from (values, fill, last, alarms, rejected, join, pending, live_hist, ref_hist)

        drifting_streams = {r.stream for r in rows if flags[(r.stream, r.detector)]}
        g = GaugeMetricFamily(names.M_MONITOR_STREAMS, "Live streams on this shard.", labels=base)
        g.add_metric([monitor, shard], len(live))
        yield g
        g = GaugeMetricFamily(
            names.M_MONITOR_DRIFTING,
            "Live streams on this shard with a confirmed alarm.",
            labels=base,
        )
        g.add_metric([monitor, shard], len(drifting_streams))
        yield g
        if self.evidence is not None:
            g = GaugeMetricFamily(
                names.M_WORKER_PEER_EVIDENCE_MISSING,
                "Peers of the current map whose p-values are missing or stale; their tests "
                "count as p = 1 in this shard's multiple-testing control.",
                labels=base,
            )
            g.add_metric([monitor, shard], self.missing_peers)
            yield g
        g = GaugeMetricFamily(
            names.M_WORKER_EPOCH, "Shard-map epoch this shard works at.", labels=base
        )
        g.add_metric([monitor, shard], epoch)
        yield g
        g = GaugeMetricFamily(
            names.M_WORKER_OWNED, "Streams this shard owns and holds (live).", labels=base
        )
        g.add_metric([monitor, shard], len(live))
        yield g
        batches = CounterMetricFamily(
            names.M_WORKER_BATCHES, "Ingest batches by outcome.", labels=[*base, "outcome"]
        )
        batches.add_metric([monitor, shard, "accepted"], c.batches_accepted)
        batches.add_metric([monitor, shard, "duplicate"], c.batches_duplicate)
        batches.add_metric([monitor, shard, "refused"], c.batches_refused)
        batches.add_metric([monitor, shard, "malformed"], c.batches_malformed)
        yield batches
        if c.last_ingest:
            g = GaugeMetricFamily(
                names.M_WORKER_LAST_INGEST, "Unix time of the last accepted batch.", labels=base
            )
            g.add_metric([monitor, shard], c.last_ingest)
            yield g
        h = CounterMetricFamily(
            M_WORKER_HANDOFFS, "Stream handoffs by direction.", labels=[*base, "direction"]
        )
        h.add_metric([monitor, shard, "in"], c.handoffs_in)
        h.add_metric([monitor, shard, "out"], c.handoffs_out)
        h.add_metric([monitor, shard, "timeout"], c.handoff_timeouts)
        h.add_metric([monitor, shard, "superseded"], c.handoffs_superseded)
        h.add_metric([monitor, shard, "dropped"], c.handoffs_dropped)
        yield h
        rebaselines = CounterMetricFamily(
            names.M_WORKER_REBASELINES,
            "Detectors re-baselined by this process because the monitor's configuration or "
            "reference changed (change: changed|added|removed).",
            labels=[*base, names.LABEL_STREAM, names.LABEL_DETECTOR, "change"],
        )
        for (stream, detector, change), count in rebaselined:
            rebaselines.add_metric([monitor, shard, stream, detector, change], count)
        yield rebaselines
        lost = CounterMetricFamily(
            names.M_WORKER_LOST_VALUES,
            "Values in stream copies dropped because the successor started the stream empty "
            "after the handoff timeout.",
            labels=[*base, "reason"],
        )
        lost.add_metric([monitor, shard, "handoff_timeout"], c.lost_values)
        yield lost
        if storage_errors:
            errors = CounterMetricFamily(
                names.M_WORKER_STORAGE_ERRORS,
                "Failed storage operations (WAL write or fsync, snapshot write).",
                labels=[*base, "op"],
            )
            for op, count in storage_errors.items():
                errors.add_metric([monitor, shard, op], count)
            yield errors
        p = GaugeMetricFamily(
            M_WORKER_PENDING_HANDOFFS,
            "Streams frozen here (outgoing) or awaited (incoming).",
            labels=[*base, "direction"],
        )
        p.add_metric([monitor, shard, "outgoing"], frozen)
        p.add_metric([monitor, shard, "awaiting"], awaiting)
        yield p
        g = GaugeMetricFamily(M_WORKER_WAL_BYTES, "Bytes in write-ahead-log segments.", labels=base)
        g.add_metric([monitor, shard], wal_bytes)
        yield g
        g = GaugeMetricFamily(
            M_WORKER_RECOVERY_SECONDS,
            "Seconds the last start spent restoring snapshot + WAL.",
            labels=base,
        )
        g.add_metric([monitor, shard], c.recovery_seconds)
        yield g


def _buckets(edges: np.ndarray, counts: np.ndarray) -> list[tuple[str, float]]:
    cumulative = np.cumsum(counts)
    out = [
        (floatToGoString(float(e)), float(c)) for e, c in zip(edges, cumulative[:-1], strict=True)
    ]
    out.append(("+Inf", float(cumulative[-1])))
    return out


def _finite(x: float | None) -> float | None:
    # JSON has no inf or NaN
    return None if x is None or not math.isfinite(x) else float(x)


def status_document(worker: ShardWorker, collector: WorkerCollector) -> WorkerStatus:
    """Return the ``/status`` document: epoch, streams with their results, handoffs, WAL."""
    rows, flags = collector.decisions()
    by_stream: dict[str, dict[str, DetectorStatus]] = {}
    for r in rows:
        by_stream.setdefault(r.stream, {})[r.detector] = DetectorStatus(
            statistic=_finite(r.statistic),
            p_value=_finite(r.p_value),
            alarm=r.drift,
            drift=flags[(r.stream, r.detector)],
            n_seen=r.n_seen,
            threshold=_finite(r.result.threshold),
            false_alarm_budget=_finite(r.result.budget),
        )
    w = worker
    with w.lock:
        assert w.map is not None
        streams = {}
        for name in sorted(set(w.streams) | set(w.awaiting)):
            st = w.streams.get(name)
            detectors = by_stream.get(name, {})
            # the alarms behind a drifting verdict (after the gates and multiple testing),
            # not raw alarms the monitor's decision set aside
            confirmed = [
                st.last_drift_ts[d]
                for d, verdict in detectors.items()
                if st and verdict.drift and d in st.last_drift_ts
            ]
            streams[name] = StreamStatus(
                # Summary fields the operator reads into the DriftMonitor status.
                drift=any(d.drift for d in detectors.values()),
                last_drift_time=max(confirmed, default=None),
                status=w.status_of(name),
                values=st.values_total if st else 0,
                window_fill=st.window_fill() if st else 0.0,
                generation=st.generation if st else None,
                detectors=detectors,
            )
        c = w.counters
        return WorkerStatus(
            monitor=w.plan.monitor,
            shard=w.ordinal,
            epoch=w.map.epoch,
            shards=w.map.shards,
            shard_map=w.map,
            streams=streams,
            handoff=HandoffStatus(
                outgoing=[
                    OutgoingHandoff(stream=s, to=t, generation=g) for s, t, g in w.outgoing()
                ],
                awaiting=sorted(w.awaiting),
                in_=c.handoffs_in,
                out=c.handoffs_out,
                timeouts=c.handoff_timeouts,
                superseded=c.handoffs_superseded,
                dropped=c.handoffs_dropped,
                lost_values=c.lost_values,
                pause_seconds=dict(w.handoff_pauses),
            ),
            rebaselines=[
                Rebaseline(stream=s, detector=d, change=k, count=n)
                for (s, d, k), n in sorted(c.rebaselines.items())
            ],
            batches=BatchCounts(
                accepted=c.batches_accepted,
                duplicate=c.batches_duplicate,
                refused=c.batches_refused,
                malformed=c.batches_malformed,
            ),
            wal=None
            if w.wal is None
            else WalStatus(
                written_lsn=w.wal.written_lsn,
                durable_lsn=w.wal.durable_lsn,
                fsync=w.wal.fsync,
                bytes=w.wal.size_bytes(),
                failed=w.storage_failed,
                last_error=w.wal.last_error,
            ),
            storage_errors=w.storage_errors(),
            recovery=RecoveryStatus(records=c.recovered_records, seconds=c.recovery_seconds),
            snapshots=c.snapshots,
        )
