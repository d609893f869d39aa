"""Fail-stop durability of a shard: storage errors, damaged files, wrong volumes, late handoffs."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftwarden.common.sharding import ShardMap
from driftwarden.common.spec import DetectorConfig, DetectorType
from driftwarden.detectors.factory import make_detector
from driftwarden.drift_worker import snapshot
from driftwarden.drift_worker.app import WorkerService, create_app
from driftwarden.drift_worker.datadir import DataDirError
from driftwarden.drift_worker.fileio import FileIO
from driftwarden.drift_worker.plan import MonitorPlan
from driftwarden.drift_worker.shard import AWAITING, LIVE, Refusal, ShardWorker
from driftwarden.drift_worker.streams import StreamSpec
from driftwarden.drift_worker.wal import WalError, WalFailed, WriteAheadLog
from driftwarden.ingest import wire

with warnings.catch_warnings():  # starlette 1.x nudges towards httpx2; the client works the same
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

MONITOR = "ns/durable"


def factory(stream: StreamSpec) -> dict[str, Any]:
    config = DetectorConfig(type=DetectorType.KS, alpha=0.01)
    return {
        "ks": make_detector(
            config, reference=stream.reference, kind="numeric", window=40, evaluate_every=10
        )
    }


def make_plan(n: int = 4) -> MonitorPlan:
    rng = np.random.default_rng(0)
    streams = {
        f"feature:f{i}": StreamSpec(f"feature:f{i}", "numeric", rng.normal(size=100))
        for i in range(n)
    }
    return MonitorPlan(MONITOR, streams, factory)


def batch(seq: int, streams: list[str], n: int = 10, sender: str = "s") -> bytes:
    rng = np.random.default_rng(seq)
    return wire.encode(
        wire.Batch(
            sender,
            1,
            [
                wire.Segment(s, seq, "values", float(seq), {"v": rng.normal(size=n)})
                for s in streams
            ],
        )
    )


class Faults(FileIO):
    """The real calls, with switches: fail fsync / write with an errno, or make open fail."""

    def __init__(self) -> None:
        self.fsync_error: int | None = None
        self.write_error: int | None = None
        self.open_error: int | None = None
        self.replace_error: int | None = None

    def fsync(self, fd: int) -> None:
        if self.fsync_error:
            raise OSError(self.fsync_error, "injected fsync error")
        super().fsync(fd)

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.write_error:
            if len(data) > 8:  # part lands, then the volume is full
                self.write_error, code = None, self.write_error
                super().write(fd, data[:8])
                self.write_error = code
            raise OSError(self.write_error, "injected write error")
        return super().write(fd, data)

    def open(self, path: Any, flags: int, mode: int = 0o644) -> int:
        if self.open_error:
            raise OSError(self.open_error, "injected open error")
        return super().open(path, flags, mode)

    def replace(self, src: Any, dst: Any) -> None:
        if self.replace_error:
            raise OSError(self.replace_error, "injected rename error")
        super().replace(src, dst)


M1 = ShardMap(monitor=MONITOR, epoch=1, shards=1)
ALL = [f"feature:f{i}" for i in range(4)]


# ---------------------------------------------------------------------- WAL


def test_a_failed_fsync_fails_the_log_for_good(tmp_path: Path) -> None:
    io = Faults()
    wal = WriteAheadLog(tmp_path, fsync="always", io=io)
    lsn = wal.append(1, b"a")
    io.fsync_error = errno.EIO
    with pytest.raises(WalFailed, match="acknowledges nothing more"):
        wal.sync(lsn)
    io.fsync_error = None  # a later fsync "succeeding" proves nothing (the pages may be gone)
    with pytest.raises(WalFailed):
        wal.sync(lsn)
    with pytest.raises(WalFailed):
        wal.append(1, b"b")
    assert wal.durable_lsn == 0 and wal.fsync_errors == 1
    wal.close()  # closes without trying to fsync again


def test_a_full_volume_refuses_the_write_and_the_log_works_again_when_space_returns(
    tmp_path: Path,
) -> None:
    io = Faults()
    wal = WriteAheadLog(tmp_path, fsync="always", io=io)
    wal.append(1, b"first")
    io.write_error = errno.ENOSPC
    for _ in range(3):
        with pytest.raises(OSError, match="injected write error"):
            wal.append(1, b"second" * 20)
    assert wal.write_errors == 3 and "injected write error" in (wal.last_error or "")
    io.write_error = None
    assert wal.append(1, b"third") == 2
    wal.sync()
    wal.close()
    assert [p for _, _, p in WriteAheadLog(tmp_path).replay()] == [b"first", b"third"]


def test_a_segment_that_cannot_be_created_leaves_the_log_as_it_was(tmp_path: Path) -> None:
    io = Faults()
    wal = WriteAheadLog(tmp_path, fsync="never", segment_bytes=64, io=io)
    wal.append(1, b"x" * 70)  # the segment is full after this record
    io.open_error = errno.ENOSPC
    with pytest.raises(OSError):
        wal.append(1, b"y")
    io.open_error = None
    assert wal.append(1, b"y") == 2
    wal.close()
    assert [lsn for lsn, _, _ in WriteAheadLog(tmp_path).replay()] == [1, 2]


def test_segments_left_by_a_failed_process_are_fsynced_before_use(tmp_path: Path) -> None:
    """Records whose fsync failed may survive in the page cache: fsync them at start-up."""
    io = Faults()
    wal = WriteAheadLog(tmp_path, fsync="always", io=io)
    wal.append(1, b"written, fsync failed")
    io.fsync_error = errno.EIO
    with pytest.raises(WalFailed):
        wal.sync()
    wal.close()

    class Recording(FileIO):
        def __init__(self) -> None:
            self.synced: list[str] = []

        def open(self, path: Any, flags: int, mode: int = 0o644) -> int:
            fd = super().open(path, flags, mode)
            self.synced.append(f"open {Path(path).name} {fd}")
            return fd

        def fsync(self, fd: int) -> None:
            self.synced.append(f"fsync {fd}")
            super().fsync(fd)

    rec = Recording()
    again = WriteAheadLog(tmp_path, fsync="always", io=rec)
    seg_fd = next(e.split()[2] for e in rec.synced if e.startswith("open wal-"))
    assert f"fsync {seg_fd}" in rec.synced
    assert [p for _, _, p in again.replay()] == [b"written, fsync failed"]


def test_replay_refuses_a_gap_between_the_snapshot_and_the_log(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never", segment_bytes=64)
    for _ in range(6):
        wal.append(1, b"z" * 70)
    wal.truncate_before(4)
    assert [lsn for lsn, _, _ in wal.replay(3)] == [4, 5, 6]
    with pytest.raises(WalError, match="records 2..3 are missing"):
        list(wal.replay(1))


def test_lsns_never_go_backwards_behind_a_snapshot(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never")
    wal.append(1, b"a")
    wal.continue_after(41)
    assert wal.append(1, b"b") == 42
    wal.close()
    again = WriteAheadLog(tmp_path)
    assert again.next_lsn == 43
    assert [lsn for lsn, _, _ in again.replay(41)] == [42]


# ---------------------------------------------------------------------- shard: acks


def test_an_fsync_error_is_never_acknowledged_nor_are_retries_of_the_batch(
    tmp_path: Path,
) -> None:
    io = Faults()
    worker = ShardWorker(make_plan(), 0, shard_map=M1, data_dir=tmp_path, io=io)
    body = batch(1, ALL)
    result = worker.ingest(body)  # logged and applied; the caller now waits for the fsync
    io.fsync_error = errno.EIO
    with pytest.raises(OSError):
        worker.wal.sync(result.lsn)  # what the HTTP layer does before answering 200
    assert worker.storage_failed
    with pytest.raises(Refusal) as err:  # the sender's retry: a duplicate, still not durable
        worker.ingest(body)
    assert err.value.status == 503 and err.value.code == "storage_failed"
    with pytest.raises(Refusal) as err:
        worker.ingest(batch(2, ALL))
    assert err.value.status == 503
    assert worker.outgoing() == []  # nothing is handed on from a state that may not be durable
    with pytest.raises(OSError):
        worker.take_snapshot()  # nor snapshotted
    assert worker.storage_errors()["wal_fsync"] == 1
    worker.close()


def test_a_batch_of_duplicates_waits_for_the_original_to_be_durable(tmp_path: Path) -> None:
    worker = ShardWorker(make_plan(), 0, shard_map=M1, data_dir=tmp_path, fsync="always")
    first = worker.ingest(batch(1, ALL))
    again = worker.ingest(batch(1, ALL))
    assert again.values == 0 and again.duplicates == 4
    assert again.lsn is not None and again.lsn >= first.lsn  # type: ignore[operator]
    worker.close()


def test_a_full_volume_refuses_batches_with_503_and_takes_them_when_space_returns(
    tmp_path: Path,
) -> None:
    io = Faults()
    plan = make_plan()
    worker = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path, io=io)
    worker.ingest(batch(1, ALL))
    before = worker.fingerprint()
    io.write_error = errno.ENOSPC
    with pytest.raises(Refusal) as err:
        worker.ingest(batch(2, ALL))
    assert err.value.status == 503 and err.value.code == "storage_error"
    assert "check the volume" in err.value.detail
    assert worker.fingerprint() == before  # nothing applied
    assert worker.storage_errors()["wal_write"] == 1
    io.write_error = None
    assert worker.ingest(batch(2, ALL)).values == 40
    worker.wal.sync()
    worker.close()
    again = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)
    assert again.fingerprint() == worker.fingerprint()
    again.close()


# ---------------------------------------------------------------------- shard: recovery


def test_mid_log_corruption_refuses_to_start_naming_file_and_offset(tmp_path: Path) -> None:
    plan = make_plan()
    worker = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)
    sizes = []
    for seq in range(1, 6):
        worker.ingest(batch(seq, ALL))
        sizes.append(worker.wal.segments()[-1].stat().st_size)
    worker.close()
    seg = worker.wal.segments()[-1]
    data = bytearray(seg.read_bytes())
    data[sizes[1] + 40] ^= 0x04  # inside the third batch: two more acknowledged ones follow
    seg.write_bytes(bytes(data))
    with pytest.raises(WalError, match=f"{seg.name} is damaged at offset {sizes[1]} .*follows"):
        ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)


def _two_snapshots(tmp_path: Path) -> tuple[MonitorPlan, dict[str, Any]]:
    plan = make_plan()
    worker = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path, wal_segment_bytes=2048)
    for seq in range(1, 9):
        worker.ingest(batch(seq, ALL))
        if seq in (3, 6):
            worker.take_snapshot()
    worker.wal.sync()
    fp = worker.fingerprint()
    worker.close()
    return plan, fp


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_newest_snapshot_falls_back_to_the_older_one(tmp_path: Path, damage: str) -> None:
    plan, expected = _two_snapshots(tmp_path)
    newest = snapshot.snapshots(tmp_path / "snapshots")[0]
    data = bytearray(newest.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x20
    else:
        del data[len(data) // 2 :]
    newest.write_bytes(bytes(data))
    restored = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)
    assert restored.fingerprint() == expected
    restored.close()


def test_no_usable_snapshot_and_a_truncated_log_refuses_to_start(tmp_path: Path) -> None:
    plan, _ = _two_snapshots(tmp_path)
    for path in snapshot.snapshots(tmp_path / "snapshots"):
        data = bytearray(path.read_bytes())
        data[-3] ^= 0x01
        path.write_bytes(bytes(data))
    with pytest.raises(WalError, match="are missing.*damaged snapshots: snapshot-.*sha256"):
        ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)


def test_a_log_behind_its_snapshot_refuses_to_start(tmp_path: Path) -> None:
    plan = make_plan()
    worker = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)
    worker.ingest(batch(1, ALL))
    worker.take_snapshot()
    worker.close()
    for seg in worker.wal.segments():
        seg.unlink()  # the log lost what the snapshot covers (and whatever came after)
    with pytest.raises(WalError, match="behind the snapshot"):
        ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)


def test_a_failed_snapshot_leaves_no_temporary_file_and_is_counted(tmp_path: Path) -> None:
    io = Faults()
    plan = make_plan()
    worker = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path, io=io)
    worker.ingest(batch(1, ALL))
    io.replace_error = errno.ENOSPC
    with pytest.raises(OSError):
        worker.take_snapshot()
    assert list((tmp_path / "snapshots").iterdir()) == []
    assert worker.storage_errors()["snapshot"] == 1
    io.replace_error = None
    assert worker.take_snapshot() is not None
    worker.close()


def test_snapshots_before_checksums_still_load(tmp_path: Path) -> None:
    plan = make_plan()
    worker = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)
    worker.ingest(batch(1, ALL))
    path = worker.take_snapshot()
    worker.close()
    assert path is not None
    lsn, state = snapshot.decode(path.read_bytes())
    path.write_text(json.dumps({"format": 1, "lsn": lsn, "state": state}))
    restored = ShardWorker(plan, 0, shard_map=M1, data_dir=tmp_path)
    assert restored.fingerprint() == worker.fingerprint()
    restored.close()


# ---------------------------------------------------------------------- data directory


def test_a_second_process_on_the_same_data_directory_is_refused(tmp_path: Path) -> None:
    worker = ShardWorker(make_plan(), 0, shard_map=M1, data_dir=tmp_path)
    script = textwrap.dedent(
        f"""
        from driftwarden.drift_worker.datadir import DataDirLock, DataDirError
        try:
            DataDirLock(__import__("pathlib").Path({str(tmp_path)!r}))
        except DataDirError as exc:
            print(exc)
        else:
            print("LOCKED")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "is in use by another process (pid" in out and "LOCKED" not in out
    worker.close()
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert "LOCKED" in out  # released on close (and by the kernel when a process dies)


