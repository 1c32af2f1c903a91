"""Short test videos made with the ffmpeg binary, for decoder, face and stream tests.

Every helper writes one file at the path it is given (put it under pytest's
``tmp_path``) and returns that path. They are small and fast (well under a
second each on one core, except where noted) and need no network: content comes
from lavfi test sources, ``skimage.data.astronaut()`` and the shared photos in
``../shared/assets/faces`` (found through :mod:`clipguard.assets`).

Frame identity: :func:`make_numbered_video` writes frame k as the binary code
of k in ``FRAME_CODE_BITS`` vertical black/white stripes (bit 0 leftmost);
:func:`read_frame_number` reads it back from a decoded frame, after any
downscale, so a test can assert *which* frame the decoder returned.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import socket
import struct
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from clipguard.assets import asset_path

FFMPEG = "ffmpeg"
FRAME_CODE_BITS = 12
_STRIPE = 16  # pixels per bit in the generated video


# --- helpers -----------------------------------------------------------------------
def _ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly; raise with its stderr on failure."""
    cmd = [FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr}")


def _encode_frames(path: Path, frames: Iterator[np.ndarray], size: tuple[int, int], fps: float, *extra: str) -> Path:
    """Encode RGB uint8 frames of ``size`` (w, h) piped from Python with libx264."""
    cmd = [
        FFMPEG,
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{size[0]}x{size[1]}",
        "-r",
        str(fps),
        "-i",
        "pipe:",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-crf",
        "20",
        "-pix_fmt",
        "yuv420p",
        *extra,
        str(path),
    ]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None
    for frame in frames:
        proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
    _, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg encode failed: {err.decode(errors='replace')}")
    return path


