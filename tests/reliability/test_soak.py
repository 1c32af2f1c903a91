"""A bounded soak: 200 tiny videos published as fast as the embedded broker takes them.

Memory (RSS) of every stage worker is sampled after a warm-up and again after the
200 videos; growth must stay within ``RSS_GROWTH_BOUND_MIB`` per worker. The object
store must not spill, and every video must have its verdict, announced once, with
offsets committed to the end. Two source files (64x64, 2 frames: one face, one
without) stand behind 220 IDs through symlinks inside the video root.
"""

from __future__ import annotations

import time

import cv2
import pytest
from ray._private.internal_api import get_memory_info_reply, get_state_from_address

from pipeline.verdict_store import VerdictStore
from tests import video_factory as vf
from tests.reliability.conftest import link_videos
from tests.reliability.stream_harness import (
    actor_pid,
    assert_stream_invariants,
    publish,
    rss_mib,
    run_until,
    stored_count,
    stream_config,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]

N_WARMUP = 20
N_SOAK = 200
# Per worker, between the sample after warm-up and the one after the soak. A leak of
# one 64x64 frame set per video would add ~5 MiB over 200 videos; a leak of one
# decoded video's crops (2 x 256x256x3) ~75 MiB; allocator noise stays well below.
RSS_GROWTH_BOUND_MIB = 48.0


def _store_stats(ray_address: str):
    return get_memory_info_reply(get_state_from_address(ray_address)).store_stats


def test_soak_200_tiny_videos_memory_stays_flat_no_spill_every_verdict(
    kafka_config, redis_config, ray_address, video_root
):
    folder = video_root / "soak"
    folder.mkdir()
    face = cv2.resize(vf.load_photo("astronaut")[0:300, 100:400], (64, 64), interpolation=cv2.INTER_AREA)
    vf._encode_frames(folder / "face.mp4", iter([face, face]), (64, 64), 2)
    vf.make_no_face_video(folder / "empty.mp4", n_frames=2, size=(64, 64))
    ids = link_videos(video_root, "soak", N_WARMUP + N_SOAK, ["soak/face.mp4", "soak/empty.mp4"])
    warmup, soak = ids[:N_WARMUP], ids[N_WARMUP:]
    cfg = stream_config(
        kafka_config.model_copy(update={"partitions": 4}), redis_config, ray_address, video_root,
        sampling={"num_frames": 2, "max_side": 64},
        stream={"decoders": 2, "max_in_flight": 8, "batch_size": 32, "batch_wait_ms": 50},
    )  # fmt: skip
    store = VerdictStore(cfg.redis)
    spilled_before = _store_stats(ray_address).spilled_bytes_total
    publish(cfg.kafka, warmup)
    m: dict = {}

    def on_progress(_totals, topology) -> None:
        if "rss_before" not in m and stored_count(store, warmup) == N_WARMUP:
            m["pids"] = {f"{stage}-{i}": actor_pid(h) for stage, pool in
                         (("decoder", topology.decoders), ("face", topology.faces), ("detector", topology.detectors))
                         for i, h in enumerate(pool)}  # fmt: skip
            m["rss_before"] = rss_mib(m["pids"].values())
            m["t0"] = time.monotonic()
            publish(cfg.kafka, soak)  # one producer, flushed once: as fast as the broker takes them
            m["published_s"] = time.monotonic() - m["t0"]
        elif "rss_before" in m and "rss_after" not in m and stored_count(store, soak) == N_SOAK:
            m["soak_s"] = time.monotonic() - m["t0"]
            m["rss_after"] = rss_mib(m["pids"].values())
            m["store_used"] = _store_stats(ray_address).object_store_bytes_used

    run_until(cfg, lambda: "rss_after" in m, timeout_s=360, on_progress=on_progress)

    spilled = _store_stats(ray_address).spilled_bytes_total - spilled_before
    growth = {name: m["rss_after"][pid] - m["rss_before"][pid] for name, pid in m["pids"].items()}
    table = ", ".join(f"{name} {m['rss_before'][pid]:.0f}->{m['rss_after'][pid]:.0f} MiB"
                      for name, pid in m["pids"].items())  # fmt: skip
    print(f"\nsoak: {N_SOAK} videos published in {m['published_s'] * 1000:.0f} ms, all verdicts after "
          f"{m['soak_s']:.0f}s ({N_SOAK / m['soak_s']:.1f}/s); RSS {table}; object store in use "
          f"{m['store_used'] / 2**20:.1f} MiB, spilled {spilled} B")  # fmt: skip
    assert spilled == 0
    assert all(g <= RSS_GROWTH_BOUND_MIB for g in growth.values()), growth
    statuses = {store.get(v).status for v in soak}
    assert statuses == {"done", "no_face"}, statuses
    assert_stream_invariants(cfg, store, ids)
