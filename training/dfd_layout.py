"""DeepFakeDetection (DFD, Google/Jigsaw) folder layout -> labelled video records.

DFD is distributed with FaceForensics++ by its download script (``download-FaceForensics.py``:
``DeepFakeDetection_original`` -> ``original_sequences/actors``, ``DeepFakeDetection`` ->
``manipulated_sequences/DeepFakeDetection``), so its tree is FF++'s::

    original_sequences/actors/<compression>/videos/01__exit_phone_room.mp4                 363 real
    manipulated_sequences/DeepFakeDetection/<compression>/videos/01_02__exit_phone_room__YVGY8LOK.mp4   3,068 fake

DFD has no official split; the paper protocol evaluates on all of it, so every video is
``test``. Metadata: ``actors`` (``01``, or ``01_02`` for a fake) and ``scene``
(``exit_phone_room``), read from the name's ``__``-separated parts. The name does not
say which real recording a fake was made from, so fakes have no source video.
"""

from __future__ import annotations

from pathlib import Path

from clipguard.errors import ConfigError
from training.data_manifest import VideoRecord

DATASET = "DFD"
REAL_DIR = "original_sequences/actors/{compression}/videos"
FAKE_DIR = "manipulated_sequences/DeepFakeDetection/{compression}/videos"


def scan_dfd(root: Path, *, compression: str = "c23") -> list[VideoRecord]:
    """Every real and fake DFD video under an FF++-style tree, all in ``test``.

    Raises:
        ConfigError: either folder is missing for ``compression``.
    """
    records = []
    for label, pattern, name in ((0, REAL_DIR, "actors"), (1, FAKE_DIR, "DeepFakeDetection")):
        folder = root / pattern.format(compression=compression)
        if not folder.is_dir():
            msg = f"{folder} not found: not a DFD tree for compression {compression!r} (see training/dfd_layout.py)"
            raise ConfigError(msg)
        for path in sorted(folder.glob("*.mp4")):
            rel = path.relative_to(root).as_posix()
            parts = path.stem.split("__")
            metadata = {"actors": parts[0], "scene": parts[1] if len(parts) > 1 else ""}
            video_id = f"{DATASET}/{name}:{rel}"
            records.append(VideoRecord(video_id, rel, label, "test", f"{DATASET}/{name}",
                                       video_id if label == 0 else "", metadata))  # fmt: skip
    return records
