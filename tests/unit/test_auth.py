"""Monitor credentials: tokens, their verification, and every guarded worker endpoint."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from driftwarden.common import auth, names
from driftwarden.common.sharding import MAX_EPOCH_AHEAD, ShardMap, check_pushed_map
from driftwarden.common.spec import MAX_SHARDS, DetectorConfig, DetectorType
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker.app import WorkerService, create_app
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire

MONITOR = "ns/app"
OTHER = "ns/other"
BIN = {"content-type": wire.CONTENT_TYPE}


# ------------------------------------------------------------------ tokens


def test_token_round_trip_names_the_caller() -> None:
    cred = auth.Credential.generate(MONITOR)
    verifier = auth.Verifier(cred)
    principal = verifier.verify("Bearer " + cred.token(auth.ROLE_PEER), {auth.ROLE_PEER})
    assert principal == auth.Principal(MONITOR, auth.ROLE_PEER)


@pytest.mark.parametrize(
    ("header", "status", "reason"),
    [
        (None, 401, auth.MISSING),
        ("", 401, auth.MISSING),
        ("Basic dXNlcjpwYXNz", 401, auth.MALFORMED),
        ("Bearer nonsense", 401, auth.MALFORMED),
        ("Bearer dw1.!!!.???", 401, auth.MALFORMED),
    ],
)
def test_malformed_or_missing_authorization_is_401(
    header: str | None, status: int, reason: str
) -> None:
    verifier = auth.Verifier(auth.Credential.generate(MONITOR))
    with pytest.raises(auth.AuthRefused) as refused:
        verifier.verify(header, {auth.ROLE_SENDER})
    assert (refused.value.status, refused.value.reason) == (status, reason)


def test_another_monitors_token_is_403_and_a_forged_claim_is_401() -> None:
    ours, theirs = auth.Credential.generate(MONITOR), auth.Credential.generate(OTHER)
    verifier = auth.Verifier(ours)
    with pytest.raises(auth.AuthRefused) as refused:
        verifier.verify("Bearer " + theirs.token(auth.ROLE_SENDER), {auth.ROLE_SENDER})
    assert (refused.value.status, refused.value.reason) == (403, auth.WRONG_MONITOR)
    # Another monitor's key claiming to be ours: the signature does not match.
    forged = auth.Credential(MONITOR, auth.ALL_ROLES, theirs.key)
    with pytest.raises(auth.AuthRefused) as refused:
        verifier.verify("Bearer " + forged.token(auth.ROLE_SENDER), {auth.ROLE_SENDER})
    assert (refused.value.status, refused.value.reason) == (401, auth.BAD_SIGNATURE)


def test_sender_key_cannot_sign_other_roles_and_roles_are_enforced() -> None:
    cred = auth.Credential.generate(MONITOR)
    sender = cred.for_role(auth.ROLE_SENDER)
    with pytest.raises(auth.CredentialError):
        sender.token(auth.ROLE_OPERATOR)
    # A sender key used to sign an operator claim does not verify as the operator.
    fake = auth.Credential(MONITOR, auth.ROLE_OPERATOR, sender.key)
    verifier = auth.Verifier(cred)
    with pytest.raises(auth.AuthRefused) as refused:
        verifier.verify("Bearer " + fake.token(auth.ROLE_OPERATOR), {auth.ROLE_OPERATOR})
    assert refused.value.reason == auth.BAD_SIGNATURE
    with pytest.raises(auth.AuthRefused) as refused:
        verifier.verify("Bearer " + sender.token(auth.ROLE_SENDER), {auth.ROLE_OPERATOR})
    assert (refused.value.status, refused.value.reason) == (403, auth.FORBIDDEN_ROLE)
    with pytest.raises(auth.CredentialError):
        auth.Verifier(sender)  # verifying needs the monitor key


def test_expired_and_overlong_tokens_are_refused() -> None:
    cred = auth.Credential.generate(MONITOR)
    verifier = auth.Verifier(cred)
    old = cred.token(auth.ROLE_SENDER, ttl_s=10, now=1_000_000.0)
    with pytest.raises(auth.AuthRefused) as refused:
        verifier.verify("Bearer " + old, {auth.ROLE_SENDER}, now=1_000_000.0 + 10 + 61)
    assert refused.value.reason == auth.EXPIRED
    assert verifier.verify("Bearer " + old, {auth.ROLE_SENDER}, now=1_000_000.0 + 5)
    forever = cred.token(auth.ROLE_SENDER, ttl_s=10**9)
    with pytest.raises(auth.AuthRefused) as refused:
        verifier.verify("Bearer " + forever, {auth.ROLE_SENDER})
    assert refused.value.reason == auth.EXPIRED


def _decoded(token: str) -> tuple[str, bytes, bytes]:
    prefix, payload, mac = token.split(".")
    return prefix, auth._unb64(payload), auth._unb64(mac)


@settings(max_examples=300, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=127))
def test_any_changed_character_of_a_token_is_refused(position: int, flip: int) -> None:
    cred = auth.Credential(MONITOR, auth.ALL_ROLES, bytes(range(32)))
    original = cred.token(auth.ROLE_PEER, now=2_000_000_000.0)
    chars = list(original)
    i = position % len(chars)
    chars[i] = chr((ord(chars[i]) + flip) % 128)
    changed = "".join(chars)
    verifier = auth.Verifier(cred)
    try:
        verifier.verify("Bearer " + changed, {auth.ROLE_PEER}, now=2_000_000_000.0)
    except auth.AuthRefused:
        return
    # Accepted only if it is the same token: base64 padding bits carry no data.
    assert _decoded(changed) == _decoded(original)


def test_credential_never_prints_its_key(tmp_path: Path) -> None:
    cred = auth.Credential.generate(MONITOR)
    assert cred.key.hex() not in repr(cred) and cred.key.hex() not in str(cred)
    files = auth.write_credential_files(tmp_path, cred)
    assert os.stat(files[auth.WORKER_FILE]).st_mode & 0o077 == 0
    sender = json.loads(files[auth.SENDER_FILE].read_text())
    assert sender["role"] == auth.ROLE_SENDER and sender["key"] != cred.key.hex()


def test_credential_file_checks_the_monitor_and_follows_rotation(tmp_path: Path) -> None:
    first = auth.Credential.generate(MONITOR)
    files = auth.write_credential_files(tmp_path, first)
    with pytest.raises(auth.CredentialError, match="another monitor"):
        auth.CredentialFile(files[auth.WORKER_FILE], monitor=OTHER)
    with pytest.raises(auth.CredentialError, match="cannot read"):
        auth.CredentialFile(tmp_path / "absent.json")
    source = auth.CredentialFile(files[auth.WORKER_FILE], monitor=MONITOR, recheck_s=0.0)
    assert source.get().key == first.key
    second = auth.Credential.generate(MONITOR)
    auth.write_credential_files(tmp_path, second)
    os.utime(files[auth.WORKER_FILE], ns=(1, 1))  # a different stamp, whatever the clock
    assert source.get().key == second.key
    files[auth.WORKER_FILE].write_text("half-written")
    os.utime(files[auth.WORKER_FILE], ns=(2, 2))
    assert source.get().key == second.key  # bad content keeps the last good key


# ------------------------------------------------------------------ shard-map bounds


def test_shard_map_model_bounds_the_shard_count_and_history() -> None:
    ShardMap(monitor=MONITOR, epoch=1, shards=MAX_SHARDS)
    with pytest.raises(ValueError):
        ShardMap(monitor=MONITOR, epoch=1, shards=MAX_SHARDS + 1)
    with pytest.raises(ValueError):
        ShardMap(monitor=MONITOR, epoch=1, shards=100_000_000)
    with pytest.raises(ValueError):
        ShardMap(monitor=MONITOR, epoch=50, shards=1, history=tuple((e, 1) for e in range(40)))
    with pytest.raises(ValueError):
        ShardMap(monitor=MONITOR, epoch=2**62, shards=1)


def test_pushed_map_must_be_near_and_agree_with_known_history() -> None:
    current = ShardMap(monitor=MONITOR, epoch=5, shards=3)
    assert check_pushed_map(current, current.advance(4)) is None
    assert check_pushed_map(current, current) is None
    far = ShardMap(monitor=MONITOR, epoch=5 + MAX_EPOCH_AHEAD + 1, shards=3)
    assert "ahead" in (check_pushed_map(current, far) or "")
    lie = ShardMap(monitor=MONITOR, epoch=6, shards=2, history=((5, 7),))
    assert "epoch 5 had 3 shards" in (check_pushed_map(current, lie) or "")
    other = ShardMap(monitor=OTHER, epoch=6, shards=2)
    assert "monitor" in (check_pushed_map(current, other) or "")


# ------------------------------------------------------------------ the worker's endpoints


def factory(stream: StreamSpec) -> dict[str, Any]:
    config = DetectorConfig(type=DetectorType.KS, alpha=0.01)
    return {
        "ks": make_detector(
            config, reference=stream.reference, kind="numeric", window=50, evaluate_every=10
        )
    }


def make_plan() -> MonitorPlan:
    rng = np.random.default_rng(0)
    streams = {
        f"feature:f{i}": StreamSpec(f"feature:f{i}", "numeric", rng.normal(size=200))
        for i in range(4)
    }
    return MonitorPlan(MONITOR, streams, factory, min_samples=50)


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[tuple[TestClient, ShardWorker, auth.Credential]]:
    cred = auth.Credential.generate(MONITOR)
    m = ShardMap(monitor=MONITOR, epoch=1, shards=1)
    worker = ShardWorker(make_plan(), 0, shard_map=m, data_dir=tmp_path)
    service = WorkerService(
        worker,
        peer_url_template="http://127.0.0.1:{port}",
        base_port=1,
        shutdown_drain_s=0.2,
        credential=cred,
        max_body_bytes=64 * 1024,
    )
    with TestClient(create_app(service)) as client:
        yield client, worker, cred


def _batch() -> bytes:
    seg = wire.Segment("feature:f0", 1, "values", 1.7e9, {"v": np.ones(5)})
    return wire.encode(wire.Batch("t", 1, [seg], MONITOR))


def _handoff() -> dict[str, Any]:
    return {"monitor": MONITOR, "stream": "feature:f0", "generation": 0, "state": {}}


# (method, path, role the endpoint admits, body builder)
WRITES: list[tuple[str, str, str, Any]] = [
    ("POST", "/v1/ingest", auth.ROLE_SENDER, lambda: {"content": _batch(), "headers": BIN}),
    ("POST", "/v1/handoff", auth.ROLE_PEER, lambda: {"json": _handoff()}),
    (
        "PUT",
        "/v1/shardmap",
        auth.ROLE_OPERATOR,
        lambda: {"content": ShardMap(monitor=MONITOR, epoch=2, shards=2).model_dump_json()},
    ),
    ("GET", "/v1/state", auth.ROLE_OPERATOR, dict),
    ("GET", "/v1/evidence", auth.ROLE_PEER, dict),
]


def _call(client: TestClient, method: str, path: str, body: dict[str, Any], token: str | None):
    kwargs = dict(body)
    headers = dict(kwargs.pop("headers", {}))
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return client.request(method, path, headers=headers, **kwargs)


def _fingerprint(client: TestClient, cred: auth.Credential, worker: ShardWorker) -> Any:
    return (
        worker.epoch,
        client.get("/status").json()["streams"],
        worker.fingerprint(None),
    )


def _refusals(client: TestClient) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        if family.name == names.M_AUTH_REFUSALS.removesuffix("_total"):
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    out[(sample.labels["endpoint"], sample.labels["reason"])] = sample.value
    return out


@pytest.mark.parametrize(("method", "path", "role", "body"), WRITES, ids=[w[1] for w in WRITES])
def test_every_write_endpoint_refuses_without_or_with_a_wrong_credential(
    guarded: tuple[TestClient, ShardWorker, auth.Credential],
    method: str,
    path: str,
    role: str,
    body: Any,
) -> None:
    client, worker, cred = guarded
    before = _fingerprint(client, cred, worker)
    other = auth.Credential.generate(OTHER)
    wrong_role = auth.ROLE_SENDER if role != auth.ROLE_SENDER else auth.ROLE_PEER
    cases = [
        (None, 401, auth.MISSING),
        ("dw1.garbage.token", 401, auth.MALFORMED),
        (other.token(role), 403, auth.WRONG_MONITOR),
        (auth.Credential(MONITOR, "*", other.key).token(role), 401, auth.BAD_SIGNATURE),
        (cred.token(wrong_role), 403, auth.FORBIDDEN_ROLE),
    ]
    for token, status, reason in cases:
        r = _call(client, method, path, body(), token)
        assert r.status_code == status, (token, r.text)
        assert r.json()["reason"] == reason
        assert _fingerprint(client, cred, worker) == before, f"{reason} changed state"
    endpoint = path.rsplit("/", 1)[-1]
    counted = _refusals(client)
    for _, _, reason in cases:
        assert counted[(endpoint, reason)] == 1
    # the right credential passes the guard (whatever the endpoint then says of the body)
    r = _call(client, method, path, body(), cred.token(role))
    assert r.status_code not in (401, 403), r.text


def test_read_only_endpoints_stay_open(
    guarded: tuple[TestClient, ShardWorker, auth.Credential],
) -> None:
    client, _, _ = guarded
    for path in ("/metrics", "/status", "/healthz", "/readyz", "/v1/shardmap", "/v1/handoff"):
        assert client.get(path).status_code == 200, path
    assert "reference" not in json.dumps(client.get("/status").json())


def test_authenticated_writes_take_effect(
    guarded: tuple[TestClient, ShardWorker, auth.Credential],
) -> None:
    client, _worker, cred = guarded
    r = _call(client, "POST", "/v1/ingest", {"content": _batch(), "headers": BIN}, None)
    assert r.status_code == 401
    sender = cred.for_role(auth.ROLE_SENDER)
    r = _call(
        client, "POST", "/v1/ingest", {"content": _batch(), "headers": BIN}, sender.token("sender")
    )
    assert r.status_code == 200 and r.json()["acked_values"] == 5
    new = ShardMap(monitor=MONITOR, epoch=1, shards=1).advance(2)
    r = _call(
        client, "PUT", "/v1/shardmap", {"content": new.model_dump_json()}, cred.token("operator")
    )
    assert r.json() == {"adopted": True, "epoch": 2}


@pytest.mark.parametrize(
    "doc",
    [
        {"monitor": MONITOR, "epoch": 2, "shards": 100_000_000},
        {"monitor": MONITOR, "epoch": 2**62, "shards": 1},
        {"monitor": MONITOR, "epoch": 1 + MAX_EPOCH_AHEAD + 1, "shards": 2},
        {"monitor": MONITOR, "epoch": 3, "shards": 2, "history": [[1, 9]]},
        {"monitor": OTHER, "epoch": 2, "shards": 2},
    ],
    ids=["huge-shards", "huge-epoch", "too-far-ahead", "rewritten-history", "other-monitor"],
)
def test_out_of_bounds_maps_are_refused_with_the_operators_credential(
    guarded: tuple[TestClient, ShardWorker, auth.Credential], doc: dict[str, Any]
) -> None:
    client, worker, cred = guarded
    before = _fingerprint(client, cred, worker)
    r = _call(client, "PUT", "/v1/shardmap", {"content": json.dumps(doc)}, cred.token("operator"))
    assert r.status_code == 400, r.text
    assert r.json()["error"] == "bad_shard_map"
    assert _fingerprint(client, cred, worker) == before
    # the same map carried inside a handoff is refused too
    handoff = {**_handoff(), "shard_map": doc}
    r = _call(client, "POST", "/v1/handoff", {"json": handoff}, cred.token("peer"))
    assert r.status_code == 400, r.text
    assert _fingerprint(client, cred, worker) == before


def test_chunked_bodies_stop_at_the_limit_on_every_endpoint(
    guarded: tuple[TestClient, ShardWorker, auth.Credential],
) -> None:
    client, _worker, cred = guarded

    def chunks(total: int) -> Iterator[bytes]:
        for _ in range(total // 4096):
            yield b" " * 4096

    for method, path, role in (
        ("POST", "/v1/ingest", "sender"),
        ("POST", "/v1/handoff", "peer"),
        ("PUT", "/v1/shardmap", "operator"),
    ):
        headers = {"authorization": f"Bearer {cred.token(role)}", **BIN}
        r = client.request(method, path, content=chunks(1024 * 1024), headers=headers)
        assert r.status_code == 413, (path, r.text)
        assert "limit" in r.json()["detail"]
