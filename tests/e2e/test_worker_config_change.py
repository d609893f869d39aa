"""Real shard processes: a new bundle or new detector settings re-baseline across restarts.

The shards run with KS, IKS and PSI on every feature, take data, and are stopped
(one with SIGKILL, so it recovers from its WAL; one with SIGTERM, so from its final
snapshot). They restart with KS at another alpha, PSI removed, Page-Hinkley added
and a new reference for one feature: each detector re-baselines or keeps its state
as docs/workers.md says, the change is counted, and a second crash replays it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from driftwarden.common import names
from driftwarden.drift_worker.settings import write_streams_file
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.testing.localshards import LocalShards

FEATURES = [f"f{i}" for i in range(4)]
STREAMS = [names.feature_stream(f) for f in FEATURES]
MOVED = STREAMS[0]  # the new bundle's reference of this feature is another sample


def spec(numeric: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "model": {"bundle": "builtin://unused"},
        "workers": {"window": 100, "evaluateEvery": 20},
        "detectors": {"numeric": numeric},
    }


OLD = spec([{"type": "ks"}, {"type": "iks"}, {"type": "psi"}])
NEW = spec([{"type": "ks", "alpha": 0.001}, {"type": "iks"}, {"type": "pageHinkley"}])


def references(shift: float) -> list[StreamSpec]:
    rng = np.random.default_rng(0)
    refs = {s: rng.normal(size=300) for s in STREAMS}
    refs[MOVED] = refs[MOVED] + shift
    return [StreamSpec(s, "numeric", refs[s]) for s in STREAMS]


def feed(local: LocalShards, steps: int, seed: int, first_seq: int) -> None:
    rng = np.random.default_rng(seed)
    seq = first_seq
    for step in range(steps):
        for stream in STREAMS:
            seq += 1
            seg = wire.Segment(
                stream, seq, wire.KIND_VALUES, float(step), {"v": rng.normal(size=40)}
            )
            body = wire.encode(wire.Batch("e2e", local.map.epoch, [seg], local.monitor))
            resp = httpx.post(
                local.url(local.map.owner(stream)) + "/v1/ingest",
                content=body,
                headers={"content-type": wire.CONTENT_TYPE, **local.headers("sender")},
                timeout=30,
            )
            assert resp.status_code == 200, resp.text


def held(local: LocalShards) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for k in sorted(local.procs):
        out.update(
            httpx.get(local.url(k) + "/v1/state", headers=local.headers(), timeout=30).json()
        )
    return {s: out[s]["detectors"] for s in STREAMS}


def rebaselines(local: LocalShards) -> dict[tuple[str, str, str], float]:
    """Return (stream, detector, change) -> count from every shard's /metrics."""
    sample = re.compile(rf"^{names.M_WORKER_REBASELINES}\{{(.*)\}} (\S+)$")
    found = {}
    for k in sorted(local.procs):
        for line in httpx.get(local.url(k) + "/metrics", timeout=30).text.splitlines():
            if m := sample.match(line):
                labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
                found[labels["stream"], labels["detector"], labels["change"]] = float(m.group(2))
    return found


def test_new_settings_and_reference_rebaseline_across_restarts(tmp_path: Path) -> None:
    local = LocalShards(tmp_path, OLD, references(0.0), 2, fsync="always")
    try:
        local.start_all()
        feed(local, 10, seed=1, first_seq=0)
        before = held(local)
        assert {d["n_seen"] for s in STREAMS for d in before[s].values()} == {400}

        # a new spec and bundle: the operator rewrites the ConfigMap and rolls the pods
        local.kill(0)  # recovers from its WAL
        local.terminate(1)  # recovers from its final snapshot
        (tmp_path / "monitor.json").write_text(
            json.dumps({"name": "local", "namespace": "default", "spec": NEW})
        )
        write_streams_file(tmp_path / "streams.json", references(2.0))
        local.start_all()
        after = held(local)
        for stream in STREAMS:
            assert list(after[stream]) == ["ks", "iks", "pageHinkley"]  # psi gone, shard up
            assert (
                after[stream]["ks"]["n_seen"] == 0
                and after[stream]["ks"]["params"]["alpha"] == 0.001
            )
            assert after[stream]["pageHinkley"]["n_seen"] == 0
            if stream == MOVED:
                assert after[stream]["iks"]["n_seen"] == 0  # new reference: starts again
            else:
                assert after[stream]["iks"] == before[stream]["iks"]  # unchanged: kept exactly
        expected = {(s, "ks", "changed"): 1.0 for s in STREAMS}
        expected |= {(s, "psi", "removed"): 1.0 for s in STREAMS}
        expected |= {(s, "pageHinkley", "added"): 1.0 for s in STREAMS}
        expected[(MOVED, "iks", "changed")] = 1.0
        assert rebaselines(local) == expected

        # new data goes to the new detectors; a crash now replays the re-baseline in place
        feed(local, 5, seed=2, first_seq=1000)
        settled = held(local)
        local.kill(0)
        local.kill(1)
        local.start_all()
        assert held(local) == settled
        assert rebaselines(local) == {}  # nothing left to change
    finally:
        local.stop()
