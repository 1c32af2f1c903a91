"""Face actor: SCRFD detection, alignment to 256x256 crops and face tracks for one video.

The work is ``workers.face_cropper.FaceCropper`` (plain class); this actor only
holds the ONNX session. Ray queues calls; consumers bound how many are queued.
"""

from __future__ import annotations

import os

import ray

from clipguard.config import FacesConfig, VideoScoreConfig
from clipguard.contracts import FaceStageResult, SampledFrame
from clipguard.logging_setup import quiet_third_party
from workers.face_cropper import FaceCropper


@ray.remote
class FaceActor:
    def __init__(self, faces_cfg: FacesConfig, selection: VideoScoreConfig) -> None:
        quiet_third_party()  # format and level come from the job's LoggingConfig (ray.init on the driver)
        self.cropper = FaceCropper(faces_cfg, selection=selection)

    def crop(self, video_id: str, frames: list[SampledFrame], source_size: tuple[int, int] | None) -> FaceStageResult:
        return self.cropper.crop_video(video_id, frames, source_size)

    def ready(self) -> bool:
        return True

    def pid(self) -> int:
        """This worker's process id (fault-injection tests, memory probes)."""
        return os.getpid()
