"""Monitor-wide multiple-testing control: the p-values of every shard, in every shard.

Benjamini–Hochberg decides each test against the rank of its p-value among *all*
the monitor's tests. A shard holds only its own streams, so each shard exposes the
latest p-value of every (stream, detector) it holds live on ``GET /v1/evidence``
(``peer`` role) and polls its peers' evidence about once a second. The decision
(:func:`driftwarden.drift_worker.metrics.decide`) then runs over the union:

- **Union, one entry per test.** A (stream, detector) counts once: the local copy
  when this shard holds the stream live, else the peer copy reported at the highest
  shard-map epoch (then the most recently fetched). A stream that moves during a
  reshard is live on at most one shard (the old owner freezes it before the new
  owner receives it), and a stale copy from the old owner never adds a second test.
- **Missing or stale peers count as p = 1.** m is the monitor's number of tests
  whatever arrived, so a test nobody reported (a peer that does not answer, or whose
  last answer is older than ``stale_after_s``, a stream in transit) is padded as not
  significant. BH is monotone in the p-values, so this can only remove flags, never
  add one; ``driftwarden_worker_peer_evidence_missing`` says how many peers of the
  current map are missing.

With every peer's evidence fresh, all shards run BH over the same p-values, so the
flagged set is the same on 1 or N shards for the same per-stream input.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from driftwarden.detectors.base import DetectorResult

EVIDENCE_PATH = "/v1/evidence"
Key = tuple[str, str]


@dataclass(frozen=True)
class PeerEvidence:
    """One peer's answer: its epoch and the latest p-value of each test it holds live."""

    shard: int
    epoch: int
    tests: dict[Key, DetectorResult]
    received_at: float = field(default_factory=time.monotonic)


def evidence_document(
    monitor: str, shard: int, epoch: int, results: Iterable[tuple[str, str, DetectorResult]]
) -> dict[str, Any]:
    """Return the ``/v1/evidence`` body: the evaluated tests with a finite p-value."""
    tests = []
    for stream, detector, r in results:
        if r.p_value is None or not r.evaluated or not math.isfinite(r.p_value):
            continue
        effect = (
            r.effect_size if r.effect_size is not None and math.isfinite(r.effect_size) else None
        )
        tests.append(
            {
                "stream": stream,
                "detector": detector,
                "p_value": float(r.p_value),
                "n_seen": int(r.n_seen),
                "effect_size": effect,
            }
        )
    return {"monitor": monitor, "shard": shard, "epoch": epoch, "tests": tests}


def parse_evidence(doc: Any, *, monitor: str, shard: int) -> PeerEvidence:
    """Validate a peer's ``/v1/evidence`` body; ValueError says what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError("evidence must be a JSON object")
    if doc.get("monitor") != monitor:
        raise ValueError(f"evidence is for monitor {doc.get('monitor')!r}, not {monitor!r}")
    if doc.get("shard") != shard:
        raise ValueError(f"evidence is from shard {doc.get('shard')!r}, asked shard {shard}")
    epoch = doc.get("epoch")
    items = doc.get("tests")
    if not isinstance(epoch, int) or not isinstance(items, list):
        raise ValueError("evidence needs an integer epoch and a list of tests")
    tests: dict[Key, DetectorResult] = {}
    for t in items:
        if not isinstance(t, dict):
            raise ValueError("each test must be an object")
        stream, detector, p, n = (
            t.get("stream"),
            t.get("detector"),
            t.get("p_value"),
            t.get("n_seen"),
        )
        effect = t.get("effect_size")
        if not (isinstance(stream, str) and isinstance(detector, str)):
            raise ValueError("a test needs string stream and detector")
        if not isinstance(p, int | float) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p_value of {stream}/{detector} must be in [0, 1], got {p!r}")
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n_seen of {stream}/{detector} must be a count, got {n!r}")
        if effect is not None and not isinstance(effect, int | float):
            raise ValueError(f"effect_size of {stream}/{detector} must be a number or null")
        tests[(stream, detector)] = DetectorResult(
            statistic=0.0,
            p_value=float(p),
            threshold=math.nan,
            drift=False,  # a peer's test is only ranked here; its verdict is made on its shard
            n_seen=n,
            effect_size=None if effect is None else float(effect),
        )
    return PeerEvidence(shard=shard, epoch=epoch, tests=tests)


def merge(local: Iterable[Key], peers: Iterable[PeerEvidence]) -> dict[Key, DetectorResult]:
    """Return the peers' tests to rank with the local ones, one entry per test.

    Tests this shard holds (``local``) are never taken from a peer; a test several
    peers report (a stream that moved meanwhile) is taken from the highest epoch,
    then the latest answer.
    """
    mine = set(local)
    best: dict[Key, tuple[tuple[int, float], DetectorResult]] = {}
    for peer in peers:
        rank = (peer.epoch, peer.received_at)
        for key, result in peer.tests.items():
            if key in mine:
                continue
            held = best.get(key)
            if held is None or rank > held[0]:
                best[key] = (rank, result)
    return {key: result for key, (_, result) in best.items()}


class EvidenceBook:
    """The latest evidence fetched from each peer (thread-safe: scrapes read it)."""

    def __init__(self, stale_after_s: float = 5.0) -> None:
        self.stale_after_s = stale_after_s
        self._lock = threading.Lock()
        self._latest: dict[int, PeerEvidence] = {}

    def record(self, evidence: PeerEvidence) -> None:
        with self._lock:
            self._latest[evidence.shard] = evidence

    def retain(self, peers: Iterable[int]) -> None:
        """Forget shards that are no longer peers (a scale-down)."""
        keep = set(peers)
        with self._lock:
            for k in [k for k in self._latest if k not in keep]:
                del self._latest[k]

    def fresh(
        self, peers: Iterable[int], now: float | None = None
    ) -> tuple[list[PeerEvidence], int]:
        """Return the fresh evidence of ``peers`` and how many of them have none."""
        now = time.monotonic() if now is None else now
        out, missing = [], 0
        with self._lock:
            for k in peers:
                e = self._latest.get(k)
                if e is None or now - e.received_at > self.stale_after_s:
                    missing += 1
                else:
                    out.append(e)
        return out, missing


def remote_tests(
    book: EvidenceBook, local: Iterable[Key], peers: Iterable[int], now: float | None = None
) -> tuple[Mapping[Key, DetectorResult], int]:
    """Return the peers' tests to rank with ``local`` and the number of missing peers."""
    fresh, missing = book.fresh(peers, now)
    return merge(local, fresh), missing


__all__ = [
    "EVIDENCE_PATH",
    "EvidenceBook",
    "PeerEvidence",
    "evidence_document",
    "merge",
    "parse_evidence",
    "remote_tests",
]
