"""One GPU node's throughput: NVDEC decode, SCRFD + NMS + alignment and the detector on the device, and the whole path.

Needs no Kafka, Redis or Ray (the GPU benchmark machine has none of them, nor
ffmpeg): it drives the fused GPU stage's plain class
(:class:`workers.gpu_video_pipeline.GpuVideoPipeline`) directly on a folder of
clips made beforehand with ``python -m bench.gpu_clips`` (H.264 720p, 10 s, real
faces from the shared photos; probes recorded, see bench/gpu_clips.py).

Rows, each measured after a warm-up, medians of ``--repeats``:

* decode alone: NVDEC (or ffmpeg on a CPU machine) with 1..N decode threads in
  one process, and NVDEC in several processes at once: videos/s, frames/s;
* faces alone: SCRFD in torch on device frames (network alone, and with
  letterbox + anchor decoding + NMS), frames/s; the alignment warp, crops/s;
* detector alone: today's ``CropScorer`` (autocast) vs bf16 weights eager vs
  bf16 compiled with CUDA graphs, crops/s at ``--batch``;
* today's CPU face stage (SCRFD on onnxruntime, all cores, the same frames on
  the host): frames/s, and the CPU-face path's videos/s bound it sets;
* the whole path with several decode workers: videos/s, frames/s, crops/s,
  GPU-busy share (NVML: the share of time a kernel ran), mean time per stage.

A failing row is reported as failed with its error; the other rows still run
and the report is always written. ``--smoke`` runs it all tiny on the CPU (CI).

    python -m bench.bench_gpu_node --clips .gpu_run/clips --out bench/results/gpu_node.md   # GPU machine
    python -m bench.bench_gpu_node --smoke --make-clips /tmp/clips --out /tmp/gpu_node.md    # CPU smoke
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.metadata
import multiprocessing
import os
import platform
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from bench.gpu_clips import ClipSet, load_clip_set, make_clip_set
from clipguard.config import FacesConfig, SamplingConfig, VideoScoreConfig
from clipguard.contracts import SampledFrame, VideoJob
from clipguard.model import CropScorer, DetectorConfig, DeviceScorer
from workers.face_alignment_torch import similarity_matrices, warp_crops
from workers.face_cropper import FaceCropper
from workers.face_cropper_device import DeviceFaceCropper
from workers.face_detector import CPU, FaceDetector
from workers.face_detector_torch import TorchFaceDetector
from workers.frame_decoder import FrameDecoder
from workers.frame_decoder_device import FfmpegTensorDecoder, NvdecFrameDecoder, nvdec_unavailable_reason
from workers.gpu_video_pipeline import GpuVideoPipeline

TARGETS = {"detector": 3000.0, "faces": 2000.0, "node": 40.0, "ratio": 10.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clips", type=Path, help="a clip folder made by `python -m bench.gpu_clips`")
    p.add_argument("--make-clips", type=Path, help="make the clip folder here first (needs ffmpeg)")
    p.add_argument("--out", type=Path, default=Path("bench/results/gpu_node.md"))
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--arch", default="ViT-L-14", help="detector tower (random weights: throughput only)")
    p.add_argument("--frames", type=int, default=32, help="frames sampled per video")
    p.add_argument("--videos", type=int, default=240, help="videos in the whole-path run (clips reused)")
    p.add_argument("--decode-workers", default="1,4,8,16", help="decode threads per process, comma-separated")
    p.add_argument("--decode-procs", default="2,4", help="NVDEC processes at once (each with 8 threads)")
    p.add_argument("--node-workers", default="8,16", help="decode workers of the whole-path runs")
    p.add_argument("--batch", type=int, default=256, help="detector batch for the detector rows")
    p.add_argument("--face-batch", type=int, default=64, help="frames per SCRFD forward")
    p.add_argument("--cpu-face-frames", type=int, default=64, help="frames through today's CPU face stage")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile-mode", default="reduce-overhead")
    p.add_argument("--smoke", action="store_true", help="tiny CPU run for CI (2 videos, ViT-Tiny-test)")
    args = p.parse_args(argv)
    if args.smoke:
        args.arch, args.frames, args.videos, args.batch, args.face_batch = "ViT-Tiny-test", 3, 2, 8, 3
        args.decode_workers, args.decode_procs, args.node_workers = "2", "", "2"
        args.cpu_face_frames, args.repeats, args.device = 3, 1, "cpu"
    return args


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


class Report:
    """Markdown sections in order, written out after each one (a run cut short keeps what it measured)."""

    def __init__(self, out: Path, head: list[str]) -> None:
        self.out = out
        self.head = head
        self.lines: list[str] = []
        self.results: dict[str, float] = {}

    def write(self) -> None:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("\n".join(self.head + self.lines) + "\n")

    def table(self, title: str, header: list[str], rows: list[list[str]], note: str = "") -> None:
        self.lines += ["", f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        self.lines += ["| " + " | ".join(r) + " |" for r in rows]
        if note:
            self.lines += ["", note]
        self.write()
        print(f"\n{title}\n" + "\n".join(" | ".join(r) for r in rows), flush=True)

    def failed(self, title: str, exc: BaseException) -> None:
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        self.lines += ["", f"### {title}", "", f"**failed**: `{last[:400]}`"]
        print(f"\n{title} FAILED:\n{traceback.format_exc()}", flush=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_seconds(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class GpuBusy:
    """Samples NVML's GPU utilisation (share of time a kernel ran) every 50 ms while running."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error = "" if device.type == "cuda" else "no GPU"

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.samples.append(torch.cuda.utilization(self.device) / 100.0)
            except Exception as exc:  # noqa: BLE001 - NVML missing or refused: reported, not fatal
                self.error = f"NVML: {type(exc).__name__}"
                return

    def __enter__(self) -> GpuBusy:
        if not self.error:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    @property
    def share(self) -> str:
        if self.error or not self.samples:
            return f"n/a ({self.error or 'no samples'})"
        return f"{100 * statistics.mean(self.samples):.0f} %"


