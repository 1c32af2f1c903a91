"""``clipguard evaluate`` end to end on the session Ray head: crop and video manifests, report, plots, calibration."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import ray
from click.testing import CliRunner
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score

from clipguard.config import ClipguardConfig, FacesConfig, ModelConfig, SamplingConfig, SourceConfig, VideoScoreConfig
from clipguard.errors import CheckpointError, ConfigError
from clipguard.model import CropScorer, DetectorConfig, read_manifest
from clipguard.thresholds import resolve_thresholds, thresholds_path_for
from pipeline.cli import cli
from tests import video_factory as vf
from tests.clipguard.test_thresholds import save_tiny_checkpoint
from tests.training.face_swap import VideoSpec, portrait, write_video_set
from training.calibration import calibrate_thresholds
from training.cli import evaluate_command
from training.crop_dataset import load_crop
from training.crop_manifest import CropStore, EncodedCrop, VideoOutcome, read_crop_manifest
from training.data_manifest import VideoRecord
from training.eval_metrics import eer, tpr_at_fpr
from training.eval_run import EvalOptions, write_outputs
from training.eval_sets import PrepareSettings, load_set, parse_set_spec
from training.evaluate import set_result
from training.prepare import encode_png
from workers.face_detector import FaceDetector

TINY = ["--arch", "ViT-Tiny-test", "--pretrained", "none", "--device", "cpu"]
TINY_MODEL = {"arch": "ViT-Tiny-test", "pretrained": "none"}
FRAMES = 2  # the evaluations below sample 2 frames a video (--num-frames 2) with the default video score
SELECTION = VideoScoreConfig().crop_selection(SamplingConfig(num_frames=FRAMES))


def write_crop_set(root: Path, videos: list[tuple[str, int, str, int]], seed: int) -> Path:
    """A prepared folder with synthetic crops: (name, label, split, crops) per video; 0 crops = no face."""
    rng = np.random.default_rng(seed)
    store, records = CropStore(root), []
    store.claim(SELECTION)
    for name, label, split, n in videos:
        record = VideoRecord(video_id=f"syn:{name}", path=f"{name}.mp4", label=label, split=split, dataset="syn")
        base = rng.integers(40, 120, 3) + 60 * label  # fakes a little brighter, so the sets are not all ties
        crops = tuple(
            EncodedCrop(i, 0, encode_png(np.clip(base + rng.integers(0, 60, (256, 256, 3)), 0, 255).astype(np.uint8)))
            for i in range(n)
        )
        store.write_video(record, VideoOutcome(record.video_id, "done" if n else "no_face", n, n, crops=crops))
        records.append(record)
    store.write_manifests(records)
    return store.crops_csv


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval-data")
    checkpoint = save_tiny_checkpoint(root / "ckpt" / "best", seed=3)
    videos = [(f"r{i}", 0, "test", 2) for i in range(5)] + [(f"f{i}", 1, "test", 2) for i in range(5)]
    videos += [("noface", 0, "test", 0)]
    videos += [(f"vr{i}", 0, "val", 1) for i in range(6)] + [(f"vf{i}", 1, "val", 1) for i in range(6)]
    crops = write_crop_set(root / "crops", videos, seed=0)
    only_fake = write_crop_set(root / "onlyfake", [(f"of{i}", 1, "test", 1) for i in range(3)], seed=1)
    detector = FaceDetector(FacesConfig(), intra_op_threads=1)
    people = {name: portrait(detector, name) for name in ("astronaut", "newton")}
    specs = [
        VideoSpec("astronaut-real", "astronaut", None, "test"),
        VideoSpec("newton-fake", "newton", "astronaut", "test"),
    ]
    manifest = write_video_set(root / "raw", people, specs, n_frames=4)
    vf.make_no_face_video(root / "raw" / "videos" / "pattern.mp4", n_frames=4)
    with manifest.open("a", newline="") as handle:
        handle.write("videos/pattern.mp4,real,test,synthetic,\n")
    # The same two videos as a Celeb-DF v2 tree: a test set read through its official layout.
    cdf = root / "Celeb-DF-v2"
    for folder, name, video in (("Celeb-real", "id0_0000", "astronaut-real"), ("Celeb-synthesis", "id1_id0_0000",
                                                                              "newton-fake")):  # fmt: skip
        (cdf / folder).mkdir(parents=True)
        (cdf / folder / f"{name}.mp4").write_bytes((root / "raw" / "videos" / f"{video}.mp4").read_bytes())
    (cdf / "YouTube-real").mkdir()
    (cdf / "List_of_testing_videos.txt").write_text("1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id1_id0_0000.mp4\n")
    return {"checkpoint": checkpoint, "crops": crops, "only_fake": only_fake, "videos": manifest, "cdf": cdf}


@pytest.fixture(scope="module")
def evaluated(data, ray_address, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval-out")
    args = [f"crops={data['crops']}", "--test-set", f"onlyfake={data['only_fake']}",
            "--test-set", f"raw={data['videos']}", "--test-set", f"cdf=celebdf:{data['cdf']}", "--split", "test",
            "--val-set", f"val={data['crops']}", "--val-split", "val", "--calibrate", "--target-fpr", "0.2",
            "--checkpoint", str(data["checkpoint"]), "--table",
            *TINY, "--out", str(out), "--workers", "2", "--batch-size", "4", "--num-frames", str(FRAMES),
            "--prepare-workers", "1", "--ray-address", ray_address]  # fmt: skip
    result = CliRunner().invoke(evaluate_command, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert not ray.is_initialized()  # connected and disconnected by the command itself
    return out, json.loads((out / "report.json").read_text()), result.output


def read_scores(out: Path) -> list[dict[str, str]]:
    with (out / "scores.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_report_records_model_sets_and_counts(evaluated, data):
    out, report, output = evaluated
    manifest = read_manifest(data["checkpoint"])
    model = report["model"]
    assert (model["arch"], model["checkpoint"]) == ("ViT-Tiny-test", str(data["checkpoint"].resolve()))
    assert model["weights_sha256"] == manifest.weights_sha256 and model["model_version"] == manifest.version
    assert report["created_at"].endswith("+00:00")
    assert set(report["test_sets"]) == {"crops", "onlyfake", "raw", "cdf"}
    cdf = report["test_sets"]["cdf"]
    assert (cdf["kind"], cdf["split"], cdf["counts"]["videos_scored"]) == ("celebdf", "test", 2)
    assert report["video_score"]["face_policy"] == "all" and report["video_score"]["num_frames"] == FRAMES
    crops = report["test_sets"]["crops"]
    assert (crops["path"], crops["kind"], crops["split"]) == (str(data["crops"]), "crops", "test")
    assert crops["counts"] == {"videos": 11, "videos_scored": 10, "videos_real": 6, "videos_fake": 5,
                               "videos_scored_real": 5, "videos_scored_fake": 5, "crops": 20,
                               "videos_without_crops": 1}  # fmt: skip
    assert [v["video_id"] for v in crops["videos_without_crops"]] == ["syn:noface"]
    assert crops["videos_without_crops"][0]["status"] == "no_face"
    raw = report["test_sets"]["raw"]
    assert raw["kind"] == "videos" and Path(raw["crops_csv"]) == out / "prepared" / "raw" / "crops.csv"
    assert raw["counts"]["videos_scored"] == 2 and raw["counts"]["crops"] == 4  # 2 frames, largest face
    assert [v["video_id"] for v in raw["videos_without_crops"]] == ["synthetic:videos/pattern.mp4"]
    overall = report["overall"]
    assert overall["counts"]["videos"] == 11 + 3 + 3 + 2 and overall["counts"]["videos_without_crops"] == 2
    assert report["thresholds"]["tpr_at_fpr_targets"] == [0.001, 0.01, 0.05]
    assert report["thresholds"]["verdict"]["source"] == "calibrated by this run"
    for name in ("crops", "onlyfake", "raw", "cdf", "all", "val (validation)"):
        assert name in output  # the console table has a row per set, the union and the validation set


def test_metrics_equal_an_independent_recomputation(evaluated, data):
    out, report, _ = evaluated
    rows = read_scores(out)
    assert {r["test_set"] for r in rows} == {"crops", "onlyfake", "raw", "cdf", "val"}
    sections = {**report["test_sets"], "all": report["overall"]}
    for name, section in sections.items():
        chosen = [r for r in rows if r["test_set"] != "val" and (name == "all" or r["test_set"] == name)]
        y = np.array([int(r["label"]) for r in chosen])
        s = np.array([float(r["p_fake"]) for r in chosen])
        m = section["metrics"]
        if name == "onlyfake":
            assert m is None
            continue
        assert m["video_auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        expected_map = (average_precision_score(y, s) + average_precision_score(1 - y, 1 - s)) / 2
        assert m["video_map"] == pytest.approx(expected_map, abs=1e-12)
        assert (m["video_eer"], m["video_eer_threshold"]) == pytest.approx(eer(y, s), abs=1e-12)
        assert m["video_tpr_at_fpr_1pct"] == pytest.approx(tpr_at_fpr(y, s, 0.01), abs=1e-12)
        assert m["n_videos"] == len(chosen) and m["n_crops"] == sum(int(r["n_crops"]) for r in chosen)
    # crop scores from the stream's own scorer, in this process: video means and frame AUROC agree
    scorer = CropScorer.from_config(
        DetectorConfig.for_stream(ModelConfig(**TINY_MODEL, device="cpu"), 8), data["checkpoint"]
    )
    crop_rows = [r for r in read_crop_manifest(data["crops"]) if r.split == "test"]
    p = scorer.score(np.stack([load_crop(data["crops"].parent / r.crop_path) for r in crop_rows]))
    by_id = {r["video_id"]: float(r["p_fake"]) for r in rows if r["test_set"] == "crops"}
    for video_id in by_id:
        mine = [q for r, q in zip(crop_rows, p, strict=True) if r.video_id == video_id]
        assert by_id[video_id] == pytest.approx(np.mean(mine))
    frame = roc_auc_score([r.label for r in crop_rows], p)
    assert report["test_sets"]["crops"]["metrics"]["frame_auroc"] == pytest.approx(frame, abs=1e-6)


def test_plots_are_valid_pngs(evaluated):
    out, report, _ = evaluated
    for name in ("crops", "raw", "cdf", "all"):
        for kind in ("roc", "pr", "hist"):
            with Image.open(out / f"{kind}_{name}.png") as image:
                image.verify()
                assert image.format == "PNG" and image.size[0] > 100
    assert report["test_sets"]["onlyfake"]["plots"] == ["hist_onlyfake.png"]
    assert not (out / "roc_onlyfake.png").exists()


def test_one_class_set_has_null_metrics_with_a_reason(evaluated):
    _, report, output = evaluated
    only = report["test_sets"]["onlyfake"]
    assert only["metrics"] is None and "only fake videos (3)" in only["metrics_null_reason"]
    assert only["counts"]["videos_fake"] == 3 and only["verdicts"]["real"] == {"fake": 0, "uncertain": 0, "real": 0}
    assert "only fake videos" in output


def test_calibration_is_written_beside_the_checkpoint_and_the_stream_uses_it(evaluated, data, monkeypatch):
    out, report, output = evaluated
    path = thresholds_path_for(data["checkpoint"])
    written = json.loads(path.read_text())
    val = [r for r in read_scores(out) if r["test_set"] == "val"]
    expected = calibrate_thresholds([int(r["label"]) for r in val], [float(r["p_fake"]) for r in val], 0.2)
    assert (written["fake"], written["real"]) == (expected.fake, expected.real)
    assert written["weights_sha256"] == read_manifest(data["checkpoint"]).weights_sha256
    assert written["validation_set"] == str(data["crops"]) and written["achieved"]["fpr"] <= 0.2
    assert report["calibration"]["file"] == str(path) and str(path) in output
    for key in ("CLIPGUARD_THRESHOLDS__FAKE", "CLIPGUARD_THRESHOLDS__REAL", "CLIPGUARD_THRESHOLDS__FILE"):
        monkeypatch.delenv(key, raising=False)
    assert written["video_score"] == VideoScoreConfig().definition(SamplingConfig(num_frames=FRAMES))
    flags = [
        "--model-arch",
        "ViT-Tiny-test",
        "--model-pretrained",
        "none",
        "--model-checkpoint",
        str(data["checkpoint"]),
    ]
    # The stream samples 32 frames by default: thresholds picked on 2-frame scores do not apply to it.
    refused = CliRunner().invoke(cli, ["config", *flags])
    assert isinstance(refused.exception, ConfigError) and "num_frames: 2 != 32" in str(refused.exception)
    flags += ["--sampling-num-frames", str(FRAMES)]
    shown = CliRunner().invoke(cli, ["config", *flags])  # the stream's own config resolution
    assert shown.exit_code == 0, shown.output
    thresholds = json.loads(shown.output)["thresholds"]
    assert (thresholds["fake"], thresholds["real"], thresholds["file"]) == (expected.fake, expected.real, str(path))
    monkeypatch.setenv("CLIPGUARD_THRESHOLDS__FAKE", "0.99")  # explicit wins
    assert json.loads(CliRunner().invoke(cli, ["config", *flags]).output)["thresholds"]["fake"] == 0.99
    monkeypatch.delenv("CLIPGUARD_THRESHOLDS__FAKE")
    other = save_tiny_checkpoint(out / "other" / "best", seed=9)  # other weights, stale file copied beside them
    thresholds_path_for(other).write_text(path.read_text())
    refused = CliRunner().invoke(cli, ["config", *flags[:4], "--model-checkpoint", str(other), *flags[6:]])
    assert isinstance(refused.exception, ConfigError) and "other weights" in str(refused.exception)


def test_base_model_calibration_goes_to_the_out_folder(tmp_path, monkeypatch):
    """Without a checkpoint the thresholds land in --out; `run` takes them with --thresholds-file (no Ray needed)."""
    rng = np.random.default_rng(4)
    labels = [0] * 6 + [1] * 6
    val = set_result("cal", [f"v{i}" for i in range(12)], labels, rng.uniform(0, 1, 12), [], VideoScoreConfig(),
                     {"path": "val.csv", "split": "val"})  # fmt: skip
    model = ModelConfig(**TINY_MODEL, device="cpu")
    prepare = PrepareSettings(SourceConfig(), SamplingConfig(), FacesConfig())
    opts = EvalOptions(model=model, sets=(), out_dir=tmp_path, prepare=prepare, calibrate=True, val_set=None)
    lines: list[str] = []
    outcome = write_outputs(opts, [], val, "ViT-Tiny-test-none-untrained-head", lines.append)
    assert outcome.thresholds_path == tmp_path / "thresholds.json"
    written = json.loads(outcome.thresholds_path.read_text())
    expected = calibrate_thresholds(val.videos.labels, val.videos.scores, 0.01)
    assert (written["fake"], written["real"], written["weights_sha256"]) == (expected.fake, expected.real, None)
    assert any(f"--thresholds-file {tmp_path / 'thresholds.json'}" in line for line in lines)
    monkeypatch.delenv("CLIPGUARD_THRESHOLDS__FAKE", raising=False)
    monkeypatch.delenv("CLIPGUARD_THRESHOLDS__REAL", raising=False)
    cfg = ClipguardConfig(model=ModelConfig(**TINY_MODEL), thresholds={"file": tmp_path / "thresholds.json"})
    assert resolve_thresholds(cfg).thresholds.fake == expected.fake
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["model"]["checkpoint"] is None and report["overall"]["metrics"] is None


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["x="], "both parts non-empty"),
        (["=x.csv"], "both parts non-empty"),
        (["all=x.csv"], "reserved"),
        (["a b=x.csv"], "NAME must match"),
        ([], "at least one test set"),
    ],
)
def test_bad_set_arguments_are_usage_errors(tmp_path, args, message):
    result = CliRunner().invoke(evaluate_command, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2 and message in result.output


def test_missing_files_and_calibration_without_validation_are_readable_errors(data, tmp_path):
    missing = CliRunner().invoke(evaluate_command, [f"a={tmp_path / 'nope.csv'}", *TINY, "--out", str(tmp_path)])
    assert isinstance(missing.exception, ConfigError) and "nope.csv is not a file" in str(missing.exception)
    no_val = CliRunner().invoke(evaluate_command, [f"a={data['crops']}", "--calibrate", "--out", str(tmp_path)])
    assert isinstance(no_val.exception, ConfigError) and "--val-set" in str(no_val.exception)
    ckpt = str(tmp_path / "c.safetensors")
    no_ckpt = CliRunner().invoke(evaluate_command, [f"a={data['crops']}", "--checkpoint", ckpt, "--out", str(tmp_path)])
    assert "checkpoint manifest not found" in str(no_ckpt.exception)
    assert not ray.is_initialized()


def test_checkpoint_for_another_base_tower_fails_with_the_checkpoint_error(data, ray_address, tmp_path):
    """The scoring actor refuses it; the command raises that CheckpointError, not a Ray trace, and frees Ray."""

    import open_clip
    from safetensors.torch import save_file

    from clipguard.model import DetectorConfig, PreprocessConfig, build_detector, save_checkpoint

    # Trained on base weights read from a file; evaluated with the explicit --pretrained none of TINY.
    build_detector(DetectorConfig(**TINY_MODEL))  # registers the tiny configs with open_clip
    weights = tmp_path / "other-base.safetensors"
    clip = open_clip.create_model("ViT-Tiny-test")
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(weights))
    other_base = build_detector(DetectorConfig(**{**TINY_MODEL, "pretrained": str(weights)}, device="cpu"))
    save_checkpoint(other_base, tmp_path / "foreign", preprocess=PreprocessConfig())
    args = [f"a={data['only_fake']}", "--checkpoint", str(tmp_path / "foreign.safetensors"), *TINY,
            "--num-frames", str(FRAMES), "--out", str(tmp_path / "out"), "--ray-address", ray_address]  # fmt: skip
    result = CliRunner().invoke(evaluate_command, args)
    assert isinstance(result.exception, CheckpointError), result.exception
    assert "different base weights" in str(result.exception)
    assert not ray.is_initialized()


def test_table_compares_the_checkpoint_with_the_paper(evaluated):
    out, report, output = evaluated
    md, table = (out / "table.md").read_text(), (out / "table.csv").read_text().splitlines()
    assert table[0].startswith("test set,best,paper: linear probe (frozen CLIP),paper: LN-tuning,")
    auroc = report["test_sets"]["crops"]["metrics"]["video_auroc"]
    assert f"crops,{100 * auroc:.2f},-,-,-,-" in table  # no paper column for a set named 'crops'
    cdf_row = next(line for line in table if line.startswith("cdf (CDFv2),"))
    assert cdf_row.endswith(",78.13,94.88,96.21,96.62")  # docs/method.md §8, Celeb-DF v2
    assert any(line.startswith("mean of all sets (4),") for line in table)
    assert any(line.startswith("mean of the sets in the paper (1),") for line in table)
    assert "not the paper's protocol" in md and "| cdf (CDFv2) |" in md and "cdf (CDFv2)" in output


def test_crops_prepared_for_another_video_score_are_refused(data, tmp_path):
    """Scores of largest-face crops are not the numbers a tracks/all-faces stream would see (no Ray: refused first)."""
    paper = PrepareSettings(SourceConfig(), SamplingConfig(num_frames=FRAMES), FacesConfig(),
                            video_score=VideoScoreConfig.paper())  # fmt: skip
    with pytest.raises(ConfigError, match="another video score.*face_policy: 'all' != 'largest'"):
        load_set(parse_set_spec(f"c={data['crops']}"), "test", tmp_path, paper)
    frames32 = PrepareSettings(SourceConfig(), SamplingConfig(), FacesConfig())
    with pytest.raises(ConfigError, match="num_frames: 2 != 32"):
        load_set(parse_set_spec(f"c={data['crops']}"), "test", tmp_path, frames32)
