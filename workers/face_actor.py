"""Face actor: SCRFD detection, alignment to 256x256 crops and face tracks for one video.

The work is ``workers.face_cropper.FaceCropper`` (plain class); this actor only
holds the ONNX session. Ray queues calls; consumers bound how many are queued.
The topology's probes (``ready``, ``load``, ``pid``) run on a control thread of
their own, so they answer at once even with crops queued behind a busy actor.
"""

from __future__ import annotations

import os

import ray

from clipguard.config import FacesConfig, VideoScoreConfig
from clipguard.contracts import FaceStageResult, SampledFrame, StageLoad
from clipguard.logging_setup import quiet_third_party
from workers.busy_meter import BusyMeter
from workers.face_cropper import FaceCropper


@ray.remote(concurrency_groups={"control": 1})
class FaceActor:
    def __init__(self, faces_cfg: FacesConfig, selection: VideoScoreConfig) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.cropper = FaceCropper(faces_cfg, selection=selection)
        self.meter = BusyMeter()

    def crop(self, video_id: str, frames: list[SampledFrame], source_size: tuple[int, int] | None) -> FaceStageResult:
        with self.meter.video(), self.meter.busy():
            return self.cropper.crop_video(video_id, frames, source_size)

    @ray.method(concurrency_group="control")
    def ready(self) -> bool:
        return True

    @ray.method(concurrency_group="control")
    def load(self) -> StageLoad:
        """Busy seconds and videos cropped so far (the autoscaler's per-actor rate)."""
        return self.meter.snapshot()

    @ray.method(concurrency_group="control")
    def pid(self) -> int:
        """This worker's process id (fault-injection tests, memory probes)."""
        return os.getpid()
