"""Monitor-wide multiple testing: the union of the shards' p-values, stale peers, moving streams."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import false_discovery_control

from driftwarden.common.sharding import owner_of
from driftwarden.detectors.base import DetectorResult
from driftwarden.drift_worker.evidence import (
    EvidenceBook,
    PeerEvidence,
    evidence_document,
    merge,
    parse_evidence,
    remote_tests,
)
from driftwarden.drift_worker.metrics import Row, decide

MONITOR = "default/m"
FDR = 0.05
# 20 tests; four moderately small p-values flagged by BH over all 20 (p_(4) = 0.009 <=
# 4 x 0.05 / 20) that no shard flags alone when they are split over shards.
P_VALUES = {f"f{i}": 0.3 + 0.035 * i for i in range(20)}
P_VALUES.update({"f3": 0.006, "f7": 0.007, "f11": 0.008, "f15": 0.009})


def result(p: float, n: int = 500) -> DetectorResult:
    return DetectorResult(statistic=0.2, p_value=p, threshold=0.01, drift=p <= 0.01, n_seen=n)


def global_flags(p_values: dict[str, float]) -> set[str]:
    names = sorted(p_values)
    adjusted = false_discovery_control(np.array([p_values[n] for n in names]), method="bh")
    return {n for n, a in zip(names, adjusted, strict=True) if a <= FDR}


def shard_rows(shards: int, ordinal: int, p_values: dict[str, float]) -> list[Row]:
    return [
        Row(s, "ks", result(p), 500)
        for s, p in sorted(p_values.items())
        if owner_of(MONITOR, s, shards) == ordinal
    ]


def evidence_of(
    shards: int, ordinal: int, p_values: dict[str, float], epoch: int = 1
) -> PeerEvidence:
    doc = evidence_document(
        MONITOR,
        ordinal,
        epoch,
        ((r.stream, r.detector, r.result) for r in shard_rows(shards, ordinal, p_values)),
    )
    # over the wire, as a peer would receive it
    return parse_evidence(json.loads(json.dumps(doc)), monitor=MONITOR, shard=ordinal)


def flagged(shards: int, *, with_peers: bool, p_values: dict[str, float] = P_VALUES) -> set[str]:
    out = set()
    for k in range(shards):
        rows = shard_rows(shards, k, p_values)
        peers = [evidence_of(shards, j, p_values) for j in range(shards) if j != k]
        remote = merge(((r.stream, r.detector) for r in rows), peers) if with_peers else None
        flags = decide(
            rows,
            method="benjaminiHochberg",
            fdr=FDR,
            min_samples=0,
            tests_in_monitor=len(p_values),
            remote=remote,
        )
        out |= {s for (s, _), hit in flags.items() if hit}
    return out


def test_p_values_are_chosen_so_that_per_shard_bh_depends_on_the_shard_count() -> None:
    assert global_flags(P_VALUES) == {"f3", "f7", "f11", "f15"}
    assert flagged(1, with_peers=False) == global_flags(P_VALUES)
    assert any(flagged(n, with_peers=False) != global_flags(P_VALUES) for n in (3, 5))


@pytest.mark.parametrize("shards", [1, 2, 3, 5, 8])
def test_union_of_peer_evidence_gives_the_single_shard_decision(shards: int) -> None:
    assert flagged(shards, with_peers=True) == global_flags(P_VALUES)


def test_random_monitors_agree_with_scipy_at_every_shard_count() -> None:
    rng = np.random.default_rng(11)
    for _ in range(20):
        p = np.concatenate([rng.uniform(size=25), rng.uniform(0, 0.02, size=6)])
        p_values = {f"s{i}": float(v) for i, v in enumerate(p)}
        for shards in (1, 3, 5):
            assert flagged(shards, with_peers=True, p_values=p_values) == global_flags(p_values)


def test_local_tests_win_and_each_test_counts_once() -> None:
    local = [("a", "ks")]
    old = PeerEvidence(shard=1, epoch=1, tests={("a", "ks"): result(0.5), ("b", "ks"): result(0.5)})
    new = PeerEvidence(
        shard=2, epoch=2, tests={("b", "ks"): result(0.001), ("c", "ks"): result(0.2)}
    )
    merged = merge(local, [old, new])
    assert set(merged) == {("b", "ks"), ("c", "ks")}
    # a stream that moved from shard 1 (stale copy at epoch 1) to shard 2: the newer epoch
    assert merged[("b", "ks")].p_value == 0.001
    assert merge(local, [new, old])[("b", "ks")].p_value == 0.001  # whatever the order


def test_moving_stream_is_not_double_counted() -> None:
    # 3 -> 5 shards: a stream held live by its new owner while the old owner's last
    # answer (before it froze it) still lists it. Counted twice, m would be 21 and
    # BH would rank the test twice; counted once, the decision is the global one.
    before, after = 3, 5
    moved = next(
        s for s in sorted(P_VALUES) if owner_of(MONITOR, s, before) != owner_of(MONITOR, s, after)
    )
    old_owner = owner_of(MONITOR, moved, before)
    peers_view = [evidence_of(after, j, P_VALUES, epoch=2) for j in range(after)]
    stale_copy = evidence_of(before, old_owner, P_VALUES, epoch=1)
    for k in range(after):
        rows = shard_rows(after, k, P_VALUES)
        local = [(r.stream, r.detector) for r in rows]
        remote = merge(local, [e for e in peers_view if e.shard != k] + [stale_copy])
        assert len(remote) + len(local) == len(P_VALUES)
        flags = decide(
            rows,
            method="benjaminiHochberg",
            fdr=FDR,
            min_samples=0,
            tests_in_monitor=len(P_VALUES),
            remote=remote,
        )
        assert {s for (s, _), hit in flags.items() if hit} == global_flags(P_VALUES) & {
            s for s, _ in local
        }


def test_a_stream_in_transit_counts_as_p_one() -> None:
    # held by nobody (frozen on the old owner, awaited on the new one): m stays 20
    in_transit = {s: p for s, p in P_VALUES.items() if s != "f3"}
    hits = flagged(3, with_peers=True, p_values=in_transit)
    padded = dict(in_transit, f3=1.0)
    assert hits == global_flags(padded) - {"f3"}


def test_stale_or_missing_peers_count_as_p_one_and_never_add_flags() -> None:
    shards = 3
    book = EvidenceBook(stale_after_s=5.0)
    book.record(PeerEvidence(1, 1, evidence_of(shards, 1, P_VALUES).tests, received_at=100.0))
    book.record(PeerEvidence(2, 1, evidence_of(shards, 2, P_VALUES).tests, received_at=90.0))
    rows = shard_rows(shards, 0, P_VALUES)
    local = [(r.stream, r.detector) for r in rows]
    remote, missing = remote_tests(book, local, [1, 2], now=101.0)
    assert missing == 1  # shard 2's answer is 11 s old
    assert {s for s, _ in remote} == {s for s in P_VALUES if owner_of(MONITOR, s, shards) == 1}
    _, missing = remote_tests(book, local, [1, 2, 3], now=101.0)
    assert missing == 2  # shard 3 never answered
    book.retain([1])
    assert remote_tests(book, local, [1], now=101.0)[1] == 0

    def hits(remote_tests_: dict[tuple[str, str], DetectorResult] | None) -> set[str]:
        flags = decide(
            rows,
            method="benjaminiHochberg",
            fdr=FDR,
            min_samples=0,
            tests_in_monitor=len(P_VALUES),
            remote=remote_tests_,
        )
        return {s for (s, _), hit in flags.items() if hit}

    full = merge(local, [evidence_of(shards, j, P_VALUES) for j in (1, 2)])
    partial = merge(local, [evidence_of(shards, 1, P_VALUES)])
    assert hits(None) <= hits(partial) <= hits(full)


def test_methods_other_than_bh_ignore_peers() -> None:
    rows = [Row("a", "ks", result(0.004), 500)]
    remote = {("b", "ks"): result(0.0001)}
    for method in ("bonferroni", "none"):
        alone = decide(rows, method=method, fdr=FDR, min_samples=0, tests_in_monitor=10)
        assert alone == decide(
            rows, method=method, fdr=FDR, min_samples=0, tests_in_monitor=10, remote=remote
        )


def test_evidence_document_and_parsing() -> None:
    results = [
        ("a", "ks", result(0.01)),
        (
            "b",
            "ddm",
            DetectorResult(statistic=1.0, p_value=None, threshold=3.0, drift=True, n_seen=9),
        ),
        (
            "c",
            "ks",
            DetectorResult(
                statistic=float("nan"), p_value=1.0, threshold=0.01, drift=False, n_seen=0
            ),
        ),
    ]
    doc = evidence_document(MONITOR, 2, 7, results)
    assert [t["stream"] for t in doc["tests"]] == ["a"]  # p-values of evaluated tests only
    e = parse_evidence(doc, monitor=MONITOR, shard=2)
    assert e.epoch == 7 and e.tests[("a", "ks")].p_value == 0.01
    assert e.tests[("a", "ks")].drift is False  # a peer's verdict is never taken over
    with pytest.raises(ValueError, match="monitor"):
        parse_evidence(doc, monitor="other/m", shard=2)
    with pytest.raises(ValueError, match="shard"):
        parse_evidence(doc, monitor=MONITOR, shard=1)
    bad = dict(doc, tests=[{"stream": "a", "detector": "ks", "p_value": 2.0, "n_seen": 1}])
    with pytest.raises(ValueError, match="p_value"):
        parse_evidence(bad, monitor=MONITOR, shard=2)
