"""A synthetic deepfake set for training tests: real portrait videos and face-swapped fakes.

The manipulation is the classic face-swap artefact: another person's face,
warped onto the target's 5 landmarks by a similarity transform, colour-matched
to the target (per-channel mean/std in CIE LAB inside the face) and blended in
with a Gaussian-feathered elliptical mask. It is applied to every frame before
encoding, so the codec sees it like any other content.

People: the astronaut, Newton and Gauss photos, plus single faces cut out of the
1927 Solvay photo (29 people, greyscale), so held-out identities exist.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from tests.video_factory import _encode_frames, load_photo
from workers.face_detector import FaceDetector


@dataclass(frozen=True)
class Portrait:
    """A photo of one person and the 5 landmarks of their face in it."""

    name: str
    image: np.ndarray  # RGB uint8
    landmarks: np.ndarray  # (5, 2) float: eyes, nose, mouth corners
    face_width: float  # detector box width, pixels


def _largest_face(detector: FaceDetector, image: np.ndarray, name: str) -> tuple[np.ndarray, float]:
    faces = detector.detect(image)
    if not faces:
        raise RuntimeError(f"no face found in portrait {name!r}")
    best = max(faces, key=lambda d: d.area)
    return best.landmarks.astype(np.float64), best.box[2] - best.box[0]


def portrait(detector: FaceDetector, name: str) -> Portrait:
    """One of the shared single-face photos: 'astronaut', 'newton' or 'gauss'."""
    image = load_photo(name)
    landmarks, width = _largest_face(detector, image, name)
    return Portrait(name, image, landmarks, width)


def solvay_portraits(detector: FaceDetector, indices: list[int]) -> list[Portrait]:
    """Single-person cut-outs of the Solvay photo (faces sorted left to right).

    A square of 3 face widths around face ``i``; everything farther than ~1.2
    face widths from its centre fades to grey, so no neighbour's face remains.
    """
    group = load_photo("solvay")
    faces = sorted(detector.detect(group), key=lambda d: d.box[0])
    out = []
    for i in indices:
        x1, y1, x2, y2 = faces[i].box
        width = x2 - x1
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        top, left = int(cy - 1.5 * width), int(cx - 1.5 * width)
        cut = group[top : top + int(3 * width), left : left + int(3 * width)].astype(np.float32)
        yy, xx = np.mgrid[: cut.shape[0], : cut.shape[1]]
        dist = np.hypot(xx - (cx - left), (yy - (cy - top)) * 0.8) / width  # a little taller than wide
        keep = np.clip((1.3 - dist) / 0.2, 0.0, 1.0)[..., None]
        cut = np.clip(keep * cut + (1.0 - keep) * 128.0 + 0.5, 0, 255).astype(np.uint8)
        landmarks, found = _largest_face(detector, cut, f"solvay-{i}")
        out.append(Portrait(f"solvay-{i}", cut, landmarks, found))
    return out


# --- the manipulation ------------------------------------------------------------------------
def face_mask(shape: tuple[int, int], landmarks: np.ndarray, feather: float = 0.15) -> np.ndarray:
    """Float mask in [0, 1]: an ellipse over eyes, nose and mouth, feathered by a Gaussian."""
    eyes, mouth = landmarks[:2], landmarks[3:]
    iod = float(np.linalg.norm(eyes[1] - eyes[0]))
    centre = (eyes.mean(axis=0) + mouth.mean(axis=0)) / 2
    angle = float(np.degrees(np.arctan2(*(eyes[1] - eyes[0])[::-1])))
    mask = np.zeros(shape, np.float32)
    axes = (max(1, int(0.95 * iod)), max(1, int(1.25 * iod)))
    cv2.ellipse(mask, (int(centre[0]), int(centre[1])), axes, angle, 0, 360, 1.0, thickness=-1)
    return cv2.GaussianBlur(mask, (0, 0), sigmaX=max(0.5, feather * iod))


def lab_colour_transfer(source: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``source`` recoloured so its LAB mean/std inside ``mask`` match ``reference``'s there."""
    src = cv2.cvtColor(source.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    ref = cv2.cvtColor(reference.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    inside = mask > 0.5
    for c in range(3):
        s, r = src[..., c][inside], ref[..., c][inside]
        src[..., c] = (src[..., c] - s.mean()) / (s.std() + 1e-6) * r.std() + r.mean()
    rgb = cv2.cvtColor(src, cv2.COLOR_LAB2RGB)
    return np.clip(rgb * 255.0 + 0.5, 0, 255).astype(np.uint8)


def swap_face(target: np.ndarray, target_lmk: np.ndarray, donor: Portrait, feather: float = 0.15) -> np.ndarray:
    """``target`` (RGB uint8) with ``donor``'s face warped onto ``target_lmk``, colour-matched and blended."""
    tform = SimilarityTransform.from_estimate(donor.landmarks, target_lmk)
    height, width = target.shape[:2]
    warped = cv2.warpAffine(
        donor.image, tform.params[:2], (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )
    mask = face_mask((height, width), target_lmk, feather)
    warped = lab_colour_transfer(warped, target, mask)
    alpha = mask[..., None]
    return np.clip(alpha * warped + (1.0 - alpha) * target + 0.5, 0, 255).astype(np.uint8)


# --- videos ----------------------------------------------------------------------------------
def render_video(
    path: Path,
    person: Portrait,
    *,
    n_frames: int = 8,
    size: tuple[int, int] = (320, 240),
    face_px: float = 90.0,
    motion: str = "pan",
    background: int = 128,
    donor: Portrait | None = None,
) -> Path:
    """A short video of ``person`` moving on a plain background; with ``donor``, every frame is face-swapped.

    Args:
        path: output .mp4.
        person: who is filmed.
        n_frames: frames (8 fps).
        size: (width, height).
        face_px: face width on screen, pixels.
        motion: 'pan' (slides right) or 'zoom' (grows 3 % a frame).
        background: grey level of the canvas.
        donor: whose face is swapped in (a fake), or None (a real video).
    """
    base = face_px / person.face_width
    centre = person.landmarks.mean(axis=0)

    def frames() -> Iterator[np.ndarray]:
        for k in range(n_frames):
            scale = base * (1.0 + 0.03 * k if motion == "zoom" else 1.0)
            shift = 5.0 * (k - n_frames / 2) if motion == "pan" else 0.0
            tx = size[0] / 2 + shift - scale * centre[0]
            ty = size[1] / 2 - scale * centre[1]
            matrix = np.array([[scale, 0.0, tx], [0.0, scale, ty]])
            frame = cv2.warpAffine(
                person.image,
                matrix,
                size,
                flags=cv2.INTER_AREA,
                borderMode=cv2.BORDER_CONSTANT,
                borderValue=(background,) * 3,
            )
            if donor is not None:
                frame = swap_face(frame, person.landmarks * scale + np.array([tx, ty]), donor)
            yield frame

    return _encode_frames(path, frames(), size, 8)


# --- a labelled set ----------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoSpec:
    name: str
    person: str
    donor: str | None  # None = real
    split: str
    motion: str = "pan"
    size: tuple[int, int] = (320, 240)
    background: int = 128


def write_video_set(folder: Path, people: dict[str, Portrait], specs: list[VideoSpec], *, n_frames: int = 8) -> Path:
    """Render ``specs`` under ``folder/videos`` and write ``folder/manifest.csv``; returns the manifest."""
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in specs:
        donor = people[spec.donor] if spec.donor else None
        render_video(
            folder / "videos" / f"{spec.name}.mp4",
            people[spec.person],
            n_frames=n_frames,
            size=spec.size,
            motion=spec.motion,
            background=spec.background,
            donor=donor,
        )
        source = "" if donor is None else f"synthetic:videos/{spec.person}-real.mp4"
        rows.append(
            {
                "path": f"videos/{spec.name}.mp4",
                "label": "fake" if donor else "real",
                "split": spec.split,
                "dataset": "synthetic",
                "source_video": source,
            }
        )
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "split", "dataset", "source_video"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def identity_disjoint_set(detector: FaceDetector) -> tuple[dict[str, Portrait], list[VideoSpec]]:
    """The labelled set of the training tests and the training benchmark.

    Five people for train (a real video and a face-swapped fake of each), new videos of
    three of them for validation, and three people never seen in training for test.
    Every fake's source video is the real video of its person, so GenD's pairs exist.
    """
    people = {name: portrait(detector, name) for name in ("astronaut", "newton", "gauss")}
    people.update({p.name: p for p in solvay_portraits(detector, [2, 8, 14, 20, 26])})
    train, held_out = ["astronaut", "newton", "gauss", "solvay-2", "solvay-8"], ["solvay-14", "solvay-20", "solvay-26"]
    specs = []
    for i, name in enumerate(train):
        specs += [VideoSpec(f"{name}-real", name, None, "train"),
                  VideoSpec(f"{name}-fake", name, train[(i + 1) % 5], "train", motion="zoom")]  # fmt: skip
    for i, name in enumerate(train[:3]):  # validation: new videos of training people
        specs += [VideoSpec(f"{name}-real-b", name, None, "val", "zoom", (384, 288), 96),
                  VideoSpec(f"{name}-fake-b", name, train[(i + 2) % 5], "val", "pan", (384, 288), 96)]  # fmt: skip
    for i, name in enumerate(held_out):  # test: people never seen in training
        specs += [VideoSpec(f"{name}-real", name, None, "test"),
                  VideoSpec(f"{name}-fake", name, held_out[(i + 1) % 3], "test", motion="zoom")]  # fmt: skip
    return people, specs