def test_a_volume_of_another_ordinal_is_refused(tmp_path: Path) -> None:
    plan = make_plan()
    m = ShardMap(monitor=MONITOR, epoch=1, shards=2)
    ShardWorker(plan, 1, shard_map=m, data_dir=tmp_path).close()
    with pytest.raises(DataDirError, match="holds the state of shard 1 .* this is shard 0"):
        ShardWorker(plan, 0, shard_map=m, data_dir=tmp_path)


def test_a_volume_from_before_identities_is_checked_by_its_snapshot(tmp_path: Path) -> None:
    plan = make_plan()
    m = ShardMap(monitor=MONITOR, epoch=1, shards=2)
    w = ShardWorker(plan, 1, shard_map=m, data_dir=tmp_path)
    w.take_snapshot()
    w.close()
    (tmp_path / "shard.json").unlink()
    with pytest.raises(DataDirError, match="shard 1 .* this is shard 0"):
        ShardWorker(plan, 0, shard_map=m, data_dir=tmp_path)


# ---------------------------------------------------------------------- handoffs


def _resharded() -> tuple[MonitorPlan, ShardMap, ShardWorker, ShardWorker, str]:
    plan = make_plan(8)
    m2 = M1.advance(2)
    old = ShardWorker(plan, 0, shard_map=M1, handoff_timeout_s=5, clock=lambda: 0.0)
    old.ingest(batch(1, list(plan.streams)))
    now = [0.0]
    new = ShardWorker(plan, 1, shard_map=m2, handoff_timeout_s=5, clock=lambda: now[0])
    new.now = now  # type: ignore[attr-defined]
    old.adopt_map(m2)
    stream = next(s for s, _, _ in old.outgoing())
    return plan, m2, old, new, stream


