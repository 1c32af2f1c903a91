"""Videos shared by the reliability tests, made once per session with ffmpeg."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests import video_factory as vf

FACE_VIDEOS = [f"good/face_{i}.mp4" for i in range(6)]  # each has one face: verdict "done"
EMPTY_VIDEOS = ["good/empty_0.mp4", "good/empty_1.mp4"]  # no face: verdict "no_face"


def corrupt_middle(src: Path, dest: Path, n_bytes: int = 4000, seed: int = 0) -> Path:
    """Copy ``src`` with ``n_bytes`` of random garbage written over the middle of its mdat box."""
    data = bytearray(src.read_bytes())
    mdat = data.find(b"mdat")
    assert mdat > 0, "no mdat box"
    mid = (mdat + len(data)) // 2
    rng = random.Random(seed)
    for k in range(mid - n_bytes // 2, mid + n_bytes // 2):
        data[k] = rng.randrange(256)
    dest.write_bytes(bytes(data))
    return dest


@pytest.fixture(scope="session")
def video_root(tmp_path_factory, assets):
    """good/ (faces, no faces), bad/ (every kind of broken file), links/ (per-test symlinks into good/)."""
    root = tmp_path_factory.mktemp("reliability-videos")
    for d in ("good", "bad", "links"):
        (root / d).mkdir()
    photos = ["astronaut", "newton", "gauss"]
    for i, name in enumerate(FACE_VIDEOS):
        vf.make_portrait_video(root / name, photos[i % 3], n_frames=4 + i % 2, size=(320, 180))
    vf.make_no_face_video(root / EMPTY_VIDEOS[0], size=(160, 120))
    vf.make_no_face_video(root / EMPTY_VIDEOS[1], size=(128, 96))
    vf.make_text_as_video(root / "bad/text.mp4")
    vf.make_zero_byte(root / "bad/zero.mp4")
    vf.make_truncated_video(root / "bad/truncated.mp4")
    vf.make_huge_declared_video(root / "bad/huge.mov")
    vf.make_long_video(root / "bad/long.mp4")  # 2 hours declared
    vf.make_audio_only(root / "bad/audio.mp4")
    vf.make_image_file(root / "bad/image.mp4")
    vf.make_fifo(root / "bad/fifo.mp4")
    long_clip = vf.make_portrait_video(root / "bad/clean12.mp4", "astronaut", n_frames=12, size=(320, 180))
    corrupt_middle(long_clip, root / "bad/corrupt_middle.mp4")
    os.symlink("/etc/passwd", root / "bad/escape.mp4")  # a symlink out of the root
    return root


def link_videos(root: Path, tag: str, n: int, sources: list[str]) -> list[str]:
    """``n`` video IDs under ``links/<tag>/``, each a symlink (inside the root) to one of ``sources``."""
    folder = root / "links" / tag
    folder.mkdir(parents=True)
    ids = []
    for i in range(n):
        target = root / sources[i % len(sources)]
        (folder / f"v{i:03d}.mp4").symlink_to(os.path.relpath(target, folder))
        ids.append(f"links/{tag}/v{i:03d}.mp4")
    return ids
