"""The GPU benchmark's clip set: H.264 720p clips with real faces, made here, probed here, read anywhere.

The GPU machine has no ffmpeg or ffprobe, so the clips are made on a machine
that has them (with the project's own video maker, ``tests/video_factory.py``,
from the shared photos) and each clip's probe (ffprobe, with the configured
limits checked) is recorded beside it in ``clips.json``. On the GPU machine the
decoders take :attr:`ClipSet.prober`, which returns the recorded probe: the
source checks in front of NVDEC are then exactly the ones that ran here.

    python -m bench.gpu_clips .gpu_run/clips            # 6 clips, 10 s each (bench/README.md)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from clipguard.config import SourceConfig
from clipguard.contracts import VideoInfo, VideoJob
from clipguard.errors import VideoNotFoundError
from workers.video_probe import ProbeResult, probe_video
from workers.video_source import ResolvedSource, VideoSourceResolver

MANIFEST = "clips.json"
# One face per clip (32 crops a video at 32 frames, the accounting), and one crowd.
PORTRAITS = ("astronaut", "newton", "gauss")
ENCODE = ("-preset", "veryfast", "-crf", "23", "-g", "50")  # later options win over the maker's own


@dataclass(frozen=True)
class ClipSet:
    """Clips in a folder and their recorded probes."""

    folder: Path
    names: tuple[str, ...]  # single-face clips
    crowd: tuple[str, ...]  # the many-face clips
    probes: dict[str, ProbeResult]

    @property
    def source(self) -> SourceConfig:
        return SourceConfig(video_root=self.folder)

    def prober(self, source: ResolvedSource, config: SourceConfig) -> ProbeResult:
        """The recorded probe of a clip (the ``probe_video`` signature)."""
        name = source.local_path.name if source.local_path is not None else ""
        if name not in self.probes:
            msg = f"video {source.video_id!r}: no recorded probe for {name!r} in {self.folder / MANIFEST}"
            raise VideoNotFoundError(msg)
        return self.probes[name]


def make_clip_set(
    folder: Path, *, portraits: int = 5, crowd: int = 1, seconds: float = 10.0, size: tuple[int, int] = (1280, 720)
) -> ClipSet:
    """Make and probe the clips (needs ffmpeg and ffprobe).

    Args:
        folder: Output folder (created).
        portraits: Single-face clips (the shared portraits in turn, sliding over a grey canvas).
        crowd: Pans over the 1927 Solvay photo (29 faces).
        seconds: Clip length at 25 fps.
        size: Frame size.
    """
    from tests import video_factory as vf  # the project's video maker (ffmpeg)

    folder.mkdir(parents=True, exist_ok=True)
    frames = int(seconds * 25)
    names, crowds = [], []
    for k in range(portraits):
        name = f"portrait_{k}.mp4"
        vf.make_portrait_video(folder / name, PORTRAITS[k % len(PORTRAITS)], n_frames=frames, fps=25, size=size,
                               step_px=1 + k % 3, extra=ENCODE)  # fmt: skip
        names.append(name)
    for k in range(crowd):
        name = f"crowd_{k}.mp4"
        vf.make_pan_video(folder / name, "solvay", n_frames=frames, fps=25, size=size, pan_px=1.0 + k, extra=ENCODE)
        crowds.append(name)
    resolver = VideoSourceResolver(SourceConfig(video_root=folder))
    probes = {n: probe_video(resolver.resolve(VideoJob(n)), SourceConfig(video_root=folder)) for n in names + crowds}
    manifest = {"portraits": names, "crowd": crowds, "probes": {n: asdict(p) for n, p in probes.items()}}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return load_clip_set(folder)


def load_clip_set(folder: Path) -> ClipSet:
    """Read a folder made by :func:`make_clip_set`."""
    data = json.loads((folder / MANIFEST).read_text())
    probes = {}
    for name, raw in data["probes"].items():
        probes[name] = ProbeResult(**{**raw, "info": VideoInfo(**raw["info"])})
    return ClipSet(folder=folder.resolve(), names=tuple(data["portraits"]), crowd=tuple(data["crowd"]), probes=probes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="make the GPU benchmark's clip set (needs ffmpeg)")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--portraits", type=int, default=5)
    parser.add_argument("--crowd", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    clips = make_clip_set(args.folder, portraits=args.portraits, crowd=args.crowd, seconds=args.seconds)
    total = sum((clips.folder / n).stat().st_size for n in clips.names + clips.crowd)
    print(f"{len(clips.names)} portrait + {len(clips.crowd)} crowd clips in {clips.folder}, {total / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