def test_a_handoff_after_the_timeout_never_overwrites_the_restarted_stream() -> None:
    _, _, old, new, stream = _resharded()
    assert new.status_of(stream) == AWAITING
    new.now[0] = 10.0  # type: ignore[attr-defined]
    assert stream in new.expire_awaiting()
    new.ingest(
        wire.encode(wire.Batch("s", 2, [wire.Segment(stream, 7, "values", 7.0, {"v": np.ones(5)})]))
    )
    live = new.fingerprint([stream])
    doc = old.handoff_payload(stream)
    with pytest.raises(Refusal) as err:
        new.receive_handoff(doc)
    assert err.value.status == 409 and err.value.code == "handoff_superseded"
    assert "started 'feature:" in err.value.detail and "empty at epoch 2" in err.value.detail
    assert new.fingerprint([stream]) == live and new.counters.handoffs_superseded == 1
    # the old owner drops its copy and counts what it held as lost (not silently)
    lost = old.handoff_superseded(stream, doc["generation"])
    assert lost == 10 and old.counters.lost_values == 10 and stream not in old.streams
    with pytest.raises(Refusal):  # and a retry of the late copy is refused again
        new.receive_handoff(doc)


def test_a_late_handoff_is_refused_after_a_restart_too(tmp_path: Path) -> None:
    plan = make_plan(8)
    m2 = M1.advance(2)
    old = ShardWorker(plan, 0, shard_map=M1)
    old.ingest(batch(1, list(plan.streams)))
    new = ShardWorker(plan, 1, shard_map=m2, data_dir=tmp_path, handoff_timeout_s=0)
    old.adopt_map(m2)
    stream = next(s for s, _, _ in old.outgoing())
    new.expire_awaiting()
    new.take_snapshot()
    new.close()
    restarted = ShardWorker(plan, 1, shard_map=m2, data_dir=tmp_path)
    with pytest.raises(Refusal) as err:
        restarted.receive_handoff(old.handoff_payload(stream))
    assert err.value.code == "handoff_superseded"
    restarted.close()


