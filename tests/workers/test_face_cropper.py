"""Frames -> detect -> policy -> align -> track -> crops, on real decoded videos."""

from __future__ import annotations

import numpy as np
import pytest

from clipguard.config import FacesConfig, SamplingConfig, SourceConfig, VideoScoreConfig
from clipguard.contracts import SampledFrame, VideoJob
from tests import video_factory as vf
from workers.face_alignment import alignment_template, estimate_alignment
from workers.face_cropper import FaceCropper, select_faces
from workers.face_detector import CPU, Detection, FaceDetector
from workers.frame_decoder import FrameDecoder


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(FacesConfig(), providers=[CPU], intra_op_threads=2)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    vf.make_portrait_video(root / "portrait.mp4", n_frames=6)
    vf.make_pan_video(root / "solvay.mp4", "solvay", n_frames=3)
    vf.make_no_face_video(root / "noface.mp4", n_frames=4)
    return root


def decode(root, name, **sampling):
    return FrameDecoder(SourceConfig(video_root=root), SamplingConfig(**sampling)).decode(VideoJob(video_id=name))


def cropper(detector, **selection):
    return FaceCropper(FacesConfig(), detector, selection=VideoScoreConfig(**selection))


def test_portrait_video_one_crop_per_frame_in_one_track(detector, videos):
    video = decode(videos, "portrait.mp4")
    result = cropper(detector).crop_video("portrait.mp4", video.frames, (video.info.width, video.info.height))
    assert (result.frames_sampled, result.frames_with_faces, result.faces_found) == (6, 6, 6)
    assert len(result.crops) == 6 and result.n_tracks == 1
    assert [c.frame_index for c in result.crops] == [f.index for f in video.frames]
    assert [c.timestamp_s for c in result.crops] == [f.timestamp_s for f in video.frames]
    for crop in result.crops:
        assert crop.video_id == "portrait.mp4" and crop.track_id == 0
        assert crop.image.shape == (256, 256, 3) and crop.image.dtype == np.uint8
        assert crop.det_score >= 0.5 and crop.landmarks.shape == (5, 2)
    # The face slides right by 12 px a frame.
    xs = [c.box[0] for c in result.crops]
    assert all(b > a for a, b in zip(xs, xs[1:], strict=False))


def test_crops_put_the_landmarks_on_the_template(detector, videos):
    video = decode(videos, "portrait.mp4", num_frames=2)
    result = cropper(detector).crop_video("portrait.mp4", video.frames)
    template = alignment_template(256, 1.3)
    for crop in result.crops:
        (again,) = detector.detect(crop.image)  # the detector, run on the aligned crop
        matrix = estimate_alignment(crop.landmarks)
        mapped = crop.landmarks @ matrix[:, :2].T + matrix[:, 2]
        # The warp is right: the face is where the transform says it is.
        assert np.linalg.norm(again.landmarks - mapped, axis=1).max() < 5.0
        # The eyes land on the template's eyes (nose and mouth follow the
        # person's face shape: a least-squares fit leaves them a few px off).
        assert np.linalg.norm(again.landmarks[:2] - template[:2], axis=1).max() < 6.0
        assert np.linalg.norm(again.landmarks - template, axis=1).mean() < 10.0


def test_solvay_pan_all_policy_keeps_every_face_with_stable_tracks(detector, videos):
    video = decode(videos, "solvay.mp4")
    result = cropper(detector, face_policy="all").crop_video("solvay.mp4", video.frames)
    per_frame = [sum(c.frame_index == f.index for c in result.crops) for f in video.frames]
    assert per_frame == [29, 29, 29]
    assert result.faces_found == 87 and result.frames_with_faces == 3
    # A slow pan: each person keeps one track id.
    assert result.n_tracks == 29


def test_largest_policy_keeps_only_the_largest_face(detector, videos):
    video = decode(videos, "solvay.mp4", num_frames=1)
    every = detector.detect(video.frames[0].image)
    result = cropper(detector, face_policy="largest").crop_video("solvay.mp4", video.frames)
    (crop,) = result.crops
    assert result.faces_found == 29
    assert crop.box == max(every, key=lambda d: d.area).box


