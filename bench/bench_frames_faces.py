"""Throughput of the frame and face stages on this machine: decoded frames/s and face crops/s.

For each video size a short test video (a slow pan over the 1927 Solvay photo,
29 faces in view, H.264, 25 fps) is generated, then timed:

* decode ``select``: ``FrameDecoder.decode`` (probe + one ffmpeg pass with a
  select filter) for ``--num-frames`` uniformly sampled frames; frames/s is
  sampled frames out per wall second (the whole video is decoded to get them);
* decode ``seek``: the same with one accurate seek per frame (the long-video
  path; each seek starts an ffmpeg process and decodes from the previous keyframe);
* faces: ``FaceCropper.crop_video`` (SCRFD at 640, policy ``all``, alignment,
  tracking) on ``--face-frames`` decoded frames; frames/s and crops/s.

The first call of each cell is a warm-up (process start-up, ONNX session and
page cache) and is excluded; each cell reports the median of ``--runs`` timed
calls. Usage, from the repository root::

    python -m bench.bench_frames_faces                     # 640x360, 1280x720, 1920x1080
    python -m bench.bench_frames_faces --sizes 1280x720 --runs 3 --output /tmp/t.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime

from clipguard.assets import assets_dir
from clipguard.config import FacesConfig, SamplingConfig, SourceConfig, VideoScoreConfig
from clipguard.contracts import VideoJob
from clipguard.model_files import MODEL_DIR_ENV
from tests.video_factory import make_pan_video
from workers.face_cropper import FaceCropper
from workers.face_detector import FaceDetector
from workers.frame_decoder import FrameDecoder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="640x360,1280x720,1920x1080", help="video sizes WxH, comma-separated")
    parser.add_argument("--video-frames", type=int, default=250, help="frames in each test video (25 fps)")
    parser.add_argument("--gop", type=int, default=50, help="keyframe interval of the test videos (frames)")
    parser.add_argument("--num-frames", type=int, default=32, help="frames sampled per decode")
    parser.add_argument("--face-frames", type=int, default=8, help="frames per face-stage call")
    parser.add_argument("--max-side", type=int, default=1280, help="SamplingConfig.max_side")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per cell (median reported)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="onnxruntime intra-op threads")
    parser.add_argument("--output", type=Path, default=Path("bench/results/frames_faces_cpu.md"))
    return parser.parse_args(argv)


def median_time(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of ``runs`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_size(root: Path, size: tuple[int, int], args: argparse.Namespace, cropper: FaceCropper) -> dict:
    """Time decoding and the face stage on one generated video."""
    name = f"pan_{size[0]}x{size[1]}.mp4"
    make_pan_video(root / name, "solvay", n_frames=args.video_frames, fps=25, size=size, pan_px=2.0, gop=args.gop)
    source = SourceConfig(video_root=root)
    job = VideoJob(video_id=name)
    select = FrameDecoder(source, SamplingConfig(num_frames=args.num_frames, max_side=args.max_side))
    seek = FrameDecoder(source, SamplingConfig(num_frames=args.num_frames, max_side=args.max_side, select_max_frames=1))
    t_select = median_time(lambda: select.decode(job), args.runs)
    t_seek = median_time(lambda: seek.decode(job), args.runs)
    decoded = select.decode(job)
    assert decoded.method == "select" and len(decoded.frames) == args.num_frames
    frames = decoded.frames[: args.face_frames]
    result = cropper.crop_video(name, frames, (decoded.info.width, decoded.info.height))
    t_faces = median_time(lambda: cropper.crop_video(name, frames), args.runs)
    h, w = frames[0].image.shape[:2]
    return {
        "video": f"{size[0]}x{size[1]}",
        "frame": f"{w}x{h}",
        "select_fps": args.num_frames / t_select,
        "seek_fps": args.num_frames / t_seek,
        "face_fps": len(frames) / t_faces,
        "crops_per_frame": len(result.crops) / len(frames),
        "crops_s": len(result.crops) / t_faces,
    }


def machine() -> str:
    """CPU model, core count, and library versions."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, check=True).stdout.split("\n")[0]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs visible, shared with other work (load average at the end: {load}); "
        f"{ffmpeg.split(' Copyright')[0]}; onnxruntime {onnxruntime.__version__}; Python {platform.python_version()}"
    )


def table(rows: list[dict], args: argparse.Namespace, providers: list[str]) -> str:
    """The markdown report."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Frame and face stage throughput (CPU)",
        "",
        f"- Date: {now}",
        f"- Machine: {machine()}",
        f"- Face detector: SCRFD 2.5g (shared assets), 640x640, providers {providers}, "
        f"{args.threads} intra-op threads; policy `all`, 256x256 crops",
        f"- Video: {args.video_frames}-frame H.264 pan over the Solvay photo at 25 fps, keyframe every "
        f"{args.gop} frames (27-29 faces in view); frames downscaled to max side {args.max_side}",
        f"- Decode: {args.num_frames} sampled frames per call (probe included); faces: {args.face_frames} frames "
        "per call",
        f"- Each cell: median of {args.runs} timed runs after 1 untimed warm-up run (excluded)",
        "",
        "| video | decoded frame | decode select (frames/s) | decode seek (frames/s) "
        "| face stage (frames/s) | crops/frame | face stage (crops/s) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['video']} | {r['frame']} | {r['select_fps']:.1f} | {r['seek_fps']:.1f} "
            f"| {r['face_fps']:.2f} | {r['crops_per_frame']:.0f} | {r['crops_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the table and save it."""
    args = parse_args(argv)
    os.environ.setdefault(MODEL_DIR_ENV, str(assets_dir() / "models"))  # the shared SCRFD model, named explicitly
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
    detector = FaceDetector(FacesConfig(), intra_op_threads=args.threads)
    cropper = FaceCropper(FacesConfig(), detector, selection=VideoScoreConfig(face_policy="all"))
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_frames_faces_") as tmp:
        for size in sizes:
            rows.append(bench_size(Path(tmp), size, args, cropper))
            print(f"done {size[0]}x{size[1]}", file=sys.stderr)
    report = table(rows, args, detector.providers)
    print(report)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)


if __name__ == "__main__":
    main()