def test_a_forged_handoff_for_a_stream_that_never_moved_is_refused() -> None:
    plan = make_plan(8)
    m2 = M1.advance(2)
    a = ShardWorker(plan, 0, shard_map=m2)
    staying = next(s for s in plan.streams if m2.owner(s) == 0)
    b = ShardWorker(plan, 0, shard_map=M1)  # a state to forge from
    b.ingest(batch(1, list(plan.streams)))
    doc = {
        "monitor": MONITOR,
        "stream": staying,
        "generation": 0,
        "from": 1,
        "frozen_for": 2,
        "shard_map": m2.model_dump(mode="json"),
        "state": b.streams[staying].to_state(),
    }
    a.expire_awaiting(now=1e9)  # shard 0 holds what it owns: nothing awaited
    before = a.fingerprint([staying])
    with pytest.raises(Refusal) as err:
        a.receive_handoff(doc)
    assert err.value.status == 409
    assert a.fingerprint([staying]) == before


def test_a_handoff_aimed_at_the_wrong_shard_is_refused() -> None:
    plan, m2, old, new, stream = _resharded()
    staying = next(s for s in plan.streams if m2.owner(s) == 0)
    doc = old.handoff_payload(stream)
    doc = {**doc, "stream": staying, "state": old.streams[staying].to_state()}
    with pytest.raises(Refusal) as err:
        new.receive_handoff(doc)
    assert err.value.code == "not_awaited" and "goes to shard 0" in err.value.detail
    assert new.status_of(staying) is None
    assert new.receive_handoff(old.handoff_payload(stream)) == "installed"
    assert new.status_of(stream) == LIVE


