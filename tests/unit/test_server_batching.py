"""Micro-batching: bounded batches, order and slicing kept, errors isolated, no idle wait."""

from __future__ import annotations

import asyncio
import re
import threading

import numpy as np
import pandas as pd
import pytest

from driftwarden.model_server.batching import IdFactory, MicroBatcher
from driftwarden.model_server.validation import PREDICTION_ID_PATTERN

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


class RecordingModel:
    """Doubles column ``x``; remembers every batch size; can block or fail on demand."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, frame: pd.DataFrame):
        self.gate.wait(5)
        self.sizes.append(len(frame))
        x = frame["x"].to_numpy(np.float64)
        if (x < 0).any():
            raise ValueError("negative x")
        return x * 2, None


def cols(*values: float) -> dict[str, list[float]]:
    return {"x": list(values)}


async def started(model, **kwargs) -> MicroBatcher:
    batcher = MicroBatcher(model, ["x"], **kwargs)
    await batcher.start()
    return batcher


async def test_concurrent_requests_share_calls_and_get_their_own_slices():
    model = RecordingModel()
    model.gate.clear()  # hold the model so requests pile up behind the first call
    batcher = await started(model, max_rows=8, max_wait=0.0)
    requests = [cols(*range(k * 10, k * 10 + n)) for k, n in enumerate([1, 3, 2, 1, 4, 1, 2])]
    tasks = [asyncio.create_task(batcher.submit(c, len(c["x"]))) for c in requests]
    await asyncio.sleep(0.05)
    model.gate.set()
    results = await asyncio.gather(*tasks)
    await batcher.stop()
    for c, (ids, preds) in zip(requests, results, strict=False):
        assert preds.tolist() == [2 * v for v in c["x"]]
        assert len(ids) == len(c["x"])
    assert max(model.sizes) <= 8 and sum(model.sizes) == 14
    assert len(model.sizes) < len(requests)
    all_ids = [i for ids, _ in results for i in ids]
    assert len(set(all_ids)) == 14


async def test_oversized_request_runs_alone_and_order_is_kept():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(model, max_rows=4, max_wait=0.0)
    tasks = [
        asyncio.create_task(batcher.submit(cols(1), 1)),
        asyncio.create_task(batcher.submit(cols(*range(10)), 10)),
        asyncio.create_task(batcher.submit(cols(5), 1)),
    ]
    await asyncio.sleep(0.05)
    model.gate.set()
    results = await asyncio.gather(*tasks)
    await batcher.stop()
    assert model.sizes == [1, 10, 1]
    assert results[1][1].tolist() == [2 * v for v in range(10)]
    counters = [int(i.split("-")[1], 16) for ids, _ in results for i in ids]
    assert counters == sorted(counters)  # ids follow arrival order


async def test_a_lone_client_never_waits_for_company():
    model = RecordingModel()
    batcher = await started(model, max_rows=64, max_wait=30.0)  # a wait would time out
    for value in range(5):
        _, preds = await asyncio.wait_for(batcher.submit(cols(value), 1), timeout=5)
        assert preds.tolist() == [2 * value]
    await batcher.stop()
    assert model.sizes == [1] * 5


async def test_under_concurrency_the_bounded_wait_gathers_stragglers():
    model = RecordingModel()
    batcher = await started(model, max_rows=64, max_wait=0.05)
    await asyncio.gather(*(batcher.submit(cols(v), 1) for v in range(3)))  # concurrency seen
    model.sizes.clear()

    async def late(v: float, delay: float):
        await asyncio.sleep(delay)
        return await batcher.submit(cols(v), 1)

    await asyncio.gather(late(1, 0.0), late(2, 0.01), late(3, 0.02))
    await batcher.stop()
    assert model.sizes == [3]


async def test_a_model_error_reaches_every_request_of_the_batch_and_serving_goes_on():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(model, max_rows=8, max_wait=0.0)
    first = asyncio.create_task(batcher.submit(cols(1), 1))
    await asyncio.sleep(0.02)
    bad = asyncio.create_task(batcher.submit(cols(-1), 1))
    mate = asyncio.create_task(batcher.submit(cols(2), 1))
    await asyncio.sleep(0.02)
    model.gate.set()
    assert (await first)[1].tolist() == [2]
    for task in (bad, mate):
        with pytest.raises(ValueError, match="negative x"):
            await task
    assert (await batcher.submit(cols(4), 1))[1].tolist() == [8]
    assert batcher.running
    await batcher.stop()


async def test_cancelled_requests_are_skipped():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(model, max_rows=8, max_wait=0.0)
    first = asyncio.create_task(batcher.submit(cols(1), 1))
    await asyncio.sleep(0.02)
    gone = asyncio.create_task(batcher.submit(cols(7), 1))
    kept = asyncio.create_task(batcher.submit(cols(3), 1))
    await asyncio.sleep(0.01)
    gone.cancel()
    model.gate.set()
    await first
    assert (await kept)[1].tolist() == [6]
    await batcher.stop()
    assert model.sizes == [1, 1]


async def test_stop_answers_what_is_queued_then_refuses():
    model = RecordingModel()
    model.gate.clear()
    batcher = await started(model, max_rows=2, max_wait=0.0)
    tasks = [asyncio.create_task(batcher.submit(cols(v), 1)) for v in range(5)]
    await asyncio.sleep(0.02)
    model.gate.set()
    await batcher.stop()
    assert [t.result()[1].tolist() for t in tasks] == [[2 * v] for v in range(5)]
    with pytest.raises(RuntimeError, match="not loaded"):
        await batcher.submit(cols(1), 1)


async def test_the_hook_sees_each_batch_after_its_answers():
    seen = []
    model = RecordingModel()
    batcher = MicroBatcher(model, ["x"], on_batch=lambda c, out, n: seen.append((c, out, n)))
    await batcher.start()
    ids, _ = await batcher.submit(cols(1, 2), 2)
    await asyncio.sleep(0)
    await batcher.stop()
    ((columns, out, requests),) = seen
    assert columns == cols(1, 2) and out.ids == ids and requests == 1
    assert out.predictions.tolist() == [2, 4] and out.embeddings is None


def test_ids_are_unique_per_process_and_match_the_feedback_pattern():
    a, b = IdFactory(), IdFactory()
    ids = a.take(1000) + b.take(1000)
    assert len(set(ids)) == 2000
    assert all(re.match(PREDICTION_ID_PATTERN, i) for i in ids)


async def test_stop_fails_what_a_hung_model_never_answers():
    model = RecordingModel()
    model.gate.clear()  # the first call blocks (up to 5 s)
    batcher = await started(model, max_rows=1, max_wait=0.0)
    first = asyncio.create_task(batcher.submit(cols(1), 1))
    queued = asyncio.create_task(batcher.submit(cols(2), 1))
    await asyncio.sleep(0.02)
    await batcher.stop(timeout=0.1)
    for task in (first, queued):
        with pytest.raises(RuntimeError, match="stopped before answering"):
            await task
    model.gate.set()
