"""Storage and network faults against real shard processes on 127.0.0.1.

Oracle everywhere: every acknowledged value is counted exactly once — the live
streams of all shards equal one uninterrupted shard fed the same per-stream input —
or the shard refuses to start and says why. Real faults where they are cheap
(``kill -9``, SIGSTOP, flipped and truncated files, a full tmpfs in a private mount
namespace, ``RLIMIT_FSIZE`` for EFBIG, a proxy that loses replies); fsync errors and
stalls go through the fault-injection file layer (``driftwarden.testing.faults``),
which raises in the same call the kernel would.
"""

from __future__ import annotations

import asyncio
import errno
import os
import resource
import shutil
import signal
import struct
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from driftwarden.common import names
from driftwarden.drift_worker import snapshot
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.ingest import wire
from driftwarden.testing.faults import simulate_power_loss, write_rules
from driftwarden.testing.localshards import LocalShards
from support.workers import (
    HandoffReplyDropper,
    cluster_view,
    drive,
    metric,
    post_batch,
    reference_view,
)

SPEC = {
    "model": {"bundle": "builtin://unused"},
    "workers": {"window": 100, "evaluateEvery": 20},
    "detectors": {"numeric": [{"type": "ks"}, {"type": "iks"}]},
}
FEATURES = [f"f{i}" for i in range(6)]
FAULTS_ENV = "DRIFTWARDEN_FAULT_INJECTION"


def streams(seed: int = 0) -> list[StreamSpec]:
    rng = np.random.default_rng(seed)
    return [StreamSpec(names.feature_stream(f), "numeric", rng.normal(size=300)) for f in FEATURES]


def total(emitted: dict[str, list[np.ndarray]]) -> int:
    return sum(v.size for chunks in emitted.values() for v in chunks)


def assert_exactly_once(
    local: LocalShards, sender: Any, emitted: dict[str, list[np.ndarray]]
) -> None:
    logs = "\n".join(local.log(k)[-1500:] for k in sorted(local.procs))
    assert sender.shed_values() == 0, logs
    assert sender.acked_values == total(emitted), logs
    assert cluster_view(local) == reference_view(local, emitted)


def frames(path: Path) -> list[tuple[int, int]]:
    """Return ``(offset, record type)`` of every WAL record in a segment."""
    data, off, out = path.read_bytes(), 0, []
    while off + 17 <= len(data):
        length = struct.unpack_from("<I", data, off)[0]
        out.append((off, data[off + 16]))
        off += 8 + length
    return out


def newest_segment(local: LocalShards, ordinal: int) -> Path:
    return sorted((local.data_dir(ordinal) / "wal").glob("wal-*.log"))[-1]


def ingest_direct(
    local: LocalShards, ordinal: int, batches: int, *, first_seq: int = 1, seed: int = 1
) -> dict[str, list[np.ndarray]]:
    """Post ``batches`` acknowledged batches straight to one shard; return what was sent."""
    rng = np.random.default_rng(seed)
    emitted: dict[str, list[np.ndarray]] = {s.name: [] for s in streams()}
    owned = [s for s in emitted if local.map.owner(s) == ordinal]
    for seq in range(first_seq, first_seq + batches):
        segs = []
        for s in owned:
            v = rng.normal(size=60)
            emitted[s].append(v)
            segs.append(wire.Segment(s, seq, "values", float(seq), {"v": v}))
        post_batch(local, ordinal, segs).raise_for_status()
    return {s: chunks for s, chunks in emitted.items() if chunks}