def environment(device: torch.device) -> list[str]:
    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}"
    else:
        gpu = "none (CPU run)"
    packages = ("torch", "torchvision", "onnxruntime", "open_clip_torch", "onnx2torch", "PyNvVideoCodec", "insightface")
    return [
        f"- date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; GPU: {gpu}",
        f"- Python {platform.python_version()}; " + ", ".join(f"{p} {version(p)}" for p in packages),
    ]


def _no_grad(fn: Callable, *args: object) -> object:
    with torch.inference_mode():
        return fn(*args)


# --- decode --------------------------------------------------------------------------------
def make_decoder(clips: ClipSet, frames: int, device: torch.device):
    sampling = SamplingConfig(num_frames=frames)
    if nvdec_unavailable_reason(device) is None:
        return NvdecFrameDecoder(clips.source, sampling, device, prober=clips.prober)
    return FfmpegTensorDecoder(FrameDecoder(clips.source, sampling), device)


def decode_rate(decoder, jobs: list[VideoJob], workers: int) -> tuple[float, float]:
    """(videos/s, frames/s) decoding ``jobs`` on ``workers`` threads (first pass per thread excluded)."""
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(decoder.decode_frames, jobs[:workers]))  # each thread opens its decoder
        start = time.perf_counter()
        frames = sum(len(d.indices) for d in pool.map(decoder.decode_frames, jobs))
        seconds = time.perf_counter() - start
    return len(jobs) / seconds, frames / seconds


def _decode_process(folder: str, frames: int, names: list[str], threads: int, ready, go, results) -> None:
    clips = load_clip_set(Path(folder))
    decoder = make_decoder(clips, frames, torch.device("cuda"))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(decoder.decode_frames, [VideoJob(n) for n in names[:threads]]))
        ready.put(os.getpid())
        go.wait()
        start = time.perf_counter()
        count = sum(len(d.indices) for d in pool.map(decoder.decode_frames, [VideoJob(n) for n in names]))
        results.put((len(names), count, time.perf_counter() - start))


def decode_rate_processes(clips: ClipSet, frames: int, jobs: list[VideoJob], procs: int, threads: int):
    """(videos/s, frames/s) of ``procs`` NVDEC processes decoding their shares of ``jobs`` at once."""
    ctx = multiprocessing.get_context("spawn")
    ready, results, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    shares = [[j.video_id for j in jobs[k::procs]] for k in range(procs)]
    workers = [
        ctx.Process(target=_decode_process, args=(str(clips.folder), frames, share, threads, ready, go, results))
        for share in shares
    ]
    for w in workers:
        w.start()
    for _ in workers:
        ready.get(timeout=120)
    start = time.perf_counter()
    go.set()
    done = [results.get(timeout=300) for _ in workers]
    seconds = time.perf_counter() - start
    for w in workers:
        w.join(timeout=30)
    return sum(d[0] for d in done) / seconds, sum(d[1] for d in done) / seconds


