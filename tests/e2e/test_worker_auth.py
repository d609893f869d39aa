"""Real shard processes: nobody without this monitor's credential changes its state.

Two shards of monitor ``default/local`` run as ``driftwarden worker`` processes with
the credential files the operator's Secret would mount. Every write endpoint is
called without a credential, with another monitor's, with a role it does not admit,
and with out-of-bounds shard maps; then a Sender and a reshard (peer-to-peer
handoffs between the processes) show the right credential still works end to end.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from driftwarden.common import auth, names
from driftwarden.common.sharding import MAX_EPOCH_AHEAD, ShardMap
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.ingest.sender import Sender, SenderSettings
from driftwarden.testing.localshards import LocalShards

SPEC = {
    "model": {"bundle": "builtin://unused"},
    "workers": {"window": 100, "evaluateEvery": 20},
    "detectors": {"numeric": [{"type": "ks"}]},
}
FEATURES = [f"f{i}" for i in range(6)]


@pytest.fixture
def shards(tmp_path: Path) -> Any:
    rng = np.random.default_rng(0)
    streams = [
        StreamSpec(names.feature_stream(f), "numeric", rng.normal(size=300)) for f in FEATURES
    ]
    local = LocalShards(tmp_path, SPEC, streams, 2, fsync="always", max_shards=3)
    try:
        local.start_all()
        yield local
    finally:
        local.stop()


def _state(local: LocalShards) -> list[Any]:
    out = []
    for k in sorted(local.procs):
        status = local.status(k)
        out.append((status.epoch, {s: v.values for s, v in status.streams.items()}))
    return out


def _refused(local: LocalShards, ordinal: int) -> float:
    text = httpx.get(local.url(ordinal) + "/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == names.M_AUTH_REFUSALS
    )


def test_unauthenticated_wrong_monitor_and_out_of_bounds_calls_change_nothing(
    shards: LocalShards,
) -> None:
    local = shards
    before = _state(local)
    other = auth.Credential.generate("default/other")
    stream = FEATURES[0]
    segment = wire.Segment(names.feature_stream(stream), 1, "values", 0.0, {"v": np.ones(9)})
    owner = local.map.owner(segment.stream)
    batch = wire.encode(wire.Batch("intruder", 1, [segment], local.monitor))
    handoff = {"monitor": local.monitor, "stream": segment.stream, "generation": 0, "state": {}}
    forged_map = ShardMap(monitor=local.monitor, epoch=2**40, shards=1).model_dump_json()
    calls = [
        ("POST", "/v1/ingest", {"content": batch, "headers": {"content-type": wire.CONTENT_TYPE}}),
        ("POST", "/v1/handoff", {"json": handoff}),
        ("PUT", "/v1/shardmap", {"content": forged_map}),
        ("GET", "/v1/state", {}),
    ]
    roles = {"/v1/ingest": "sender", "/v1/handoff": "peer", "/v1/shardmap": "operator"}
    refusals = 0
    for method, path, kwargs in calls:
        role = roles.get(path, "operator")
        for token, status in (
            (None, 401),
            (other.token(role), 403),
            (local.credential.token("sender" if role != "sender" else "peer"), 403),
        ):
            headers = dict(kwargs.get("headers", {}))
            if token:
                headers["authorization"] = f"Bearer {token}"
            extra = {k: v for k, v in kwargs.items() if k != "headers"}
            r = httpx.request(method, local.url(owner) + path, headers=headers, timeout=10, **extra)
            assert r.status_code == status, (path, token, r.text)
            refusals += 1
    assert _state(local) == before
    assert _refused(local, owner) == refusals

    # Out-of-bounds maps with the operator's own credential: refused, nothing moves.
    for doc in (
        {"monitor": local.monitor, "epoch": 2, "shards": 100_000_000},
        {"monitor": local.monitor, "epoch": 2 + MAX_EPOCH_AHEAD, "shards": 2},
    ):
        r = httpx.put(
            local.url(owner) + "/v1/shardmap",
            json=doc,
            headers=local.headers("operator"),
            timeout=10,
        )
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "bad_shard_map"
    assert _state(local) == before


def test_a_sender_without_the_credential_is_refused_and_keeps_its_values(
    shards: LocalShards,
) -> None:
    local = shards

    async def run(credential: auth.Credential | None) -> Sender:
        sender = Sender(
            local.monitor,
            shard_map=local.map,
            credential=credential,
            registry=CollectorRegistry(),
            settings=SenderSettings(
                url_template=local.url_template,
                base_port=local.base_port,
                flush_interval=0.01,
                backoff_initial=0.01,
                backoff_max=0.1,
            ),
        )
        await sender.start()
        sender.emit_features({f: np.arange(50.0) for f in FEATURES})
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline:
            if sender.acked_values == 300 or sender.retries >= 5:
                break
            await asyncio.sleep(0.05)
        buffered = sender.buffered_values
        await sender.stop(drain_timeout=0.0)
        sender.buffered_at_stop = buffered  # type: ignore[attr-defined]
        return sender

    before = _state(local)
    refused = asyncio.run(run(None))
    assert refused.acked_values == 0 and refused.retries >= 5
    # refused for the credential, so kept (and retried), never shed as malformed
    assert refused.buffered_at_stop == 300  # type: ignore[attr-defined]
    assert refused.shed_values("rejected") == 0
    assert _state(local) == before
    accepted = asyncio.run(run(local.sender_credential))
    assert accepted.acked_values == 300 and accepted.shed_values() == 0


def test_reshard_with_authenticated_pushes_and_handoffs_moves_every_value(
    shards: LocalShards,
) -> None:
    local = shards

    async def send() -> int:
        sender = Sender(
            local.monitor,
            shard_map=local.map,
            credential=local.sender_credential,
            registry=CollectorRegistry(),
            settings=SenderSettings(url_template=local.url_template, base_port=local.base_port),
        )
        await sender.start()
        sender.emit_features({f: np.arange(40.0) for f in FEATURES})
        await sender.stop(drain_timeout=60)
        return sender.acked_values

    assert asyncio.run(send()) == 240
    local.reshard(3)  # the map pushed with the operator's token
    local.wait_settled()
    handed = sum(local.status(k).handoff.in_ for k in local.procs)
    assert handed > 0  # peer-to-peer pushes carried the peer token and were installed
    totals = dict.fromkeys((names.feature_stream(f) for f in FEATURES), 0)
    for k in local.procs:
        for s, v in local.status(k).streams.items():
            if v.status == "live":
                totals[s] += v.values
    assert totals == dict.fromkeys(totals, 40)


def test_a_worker_without_a_credential_refuses_to_start(tmp_path: Path) -> None:
    local = LocalShards(tmp_path, SPEC, [StreamSpec("feature:f0", "numeric", np.ones(60))], 1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTWARDEN_")}
    cmd = [
        sys.executable,
        "-m",
        "driftwarden.drift_worker",
        "--ordinal=0",
        "--port=0",
        "--host=127.0.0.1",
        f"--data-dir={tmp_path / 'data'}",
        f"--monitor-config={local.root / 'monitor.json'}",
        f"--shard-map={local.root / 'shardmap.json'}",
        f"--streams-file={local.root / 'streams.json'}",
        "--peer-url-template=http://127.0.0.1:{port}",
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "DRIFTWARDEN_CREDENTIAL_FILE" in done.stderr
    other = auth.write_credential_files(tmp_path / "other", auth.Credential.generate("x/y"))
    done = subprocess.run(
        [*cmd, f"--credential-file={other[auth.WORKER_FILE]}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "another monitor" in done.stderr
