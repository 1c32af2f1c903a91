"""The official dataset layouts, each read from a tiny fake tree of that layout (empty files: nothing is decoded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipguard.errors import ConfigError
from training.crop_dataset import load_splits
from training.crop_manifest import CropStore, EncodedCrop, VideoOutcome
from training.data_manifest import VAL_FLAG, VideoRecord, carve_validation
from training.dataset_layouts import LAYOUTS, read_layout, split_layout_spec
from training.eval_sets import parse_set_spec


def touch(root: Path, *paths: str) -> None:
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"")


def by_path(records: list[VideoRecord]) -> dict[str, VideoRecord]:
    return {r.path: r for r in records}


def celebdf_tree(root: Path) -> Path:
    touch(root, "Celeb-real/id0_0000.mp4", "Celeb-real/id0_0001.mp4", "Celeb-real/id1_0000.mp4",
          "YouTube-real/00000.mp4", "YouTube-real/00001.mp4", "Celeb-synthesis/id0_id1_0000.mp4",
          "Celeb-synthesis/id1_id0_0000.mp4", "Celeb-synthesis/id0_id1_0001.mp4")  # fmt: skip
    # The official list's first column is 1 for a real video, 0 for a fake.
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n1 Celeb-real/id1_0000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n"
    )
    return root


def test_celebdf_reads_the_testing_list_with_its_inverted_labels(tmp_path):
    records = read_layout("celebdf", celebdf_tree(tmp_path))
    found = by_path(records)
    assert len(records) == 8
    assert {p for p, r in found.items() if r.split == "test"} == {
        "YouTube-real/00000.mp4", "Celeb-real/id1_0000.mp4", "Celeb-synthesis/id1_id0_0000.mp4"}  # fmt: skip
    fake = found["Celeb-synthesis/id1_id0_0000.mp4"]
    assert (fake.label, fake.dataset, fake.video_id) == (1, "Celeb-DF-v2/Celeb-synthesis",
                                                         "Celeb-DF-v2:Celeb-synthesis/id1_id0_0000.mp4")  # fmt: skip
    assert fake.source_video == "Celeb-DF-v2:Celeb-real/id1_0000.mp4"  # id1's clip 0000, with id0's face
    assert fake.metadata == {"identity": "id1", "face_identity": "id0"}
    assert found["Celeb-real/id1_0000.mp4"].label == 0 and found["YouTube-real/00000.mp4"].label == 0
    assert read_layout("celebdf", tmp_path, ("test",)) == [r for r in records if r.split == "test"]
    # train/test only: a validation split is carved by source video (2 of the 3 training groups here)
    carved = carve_validation(records, 0.6)
    assert {r.split for r in carved} == {"train", "val", "test"}
    assert {r.split for r in carved if r.source_video == "Celeb-DF-v2:Celeb-real/id0_0000.mp4"} in ({"train"}, {"val"})


def test_celebdf_refuses_a_label_against_its_folder_and_missing_videos(tmp_path):
    root = celebdf_tree(tmp_path)
    (root / "List_of_testing_videos.txt").write_text("0 Celeb-real/id1_0000.mp4\n")
    with pytest.raises(ConfigError, match="listed as fake"):
        read_layout("celebdf", root)
    (root / "List_of_testing_videos.txt").write_text("1 Celeb-real/id9_0000.mp4\n")
    with pytest.raises(ConfigError, match="1 videos of List_of_testing_videos.txt are missing"):
        read_layout("celebdf", root)
    (root / "List_of_testing_videos.txt").write_text("real Celeb-real/id1_0000.mp4\n")
    with pytest.raises(ConfigError, match="expected '<1 real|0 fake>"):
        read_layout("celebdf", root)


def test_dfd_reads_the_ff_download_layout_all_test(tmp_path):
    touch(tmp_path, "original_sequences/actors/c23/videos/01__exit_phone_room.mp4",
          "original_sequences/actors/c23/videos/02__kitchen_pan.mp4",
          "manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit_phone_room__YVGY8LOK.mp4")  # fmt: skip
    found = by_path(read_layout("dfd", tmp_path))
    fake = found["manipulated_sequences/DeepFakeDetection/c23/videos/01_02__exit_phone_room__YVGY8LOK.mp4"]
    assert (fake.label, fake.split, fake.dataset, fake.source_video) == (1, "test", "DFD/DeepFakeDetection", "")
    assert fake.metadata == {"actors": "01_02", "scene": "exit_phone_room"}
    real = found["original_sequences/actors/c23/videos/02__kitchen_pan.mp4"]
    assert (real.label, real.split, real.source_video) == (0, "test", real.video_id)
    with pytest.raises(ConfigError, match="not a DFD tree"):
        read_layout("dfd", tmp_path / "original_sequences")


def test_dfdc_reads_the_test_labels(tmp_path):
    touch(tmp_path, "videos/aaqaifqrwn.mp4", "videos/abofeumbvv.mp4")
    (tmp_path / "labels.csv").write_text("filename,label,original\naaqaifqrwn.mp4,1,x.mp4\nabofeumbvv.mp4,0,\n")
    found = by_path(read_layout("dfdc", tmp_path))
    assert [(r.label, r.split, r.dataset) for r in found.values()] == [(1, "test", "DFDC"), (0, "test", "DFDC")]
    assert found["videos/aaqaifqrwn.mp4"].metadata == {"original": "x.mp4"}
    (tmp_path / "labels.csv").write_text("filename,label\nmissing.mp4,1\n")
    with pytest.raises(ConfigError, match="1 of 1 videos are missing"):
        read_layout("dfdc", tmp_path)
    (tmp_path / "labels.csv").write_text("name,is_fake\nx.mp4,1\n")
    with pytest.raises(ConfigError, match="lack 'filename' and 'label'"):
        read_layout("dfdc", tmp_path)


def test_ffiw_source_is_real_target_is_fake_and_val_is_the_test_split(tmp_path):
    touch(tmp_path, "source/train/00000.mp4", "target/train/00000.mp4",
          "source/val/00010.mp4", "target/val/videos/00010.mp4")  # fmt: skip
    found = by_path(read_layout("ffiw", tmp_path))
    assert {(p, r.label, r.split) for p, r in found.items()} == {
        ("source/train/00000.mp4", 0, "train"), ("target/train/00000.mp4", 1, "train"),
        ("source/val/00010.mp4", 0, "test"), ("target/val/videos/00010.mp4", 1, "test")}  # fmt: skip
    assert [r.path for r in read_layout("ffiw", tmp_path, ("test",))] == ["source/val/00010.mp4",
                                                                           "target/val/videos/00010.mp4"]  # fmt: skip


def test_deepspeak_takes_the_split_of_its_identities(tmp_path):
    touch(tmp_path, "data/real/10-4100.mp4", "data/real/12-77.mp4", "data/fake/facefusion--10-11--4100-4897--0.mp4",
          "data/fake/wav2lip--10-10--4100-4100--0.mp4")  # fmt: skip
    (tmp_path / "annotations-split-def.csv").write_text("identity,split\n10,train\n11,test\n12,train\n")
    (tmp_path / "annotations-real.csv").write_text(
        "video-file,identity,gesture-type\n10-4100.mp4,10,a\n12-77.mp4,12,b\n"
    )
    (tmp_path / "annotations-fake.csv").write_text(
        "video-file,kind,engine,identity-source,identity-target\n"
        "facefusion--10-11--4100-4897--0.mp4,face-swap,facefusion,10,11\n"
        "wav2lip--10-10--4100-4100--0.mp4,lip-sync,wav2lip,10,10\n"
    )
    found = {r.video_id: r for r in read_layout("deepspeak", tmp_path)}
    swap = found["DeepSpeak-v1:facefusion--10-11--4100-4897--0.mp4"]
    assert (swap.label, swap.split, swap.dataset) == (1, "test", "DeepSpeak-v1/facefusion")  # identity 11 is test
    assert swap.path == "data/fake/facefusion--10-11--4100-4897--0.mp4" and swap.metadata["identity"] == "11"
    lipsync = found["DeepSpeak-v1:wav2lip--10-10--4100-4100--0.mp4"]
    assert (lipsync.label, lipsync.split) == (1, "train")
    real = found["DeepSpeak-v1:10-4100.mp4"]
    assert (real.label, real.split, real.metadata) == (0, "train", {"identity": "10", "gesture-type": "a"})
    (tmp_path / "annotations-split-def.csv").write_text("identity,split\n10,train\n")
    with pytest.raises(ConfigError, match=r"identities \['12'\] are not in annotations-split-def.csv"):
        read_layout("deepspeak", tmp_path)


def test_ffpp_layout_reads_official_splits_from_its_root(tmp_path):
    touch(tmp_path, "original_sequences/youtube/c23/videos/000.mp4", "original_sequences/youtube/c23/videos/003.mp4",
          *[f"manipulated_sequences/{m}/c23/videos/000_003.mp4" for m in ("Deepfakes", "Face2Face", "FaceSwap",
                                                                          "NeuralTextures")])  # fmt: skip
    for split, pairs in (("train", []), ("val", []), ("test", [["000", "003"]])):
        (tmp_path / f"{split}.json").write_text(str(pairs).replace("'", '"'))
    assert {r.split for r in read_layout("ffpp", tmp_path)} == {"test"}


def test_layout_specs_and_unknown_layouts(tmp_path):
    assert split_layout_spec("celebdf:/data/Celeb-DF-v2") == ("celebdf", Path("/data/Celeb-DF-v2"))
    assert split_layout_spec("crops.csv") is None and split_layout_spec("c:/x/crops.csv") is None
    spec = parse_set_spec("cdf=celebdf:/data/Celeb-DF-v2")
    assert (spec.name, spec.layout, spec.path, spec.default_split()) == ("cdf", "celebdf", Path("/data/Celeb-DF-v2"),
                                                                          "test")  # fmt: skip
    assert parse_set_spec("dfdc:/data/dfdc").name == "dfdc"
    assert spec.default_split(validation=True) == "val"  # a dataset as a validation set: never its test split
    assert parse_set_spec("v=val.csv").default_split(validation=True) == "all"
    with pytest.raises(ConfigError, match="expected celebdf:ROOT"):
        split_layout_spec("celebdf:")
    with pytest.raises(ConfigError, match="unknown dataset layout"):
        read_layout("celeb", tmp_path)
    assert set(LAYOUTS) == {"ffpp", "celebdf", "dfd", "dfdc", "ffiw", "deepspeak"}


def test_training_without_a_validation_split_names_the_flag(tmp_path):
    store = CropStore(tmp_path)
    records = [VideoRecord("d:a", "a.mp4", 0, "train", "d"), VideoRecord("d:b", "b.mp4", 1, "train", "d"),
               VideoRecord("d:c", "c.mp4", 1, "test", "d")]  # fmt: skip
    for record in records:
        store.write_video(record, VideoOutcome(record.video_id, "done", 1, 1, crops=(EncodedCrop(0, 0, b""),)))
    store.write_manifests(records)
    with pytest.raises(ConfigError, match=f"carve one from train with `clipguard prepare ... {VAL_FLAG} 0.1`"):
        load_splits(store.crops_csv, "train", "val")