# --- the whole path --------------------------------------------------------------------------
async def run_videos(pipeline: GpuVideoPipeline, jobs: list[VideoJob], in_flight: int):
    gate = asyncio.Semaphore(in_flight)

    async def one(job: VideoJob):
        async with gate:
            return await pipeline.analyse(job)

    return await asyncio.gather(*(one(j) for j in jobs))


def whole_path(decoder, cropper, scorer, compute, jobs, workers, batch, device):
    pipeline = GpuVideoPipeline(decoder, cropper, scorer, decode_workers=workers, batch_size=batch,
                                batch_wait_s=0.005, decode_timeout_s=120, compute=compute)  # fmt: skip
    busy = GpuBusy(device)

    async def warm_then_measure():
        await run_videos(pipeline, jobs[: 2 * workers], 4 * workers)  # warm-up: decoders open, caches hot
        with busy:
            start = time.perf_counter()
            results = await run_videos(pipeline, jobs, 4 * workers)
            return results, time.perf_counter() - start

    results, seconds = asyncio.run(warm_then_measure())
    fills = [b.fill for b in pipeline.batches[-50:]]
    pipeline.close()
    return results, seconds, busy.share, statistics.mean(fills) if fills else 0.0


def detector_rows(args, device, on_compute) -> tuple[list[list[str]], DeviceScorer | None, CropScorer, float]:
    """Today's scorer, bf16 eager, bf16 compiled: crops/s at ``args.batch`` on device crops."""
    rows, best, fast = [], 0.0, None
    crops = torch.randint(0, 256, (args.batch, 3, 256, 256), dtype=torch.uint8, device=device)
    config = DetectorConfig(arch=args.arch, pretrained="none", device=device.type, max_batch_size=args.batch)
    scorer = on_compute(CropScorer.from_config, config)
    cuda = device.type == "cuda"
    variants = [
        ("today: CropScorer", lambda: scorer),
        ("bf16 weights, eager" if cuda else "DeviceScorer fp32 (CPU: no bf16), eager",
         lambda: DeviceScorer(scorer, weights_dtype=torch.bfloat16 if cuda else None, buckets=(args.batch,))),
    ]  # fmt: skip
    if cuda:
        compiled = f"bf16 weights, compile {args.compile_mode}"
        variants.append((compiled, lambda: DeviceScorer(scorer, weights_dtype=torch.bfloat16, buckets=(64, args.batch),
                                                        compile_mode=args.compile_mode)))  # fmt: skip
    for label, build in variants:  # in this order: the later ones cast the same weights to bf16
        try:
            model = on_compute(build)
            warm = on_compute(model.warm_up) if isinstance(model, DeviceScorer) else 0.0
            seconds = on_compute(median_seconds, lambda m=model: m.score(crops), args.repeats, device)
            if model is scorer:
                precision = f"fp32, autocast {scorer.autocast_dtype}" if scorer.autocast_dtype else "fp32"
            else:
                precision = str(model.weights_dtype or "fp32")
            rows.append([label, precision, f"{args.batch / seconds:.0f}", f"{warm:.0f}"])
            best = max(best, args.batch / seconds)
            fast = model if isinstance(model, DeviceScorer) else fast
        except Exception as exc:  # noqa: BLE001 - one failed row, the report goes on
            rows.append([label, "failed", f"`{exc}`"[:300], ""])
            traceback.print_exc()
    return rows, fast, scorer, best


def decode_rows(args, clips: ClipSet, decoder, kind: str, jobs: list[VideoJob]) -> list[list[str]]:
    rows = []
    for workers in ints(args.decode_workers):
        try:
            vps, fps = decode_rate(decoder, jobs[: min(len(jobs), max(8, 8 * workers))], workers)
            rows.append([f"{kind}, 1 process x {workers} threads", f"{vps:.1f}", f"{fps:.0f}"])
        except Exception as exc:  # noqa: BLE001
            rows.append([f"{kind}, 1 process x {workers} threads", "failed", f"`{exc}`"[:300]])
            traceback.print_exc()
    for procs in ints(args.decode_procs) if kind == "NVDEC" else []:
        try:
            vps, fps = decode_rate_processes(clips, args.frames, jobs, procs, 8)
            rows.append([f"NVDEC, {procs} processes x 8 threads", f"{vps:.1f}", f"{fps:.0f}"])
        except Exception as exc:  # noqa: BLE001
            rows.append([f"NVDEC, {procs} processes x 8 threads", "failed", f"`{exc}`"[:300]])
            traceback.print_exc()
    return rows


