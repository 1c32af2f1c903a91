"""``clipguard prepare``: manifests and FF++ trees in, crops + crop manifest out, on the session Ray head."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import ray
from click.testing import CliRunner

from clipguard.config import FacesConfig, SamplingConfig, SourceConfig, VideoScoreConfig
from clipguard.contracts import VideoJob
from clipguard.errors import ConfigError
from tests import video_factory as vf
from tests.training.face_swap import VideoSpec, portrait, write_video_set
from training.cli import prepare_command
from training.crop_dataset import load_crop
from training.crop_manifest import CROP_COLUMNS, CropStore, EncodedCrop, VideoOutcome, read_crop_manifest
from training.data_manifest import VAL_FLAG, VideoRecord, carve_validation, read_video_manifest
from training.ffpp_layout import hashed_split, scan_ffpp
from training.prepare import prepare_videos
from workers.face_cropper import FaceCropper
from workers.face_detector import FaceDetector
from workers.frame_decoder import FrameDecoder

FRAMES = 4


@pytest.fixture(scope="module")
def video_set(tmp_path_factory):
    """Two real videos, one face-swapped fake, one file that is not a video, one video without a face."""
    root = tmp_path_factory.mktemp("prepare-set")
    detector = FaceDetector(FacesConfig(), intra_op_threads=1)
    people = {name: portrait(detector, name) for name in ("astronaut", "newton")}
    specs = [
        VideoSpec("astronaut-real", "astronaut", None, "train"),
        VideoSpec("newton-real", "newton", None, "val", motion="zoom"),
        VideoSpec("newton-fake", "newton", "astronaut", "train"),
    ]
    manifest = write_video_set(root, people, specs, n_frames=6)
    vf.make_text_as_video(root / "videos" / "notes.mp4")
    vf.make_no_face_video(root / "videos" / "pattern.mp4", n_frames=4)
    with manifest.open("a", newline="") as handle:
        handle.write("videos/notes.mp4,real,train,synthetic,\nvideos/pattern.mp4,0,test,synthetic,\n")
    return manifest


@pytest.fixture(scope="module")
def prepared(video_set, ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    args = ["--manifest", str(video_set), "--out", str(out), "--num-frames", str(FRAMES), "--workers", "2",
            "--video-score-face-policy", "largest", "--ray-address", ray_address]  # fmt: skip
    result = CliRunner().invoke(prepare_command, args, catch_exceptions=False)
    return out, json.loads(result.stdout.strip().splitlines()[-1])


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_prepare_writes_crops_and_a_crop_manifest(prepared):
    out, summary = prepared
    assert summary == {**summary, "videos": 5, "already_done": 0, "done": 3, "no_face": 1, "skipped": 1}
    rows = read_crop_manifest(out / "crops.csv")
    assert tuple(read_csv(out / "crops.csv")[0]) == CROP_COLUMNS
    assert len(rows) == summary["crops_total"] == 3 * FRAMES  # paper protocol: the largest face per frame
    by_video = {row.video_id: row for row in rows}
    fake = by_video["synthetic:videos/newton-fake.mp4"]
    assert (fake.label, fake.split, fake.dataset) == (1, "train", "synthetic")
    assert fake.source_video == "synthetic:videos/newton-real.mp4"  # real/fake pairing
    real = by_video["synthetic:videos/newton-real.mp4"]
    assert (real.label, real.split, real.source_video) == (0, "val", real.video_id)
    assert sorted(r.frame_index for r in rows if r.video_id == real.video_id) == [0, 1, 3, 5]  # linspace(0, 5, 4)
    assert {r.track_id for r in rows if r.video_id == real.video_id} == {0}
    for row in rows:
        image = load_crop(out / row.crop_path)
        assert image.shape == (256, 256, 3) and image.dtype == np.uint8


def test_bad_videos_are_recorded_with_their_kind_not_a_crash(prepared):
    out, _ = prepared
    videos = {row["video_id"]: row for row in read_csv(out / "videos.csv")}
    notes = videos["synthetic:videos/notes.mp4"]
    assert notes["status"] == "skipped" and notes["error_kind"] in {"not_a_video", "corrupt"}
    assert notes["error_message"] and notes["n_crops"] == "0"
    assert videos["synthetic:videos/pattern.mp4"]["status"] == "no_face"
    assert videos["synthetic:videos/astronaut-real.mp4"]["status"] == "done"


def test_crops_are_exactly_what_the_stream_face_stage_makes(prepared, video_set):
    """Same FrameDecoder and FaceCropper as the stream, and lossless PNG: identical pixels."""
    out, _ = prepared
    decoder = FrameDecoder(SourceConfig(video_root=video_set.parent), SamplingConfig(num_frames=FRAMES))
    detector = FaceDetector(FacesConfig(), intra_op_threads=1)
    cropper = FaceCropper(FacesConfig(), detector, selection=VideoScoreConfig.paper())
    video_id = "synthetic:videos/astronaut-real.mp4"
    decoded = decoder.decode(VideoJob(video_id=video_id, uri="videos/astronaut-real.mp4"))
    expected = cropper.crop_video(video_id, decoded.frames, (decoded.info.width, decoded.info.height)).crops
    rows = sorted((r for r in read_crop_manifest(out / "crops.csv") if r.video_id == video_id),
                  key=lambda r: r.frame_index)  # fmt: skip
    assert [r.frame_index for r in rows] == [c.frame_index for c in expected]
    for row, crop in zip(rows, expected, strict=True):
        assert np.array_equal(load_crop(out / row.crop_path), crop.image)


@pytest.fixture
def ray_client(ray_address):
    ray.init(address=ray_address)
    yield
    ray.shutdown()


def test_rerun_skips_videos_already_done(prepared, video_set, ray_client):
    out, _ = prepared
    records = read_video_manifest(video_set)
    markers = {p: p.stat().st_mtime_ns for p in (out / "videos").glob("*.json")}
    before = (out / "crops.csv").read_text()
    configs = dict(source=SourceConfig(video_root=video_set.parent), sampling=SamplingConfig(num_frames=FRAMES),
                   faces=FacesConfig(), video_score=VideoScoreConfig.paper())  # fmt: skip
    again = prepare_videos(records, out, **configs)
    assert (again.already_done, again.done, again.skipped, again.crops_written) == (5, 0, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in (out / "videos").glob("*.json")} == markers
    assert (out / "crops.csv").read_text() == before
    retried = prepare_videos(records, out, retry_skipped=True, **configs)  # the failed one only
    assert (retried.already_done, retried.skipped, retried.crops_written) == (4, 1, 0)
    # The folder holds largest-face crops of 4 frames: a run for other crops is refused, not mixed in.
    with pytest.raises(ConfigError, match="face_policy: 'largest' != 'all'"):
        prepare_videos(records, out, **{**configs, "video_score": VideoScoreConfig()})
    with pytest.raises(ConfigError, match="num_frames: 4 != 8"):
        prepare_videos(records, out, **{**configs, "sampling": SamplingConfig(num_frames=8)})


def test_face_policy_all_keeps_every_face(tmp_path, ray_client):
    vf.make_pan_video(tmp_path / "group.mp4", "solvay", n_frames=2, size=(1280, 720))
    (tmp_path / "m.csv").write_text("path,label,split,dataset\ngroup.mp4,real,train,solvay\n")
    records = read_video_manifest(tmp_path / "m.csv")
    common = dict(source=SourceConfig(video_root=tmp_path), sampling=SamplingConfig(num_frames=2), workers=1,
                  faces=FacesConfig())  # fmt: skip
    largest = prepare_videos(records, tmp_path / "largest", video_score=VideoScoreConfig.paper(), **common)
    every = prepare_videos(records, tmp_path / "all", video_score=VideoScoreConfig(face_policy="all"), **common)
    assert largest.crops_total == 2
    assert every.crops_total > 20 * 2
    tracks = {row.track_id for row in read_crop_manifest(tmp_path / "all" / "crops.csv")}
    assert len(tracks) > 20


def test_prepare_reads_a_dataset_layout_and_prints_progress(video_set, ray_address, tmp_path):
    """The same videos as a Celeb-DF v2 tree: official test list, metadata columns, n/N lines with an ETA."""
    videos = video_set.parent / "videos"
    for rel, video in (("Celeb-real/id0_0000.mp4", "astronaut-real"), ("Celeb-real/id1_0000.mp4", "newton-real"),
                       ("Celeb-synthesis/id1_id0_0000.mp4", "newton-fake")):  # fmt: skip
        (tmp_path / "cdf" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "cdf" / rel).write_bytes((videos / f"{video}.mp4").read_bytes())
    (tmp_path / "cdf" / "YouTube-real").mkdir()
    (tmp_path / "cdf" / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0000.mp4\n")
    args = ["--dataset", f"celebdf:{tmp_path / 'cdf'}", "--out", str(tmp_path / "out"), "--num-frames", "2",
            "--workers", "1", "--ray-address", ray_address]  # fmt: skip
    result = CliRunner().invoke(prepare_command, args, catch_exceptions=False)
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["done"] == 3 and summary["videos_per_split"] == {"train": 2, "val": 0, "test": 1}
    rows = read_crop_manifest(tmp_path / "out" / "crops.csv")
    fake = next(r for r in rows if r.label == 1)
    assert fake.source_video == "Celeb-DF-v2:Celeb-real/id1_0000.mp4"
    assert fake.metadata == {"identity": "id1", "face_identity": "id0"}  # extra columns of crops.csv
    assert {r.split for r in rows if r.video_id == "Celeb-DF-v2:Celeb-real/id0_0000.mp4"} == {"test"}
    assert "prepare 3/3 videos (100%)" in result.stderr and "videos/s  ETA" in result.stderr


# --- manifests (no Ray) -------------------------------------------------------------------------
def test_jsonl_manifest_with_numeric_labels_and_explicit_ids(tmp_path):
    lines = [
        {"path": "a/x.mp4", "label": 0, "split": "train", "dataset": "d"},
        {"path": "a/y.mp4", "label": "1", "split": "test", "dataset": "d", "source_video": "d:a/x.mp4"},
        {"path": "b/z.mp4", "label": "FAKE", "split": "val", "dataset": "e", "video_id": "custom-7"},
    ]
    path = tmp_path / "m.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    records = read_video_manifest(path)
    assert [(r.video_id, r.label, r.split) for r in records] == [
        ("d:a/x.mp4", 0, "train"), ("d:a/y.mp4", 1, "test"), ("custom-7", 1, "val")
    ]  # fmt: skip
    assert records[0].source_video == "d:a/x.mp4" and records[1].source_video == "d:a/x.mp4"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("v.mp4,real,train,d,extra", "reserved for the crop manifest"),
        ("v.mp4,maybe,train,d,", "label must be"),
        ("v.mp4,real,holdout,d,", "split must be"),
        ("../v.mp4,real,train,d,", "inside the video root"),
        ("/etc/v.mp4,real,train,d,", "not under the video root"),
        (",real,train,d,", "missing"),
    ],
)
def test_bad_manifest_rows_are_refused(tmp_path, row, message):
    path = tmp_path / "m.csv"
    header = "path,label,split,dataset,track_id" if "extra" in row else "path,label,split,dataset,source_video"
    path.write_text(f"{header}\n{row}\n")
    with pytest.raises(ConfigError, match=message):
        read_video_manifest(path)


def test_duplicate_video_ids_are_refused(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path,label,split,dataset\nv.mp4,real,train,d\nv.mp4,fake,train,d\n")
    with pytest.raises(ConfigError, match="appears twice"):
        read_video_manifest(path)


def test_extra_manifest_columns_are_kept_as_metadata_into_the_crop_manifest(tmp_path):
    path = tmp_path / "m.csv"
    path.write_text("path,label,split,dataset,identity,engine\na.mp4,real,train,d,p1,\nb.mp4,fake,test,d,p2,fs\n")
    records = read_video_manifest(path)
    assert [r.metadata for r in records] == [{"identity": "p1", "engine": ""}, {"identity": "p2", "engine": "fs"}]
    store = CropStore(tmp_path / "out")
    store.claim(VideoScoreConfig().crop_selection(SamplingConfig()))
    png = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes()
    for record in records:
        store.write_video(record, VideoOutcome(record.video_id, "done", 1, 1, crops=(EncodedCrop(0, 0, png),)))
    store.write_manifests(records)
    header = tuple(read_csv(store.crops_csv)[0])
    assert header == (*CROP_COLUMNS, "engine", "identity")  # the crop columns first, then the extras
    rows = read_crop_manifest(store.crops_csv)
    assert [(r.video_id, r.metadata) for r in rows] == [(r.video_id, r.metadata) for r in records]
    assert read_csv(store.videos_csv)[1]["identity"] == "p2"
    # A manifest rebuilt from the same markers takes splits and labels from the records asked for now.
    store.write_manifests([records[0], VideoRecord(**{**records[1].__dict__, "split": "val"})])
    assert [r.split for r in read_crop_manifest(store.crops_csv)] == ["train", "val"]


def test_crops_without_a_recorded_selection_are_not_mixed_with_new_ones(tmp_path):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "old.json").write_text("{}")  # a folder from before prepared.json was written
    with pytest.raises(ConfigError, match="no prepared.json"):
        CropStore(tmp_path).claim(VideoScoreConfig().crop_selection(SamplingConfig()))


def _train_test_list(n_people: int) -> list[VideoRecord]:
    """Per person: one real video and two fakes made from it, in train; two people in test."""
    records = []
    for i in range(n_people):
        split = "test" if i < 2 else "train"
        real = VideoRecord(f"d:p{i}.mp4", f"p{i}.mp4", 0, split, "d", f"d:p{i}.mp4", {"identity": f"id{i // 2}"})
        records.append(real)
        records += [VideoRecord(f"d:p{i}_f{k}.mp4", f"p{i}_f{k}.mp4", 1, split, "d", real.video_id,
                                {"identity": f"id{i // 2}"}) for k in range(2)]  # fmt: skip
    return records


def test_carve_validation_moves_whole_source_groups_deterministically():
    records = _train_test_list(22)
    carved = carve_validation(records, 0.1)
    assert carved == carve_validation(records, 0.1)  # no seed: the same list gives the same split
    val = [r for r in carved if r.split == "val"]
    groups = {r.source_video for r in val}
    assert len(groups) == 2 and len(val) == 6  # ceil(0.1 * 20 training groups), each real with its fakes
    assert all(r.split == "test" for r in carved[:6])  # test untouched
    by_id = {r.video_id: r.split for r in carved}
    assert all(by_id[r.video_id] == ("val" if r.source_video in groups else r.split) for r in records)
    by_identity = carve_validation(records, 0.1, group_by="identity")
    for identity in {r.metadata["identity"] for r in records}:
        assert len({r.split for r in by_identity if r.metadata["identity"] == identity}) == 1


def test_carve_validation_errors_name_the_flag():
    records = _train_test_list(4)
    with pytest.raises(ConfigError, match=f"already has a val split; {VAL_FLAG}"):
        carve_validation([*records, VideoRecord("d:v", "v.mp4", 0, "val", "d")], 0.5)
    with pytest.raises(ConfigError, match="no 'actor'"):
        carve_validation(records, 0.5, group_by="actor")
    only_real = [r for r in records if r.label == 0]
    with pytest.raises(ConfigError, match=f"only real videos; raise {VAL_FLAG}"):
        carve_validation(only_real, 0.5)


def make_ffpp_tree(root: Path, pairs: list[tuple[str, str]]) -> None:
    real = root / "original_sequences/youtube/c23/videos"
    real.mkdir(parents=True)
    for a, b in pairs:
        for person in (a, b):
            (real / f"{person}.mp4").write_bytes(b"x")
    for method in ("Deepfakes", "Face2Face", "FaceSwap", "NeuralTextures"):
        folder = root / f"manipulated_sequences/{method}/c23/videos"
        folder.mkdir(parents=True)
        for a, b in pairs:
            (folder / f"{a}_{b}.mp4").write_bytes(b"x")
            (folder / f"{b}_{a}.mp4").write_bytes(b"x")


def test_ffpp_tree_with_official_splits(tmp_path):
    pairs = [("000", "003"), ("001", "870"), ("002", "006")]
    make_ffpp_tree(tmp_path / "ff", pairs)
    splits = tmp_path / "splits"
    splits.mkdir()
    for name, chosen in (("train", [pairs[0]]), ("val", [pairs[1]]), ("test", [pairs[2]])):
        (splits / f"{name}.json").write_text(json.dumps([list(p) for p in chosen]))
    records = scan_ffpp(tmp_path / "ff", splits_dir=splits)
    assert len(records) == 6 + 4 * 6
    fake = next(r for r in records if r.path.endswith("Deepfakes/c23/videos/001_870.mp4"))
    assert (fake.label, fake.split, fake.dataset) == (1, "val", "FF++/Deepfakes")
    assert fake.source_video == "FF++/original:original_sequences/youtube/c23/videos/001.mp4"
    assert any(r.video_id == fake.source_video and r.label == 0 for r in records)
    assert {r.split for r in records if "002" in r.path or "006" in r.path} == {"test"}


def test_ffpp_tree_without_split_lists_keeps_each_pair_in_one_split(tmp_path):
    pairs = [(f"{i:03d}", f"{i + 500:03d}") for i in range(40)]
    make_ffpp_tree(tmp_path / "ff", pairs)
    records = scan_ffpp(tmp_path / "ff")
    assert records == scan_ffpp(tmp_path / "ff")  # deterministic
    for a, b in pairs:
        splits = {r.split for r in records if Path(r.path).stem in (a, b, f"{a}_{b}", f"{b}_{a}")}
        assert splits == {hashed_split("_".join(sorted((a, b))))}
    assert {r.split for r in records} == {"train", "val", "test"}


def test_ffpp_missing_method_folder_is_an_error(tmp_path):
    make_ffpp_tree(tmp_path / "ff", [("000", "003")])
    with pytest.raises(ConfigError, match="FaceShifter"):
        scan_ffpp(tmp_path / "ff", methods=("FaceShifter",))


def test_cli_needs_exactly_one_source(tmp_path):
    result = CliRunner().invoke(prepare_command, ["--out", str(tmp_path)])
    assert isinstance(result.exception, ConfigError)
