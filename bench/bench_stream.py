"""End-to-end throughput: the Ray stream vs a naive one-video-at-a-time loop, same videos, same run.

Naive: in one process, for each video: decode (ffmpeg) -> faces (SCRFD + align) -> score
(CropScorer) -> aggregate. Stream: embedded Kafka + Redis + local Ray, `run_stream`, with 1 and
then 2 decoder/face actors. Both use the same model (default: the tiny random ViT, since the
comparison is about the pipeline; pass --arch ViT-L-14 to include the real model's cost).

Warm-up is excluded: each side first processes one warm-up video (model load, ONNX session,
consumer-group join) before the clock starts. Each configuration runs --repeats times on fresh
topics; the table shows medians. Prints a markdown table; --out writes it to a file.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "token")

from pipeline.config import (  # noqa: E402
    ClipguardConfig,
    FacesConfig,
    KafkaConfig,
    ModelConfig,
    RedisConfig,
    SamplingConfig,
    SourceConfig,
    StreamConfig,
)
from pipeline.contracts import VideoJob  # noqa: E402
from pipeline.embedded_services import embedded_services  # noqa: E402
from pipeline.kafka_publisher import JobPublisher, ensure_topic  # noqa: E402
from pipeline.runner import run_stream  # noqa: E402
from pipeline.verdict_store import VerdictStore  # noqa: E402
from tests import video_factory as vf  # noqa: E402
from training.model import CropScorer  # noqa: E402
from workers.aggregation import aggregate  # noqa: E402
from workers.detector import detector_config  # noqa: E402
from workers.face_cropper import FaceCropper  # noqa: E402
from workers.frame_decoder import FrameDecoder  # noqa: E402


def make_videos(root: Path, n: int) -> list[str]:
    photos = ["astronaut", "newton", "gauss"]
    ids = []
    for i in range(n + 1):  # +1 warm-up
        vid = f"v{i:03d}.mp4"
        vf.make_portrait_video(root / vid, photos[i % 3], n_frames=12, size=(640, 360))
        ids.append(vid)
    return ids


def naive(cfg: ClipguardConfig, ids: list[str]) -> dict:
    decoder = FrameDecoder(cfg.source, cfg.sampling)
    cropper = FaceCropper(cfg.faces)
    scorer = CropScorer.from_config(detector_config(cfg.model, cfg.stream.batch_size), cfg.model.checkpoint)
    stage = {"decode": 0.0, "faces": 0.0, "detect": 0.0}
    latencies = []

    def one(vid: str) -> dict[str, float]:
        t0 = time.perf_counter()
        d = decoder.decode(VideoJob(vid))
        t1 = time.perf_counter()
        crops = cropper.crop_video(vid, d.frames).crops
        t2 = time.perf_counter()
        if crops:
            import numpy as np

            aggregate(scorer.score(np.stack([c.image for c in crops])).tolist())
        t3 = time.perf_counter()
        return {"decode": t1 - t0, "faces": t2 - t1, "detect": t3 - t2}

    one(ids[0])  # warm-up
    start = time.perf_counter()
    for vid in ids[1:]:
        t = one(vid)
        latencies.append(sum(t.values()))
        for k, v in t.items():
            stage[k] += v
    wall = time.perf_counter() - start
    return {"wall": wall, "latencies": latencies, "stage": stage}


def stream(cfg: ClipguardConfig, ids: list[str], workers: int) -> dict:
    with embedded_services() as (kafka, redis):
        tag = uuid.uuid4().hex[:6]
        cfg = cfg.model_copy(
            update={
                "kafka": KafkaConfig(bootstrap=kafka.bootstrap, topic=f"bench-{tag}", group_id=f"bench-{tag}"),
                "redis": RedisConfig(url=redis.url, key_prefix=f"bench-{tag}"),
                "stream": cfg.stream.model_copy(update={"decoders": workers, "face_workers": workers}),
            }
        )
        ensure_topic(cfg.kafka)
        store = VerdictStore(cfg.redis)
        marks: dict[str, float] = {}

        def publish(vids: list[str]) -> None:
            pub = JobPublisher(cfg.kafka)
            for v in vids:
                pub.publish(v)
            pub.flush()
            pub.close()

        def on_ready(_live, _topology) -> None:
            publish(ids[:1])

        def stop_when(_totals) -> bool:
            if "start" not in marks:
                if store.get_raw(ids[0]):
                    marks["start"] = time.perf_counter()
                    publish(ids[1:])
                return False
            if all(store.get_raw(v) for v in ids[1:]):
                marks["end"] = time.perf_counter()
                return True
            return False

        run_stream(cfg, stop_when=stop_when, on_ready=on_ready, interval_s=0.1)
        verdicts = [store.get(v) for v in ids[1:]]
    stage = {"decode": 0.0, "faces": 0.0, "detect": 0.0}
    latencies = []
    for v in verdicts:
        for k in stage:
            stage[k] += v.timings_s.get(k, 0.0)
        latencies.append(v.timings_s["total"])
    return {"wall": marks["end"] - marks["start"], "latencies": latencies, "stage": stage}


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def row(name: str, runs: list[dict], n: int, workers: int, baseline: float | None) -> str:
    wall = statistics.median(r["wall"] for r in runs)
    lat = [x for r in runs for x in r["latencies"]]
    vps = n / wall
    util = {k: statistics.median(r["stage"][k] / r["wall"] for r in runs) / workers for k in ("decode", "faces")}
    det = statistics.median(r["stage"]["detect"] / r["wall"] for r in runs)
    ratio = f"{vps / baseline:.2f}x" if baseline else "1.00x"
    return (
        f"| {name} | {n} | {wall:.1f} | {vps:.2f} | {ratio} | {pct(lat, 50):.2f} | {pct(lat, 95):.2f} | "
        f"{util['decode']:.0%} | {util['faces']:.0%} | {det:.0%} |"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=12)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--arch", default="ViT-Tiny-test")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    root = Path(tempfile.mkdtemp(prefix="clipguard-bench-"))
    ids = make_videos(root, args.videos)
    cfg = ClipguardConfig(
        source=SourceConfig(video_root=root),
        sampling=SamplingConfig(num_frames=args.frames),
        faces=FacesConfig(policy="all"),
        model=ModelConfig(arch=args.arch, pretrained=args.pretrained, device="cpu"),
        stream=StreamConfig(detectors=1, batch_size=32, batch_wait_ms=20, max_in_flight=4),
    )
    naive_runs = [naive(cfg, ids) for _ in range(args.repeats)]
    base = args.videos / statistics.median(r["wall"] for r in naive_runs)
    lines = [
        f"Stream vs naive loop, {args.videos} videos x {args.frames} sampled frames (640x360, 1 face each), "
        f"model {args.arch} ({args.pretrained}), medians of {args.repeats} runs, warm-up excluded.",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
        f"{datetime.now(UTC).date().isoformat()}.",
        "",
        "| pipeline | videos | wall s | videos/s | vs naive | p50 latency s | p95 latency s | decode util "
        "(per actor) | face util (per actor) | detector util |",
        "|---|---|---|---|---|---|---|---|---|---|",
        row("naive single-process loop", naive_runs, args.videos, 1, None),
    ]
    for workers in (1, 2):
        runs = [stream(cfg, ids, workers) for _ in range(args.repeats)]
        lines.append(row(f"stream, {workers} decoder + {workers} face actor(s)", runs, args.videos, workers, base))
    lines += [
        "",
        "Latency: naive = one video's decode+faces+score time; stream = a verdict's `total` timing "
        "(from hand-out by Kafka to verdict built), which includes queueing behind other videos. "
        "Utilisation = stage busy time / wall time (per actor).",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    subprocess.run(["rm", "-rf", str(root)], check=False)


if __name__ == "__main__":
    main()
