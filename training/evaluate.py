"""``clipguard evaluate``: score labelled test sets with a checkpoint (or the base model) on Ray, then metrics.

A test set is a crop manifest (``crops.csv`` from ``clipguard prepare``) or a raw
labelled video manifest (CSV/JSONL, :mod:`training.data_manifest`), which is
first prepared with :func:`training.prepare.prepare_videos` into the output
folder. Crops are read on the driver and scored in batches by a few Ray actors,
each holding one :class:`~clipguard.model.CropScorer` built exactly as the
stream's scorer builds it (:meth:`~clipguard.model.DetectorConfig.for_stream`). A
video's score is the mean of its crops' p_fake (:func:`training.eval_metrics.video_scores`).

Videos without crops (no face found, undecodable) cannot be scored; they are
counted and listed per set, never silently dropped. A set with one class only
gets null metrics and a reason; the metric functions themselves still raise.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.util import ActorPool

from clipguard.aggregation import Aggregation
from clipguard.config import FacesConfig, ModelConfig, SamplingConfig, SourceConfig
from clipguard.errors import ClipguardError, ConfigError
from clipguard.logging_setup import quiet_third_party
from clipguard.model import CropScorer, DetectorConfig
from training.crop_dataset import load_crop
from training.crop_manifest import CROP_COLUMNS, CropRow, VideoOutcome, read_crop_manifest
from training.data_manifest import read_video_manifest
from training.eval_metrics import VideoScores, detection_metrics, video_scores
from training.prepare import prepare_videos

logger = logging.getLogger(__name__)

ALL = "all"  # name of the union of every test set in the report
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
SPLITS = ("all", "train", "val", "test")


@dataclass(frozen=True)
class SetSpec:
    """A labelled set as given on the command line: ``NAME=PATH`` (or ``PATH``, named by its folder/stem)."""

    name: str
    path: Path


def parse_set_spec(text: str) -> SetSpec:
    """``NAME=PATH`` or ``PATH`` -> :class:`SetSpec`; the name becomes part of file names.

    Raises:
        ConfigError: an empty part, a name with characters other than ``A-Za-z0-9_.-``, or the reserved ``all``.
    """
    name, sep, path = text.partition("=")
    if not sep:
        path = text
        stem = Path(text).stem
        name = Path(text).parent.name if stem == "crops" and Path(text).parent.name else stem
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "set"
    if not sep and not path:
        msg = f"test set {text!r}: expected NAME=PATH"
        raise ConfigError(msg)
    if sep and (not name or not path):
        msg = f"test set {text!r}: expected NAME=PATH with both parts non-empty"
        raise ConfigError(msg)
    if not _NAME.match(name):
        msg = f"test set {text!r}: NAME must match {_NAME.pattern} (it is used in file names)"
        raise ConfigError(msg)
    if name == ALL:
        msg = f"test set {text!r}: the name {ALL!r} is reserved for the union of all sets"
        raise ConfigError(msg)
    return SetSpec(name=name, path=Path(path))


@dataclass(frozen=True)
class PrepareSettings:
    """How a raw video manifest is turned into crops (the stream's decode and face settings)."""

    source: SourceConfig
    sampling: SamplingConfig
    faces: FacesConfig
    video_root: Path | None = None  # None: each manifest's own folder
    workers: int = 2
    cpus_per_worker: float = 1.0
    model_dir: Path | None = None  # where the face detector is looked up (None: $CLIPGUARD_MODEL_DIR, ./models)


@dataclass(frozen=True)
class LoadedSet:
    """A test set's crops (one split), and the videos of it that have none."""

    name: str
    path: Path  # as given
    kind: str  # 'crops' or 'videos'
    crops_csv: Path
    split: str
    rows: tuple[CropRow, ...]
    without_crops: tuple[dict[str, Any], ...]  # video_id, label, status, error_kind, error_message


def is_crop_manifest(path: Path) -> bool:
    """True for a CSV whose header is exactly the crop manifest's columns."""
    if path.suffix.lower() != ".csv":
        return False
    with path.open(newline="", encoding="utf-8") as handle:
        header = next(csv.reader(handle), [])
    return tuple(header) == CROP_COLUMNS


def _videos_without_crops(crops_csv: Path, split: str, selected: set[str] | None) -> list[dict[str, Any]]:
    """Rows of ``videos.csv`` beside a crop manifest with no crops (none listed if that file is absent)."""
    videos_csv = crops_csv.with_name("videos.csv")
    if not videos_csv.is_file():
        return []
    with videos_csv.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    out = []
    for row in rows:
        if (split != ALL and row.get("split") != split) or (selected is not None and row["video_id"] not in selected):
            continue
        if int(row.get("n_crops") or 0) == 0:
            out.append({"video_id": row["video_id"], "label": int(row["label"]), "status": row["status"],
                        "error_kind": row.get("error_kind", ""),
                        "error_message": row.get("error_message", "")})  # fmt: skip
    return out


def load_set(
    spec: SetSpec,
    split: str,
    prepared_root: Path,
    prepare: PrepareSettings,
    on_video: Callable[[VideoOutcome], None] | None = None,
) -> LoadedSet:
    """Read a crop manifest, or prepare a video manifest into ``prepared_root/<name>`` (Ray must be up)."""
    if not spec.path.is_file():
        msg = f"test set {spec.name!r}: {spec.path} is not a file"
        raise ConfigError(msg)
    if is_crop_manifest(spec.path):
        kind, crops_csv, selected = "crops", spec.path, None
    else:
        records = read_video_manifest(spec.path, prepare.video_root)
        records = [r for r in records if split == ALL or r.split == split]
        if not records:
            msg = f"test set {spec.name!r}: {spec.path} has no videos in split {split!r}"
            raise ConfigError(msg)
        root = (prepare.video_root or spec.path.parent).resolve()
        summary = prepare_videos(
            records,
            (prepared_root / spec.name).resolve(),
            source=prepare.source.model_copy(update={"video_root": root}),
            sampling=prepare.sampling,
            faces=prepare.faces,
            workers=prepare.workers,
            cpus_per_worker=prepare.cpus_per_worker,
            on_video=on_video,
            model_dir=prepare.model_dir,
        )
        kind, crops_csv, selected = "videos", summary.crops_csv, {r.video_id for r in records}
    rows = [r for r in read_crop_manifest(crops_csv) if split == ALL or r.split == split]
    without = _videos_without_crops(crops_csv, split, selected)
    if not rows and not without:
        msg = f"test set {spec.name!r}: {spec.path} has no crops in split {split!r}"
        raise ConfigError(msg)
    return LoadedSet(spec.name, spec.path, kind, crops_csv, split, tuple(rows), tuple(without))


# --- scoring on Ray --------------------------------------------------------------------------
class BatchScorer:
    """What each scoring actor holds: the stream's detector, built once from the model section.

    A refused model (``CheckpointError``, ``ModelError``) is kept and raised by every
    call instead of failing ``__init__``: Ray reports a failed constructor only as
    text (``ActorDiedError``), a failed call as the error itself, which the driver re-raises.
    """

    def __init__(self, model: ModelConfig, batch_size: int) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.scorer: CropScorer | None = None
        self.error: ClipguardError | None = None
        try:
            self.scorer = CropScorer.from_config(DetectorConfig.for_stream(model, batch_size), model.checkpoint)
        except ClipguardError as exc:
            self.error = exc

    def _ready(self) -> CropScorer:
        if self.scorer is None:
            raise self.error
        return self.scorer

    def version(self) -> str:
        """The model version verdicts would record."""
        return self._ready().version

    def score(self, crops: np.ndarray) -> np.ndarray:
        """p_fake of a (N, H, W, 3) uint8 batch."""
        return self._ready().score(crops)


def start_scorers(model: ModelConfig, workers: int, batch_size: int, cpus: float, gpus: float) -> list[Any]:
    """``workers`` scoring actors; waits until each has loaded the model (errors surface here)."""
    actor_cls = ray.remote(BatchScorer).options(num_cpus=cpus, num_gpus=gpus)
    actors = [actor_cls.remote(model, batch_size) for _ in range(workers)]
    try:
        versions = set(ray.get([a.version.remote() for a in actors]))
    except ray.exceptions.RayError as exc:
        for actor in actors:
            ray.kill(actor)
        cause = getattr(exc, "cause", None)  # RayTaskError: the actor's own exception
        if isinstance(cause, ClipguardError):  # e.g. CheckpointError: raise it as itself, not a Ray trace
            raise cause from None
        msg = f"a scoring actor failed to start: {exc}"
        raise ConfigError(msg) from exc
    if len(versions) != 1:
        msg = f"scoring actors loaded different models: {sorted(versions)}"
        raise ConfigError(msg)
    return actors


def _batches(rows: Sequence[CropRow], root: Path, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(rows), size):
        yield np.stack([load_crop(root / r.crop_path) for r in rows[start : start + size]])


def score_rows(actors: Sequence[Any], rows: Sequence[CropRow], root: Path, batch_size: int) -> np.ndarray:
    """p_fake for every crop row, in row order; crops are read here and sent to the actors in batches."""
    if not rows:
        return np.empty(0, dtype=np.float32)
    pool = ActorPool(list(actors))
    parts = pool.map(lambda actor, batch: actor.score.remote(batch), _batches(rows, root, batch_size))
    return np.concatenate(list(parts)).astype(np.float64)


# --- results -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SetResult:
    """Scores and metrics of one test set (or of the union)."""

    name: str
    videos: VideoScores
    crop_video_ids: tuple[str, ...]
    crop_labels: np.ndarray
    crop_scores: np.ndarray
    without_crops: tuple[dict[str, Any], ...]
    metrics: dict[str, float] | None
    null_reason: str | None
    info: dict[str, Any] = field(default_factory=dict)  # path, kind, crops_csv, split

    def counts(self) -> dict[str, int]:
        """Videos (scored, by class), crops and videos without crops."""
        y = self.videos.labels
        missing = [v["label"] for v in self.without_crops]
        return {
            "videos": len(y) + len(missing),
            "videos_scored": len(y),
            "videos_real": int((y == 0).sum()) + missing.count(0),
            "videos_fake": int((y == 1).sum()) + missing.count(1),
            "videos_scored_real": int((y == 0).sum()),
            "videos_scored_fake": int((y == 1).sum()),
            "crops": len(self.crop_scores),
            "videos_without_crops": len(self.without_crops),
        }


def set_result(
    name: str,
    video_ids: Sequence[str],
    labels: Sequence[int],
    crop_scores: np.ndarray,
    without_crops: Sequence[dict[str, Any]],
    method: Aggregation,
    info: dict[str, Any] | None = None,
) -> SetResult:
    """Video scores and :func:`training.eval_metrics.detection_metrics`, or null metrics with the reason."""
    videos = video_scores(video_ids, labels, crop_scores, method)
    y = videos.labels
    n_real, n_fake = int((y == 0).sum()), int((y == 1).sum())
    metrics, reason = None, None
    if n_real == 0 or n_fake == 0:
        only = "no scored videos" if len(y) == 0 else f"only {'fake' if n_real == 0 else 'real'} videos ({len(y)})"
        reason = f"{only}: AUROC, mAP, EER and TPR@FPR need both real and fake videos"
    else:
        metrics = asdict(detection_metrics(list(video_ids), list(labels), crop_scores, method))
    return SetResult(name, videos, tuple(video_ids), np.asarray(labels, dtype=np.int64),
                     np.asarray(crop_scores, dtype=np.float64), tuple(without_crops), metrics, reason,
                     dict(info or {}))  # fmt: skip


def evaluate_set(loaded: LoadedSet, actors: Sequence[Any], batch_size: int, method: Aggregation) -> SetResult:
    """Score one loaded set and compute its metrics."""
    scores = score_rows(actors, loaded.rows, loaded.crops_csv.parent, batch_size)
    info = {"path": str(loaded.path), "kind": loaded.kind, "crops_csv": str(loaded.crops_csv), "split": loaded.split}
    return set_result(loaded.name, [r.video_id for r in loaded.rows], [r.label for r in loaded.rows], scores,
                      loaded.without_crops, method, info)  # fmt: skip


def union_result(results: Sequence[SetResult], method: Aggregation) -> SetResult:
    """The ``all`` row: every set's crops together, video ids prefixed by their set's name."""
    ids = [f"{r.name}/{v}" for r in results for v in r.crop_video_ids]
    labels = np.concatenate([r.crop_labels for r in results]) if results else np.empty(0, dtype=np.int64)
    scores = np.concatenate([r.crop_scores for r in results]) if results else np.empty(0)
    without = [{**v, "video_id": f"{r.name}/{v['video_id']}"} for r in results for v in r.without_crops]
    return set_result(ALL, ids, labels.tolist(), scores, without, method, {"sets": [r.name for r in results]})