def face_rows(args, device, detector, on_compute, sets) -> tuple[list[list[str]], float]:
    rows, single_rate = [], 0.0
    for label, videos in sets:
        if not videos:
            continue
        frames = torch.cat([v.frames for v in videos])[: max(args.face_batch, 8)]
        try:
            canvas, _ = on_compute(detector._letterbox, frames)  # noqa: SLF001 - the network alone, same input
            net = on_compute(median_seconds, lambda c=canvas: _no_grad(detector.network, c), args.repeats, device)
            full = on_compute(median_seconds, lambda f=frames: detector.detect_frames(f), args.repeats, device)
            found = on_compute(detector.detect_frames, frames)
            lms = torch.cat([f.landmarks for f in found])
            which = torch.cat([torch.full((len(f.scores),), i, dtype=torch.long, device=device)
                               for i, f in enumerate(found)])  # fmt: skip
            warp = on_compute(median_seconds, lambda f=frames, w=which, m=lms: warp_crops(f, w, similarity_matrices(m),
                              256), args.repeats, device)  # fmt: skip
            n = frames.shape[0]
            rows.append([label, f"{n / net:.0f}", f"{n / full:.0f}", f"{len(lms) / warp:.0f}", str(len(lms))])
            single_rate = n / full if label == "single face" else single_rate
        except Exception as exc:  # noqa: BLE001
            rows.append([label, "failed", f"`{exc}`"[:300], "", ""])
            traceback.print_exc()
    return rows, single_rate


def cpu_face_rows(args, single) -> tuple[list[list[str]], float | None]:
    try:
        faces_cfg = FacesConfig()
        host = [SampledFrame(i, 0.0, f) for i, f in enumerate(torch.cat([v.frames for v in single]).cpu().numpy())]
        host = host[: args.cpu_face_frames]
        cpu_cropper = FaceCropper(faces_cfg, FaceDetector(faces_cfg, providers=[CPU], intra_op_threads=os.cpu_count()),
                                  selection=VideoScoreConfig())  # fmt: skip
        seconds = median_seconds(lambda: cpu_cropper.crop_video("bench", host), args.repeats, torch.device("cpu"))
        fps = len(host) / seconds
        return [[f"SCRFD onnxruntime, {os.cpu_count()} threads, + align + track", f"{fps:.1f}",
                 f"{fps / args.frames:.2f}"]], fps / args.frames  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        return [["SCRFD onnxruntime", "failed", f"`{exc}`"[:300]]], None


def node_rows(args, device, decoder, cropper, scorer, compute, jobs) -> tuple[list[list[str]], float]:
    rows, best = [], 0.0
    for workers in ints(args.node_workers):
        try:
            results, seconds, busy, fill = whole_path(decoder, cropper, scorer, compute, jobs, workers, args.batch,
                                                      device)  # fmt: skip
            frames = sum(r.frames_sampled for r in results)
            crops = sum(len(r.crop_scores) for r in results)
            stage = {k: statistics.mean(r.timings_s.get(k, 0.0) for r in results)
                     for k in ("decode", "decode_wait", "faces", "detect")}  # fmt: skip
            vps = len(results) / seconds
            best = max(best, vps)
            rows.append([f"{workers} decode workers", f"{vps:.1f}", f"{frames / seconds:.0f}", f"{crops / seconds:.0f}",
                         busy, f"{fill:.2f}", " / ".join(f"{1000 * stage[k]:.0f}" for k in stage)])  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            rows.append([f"{workers} decode workers", "failed", f"`{exc}`"[:300], "", "", "", ""])
            traceback.print_exc()
    return rows, best


