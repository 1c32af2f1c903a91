"""SCRFD wrapper: face counts on the shared photos, providers, batching, config checks."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from clipguard.assets import asset_path
from clipguard.config import FacesConfig
from clipguard.errors import ConfigError, ModelError
from tests.video_factory import load_photo
from workers.face_detector import CPU, CUDA, FaceDetector, choose_providers


@pytest.fixture(scope="module")
def detector():
    return FaceDetector(FacesConfig(), providers=[CPU], intra_op_threads=2)


@pytest.fixture(scope="module")
def photos():
    return {name: load_photo(name) for name in ("solvay", "astronaut", "newton", "gauss")}


def test_solvay_photo_has_29_faces_sorted_by_score(detector, photos):
    faces = detector.detect(photos["solvay"])
    assert len(faces) == 29
    scores = [f.score for f in faces]
    assert scores == sorted(scores, reverse=True) and min(scores) >= 0.5


@pytest.mark.parametrize("name", ["astronaut", "newton", "gauss"])
def test_portraits_have_one_face_with_plausible_landmarks(detector, photos, name):
    (face,) = detector.detect(photos[name])
    x1, y1, x2, y2 = face.box
    lm = face.landmarks
    assert lm.shape == (5, 2) and lm.dtype == np.float32
    assert ((lm[:, 0] >= x1) & (lm[:, 0] <= x2) & (lm[:, 1] >= y1) & (lm[:, 1] <= y2)).all()
    assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]  # left before right in the image
    assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])  # eyes, nose, mouth top to bottom


def test_blank_image_has_no_face(detector):
    assert detector.detect(np.full((480, 640, 3), 127, np.uint8)) == []


def test_rgb_input_matches_insightface_on_bgr(detector, photos):
    import insightface

    raw = insightface.model_zoo.get_model(str(asset_path("models/scrfd_2.5g_kps.onnx")), providers=[CPU])
    raw.prepare(ctx_id=-1, input_size=(640, 640), det_thresh=0.5, nms_thresh=0.4)
    boxes, kpss = raw.detect(np.ascontiguousarray(photos["astronaut"][..., ::-1]))
    (face,) = detector.detect(photos["astronaut"])
    np.testing.assert_allclose(face.box, boxes[0, :4], rtol=1e-5)
    np.testing.assert_allclose(face.landmarks, kpss[0], rtol=1e-5)


def test_det_thresh_from_config_is_applied(photos):
    strict = FaceDetector(FacesConfig(det_thresh=0.8), providers=[CPU])
    faces = strict.detect(photos["solvay"])
    assert 0 < len(faces) < 29 and min(f.score for f in faces) >= 0.8


def test_shared_model_cannot_batch_and_loops(detector, photos):
    assert detector.batch_size == 1
    images = [photos["astronaut"], np.zeros((100, 200, 3), np.uint8), photos["newton"]]
    assert [len(f) for f in detector.detect_batch(images)] == [1, 0, 1]


def _batchable_copy(path):
    """The shared SCRFD with a dynamic batch dimension: batch dims -> 'N', Reshape [1, -1, k] -> [0, -1, k]."""
    model = onnx.load(str(asset_path("models/scrfd_2.5g_kps.onnx")))
    for value in [*model.graph.input, *model.graph.output]:
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    reshape_shapes = {node.input[1] for node in model.graph.node if node.op_type == "Reshape"}
    for init in model.graph.initializer:
        if init.name in reshape_shapes:
            shape = numpy_helper.to_array(init).copy()
            shape[0] = 0  # copy the batch size from the input
            init.CopyFrom(numpy_helper.from_array(shape, init.name))
    onnx.save(model, str(path))
    return path


def test_batched_path_matches_looped_detection(detector, photos, tmp_path):
    batched = FaceDetector(
        FacesConfig(detector_path=_batchable_copy(tmp_path / "scrfd_dyn.onnx")), providers=[CPU], batch_size=3
    )
    assert batched.batch_size == 3
    images = [photos["solvay"], photos["astronaut"], np.zeros((300, 200, 3), np.uint8), photos["gauss"]]
    got = batched.detect_batch(images)  # two session runs: 3 + 1 frames
    want = detector.detect_batch(images)
    assert [len(g) for g in got] == [len(w) for w in want] == [29, 1, 0, 1]
    for g_faces, w_faces in zip(got, want, strict=True):
        for g, w in zip(g_faces, w_faces, strict=True):
            np.testing.assert_allclose(g.box, w.box, atol=1e-2)
            np.testing.assert_allclose(g.landmarks, w.landmarks, atol=1e-2)
            assert g.score == pytest.approx(w.score, abs=1e-5)


def test_choose_providers_prefers_cuda_then_cpu():
    assert choose_providers([CUDA, CPU]) == [CUDA, CPU]
    assert choose_providers(["AzureExecutionProvider", CPU]) == [CPU]
    with pytest.raises(ModelError):
        choose_providers(["AzureExecutionProvider"])


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_requesting_unavailable_cuda_is_an_error_not_a_cpu_fallback():
    import onnxruntime

    if CUDA in onnxruntime.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelError, match="activated"):
        FaceDetector(FacesConfig(), providers=[CUDA, CPU])


def test_input_size_other_than_fixed_model_input_raises_config_error():
    with pytest.raises(ConfigError, match="fixed input"):
        FaceDetector(FacesConfig(input_size=320), providers=[CPU])


def test_missing_model_file_raises_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        FaceDetector(FacesConfig(detector_path=tmp_path / "nope.onnx"), providers=[CPU])


def test_detector_found_by_name_in_the_model_directory(tmp_path, assets, monkeypatch):
    (tmp_path / "scrfd_2.5g_kps.onnx").symlink_to(assets / "models" / "scrfd_2.5g_kps.onnx")
    monkeypatch.setenv("CLIPGUARD_MODEL_DIR", str(tmp_path / "elsewhere"))
    found = FaceDetector(FacesConfig(), providers=[CPU], model_dir=tmp_path)  # the configured dir wins
    assert found.path == tmp_path / "scrfd_2.5g_kps.onnx"
    monkeypatch.setenv("CLIPGUARD_MODEL_DIR", str(tmp_path))
    assert FaceDetector(FacesConfig(), providers=[CPU]).path == tmp_path / "scrfd_2.5g_kps.onnx"


def test_missing_detector_error_names_the_file_setting_and_places(tmp_path, monkeypatch):
    monkeypatch.setenv("CLIPGUARD_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        FaceDetector(FacesConfig(detector_path="det_10g.onnx"), providers=[CPU])
    text = str(info.value)
    assert "'det_10g.onnx'" in text and "faces.detector_path" in text and "CLIPGUARD_MODEL_DIR" in text
    assert str(tmp_path / "models" / "det_10g.onnx") in text and str(tmp_path / "det_10g.onnx") in text


@pytest.mark.parametrize(
    "bad", [np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), np.zeros((0, 5, 3), np.uint8)]
)
def test_bad_images_raise_value_error(detector, bad):
    with pytest.raises(ValueError, match="uint8 RGB"):
        detector.detect(bad)