class Kubelet:
    """Restarts shards that exit (restartPolicy: Always), remembering their exit status."""

    def __init__(self, local: LocalShards, before_restart: Any = None) -> None:
        self.local = local
        self.before_restart = before_restart
        self.exits: list[tuple[int, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Kubelet:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for k, proc in list(self.local.procs.items()):
                if proc.poll() is not None:
                    self.exits.append((k, proc.returncode))
                    self.local.procs.pop(k)
                    if self.before_restart is not None:
                        self.before_restart(k)
                    self.local.start(k, wait=False)


# ---------------------------------------------------------------------- damaged files


@pytest.mark.parametrize("which", ["middle", "last"])
def test_a_flipped_byte_in_an_acknowledged_wal_record_refuses_to_start(
    tmp_path: Path, which: str
) -> None:
    local = LocalShards(tmp_path, SPEC, streams(), 1)
    try:
        local.start_all()
        ingest_direct(local, 0, 6)  # every batch answered 200
        local.kill(0)
        seg = newest_segment(local, 0)
        batches = [off for off, rtype in frames(seg) if rtype == 1]
        offset = batches[len(batches) // 2] if which == "middle" else batches[-1]
        data = bytearray(seg.read_bytes())
        data[offset + 40] ^= 0x08
        seg.write_bytes(bytes(data))
        local.start(0, wait=False)
        assert local.wait_exit(0) == 2
        log = local.log(0)
        assert f"refuses to start: WAL segment {seg} is damaged at offset {offset}" in log, log[
            -2000:
        ]
        assert "truncate -s" in log
        assert seg.read_bytes() == bytes(data)  # nothing cut away
    finally:
        local.stop()


@pytest.mark.parametrize("damage", ["flipped byte", "truncated"])
def test_a_damaged_snapshot_is_detected_and_recovery_uses_the_older_one(
    tmp_path: Path, damage: str
) -> None:
    local = LocalShards(tmp_path, SPEC, streams(), 1, snapshot_every_values=700)
    try:
        local.start_all()
        emitted: dict[str, list[np.ndarray]] = {}
        for round_ in range(3):  # a snapshot after each round
            sent = ingest_direct(local, 0, 4, first_seq=1 + 4 * round_, seed=10 + round_)
            for s, chunks in sent.items():
                emitted.setdefault(s, []).extend(chunks)
            deadline = time.monotonic() + 60
            while local.status(0).snapshots <= round_ and time.monotonic() < deadline:
                time.sleep(0.1)
        local.kill(0)
        found = snapshot.snapshots(local.data_dir(0) / "snapshots")
        assert len(found) == 2
        data = bytearray(found[0].read_bytes())
        if damage == "truncated":
            del data[len(data) * 2 // 3 :]
        else:
            data[len(data) // 2] ^= 0x01
        found[0].write_bytes(bytes(data))
        local.start(0)
        log = local.log(0)
        assert f"snapshot {found[0]} is damaged" in log and "falling back" in log
        assert cluster_view(local) == reference_view(local, emitted)
    finally:
        local.stop()


def test_every_snapshot_damaged_with_the_log_truncated_refuses_to_start(tmp_path: Path) -> None:
    local = LocalShards(
        tmp_path,
        SPEC,
        streams(),
        1,
        snapshot_every_values=700,
        extra_env={"DRIFTWARDEN_WORKER__WAL_SEGMENT_BYTES": "4096"},
    )
    try:
        local.start_all()
        for round_ in range(3):
            ingest_direct(local, 0, 4, first_seq=1 + 4 * round_, seed=20 + round_)
            deadline = time.monotonic() + 60
            while local.status(0).snapshots <= round_ and time.monotonic() < deadline:
                time.sleep(0.1)
        local.kill(0)
        segments = sorted((local.data_dir(0) / "wal").glob("wal-*.log"))
        assert segments[0].name != "wal-00000000000000000001.log"  # truncated behind a snapshot
        for path in snapshot.snapshots(local.data_dir(0) / "snapshots"):
            path.write_bytes(path.read_bytes()[:-10])
        local.start(0, wait=False)
        assert local.wait_exit(0) == 2
        log = local.log(0)
        assert "are missing" in log and "damaged snapshots" in log, log[-2000:]
    finally:
        local.stop()


# ---------------------------------------------------------------------- whose volume


def test_two_processes_on_one_data_directory_and_a_volume_of_another_ordinal(
    tmp_path: Path,
) -> None:
    local = LocalShards(tmp_path, SPEC, streams(), 2)
    try:
        local.start_all()
        sent = ingest_direct(local, 0, 3)
        # a second process for shard 0 (another port, same volume), e.g. a stuck old pod
        twin = LocalShards(tmp_path, SPEC, streams(), 2, credential=local.credential)
        twin.start(0, wait=False)
        assert twin.wait_exit(0) == 2
        assert "is in use by another process (pid" in local.log(0)
        more = ingest_direct(local, 0, 2, first_seq=4, seed=7)  # the first one still serves
        for s, chunks in more.items():
            sent[s].extend(chunks)
        live0 = {s: v for s, v in cluster_view(local).items() if local.map.owner(s) == 0}
        assert live0 == reference_view(local, sent)
        # shard 0's volume copied onto shard 1 (a mis-bound PVC)
        local.terminate(1)
        local.terminate(0)
        shutil.rmtree(local.data_dir(1))
        shutil.copytree(local.data_dir(0), local.data_dir(1))
        local.start(1, wait=False)
        assert local.wait_exit(1) == 2
        assert "holds the state of shard 0" in local.log(1) and "this is shard 1" in local.log(1)
    finally:
        local.stop()


# ---------------------------------------------------------------------- fsync


def test_an_fsync_error_stops_acknowledging_restarts_and_loses_nothing(tmp_path: Path) -> None:
    rules = tmp_path / "faults.json"
    durable = tmp_path / "durable.tsv"
    write_rules(rules, [], durable)
    local = LocalShards(
        tmp_path,
        SPEC,
        streams(),
        2,
        fsync="always",
        storage_failure_exit_s=1.0,
        extra_env={FAULTS_ENV: str(rules)},
    )

    def fail_one_fsync() -> None:
        write_rules(rules, [{"op": "fsync", "path": "data-0/wal", "errno": "EIO"}], durable)

    def heal(_ordinal: int) -> None:
        write_rules(rules, [], durable)  # the volume works again after the restart

    try:
        local.start_all()
        with Kubelet(local, before_restart=heal) as kubelet:
            sender, emitted = asyncio.run(drive(local, FEATURES, 120, {30: fail_one_fsync}))
        assert (0, 75) in kubelet.exits, local.log(0)[-3000:]
        assert "acknowledges nothing more" in local.log(0)
        assert sender.retries > 0
        local.wait_healthy(0)
        assert_exactly_once(local, sender, emitted)
        # and what was acknowledged was on disk: a power loss now loses none of it
        for k in (0, 1):
            local.kill(k)
            simulate_power_loss(durable, local.data_dir(k) / "wal")
        local.start_all()
        assert cluster_view(local) == reference_view(local, emitted)
    finally:
        local.stop()


def test_a_stalled_fsync_acknowledges_no_retry_before_the_original_is_durable(
    tmp_path: Path,
) -> None:
    """The sender times out during a slow fsync and retries; then the node loses power."""
    rules = tmp_path / "faults.json"
    durable = tmp_path / "durable.tsv"
    write_rules(rules, [], durable)
    local = LocalShards(
        tmp_path, SPEC, streams(), 1, fsync="always", extra_env={FAULTS_ENV: str(rules)}
    )

    def stall() -> None:
        write_rules(rules, [{"op": "fsync", "path": "/wal", "delay_s": 30.0}], durable)
        time.sleep(3.0)  # several timed-out posts and retries of the same segments

    def power_loss() -> None:
        local.kill(0)  # mid-stall: the records being fsynced never reached the disk
        write_rules(rules, [], durable)
        assert simulate_power_loss(durable, local.data_dir(0) / "wal")
        local.start(0)

    try:
        local.start_all()
        sender, emitted = asyncio.run(
            drive(local, FEATURES, 100, {30: stall, 31: power_loss}, request_timeout=0.5)
        )
        assert sender.retries > 0
        assert_exactly_once(local, sender, emitted)
    finally:
        local.stop()


# ---------------------------------------------------------------------- full volume


def _private_tmpfs(size: str) -> list[str] | None:
    """The command prefix that runs a shard over its own small tmpfs (None: not possible here)."""
    probe = ["unshare", "--user", "--map-root-user", "--mount", "true"]
    try:
        if shutil.which("unshare") is None or subprocess.run(probe, capture_output=True).returncode:
            return None
    except OSError:
        return None
    # The mount lives in the shard's own mount namespace: the host never sees it, and
    # it disappears with the process.
    return [
        "unshare",
        "--user",
        "--map-root-user",
        "--mount",
        "sh",
        "-c",
        f'mkdir -p "$0" && mount -t tmpfs -o size={size} tmpfs "$0" && exec "$@"',
    ]


def test_a_full_volume_answers_503_and_the_shard_recovers_by_itself_when_space_returns(
    tmp_path: Path,
) -> None:
    rules = tmp_path / "faults.json"
    write_rules(rules, [])
    local = LocalShards(
        tmp_path,
        SPEC,
        streams(),
        1,
        snapshot_every_values=10**9,
        extra_env={FAULTS_ENV: str(rules)},
    )
    wrap = _private_tmpfs("2m")
    try:
        if wrap is not None:
            local.start(0, wrap=[*wrap, str(local.data_dir(0))])
            pid = local.procs[0].pid
            mounted = Path(f"/proc/{pid}/root") / str(local.data_dir(0)).lstrip("/")
            ballast = mounted / "ballast"
            vfs = os.statvfs(mounted)
            fill_to = vfs.f_bavail * vfs.f_frsize - 24 * 1024
        else:  # no user namespaces here: the same ENOSPC, raised by the fault layer
            local.start(0)
            pid = local.procs[0].pid

        def disk_full() -> None:
            if wrap is not None:
                # fill what is left (the WAL has grown since fill_to was measured): the
                # ballast's own write may meet ENOSPC first, which is the point
                with open(ballast, "wb", buffering=0) as f:
                    left = fill_to
                    while left > 0:
                        try:
                            left -= f.write(b"\0" * min(left, 64 * 1024))
                        except OSError as e:
                            if e.errno != errno.ENOSPC:
                                raise
                            break
            else:
                write_rules(
                    rules, [{"op": "write", "path": "/wal", "errno": "ENOSPC", "partial": True}]
                )

        def space_returns() -> None:
            assert metric(local, 0, names.M_WORKER_STORAGE_ERRORS, op="wal_write") > 0
            if wrap is not None:
                ballast.unlink()
            else:
                write_rules(rules, [])

        sender, emitted = asyncio.run(
            drive(local, FEATURES, 140, {20: disk_full, 90: space_returns})
        )
        assert local.procs[0].pid == pid  # recovered in place, no restart
        assert "cannot append to its WAL" in local.log(0)
        assert sender.retries > 0
        assert_exactly_once(local, sender, emitted)
    finally:
        local.stop()


def test_a_file_size_limit_efbig_answers_503_until_lifted(tmp_path: Path) -> None:
    limit = 40 * 1024  # reached after ~30 steps; lifted at step 110

    def limit_file_size() -> None:  # in the child, before exec: a real EFBIG from the kernel
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    local = LocalShards(tmp_path, SPEC, streams(), 1, snapshot_every_values=10**9)
    try:
        local.start(0, preexec_fn=limit_file_size)
        pid = local.procs[0].pid

        def lift() -> None:
            assert metric(local, 0, names.M_WORKER_STORAGE_ERRORS, op="wal_write") > 0
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)

        sender, emitted = asyncio.run(drive(local, FEATURES, 160, {110: lift}))
        assert local.procs[0].pid == pid
        assert "File too large" in local.log(0)
        assert_exactly_once(local, sender, emitted)
    finally:
        local.stop()


# ---------------------------------------------------------------------- handoffs


def test_a_shard_stopped_past_the_handoff_timeout_cannot_overwrite_newer_data(
    tmp_path: Path,
) -> None:
    """SIGSTOP the old owner during a reshard; its late handoff is refused and its values counted."""
    local = LocalShards(tmp_path, SPEC, streams(), 2, handoff_timeout_s=3.0)
    try:
        local.start_all()
        first, before = asyncio.run(drive(local, FEATURES, 40, {}, seed=1))
        assert first.acked_values == total(before)
        nxt = local.map.advance(3)
        victim = next(
            k for k in (0, 1) if any(local.map.owner(s) == k != nxt.owner(s) for s in before)
        )
        moving = [s for s in before if local.map.owner(s) == victim != nxt.owner(s)]
        held = httpx.get(
            local.url(victim) + "/v1/state", params={"stream": moving}, headers=local.headers()
        ).json()
        held_values = sum(st["values_total"] for st in held.values())
        local.procs[victim].send_signal(signal.SIGSTOP)
        local.map = nxt
        local.start(2)
        local.write_map()
        for k in (k for k in local.procs if k != victim):
            httpx.put(
                local.url(k) + "/v1/shardmap",
                content=nxt.model_dump_json(),
                headers=local.headers(),
            ).raise_for_status()

        def past_timeout() -> None:
            time.sleep(6.0)  # the new owners give up waiting and start those streams empty

        def resume() -> None:
            local.procs[victim].send_signal(signal.SIGCONT)

        sender, after = asyncio.run(
            drive(local, FEATURES, 80, {10: past_timeout, 40: resume}, seed=2, request_timeout=1.0)
        )
        local.wait_settled()
        assert sender.shed_values() == 0 and sender.acked_values == total(after)
        refused = sum(local.status(k).handoff.superseded for k in local.procs)
        lost = local.status(victim).handoff.lost_values
        assert refused >= len(moving) and lost == held_values
        # live = everything acknowledged, except the old windows the timeout gave up (counted)
        expected = {s: (after[s] if s in moving else before[s] + after[s]) for s in before}
        assert cluster_view(local) == reference_view(local, expected)
        values_live = sum(v[0] for v in cluster_view(local).values())
        assert values_live + lost == total(before) + total(after)
    finally:
        local.stop()


def test_lost_handoff_replies_are_retried_and_nothing_is_applied_twice(tmp_path: Path) -> None:
    local = LocalShards(tmp_path, SPEC, streams(), 2)
    with HandoffReplyDropper(local, count=4, drop=3) as proxy:
        local.peer_base_port = proxy.base_port
        try:
            local.start_all()

            def grow() -> None:
                local.reshard(3)

            sender, emitted = asyncio.run(drive(local, FEATURES, 120, {40: grow}))
            local.wait_settled()
            assert proxy.dropped == 3 and proxy.forwarded_handoffs > 3
            logs = "".join(local.log(k) for k in range(3))
            assert ": duplicate" in logs  # a retried push, answered from the generation check
            assert_exactly_once(local, sender, emitted)
        finally:
            local.stop()