# ---------------------------------------------------------------------- HTTP


def test_http_answers_503_while_the_log_is_not_durable_and_stops_the_shard(
    tmp_path: Path,
) -> None:
    io = Faults()
    m = ShardMap(monitor=MONITOR, epoch=1, shards=1)
    worker = ShardWorker(make_plan(), 0, shard_map=m, data_dir=tmp_path, io=io)
    stopped: list[bool] = []
    service = WorkerService(
        worker,
        peer_url_template="http://127.0.0.1:{port}",
        base_port=1,
        shutdown_drain_s=0.2,
        storage_failure_exit_s=0.0,
        on_fatal=lambda: stopped.append(True),
    )
    headers = {"content-type": wire.CONTENT_TYPE}
    with TestClient(create_app(service)) as client:
        assert client.post("/v1/ingest", content=batch(1, ALL), headers=headers).status_code == 200
        io.fsync_error = errno.EIO
        r = client.post("/v1/ingest", content=batch(2, ALL), headers=headers)
        assert r.status_code == 503 and r.json()["error"] == "storage_failed"
        io.fsync_error = None
        r = client.post("/v1/ingest", content=batch(2, ALL), headers=headers)  # the retry
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert client.get("/healthz").status_code == 503
        metrics = client.get("/metrics").text
        assert 'driftwarden_worker_storage_errors_total{monitor="durable",op="wal_fsync"' in (
            metrics
        )
        deadline = time.monotonic() + 60  # generous: shared machines can be slow
        while not stopped and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stopped and service.exit_code == 75
