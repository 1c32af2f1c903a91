"""``clipguard prepare``: labelled videos -> aligned face crops + crop manifest, in parallel on Ray.

Each Ray actor holds one :class:`VideoPreparer`: the stream's own
:class:`~workers.frame_decoder.FrameDecoder` and
:class:`~workers.face_cropper.FaceCropper`, so training crops are made exactly
as the stream makes the crops it scores (sampling, detector, face policy, alignment). The
face policy is the video score's (:class:`clipguard.config.VideoScoreConfig`), and the
output folder records it with the sampling (``prepared.json``): a folder holds crops of
one kind only, and ``evaluate`` scores them only under the video score they were made for.
The actor returns PNG bytes; the driver writes them and the per-video
done-marker (:mod:`training.crop_manifest`), so no shared filesystem is needed
between the nodes, and a re-run skips every video that already has a marker.

A video that cannot be read is recorded as ``skipped`` with its error kind
(``corrupt``, ``not_found``...), and one without any face as ``no_face``; only
infrastructure errors (a crashed actor, a missing face model) stop the run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import ray
from ray.util import ActorPool

from clipguard.config import FacesConfig, SamplingConfig, SourceConfig, VideoScoreConfig
from clipguard.contracts import VideoJob
from clipguard.errors import ClipguardError
from clipguard.model_files import find_model_file
from training.crop_manifest import CropStore, EncodedCrop, VideoOutcome
from training.data_manifest import VideoRecord
from training.progress import Progress
from workers.face_cropper import FaceCropper
from workers.face_detector import CPU, CUDA, FaceDetector
from workers.frame_decoder import FrameDecoder

logger = logging.getLogger(__name__)

PNG_COMPRESSION = 1  # zlib level: lossless at any level; 1 writes fastest


def encode_png(rgb: np.ndarray) -> bytes:
    """Lossless PNG bytes of an RGB uint8 crop."""
    ok, data = cv2.imencode(
        ".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION]
    )
    if not ok:
        msg = f"PNG encoding failed for a crop of shape {rgb.shape}"
        raise ValueError(msg)
    return data.tobytes()


class VideoPreparer:
    """Decode -> detect, select, align -> PNG, for one video at a time (the stream's code path).

    Args:
        source: where videos live (``video_root``) and the decode limits.
        sampling: frames per video (32 in the paper protocol) and max side.
        faces: detector and crop size.
        selection: the video score whose face policy (``largest`` = paper) picks the faces.
        intra_op_threads: onnxruntime threads for the face detector (the CPUs the actor owns).
        use_gpu: run the face detector on CUDA (the actor must own a GPU); False pins it to the CPU,
            so an actor without a GPU never tries CUDA on a GPU node.
    """

    def __init__(
        self,
        source: SourceConfig,
        sampling: SamplingConfig,
        faces: FacesConfig,
        selection: VideoScoreConfig,
        intra_op_threads: int | None = 1,
        use_gpu: bool = False,
    ) -> None:
        self._decoder = FrameDecoder(source, sampling)
        providers = [CUDA, CPU] if use_gpu else [CPU]  # FaceDetector refuses a CUDA request it cannot honour
        detector = FaceDetector(faces, providers=providers, intra_op_threads=intra_op_threads)
        self._cropper = FaceCropper(faces, detector, selection=selection)

    def prepare(self, record: VideoRecord) -> VideoOutcome:
        """Crops of one video, or its typed failure (never raises for a bad video)."""
        job = VideoJob(video_id=record.video_id, uri=record.path)
        try:
            decoded = self._decoder.decode(job)
        except ClipguardError as exc:
            logger.warning("video %r skipped: %s", record.video_id, exc)
            return VideoOutcome(record.video_id, "skipped", error_kind=exc.kind, error_message=exc.message)
        result = self._cropper.crop_video(record.video_id, decoded.frames, (decoded.info.width, decoded.info.height))
        crops = tuple(EncodedCrop(c.frame_index, c.track_id, encode_png(c.image)) for c in result.crops)
        return VideoOutcome(
            video_id=record.video_id,
            status="done" if crops else "no_face",
            frames_sampled=result.frames_sampled,
            frames_with_faces=result.frames_with_faces,
            crops=crops,
        )


def describe_outcome(outcome: VideoOutcome) -> str:
    """``status  n crops  video_id (error)``: one video's result, for progress lines."""
    detail = f" ({outcome.error_kind}: {outcome.error_message})" if outcome.status == "skipped" else ""
    return f"{outcome.status:8s} {len(outcome.crops):3d} crops  {outcome.video_id}{detail}"


@dataclass(frozen=True)
class PrepareSummary:
    """Counts of one ``prepare`` run."""

    videos: int  # videos in the input
    already_done: int  # skipped because a done-marker existed
    done: int  # prepared now, with crops
    no_face: int
    skipped: int  # failed to decode (see videos.csv for the kinds)
    crops_written: int  # crops written now
    crops_total: int  # rows of crops.csv
    crops_csv: Path


def prepare_videos(
    records: Sequence[VideoRecord],
    out_dir: Path,
    *,
    source: SourceConfig,
    sampling: SamplingConfig,
    faces: FacesConfig,
    video_score: VideoScoreConfig,
    workers: int = 2,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    retry_skipped: bool = False,
    on_video: Callable[[VideoOutcome], None] | None = None,
    model_dir: Path | None = None,
    progress: Progress | None = None,
) -> PrepareSummary:
    """Prepare every video without a done-marker on a pool of Ray actors (Ray must be initialised).

    Args:
        records: the labelled videos.
        out_dir: the prepared-data folder (created if needed).
        source, sampling, faces: the stream's decode, sampling and face settings.
        video_score: the video score the crops are for (its face policy picks the faces).
        workers: actors in the pool.
        cpus_per_worker, gpus_per_worker: Ray resources of each actor.
        retry_skipped: also redo videos recorded as skipped by an earlier run.
        on_video: called on the driver after each video is written.
        progress: counts the videos prepared now, one line (or bar step) per video.
        model_dir: the model directory the face detector is looked up in (None: ``$CLIPGUARD_MODEL_DIR``,
            then ``./models``); resolved here, on the driver, so actors on any node get a path.

    Returns:
        The run's counts; ``crops_csv`` is the crop manifest for training.
    """
    detector = find_model_file(faces.detector_path, what="SCRFD face detector", setting="--detector-path",
                               configured_dir=model_dir)  # fmt: skip
    faces = faces.model_copy(update={"detector_path": detector})
    store = CropStore(out_dir)
    store.claim(video_score.crop_selection(sampling))  # before any work: refuse a folder of other crops
    by_id = {r.video_id: r for r in records}
    todo = [r for r in records if not store.is_done(r.video_id, retry_skipped=retry_skipped)]
    counts = {"done": 0, "no_face": 0, "skipped": 0}
    written = 0
    if todo:
        actor_cls = ray.remote(VideoPreparer).options(num_cpus=cpus_per_worker, num_gpus=gpus_per_worker)
        threads = max(1, int(cpus_per_worker))
        use_gpu = gpus_per_worker > 0
        actors = [actor_cls.remote(source, sampling, faces, video_score, threads, use_gpu)
                  for _ in range(min(workers, len(todo)))]  # fmt: skip
        if progress is not None:
            progress.start(len(todo))
        try:
            pool = ActorPool(actors)
            for outcome in pool.map_unordered(lambda actor, record: actor.prepare.remote(record), todo):
                written += len(store.write_video(by_id[outcome.video_id], outcome))
                counts[outcome.status] += 1
                if on_video is not None:
                    on_video(outcome)
                if progress is not None:
                    progress.advance(note=describe_outcome(outcome), always=outcome.status != "done")
        finally:
            if progress is not None:
                progress.close()
            for actor in actors:
                ray.kill(actor)
    crops_total, _ = store.write_manifests(list(records))
    return PrepareSummary(
        videos=len(records),
        already_done=len(records) - len(todo),
        done=counts["done"],
        no_face=counts["no_face"],
        skipped=counts["skipped"],
        crops_written=written,
        crops_total=crops_total,
        crops_csv=store.crops_csv,
    )
