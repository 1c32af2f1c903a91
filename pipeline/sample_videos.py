"""Short demo videos made with ffmpeg from ``skimage.data.astronaut()`` (ships with scikit-image).

No downloads: a slow zoom on the portrait (one face), a horizontally mirrored
pan (one face), a clip with no face (the sky crop), and a file that is not a
video, so the demo shows ``done``, ``no_face`` and ``error`` verdicts.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image


def _astronaut() -> np.ndarray:
    from skimage import data  # imported here: only the demo needs it

    return data.astronaut()


def _encode(still: Path, out: Path, vf: str, seconds: float = 2.0, fps: int = 12) -> None:
    cmd = [
        "ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-loop", "1", "-i", str(still),
        "-t", str(seconds), "-r", str(fps), "-vf", vf, "-pix_fmt", "yuv420p", "-c:v", "libx264",
        "-preset", "ultrafast", str(out),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, timeout=60)


def make_demo_videos(root: Path) -> list[str]:
    """Write the demo videos under ``root``; returns their IDs (paths relative to root)."""
    root.mkdir(parents=True, exist_ok=True)
    img = _astronaut()
    still = root / "astronaut.png"
    Image.fromarray(img).save(still)
    sky = root / "sky.png"
    Image.fromarray(np.ascontiguousarray(img[:90, 300:])).save(sky)
    specs = {
        "demo/astronaut_zoom.mp4": (still, "scale=512:512,zoompan=z='min(zoom+0.004,1.3)':d=1:s=512x512:fps=12"),
        "demo/astronaut_mirror_pan.mp4": (still, "hflip,crop=400:400:'min(t*40,112)':40,scale=400:400"),
        "demo/sky_no_face.mp4": (sky, "scale=320:128"),
    }
    ids = []
    for vid, (src, vf) in specs.items():
        out = root / vid
        out.parent.mkdir(parents=True, exist_ok=True)
        if not out.is_file():
            _encode(src, out, vf)
        ids.append(vid)
    broken = root / "demo/not_a_video.mp4"
    broken.write_bytes(b"this is plain text, not an MP4\n" * 10)
    ids.append("demo/not_a_video.mp4")
    return ids