def target_rows(results: dict[str, float | None], cuda: bool) -> list[list[str]]:
    node, cpu = results.get("node"), results.get("cpu_videos")
    values = {**results, "ratio": node / cpu if node and cpu else None}
    labels = {"detector": "detector crops/s at batch >= 128", "faces": "faces frames/s at 640 px",
              "node": "whole node videos/s", "ratio": "whole node / today's CPU-face path"}  # fmt: skip
    rows = []
    for key, label in labels.items():
        value, goal = values.get(key), TARGETS[key]
        shown = "n/a" if not value else f"{value:.1f}x" if key == "ratio" else f"{value:.1f}"
        if not cuda:
            status = "n/a (not a GPU run)"
        elif not value:
            status = "n/a"
        else:
            status = "met" if value >= goal else f"missed by {goal - value:.1f}"
        rows.append([label, f"{goal:g}" + ("x" if key == "ratio" else ""), shown, status])
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    if args.make_clips and args.smoke:
        clips = make_clip_set(args.make_clips, portraits=2, crowd=0, seconds=1.0, size=(640, 360))
    else:
        clips = make_clip_set(args.make_clips) if args.make_clips else load_clip_set(args.clips)
    jobs = [VideoJob(clips.names[k % len(clips.names)]) for k in range(args.videos)]
    info = clips.probes[clips.names[0]].info
    head = [f"# GPU node benchmark ({'CPU smoke test' if args.smoke else device})", "", *environment(device)]
    head.append(f"- clips: {len(clips.names)} single-face + {len(clips.crowd)} crowd (Solvay, 29 faces), "
                f"{info.width}x{info.height} H.264, {info.duration_s:.0f} s; {args.frames} frames sampled a video; "
                f"detector {args.arch} (random weights: speed only)")  # fmt: skip
    compute = ThreadPoolExecutor(1, thread_name_prefix="bench-compute")  # every model call on one thread

    def on_compute(fn, *a):
        return compute.submit(fn, *a).result()

    decoder = make_decoder(clips, args.frames, device)
    kind = "NVDEC" if isinstance(decoder, NvdecFrameDecoder) else "ffmpeg + upload"
    head.append(f"- decoder: {kind}" + ("" if kind == "NVDEC" else f" (NVDEC: {nvdec_unavailable_reason(device)})"))
    report = Report(args.out, head)
    results: dict[str, float | None] = {}

    rows, fast, scorer, results["detector"] = detector_rows(args, device, on_compute)
    report.table(f"Detector alone ({args.arch}, batch {args.batch}, crops already on {device})",
                 ["scorer", "weights", "crops/s", "compile + warm-up s"], rows)  # fmt: skip
    report.table("Decode alone (sampled frames of single-face clips)", ["decoder", "videos/s", "frames/s"],
                 decode_rows(args, clips, decoder, kind, jobs))  # fmt: skip
    try:
        single = [decoder.decode_frames(VideoJob(n)) for n in clips.names]
        crowd = [decoder.decode_frames(VideoJob(n)) for n in clips.crowd]
        detector = on_compute(lambda: TorchFaceDetector(FacesConfig(), device, batch_size=args.face_batch))
    except Exception as exc:  # noqa: BLE001 - nothing below can run without frames and SCRFD
        report.failed("Faces and the whole path", exc)
        compute.shutdown()
        return 1
    rows, results["faces"] = face_rows(args, device, detector, on_compute,
                                       (("single face", single), ("crowd (29 faces)", crowd)))  # fmt: skip
    report.table(f"Faces on {device} (640 px letterbox, batch {args.face_batch})",
                 ["frames", "network frames/s", "detect+NMS frames/s", "align crops/s", "faces"], rows)  # fmt: skip
    rows, results["cpu_videos"] = cpu_face_rows(args, single)
    report.table("Today's CPU face stage (same frames, on the host)", ["stage", "frames/s", "videos/s bound"], rows)
    del single, crowd
    scorer_for_path = fast or DeviceScorer(scorer, weights_dtype=None, buckets=(args.batch,))
    cropper = DeviceFaceCropper(FacesConfig(), detector, selection=VideoScoreConfig())
    rows, results["node"] = node_rows(args, device, decoder, cropper, scorer_for_path, compute, jobs)
    report.table(f"Whole path on {device}: {len(jobs)} single-face videos, decode -> faces -> align -> detector",
                 ["setup", "videos/s", "frames/s", "crops/s", "GPU busy", "batch fill",
                  "ms/video: decode / decode+queue / faces / detect"], rows)  # fmt: skip
    note = "" if device.type == "cuda" else "A CPU run: these numbers say nothing about a GPU node."
    report.table("Targets (issue 13)", ["target", "goal", "measured", "status"],
                 target_rows(results, device.type == "cuda"), note=note)  # fmt: skip
    compute.shutdown()
    print(f"\nwrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
