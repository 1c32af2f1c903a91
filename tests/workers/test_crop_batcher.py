"""CropBatcher: many videos' crops into few model calls, results back to the right video."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from workers.crop_batcher import CropBatcher


def crops_of(video: int, n: int) -> np.ndarray:
    """n fake crops whose first pixel encodes (video, index), so scores can be traced back."""
    out = np.zeros((n, 4, 4, 3), dtype=np.uint8)
    out[:, 0, 0, 0] = video
    out[:, 0, 0, 1] = np.arange(n)
    return out


def traceable_score(batch: np.ndarray) -> np.ndarray:
    return (batch[:, 0, 0, 0].astype(np.float32) * 1000 + batch[:, 0, 0, 1]) / 1e6


def test_videos_share_batches_and_get_their_own_scores():
    calls: list[int] = []

    def score(batch):
        calls.append(len(batch))
        return traceable_score(batch)

    async def main():
        batcher = CropBatcher(score, max_batch=8, max_wait_s=0.05)
        sizes = [3, 5, 11, 1]
        results = await asyncio.gather(*(batcher.score(crops_of(v, n)) for v, n in enumerate(sizes)))
        return sizes, results

    sizes, results = asyncio.run(main())
    for v, (n, got) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_allclose(got, traceable_score(crops_of(v, n)))
    assert sum(calls) == sum(sizes) and max(calls) <= 8
    assert len(calls) == 3  # 20 crops in batches of at most 8, a video split across batches


def test_a_lone_video_waits_at_most_the_batch_wait():
    async def main():
        batcher = CropBatcher(traceable_score, max_batch=64, max_wait_s=0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        await batcher.score(crops_of(1, 2))
        return loop.time() - start, batcher.batches

    waited, batches = asyncio.run(main())
    assert batches == 1 and 0.04 <= waited < 2.0


def test_empty_request_needs_no_model_call():
    async def main():
        batcher = CropBatcher(lambda b: pytest.fail("model called"), max_batch=4, max_wait_s=0.01)
        return await batcher.score(crops_of(0, 0))

    assert asyncio.run(main()).shape == (0,)


def test_a_failing_batch_fails_only_the_videos_in_it():
    def score(batch):
        if (batch[:, 0, 0, 0] == 7).any():
            msg = "model broke on video 7"
            raise RuntimeError(msg)
        return traceable_score(batch)

    async def main():
        batcher = CropBatcher(score, max_batch=4, max_wait_s=0.01)
        bad = asyncio.create_task(batcher.score(crops_of(7, 4)))
        await asyncio.sleep(0)
        good = asyncio.create_task(batcher.score(crops_of(2, 4)))
        return await asyncio.gather(bad, good, return_exceptions=True), batcher.pending_items

    (bad, good), pending = asyncio.run(main())
    assert isinstance(bad, RuntimeError) and "video 7" in str(bad)
    np.testing.assert_allclose(good, traceable_score(crops_of(2, 4)))
    assert pending == 0