def test_max_faces_per_frame_caps_crops_not_counts(detector, videos):
    video = decode(videos, "solvay.mp4", num_frames=1)
    result = cropper(detector, max_faces=5).crop_video("solvay.mp4", video.frames)
    assert len(result.crops) == 5 and result.faces_found == 29


def test_no_face_video_gives_zero_crops_and_counts_its_frames(detector, videos):
    video = decode(videos, "noface.mp4")
    result = cropper(detector).crop_video("noface.mp4", video.frames)
    assert result.crops == () and result.n_tracks == 0
    assert (result.frames_sampled, result.frames_with_faces, result.faces_found) == (4, 0, 0)


def test_boxes_and_landmarks_are_reported_in_original_video_pixels(detector, videos):
    small = decode(videos, "portrait.mp4", num_frames=1, max_side=320)
    assert small.frames[0].image.shape == (180, 320, 3)
    size = (small.info.width, small.info.height)
    (scaled,) = cropper(detector).crop_video("p", small.frames, size).crops
    (native,) = cropper(detector).crop_video("p", small.frames).crops
    np.testing.assert_allclose(scaled.box, np.array(native.box) * 2.0, rtol=1e-6)
    np.testing.assert_allclose(scaled.landmarks, native.landmarks * 2.0, rtol=1e-6)
    np.testing.assert_array_equal(scaled.image, native.image)  # cut from the decoded frame either way


class FakeDetector:
    """Returns preset detections per frame (by first pixel value), no model."""

    def __init__(self, by_value):
        self.by_value = by_value

    def detect_batch(self, images):
        return [self.by_value[int(img[0, 0, 0])] for img in images]


def fake_face(x, score=0.9, size=60.0):
    template = alignment_template(256, 1.3) * (size / 256) + [x, 20]
    return Detection(box=(x, 20.0, x + size, 20.0 + size), score=score, landmarks=template.astype(np.float32))


def frame(index, value):
    return SampledFrame(index=index, timestamp_s=index / 10, image=np.full((120, 400, 3), value, np.uint8))


def test_frames_without_faces_are_counted_not_errors():
    fake = FakeDetector({0: [], 1: [fake_face(10)], 2: [fake_face(10), fake_face(200, 0.7)]})
    frames = [frame(0, 1), frame(5, 0), frame(9, 2), frame(12, 0)]
    result = FaceCropper(FacesConfig(), fake, selection=VideoScoreConfig()).crop_video("v", frames)
    assert (result.frames_sampled, result.frames_with_faces, result.faces_found) == (4, 2, 3)
    assert [(c.frame_index, c.track_id) for c in result.crops] == [(0, 0), (9, 0), (9, 1)]


def test_no_frames_gives_an_empty_result():
    result = FaceCropper(FacesConfig(), FakeDetector({}), selection=VideoScoreConfig()).crop_video("v", [])
    assert (result.crops, result.frames_sampled, result.frames_with_faces, result.faces_found) == ((), 0, 0, 0)


def test_frames_are_processed_in_index_order():
    fake = FakeDetector({1: [fake_face(10)], 2: [fake_face(14)]})
    result = FaceCropper(FacesConfig(), fake, selection=VideoScoreConfig()).crop_video("v", [frame(7, 2), frame(3, 1)])
    assert [c.frame_index for c in result.crops] == [3, 7]
    assert result.n_tracks == 1


def test_select_faces_policies():
    small, big, mid = fake_face(0, 0.95, 20), fake_face(100, 0.6, 80), fake_face(200, 0.8, 40)
    assert select_faces([small, big, mid], "largest", 32) == [big]
    assert select_faces([small, big, mid], "all", 2) == [small, mid]
    assert select_faces([], "largest", 32) == []
    with pytest.raises(ValueError, match="policy"):
        select_faces([small], "biggest", 1)
