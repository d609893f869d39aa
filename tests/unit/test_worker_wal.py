"""Write-ahead log: replay, torn tails, damage, segment rotation and truncation."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftwarden.drift_worker.wal import WalError, WriteAheadLog


def records(wal: WriteAheadLog, after: int = 0) -> list[tuple[int, int, bytes]]:
    return list(wal.replay(after))


@pytest.mark.parametrize("policy", ["always", "interval", "never"])
def test_append_replay_and_reopen_continue_the_lsn(tmp_path: Path, policy: str) -> None:
    wal = WriteAheadLog(tmp_path, fsync=policy, segment_bytes=200)
    lsns = [wal.append(i % 3, f"payload-{i}".encode() * (i + 1)) for i in range(20)]
    assert lsns == list(range(1, 21))
    wal.sync(lsns[-1])
    assert wal.durable_lsn >= 20
    assert len(wal.segments()) > 1  # rotated
    wal.close()
    again = WriteAheadLog(tmp_path, fsync=policy, segment_bytes=200)
    got = records(again)
    assert [r[0] for r in got] == lsns
    assert got[4] == (5, 4 % 3, b"payload-4" * 5)
    assert again.append(1, b"next") == 21
    assert [r[0] for r in records(again, after=18)] == [19, 20, 21]
    again.close()


def test_torn_tail_is_cut_off_and_writing_goes_on(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never")
    for i in range(5):
        wal.append(1, b"x" * 100 + bytes([i]))
    wal.close()
    seg = wal.segments()[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-40])  # the last record was half written when the power went
    again = WriteAheadLog(tmp_path, fsync="never")
    assert [r[0] for r in records(again)] == [1, 2, 3, 4]
    assert again.append(1, b"y") == 5
    assert records(again)[-1] == (5, 1, b"y")


def test_flipped_byte_in_the_last_complete_record_refuses_to_start(tmp_path: Path) -> None:
    """A complete record with a bad checksum is damage, not a torn write: it may be acknowledged."""
    wal = WriteAheadLog(tmp_path, fsync="never")
    for _ in range(3):
        wal.append(1, b"abcdef" * 10)
    wal.close()
    seg = wal.segments()[-1]
    data = bytearray(seg.read_bytes())
    last_record_at = 2 * (len(data) // 3)
    data[-5] ^= 0xFF
    seg.write_bytes(bytes(data))
    with pytest.raises(
        WalError, match=f"{seg.name} is damaged at offset {last_record_at} .*truncate -s"
    ):
        WriteAheadLog(tmp_path, fsync="never")
    assert seg.read_bytes() == bytes(data)  # nothing was cut


def test_flipped_byte_mid_log_names_the_file_offset_and_the_records_behind_it(
    tmp_path: Path,
) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never")
    for _ in range(5):
        wal.append(1, b"abcdef" * 10)
    wal.close()
    seg = wal.segments()[-1]
    data = bytearray(seg.read_bytes())
    size = len(data) // 5
    data[size + 30] ^= 0x01  # inside record 2 of 5
    seg.write_bytes(bytes(data))
    with pytest.raises(WalError, match=f"offset {size} .*lsn 3\\) follows at offset {2 * size}"):
        WriteAheadLog(tmp_path, fsync="never")


def test_a_damaged_length_field_of_the_last_record_is_not_taken_for_a_torn_write(
    tmp_path: Path,
) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never")
    for _ in range(3):
        wal.append(1, b"abcdef" * 10)
    wal.close()
    seg = wal.segments()[-1]
    data = bytearray(seg.read_bytes())
    data[2 * (len(data) // 3) + 1] ^= 0x10  # the length now points past the end of the file
    seg.write_bytes(bytes(data))
    with pytest.raises(WalError, match="fails its checksum"):
        WriteAheadLog(tmp_path, fsync="never")


@pytest.mark.parametrize("zeroed_blocks", [1, 3])
def test_a_last_record_ending_in_unwritten_blocks_is_a_torn_write(
    tmp_path: Path, zeroed_blocks: int
) -> None:
    """Power loss after the size grew but before the data blocks were written: zeros."""
    wal = WriteAheadLog(tmp_path, fsync="never")
    wal.append(1, b"kept")
    wal.append(1, bytes(range(256)) * 8 * zeroed_blocks)  # 2 KiB per block count
    wal.close()
    seg = wal.segments()[-1]
    data = bytearray(seg.read_bytes())
    cut = len(data) - 512 * zeroed_blocks
    cut -= cut % 512
    data[cut:] = bytes(len(data) - cut)
    seg.write_bytes(bytes(data))
    again = WriteAheadLog(tmp_path, fsync="never")
    assert [p for _, _, p in records(again)] == [b"kept"]
    assert again.append(1, b"next") == 2


def test_a_file_extended_with_zeros_is_cut_back(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never")
    wal.append(1, b"a" * 100)
    wal.close()
    seg = wal.segments()[-1]
    seg.write_bytes(seg.read_bytes() + bytes(4096))
    assert [lsn for lsn, _, _ in records(WriteAheadLog(tmp_path, fsync="never"))] == [1]


def test_damage_in_an_older_segment_is_an_error_that_says_what_to_do(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never", segment_bytes=100)
    for _ in range(10):
        wal.append(1, b"z" * 60)
    wal.close()
    first = wal.segments()[0]
    data = bytearray(first.read_bytes())
    data[20] ^= 0xFF
    first.write_bytes(bytes(data))
    with pytest.raises(WalError, match=f"{first.name} is damaged at offset .*Restore"):
        records(WriteAheadLog(tmp_path, fsync="never", segment_bytes=100))


def test_truncate_before_keeps_what_replay_after_needs(tmp_path: Path) -> None:
    wal = WriteAheadLog(tmp_path, fsync="never", segment_bytes=100)
    for _ in range(12):
        wal.append(1, b"q" * 60)
    before = len(wal.segments())
    removed = wal.truncate_before(8)
    assert removed > 0 and len(wal.segments()) == before - removed
    assert [r[0] for r in records(wal, after=7)] == [8, 9, 10, 11, 12]


def test_bad_policy_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="always, interval or never"):
        WriteAheadLog(tmp_path, fsync="sometimes")  # type: ignore[arg-type]


def test_a_failed_write_leaves_no_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    wal = WriteAheadLog(tmp_path, fsync="never")
    wal.append(1, b"first")
    real_write = os.write
    calls = {"n": 0}

    def flaky(fd: int, data: bytes) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:7])  # part of the frame lands ...
        raise OSError(28, "No space left on device")  # ... then the disk is full

    monkeypatch.setattr(os, "write", flaky)
    with pytest.raises(OSError, match="No space"):
        wal.append(1, b"second" * 10)
    monkeypatch.setattr(os, "write", real_write)
    assert wal.append(1, b"third") == 2
    wal.close()
    assert [(lsn, p) for lsn, _, p in records(WriteAheadLog(tmp_path, fsync="never"))] == [
        (1, b"first"),
        (2, b"third"),
    ]


@settings(max_examples=25, deadline=None)
@given(
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=25),
    cut=st.floats(0, 1),
    segment_bytes=st.sampled_from([64, 512, 1 << 20]),
)
def test_any_cut_of_the_newest_segment_replays_to_a_prefix(
    payloads: list[bytes], cut: float, segment_bytes: int
) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        wal = WriteAheadLog(d, fsync="never", segment_bytes=segment_bytes)
        for p in payloads:
            wal.append(7, p)
        wal.close()
        newest = wal.segments()[-1]
        in_older_segments = int(newest.stem.split("-")[1]) - 1
        data = newest.read_bytes()
        newest.write_bytes(data[: int(len(data) * cut)])
        again = WriteAheadLog(d, fsync="never", segment_bytes=segment_bytes)
        got = [p for _, _, p in again.replay()]
        assert got == payloads[: len(got)]  # a prefix, never a gap
        assert len(got) >= in_older_segments  # only the newest segment's tail can go
        if cut == 1.0:
            assert got == payloads
        assert again.append(7, b"after") == len(got) + 1