def load_photo(name: str) -> np.ndarray:
    """A shared photo as RGB uint8: ``astronaut`` (skimage), or ``solvay``, ``newton``, ``gauss``."""
    if name == "astronaut":
        return skimage.data.astronaut()
    files = {"solvay": "faces/solvay_conference_1927.png", "newton": "faces/newton.png", "gauss": "faces/gauss.png"}
    bgr = cv2.imread(str(asset_path(files[name])), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --- frame-numbered videos -------------------------------------------------------------
def make_numbered_video(
    path: Path,
    n_frames: int = 100,
    fps: float = 25,
    *,
    height: int = 16,
    gop: int | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """Constant-rate H.264 video whose frame k shows k as binary stripes.

    Args:
        path: Output file (container from the suffix: .mp4, .mkv, .webm...).
        n_frames: Frames (< 2**FRAME_CODE_BITS).
        fps: Frame rate.
        height: Picture height (width is ``FRAME_CODE_BITS * 16`` = 192).
        gop: Keyframe interval (default x264's: fps*10 capped at 250), to test seeking.
        extra: More ffmpeg output options.
    """
    assert n_frames < 2**FRAME_CODE_BITS
    width = FRAME_CODE_BITS * _STRIPE
    src = (
        f"color=black:s={width}x{height}:r={fps}:d={n_frames / fps},format=gray,"
        f"geq=lum='if(bitand(N\\,pow(2\\,floor(X/{_STRIPE})))\\,255\\,0)'"
    )
    if path.suffix == ".webm":
        codec = ["-c:v", "libvpx", "-b:v", "200k"]
    else:
        codec = ["-c:v", "libx264", "-preset", "ultrafast"]
    gop_args = ["-g", str(gop)] if gop else []
    frames = ["-frames:v", str(n_frames)]
    _ffmpeg("-f", "lavfi", "-i", src, *frames, *codec, *gop_args, "-pix_fmt", "yuv420p", *extra, str(path))
    return path


def read_frame_number(image: np.ndarray) -> int:
    """The frame number coded by :func:`make_numbered_video` in a decoded RGB frame (any scale)."""
    gray = image.astype(np.float32).mean(axis=2) if image.ndim == 3 else image.astype(np.float32)
    width = gray.shape[1]
    value = 0
    for bit in range(FRAME_CODE_BITS):
        column = int((bit + 0.5) * width / FRAME_CODE_BITS)
        if gray[:, column].mean() > 128:
            value |= 1 << bit
    return value


def make_vfr_video(path: Path, n_frames: int = 100) -> Path:
    """Variable-frame-rate numbered video (Matroska: no nb_frames in the header).

    Frames 0..n/2-1 are 40 ms apart, later ones 40 ms + 40 ms * (k - n/2) apart,
    so time and frame index are far from proportional.
    """
    half = n_frames // 2
    width = FRAME_CODE_BITS * _STRIPE
    src = (
        f"color=black:s={width}x16:r=25:d={n_frames / 25},format=gray,"
        f"geq=lum='if(bitand(N\\,pow(2\\,floor(X/{_STRIPE})))\\,255\\,0)',"
        # In time-base (1/25 s) ticks; k(k+1)/2 is a whole number, so no rounding.
        f"setpts='N+if(gte(N\\,{half})\\,(N-{half})*(N-{half}+1)/2\\,0)'"
    )
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        src,
        "-frames:v",
        str(n_frames),
        "-fps_mode",
        "vfr",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


# --- geometry ------------------------------------------------------------------------------
def make_rotated_video(path: Path, rotation: int = 90, n_frames: int = 5) -> Path:
    """Landscape 160x96 astronaut video stored with display-matrix rotation metadata.

    Written with ``-metadata:s:v rotate=<rotation>`` (ffmpeg 5.1 turns it into
    a display matrix); players and ffmpeg's autorotate show it turned, so the
    upright video is 96x160 for 90/270.
    """
    plain = path.with_name(path.stem + ".plain" + path.suffix)
    photo = cv2.resize(load_photo("astronaut")[64:448], (160, 96), interpolation=cv2.INTER_AREA)
    _encode_frames(plain, iter([photo] * n_frames), (160, 96), 5)
    _ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={rotation}", str(path))
    plain.unlink()
    return path


def make_odd_sized_video(path: Path, width: int = 333, height: int = 201, n_frames: int = 10) -> Path:
    """Test-pattern video of odd width and height (H.264 4:4:4 allows odd sizes).

    ``testsrc`` (RGB) rather than ``testsrc2``, which rounds sizes to even.
    """
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"testsrc=s={width}x{height}:r=10",
        "-frames:v",
        str(n_frames),
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv444p",
        str(path),
    )
    return path


def _test_pattern(path: Path, size: tuple[int, int], fps: int, n_frames: int) -> Path:
    """``n_frames`` of lavfi's testsrc2 pattern (no face in it), H.264."""
    _ffmpeg("-f", "lavfi", "-i", f"testsrc2=s={size[0]}x{size[1]}:r={fps}", "-frames:v", str(n_frames),
            "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", str(path))  # fmt: skip
    return path


def make_large_video(path: Path, width: int = 1920, height: int = 1080, n_frames: int = 4) -> Path:
    """A few frames of a full-HD (or any size) test pattern, to check early downscaling."""
    return _test_pattern(path, (width, height), 10, n_frames)


# --- faces ---------------------------------------------------------------------------------
def make_pan_video(
    path: Path,
    photo: str = "solvay",
    n_frames: int = 8,
    fps: float = 8,
    *,
    size: tuple[int, int] = (1280, 720),
    window: float = 0.9,
    pan_px: float = 4.0,
    zoom: float = 0.0,
    gop: int | None = None,
    extra: tuple[str, ...] = (),
) -> Path:
    """Slow pan (and optional zoom) over a photo, e.g. the Solvay group photo.

    Args:
        path: Output .mp4.
        photo: See :func:`load_photo`.
        n_frames: Frames.
        fps: Frame rate.
        size: Output (width, height).
        window: Width of the viewed window as a fraction of the photo width.
        pan_px: Horizontal pan per frame, in photo pixels.
        zoom: Relative shrink of the window per frame (0 = none).
        gop: Keyframe interval (default x264's, 250 frames).
        extra: More ffmpeg output options (later ones win, e.g. ``("-preset", "medium", "-crf", "26")``).
    """
    img = load_photo(photo)
    ih, iw = img.shape[:2]
    aspect = size[1] / size[0]

    def frames() -> Iterator[np.ndarray]:
        for k in range(n_frames):
            w = iw * window * (1.0 - zoom * k)
            h = min(ih, w * aspect)
            x0 = min(iw - w, (iw - w) / 2 + pan_px * (k - n_frames / 2))
            y0 = (ih - h) / 2
            view = img[int(y0) : int(y0 + h), max(0, int(x0)) : int(x0 + w)]
            yield cv2.resize(view, size, interpolation=cv2.INTER_AREA)

    return _encode_frames(path, frames(), size, fps, *(["-g", str(gop)] if gop else []), *extra)


def make_portrait_video(
    path: Path,
    photo: str = "astronaut",
    n_frames: int = 6,
    fps: float = 6,
    *,
    size: tuple[int, int] = (640, 360),
    step_px: int = 12,
    extra: tuple[str, ...] = (),
) -> Path:
    """One face moving across a grey canvas (the photo scaled to the canvas height, sliding right ``step_px`` a frame).

    ``extra``: more ffmpeg output options (later ones win).
    """
    img = load_photo(photo)
    scale = size[1] / img.shape[0]
    face = cv2.resize(img, (int(img.shape[1] * scale), size[1]), interpolation=cv2.INTER_AREA)

    def frames() -> Iterator[np.ndarray]:
        for k in range(n_frames):
            canvas = np.full((size[1], size[0], 3), 128, np.uint8)
            x = min(size[0] - face.shape[1], 40 + step_px * k)
            canvas[:, x : x + face.shape[1]] = face[:, : size[0] - x]
            yield canvas

    return _encode_frames(path, frames(), size, fps, *extra)


def make_group_video(
    path: Path,
    photos: tuple[str, ...] = ("gauss", "astronaut"),
    n_frames: int = 4,
    fps: float = 6,
    *,
    size: tuple[int, int] = (480, 270),
) -> Path:
    """Several people side by side (one photo each, in equal columns), drifting a little each frame.

    More faces per frame make the detector's share of a video's work larger than the
    face stage's (one SCRFD pass per frame, one detector crop per face).
    """
    cell_w, h = size[0] // len(photos), size[1]
    cells = []
    for name in photos:
        img = load_photo(name)
        scale = min(cell_w / img.shape[1], h / img.shape[0])
        cells.append(cv2.resize(img, (int(img.shape[1] * scale), int(img.shape[0] * scale)),
                                interpolation=cv2.INTER_AREA))  # fmt: skip

    def frames() -> Iterator[np.ndarray]:
        for k in range(n_frames):
            canvas = np.full((size[1], size[0], 3), 128, np.uint8)
            for i, cell in enumerate(cells):
                x = i * cell_w + (cell_w - cell.shape[1]) // 2
                y = (h - cell.shape[0]) // 2 + (k % 3) - 1  # a pixel of drift: frames are not identical
                y = min(max(y, 0), h - cell.shape[0])
                canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
            yield canvas

    return _encode_frames(path, frames(), size, fps)


def make_no_face_video(path: Path, n_frames: int = 4, size: tuple[int, int] = (320, 240)) -> Path:
    """A lavfi test pattern with no face in it."""
    return _test_pattern(path, size, 4, n_frames)


# --- bad inputs ------------------------------------------------------------------------------
def make_audio_only(path: Path) -> Path:
    """One second of a 440 Hz tone in an .mp4 (AAC): a container with no video stream."""
    _ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=1", "-c:a", "aac", str(path))
    return path


def make_zero_byte(path: Path) -> Path:
    """An empty file."""
    path.write_bytes(b"")
    return path


def make_text_as_video(path: Path) -> Path:
    """A text file with a video suffix (e.g. ``notes.mp4``)."""
    path.write_text("this is a plain text file, not a video\n" * 20)
    return path


def make_image_file(path: Path) -> Path:
    """A still PNG image (the astronaut), whatever ``path``'s suffix says."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(load_photo("astronaut"), cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def make_truncated_video(path: Path, keep: float = 0.5, *, index_first: bool = False, n_frames: int = 50) -> Path:
    """A numbered .mp4 cut to ``keep`` of its bytes.

    By default the index (moov, written last) is lost, so the file cannot be
    opened at all. With ``index_first`` (faststart) the header survives and
    promises ``n_frames`` frames, but the later frames' data is missing.
    """
    extra = ("-movflags", "+faststart") if index_first else ()
    full = make_numbered_video(path.with_name(path.stem + ".full.mp4"), n_frames=n_frames, extra=extra)
    data = full.read_bytes()
    full.unlink()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_huge_declared_video(path: Path, width: int = 16000, height: int = 16000) -> Path:
    """A 1.5 kB QuickTime file whose header declares a ``width x height`` picture.

    Header trick: a 16x16 rawvideo .mov (rawvideo has no in-band size, so the
    demuxer believes the sample description), with the visual sample entry's and
    the track header's sizes patched. Nothing this big is ever encoded.
    """
    assert path.suffix == ".mov"
    small = path.with_name(path.stem + ".small.mov")
    _ffmpeg("-f", "lavfi", "-i", "color=gray:s=16x16:r=1:d=1", "-c:v", "rawvideo", "-pix_fmt", "rgb24", str(small))
    data = bytearray(small.read_bytes())
    small.unlink()
    stsd = data.find(b"stsd")
    assert stsd > 0, "no stsd box"
    # stsd: version/flags(4) entry count(4); entry: size(4) type(4) reserved(6) dref(2)
    # version(2) revision(2) vendor(4) temporal q(4) spatial q(4) width(2) height(2)
    entry_wh = stsd + 4 + 8 + 8 + 6 + 2 + 2 + 2 + 4 + 4 + 4
    assert struct.unpack(">HH", data[entry_wh : entry_wh + 4]) == (16, 16)
    data[entry_wh : entry_wh + 4] = struct.pack(">HH", width, height)
    tkhd = data.find(b"tkhd")
    assert tkhd > 0, "no tkhd box"
    # tkhd v0 after its type: version/flags(4) times(8) track id(4) reserved(4) duration(4)
    # reserved(8) layer/alt group/volume/reserved(8) matrix(36) width(4, 16.16) height(4)
    tkhd_wh = tkhd + 4 + 4 + 8 + 4 + 4 + 4 + 8 + 8 + 36
    assert struct.unpack(">II", data[tkhd_wh : tkhd_wh + 8]) == (16 << 16, 16 << 16)
    data[tkhd_wh : tkhd_wh + 8] = struct.pack(">II", width << 16, height << 16)
    path.write_bytes(bytes(data))
    return path


def make_long_video(path: Path, duration_s: float = 7200.0, fps: float = 0.1) -> Path:
    """A long but cheap video: 32x32 grey at ``fps`` (default 2 hours, 720 frames, ~0.3 s to make)."""
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        f"color=gray:s=32x32:r={fps}:d={duration_s}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-pix_fmt",
        "yuv420p",
        str(path),
    )
    return path


def make_fifo(path: Path) -> Path:
    """A named pipe with a video suffix; opening it for reading would block forever."""
    os.mkfifo(path)
    return path


# --- serving over http ---------------------------------------------------------------
@contextlib.contextmanager
def serve_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` over http on 127.0.0.1 in a thread; yields the base URL.

    No Range support (Python's simple handler), so serve faststart .mp4 files
    (``extra=("-movflags", "+faststart")``) or Matroska.
    """
    handler = functools.partial(_QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # the base class's signature
        """Keep test output clean."""


@contextlib.contextmanager
def hanging_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that accepts connections and never answers; yields an http URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/stuck.mp4"
    finally:
        stop.set()
        thread.join(timeout=2)
        for conn in held:
            conn.close()
        listener.close()
