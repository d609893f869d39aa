"""Monitor-wide multiple testing on real shard processes: the flagged set does not depend
on the shard count.

Twenty numeric features, four of them shifted weakly: Benjamini-Hochberg over all
twenty tests flags them, while BH over one shard's tests (the others counted as
p = 1, the decision before ``GET /v1/evidence``) flags fewer on 3 or 5 shards. The
same input goes into 1, 3 and 5 fresh shards, then 3 shards are resharded to 5 and
to 2; every time the (stream, detector) pairs that ``/status`` and
``driftwarden_stream_drift`` flag are the same.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.common import auth, names
from driftwarden.drift_worker.metrics import Row, decide
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.testing.localshards import LocalShards
from support.workers import post_batch

NAME = "monitorwide"
SPEC = {
    "model": {"bundle": "builtin://unused"},
    "workers": {"window": 200, "evaluateEvery": 100},
    "detectors": {"numeric": [{"type": "ks"}], "minSamples": 100, "fdr": 0.05},
}
STREAMS = [names.feature_stream(f"f{i:02d}") for i in range(20)]
SHIFTED = {STREAMS[i] for i in (2, 5, 9, 13, 17)}
SEED, SHIFT = 6, 0.2  # chosen so that per-shard BH flags fewer than monitor-wide BH
ENV = {"DRIFTWARDEN_WORKER__EVIDENCE_POLL_INTERVAL_S": "0.2"}

Flagged = frozenset[tuple[str, str]]


def data() -> tuple[list[StreamSpec], dict[str, np.ndarray]]:
    rng = np.random.default_rng(SEED)
    refs = {s: rng.normal(size=1000) for s in STREAMS}
    live = {s: rng.normal(loc=SHIFT if s in SHIFTED else 0.0, size=200) for s in STREAMS}
    return [StreamSpec(s, "numeric", refs[s]) for s in STREAMS], live


def feed(local: LocalShards, live: dict[str, np.ndarray]) -> None:
    """Post the same values, in the same per-stream order, to each stream's owner."""
    for seq, part in enumerate((slice(0, 100), slice(100, 200)), start=1):
        for k in range(local.map.shards):
            segs = [
                wire.Segment(s, seq, "values", float(seq), {"v": live[s][part]})
                for s in STREAMS
                if local.map.owner(s) == k
            ]
            if segs:
                post_batch(local, k, segs).raise_for_status()


def gauges(local: LocalShards, k: int) -> tuple[float, Flagged]:
    text = httpx.get(local.url(k) + "/metrics", timeout=30).text
    missing, flagged = -1.0, set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == names.M_WORKER_PEER_EVIDENCE_MISSING:
                missing = sample.value
            elif sample.name == names.M_STREAM_DRIFT and sample.value == 1.0:
                flagged.add((sample.labels["stream"], sample.labels["detector"]))
    return missing, frozenset(flagged)


def observe(local: LocalShards, timeout: float = 120.0) -> tuple[Flagged, dict[str, float]]:
    """Wait for every shard to hold every peer's evidence; return the flags and p-values."""
    deadline = time.monotonic() + timeout
    last: Flagged | None = None
    while time.monotonic() < deadline:
        statuses = [local.status(k) for k in range(local.map.shards)]
        p_values = {
            s: d.p_value
            for st in statuses
            for s, doc in st.streams.items()
            if doc.status == "live"
            for d in [doc.detectors.get("ks")]
            if d is not None and d.p_value is not None and d.n_seen >= 200
        }
        from_status = frozenset(
            (s, det)
            for st in statuses
            for s, doc in st.streams.items()
            for det, d in doc.detectors.items()
            if d.drift
        )
        metrics = [gauges(local, k) for k in range(local.map.shards)]
        from_gauge = frozenset().union(*(f for _, f in metrics))
        settled = len(p_values) == len(STREAMS) and all(m == 0 for m, _ in metrics)
        if settled and from_status == from_gauge and from_status == last:
            return from_status, p_values  # type: ignore[return-value]
        last = from_status if settled and from_status == from_gauge else None
        time.sleep(0.5)
    logs = "\n".join(local.log(k)[-1500:] for k in range(local.map.shards))
    raise TimeoutError(f"evidence did not settle in {timeout}s; logs:\n{logs}")


def per_shard_bh(p_values: dict[str, float], shards: int, local: LocalShards) -> Flagged:
    """The flags of BH on each shard's own tests alone (other shards' tests as p = 1)."""
    from driftwarden.common.sharding import owner_of
    from driftwarden.detectors.base import DetectorResult

    out: set[tuple[str, str]] = set()
    for k in range(shards):
        rows = [
            Row(s, "ks", DetectorResult(0.1, p, 0.05, p <= 0.05, 200), 200)
            for s, p in p_values.items()
            if owner_of(local.monitor, s, shards) == k
        ]
        flags = decide(
            rows,
            method="benjaminiHochberg",
            fdr=0.05,
            min_samples=100,
            tests_in_monitor=len(STREAMS),
        )
        out |= {key for key, hit in flags.items() if hit}
    return frozenset(out)


def run(tmp_path: Path, shards: int) -> tuple[LocalShards, Flagged, dict[str, float]]:
    specs, live = data()
    local = LocalShards(
        tmp_path / f"shards-{shards}", SPEC, specs, shards, name=NAME, fsync="never", extra_env=ENV
    )
    try:
        local.start_all()
        feed(local, live)
        flagged, p_values = observe(local)
    except BaseException:
        local.stop()
        raise
    return local, flagged, p_values


def test_flagged_set_is_the_same_on_1_3_and_5_shards_and_across_a_reshard(
    tmp_path: Path,
) -> None:
    local, single, p_values = run(tmp_path, 1)
    local.stop()
    assert single, "the shifted features must be flagged on one shard"
    assert {s for s, _ in single} <= SHIFTED
    # the input is one where shard-local BH would give another answer
    assert any(per_shard_bh(p_values, n, local) != single for n in (3, 5))

    local, five, p5 = run(tmp_path, 5)
    try:
        assert p5 == p_values  # same per-stream input, same p-values
        assert five == single
        # the endpoint is the peers' only: no token, or another role's, is refused
        url = local.url(0) + "/v1/evidence"
        assert httpx.get(url, timeout=10).status_code == 401
        assert httpx.get(url, headers=local.headers(), timeout=10).status_code == 403
        peer = auth.TokenSource(local.credential, auth.ROLE_PEER).header()
        doc = httpx.get(url, headers=peer, timeout=10).json()
        assert {t["stream"] for t in doc["tests"]} == {
            s for s in STREAMS if local.map.owner(s) == 0
        }
        # a peer that stops answering: counted missing, its tests p = 1, never more flags
        local.kill(4)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            missing, _ = gauges(local, 0)
            if missing == 1:
                break
            time.sleep(0.3)
        assert missing == 1
        assert {f for k in range(4) for f in gauges(local, k)[1]} <= single
    finally:
        local.stop()

    local, three, _ = run(tmp_path, 3)
    try:
        assert three == single
        for shards in (5, 2):
            local.reshard(shards)
            local.wait_settled()
            local.retire()
            flagged, after = observe(local)
            assert after == p_values
            assert flagged == single, shards
    finally:
        local.stop()
