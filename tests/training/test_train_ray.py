"""Ray Train end to end on CPU: `clipguard train --submit` of training/train.py, a worker killed mid-run, a restart.

One Ray head with the dashboard (the job server lives there) is started for this
module on free ports and stopped by signalling its own ``ray start --block``
process (then its process group), never with ``ray stop``, which would stop
every Ray on the machine. The session ``ray_address`` head has no dashboard, so
``ray job submit`` cannot use it.

Both the head and the submitting command run as from a fresh shell, as the README
has them: the virtualenv is not on ``PATH`` and nothing is on ``PYTHONPATH``, so a
job whose entrypoint said plain ``python`` would not find Ray; ``--submit`` names
the interpreter.

The data: real portrait videos and face-swapped fakes (tests/training/face_swap.py)
of five people for train, new videos of three of them for validation, and three
held-out people for test, prepared with the stream's decoder and face cropper.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from safetensors.torch import load_file

from clipguard.assets import REPO_ROOT
from clipguard.config import FacesConfig, ModelConfig, SamplingConfig, SourceConfig, VideoScoreConfig
from clipguard.contracts import VideoJob
from clipguard.errors import ConfigError
from clipguard.model import (
    CropScorer,
    DetectorConfig,
    PreprocessConfig,
    build_detector,
    clip_preprocess,
    load_checkpoint,
    read_manifest,
)
from clipguard.model.checkpoint import base_fingerprint
from clipguard.model.lntuning import is_layernorm_param, is_trained_param
from pipeline.embedded_services import free_port
from tests.training.face_swap import identity_disjoint_set, write_video_set
from training.crop_dataset import CropDataset, eval_loader, load_crop, train_loader
from training.crop_manifest import CropRow, read_crop_manifest
from training.data_manifest import read_video_manifest
from training.eval_metrics import detection_metrics
from training.losses import loss_weights
from training.prepare import prepare_videos
from training.train import run_training, with_absolute_paths
from training.train_config import load_train_config
from training.train_log import read_log
from training.train_step import TrainForward, eval_step, train_step
from workers.face_cropper import FaceCropper
from workers.face_detector import FaceDetector
from workers.frame_decoder import FrameDecoder

VENV_BIN = Path(sys.executable).parent
RAY = shutil.which("ray", path=str(VENV_BIN)) or "ray"
TINY = REPO_ROOT / "training" / "configs" / "tiny-cpu.yaml"
CRASH_EPOCH = 3
TINY_DETECTOR = DetectorConfig(arch="ViT-Tiny-test", pretrained="none", device="cpu")


@dataclass(frozen=True)
class Head:
    address: str  # GCS host:port, for ray.init
    dashboard: str  # http://host:port, for ray job submit
    env: dict[str, str]


def fresh_shell_env(**extra: str) -> dict[str, str]:
    """This environment as a new shell has it: the virtualenv off PATH, no PYTHONPATH, token auth (README)."""
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if Path(p).resolve() != VENV_BIN.resolve())
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "RAY_ADDRESS")}
    return {**env, "PATH": path, "RAY_AUTH_MODE": "token", **extra}


def _wait_for_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"ray head exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback dashboard
            return
        except urllib.error.HTTPError:
            return  # 401 without a token: the server is up
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"ray dashboard at {url} not up after {timeout_s}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def ray_head():
    """A Ray head WITH the dashboard/job server, on free ports, owned and stopped by this module."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rayj-", dir="/tmp"))  # short: Ray puts unix sockets under it
    gcs, dash, agent_http, agent_grpc, runtime_env, metrics, client = (free_port() for _ in range(7))
    # RAY_ADDRESS pins every process of this head (Ray Train's detached helpers use the state API with
    # address "auto", which fails when other Ray clusters run on the same machine) to this head.
    env = fresh_shell_env(RAY_ADDRESS=f"127.0.0.1:{gcs}")
    cmd = [
        RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=4", "--node-ip-address=127.0.0.1",
        "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={agent_http}", f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env}", f"--metrics-export-port={metrics}",
        f"--ray-client-server-port={client}", "--disable-usage-stats", f"--temp-dir={temp_dir}",
    ]  # fmt: skip
    log = temp_dir / "head.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for_http(f"http://127.0.0.1:{dash}/api/version", proc, log)
        yield Head(address=f"127.0.0.1:{gcs}", dashboard=f"http://127.0.0.1:{dash}", env=env)
    finally:
        proc.send_signal(signal.SIGTERM)  # `ray start --block` drains and stops the processes it started
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # still draining: end the rest of this head's own process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def face_data(ray_head, tmp_path_factory):
    """The labelled synthetic set, prepared on the module's head (8 frames a video)."""
    root = tmp_path_factory.mktemp("faces")
    people, specs = identity_disjoint_set(FaceDetector(FacesConfig(), intra_op_threads=1))
    manifest = write_video_set(root, people, specs, n_frames=8)
    ray.init(address=ray_head.address)
    try:
        summary = prepare_videos(
            read_video_manifest(manifest), root / "prepared", source=SourceConfig(video_root=root),
            sampling=SamplingConfig(num_frames=8), faces=FacesConfig(), workers=2,
            video_score=VideoScoreConfig.paper(),
        )  # fmt: skip
    finally:
        ray.shutdown()
    assert (summary.done, summary.skipped, summary.no_face) == (len(specs), 0, 0)
    return root, summary.crops_csv


@dataclass(frozen=True)
class JobRun:
    storage: Path
    name: str
    crops: Path
    marker: Path
    seconds: float

    @property
    def run_dir(self) -> Path:
        return self.storage / self.name

    @property
    def exported(self) -> Path:
        return self.run_dir / "export" / "detector.safetensors"


@pytest.fixture(scope="module")
def job_run(ray_head, face_data, tmp_path_factory):
    """`clipguard train --submit` (README) of the tiny config; rank 1 exits once at the start of epoch 3."""
    storage = tmp_path_factory.mktemp("runs")
    marker = storage / "crash.marker"
    crops = face_data[1]
    submission = f"clipguard-train-{os.getpid()}-{int(time.time())}"
    cmd = [
        str(VENV_BIN / "clipguard"), "train", "--submit", "--ray-address", ray_head.dashboard,
        "--submission-id", submission, "--config", "training/configs/tiny-cpu.yaml",
        "--set", f"data.crops={crops}", "--set", f"run.storage_path={storage}", "--set", "run.name=job",
        "--set", "fault.rank=1", "--set", f"fault.epoch={CRASH_EPOCH}", "--set", f"fault.marker={marker}",
    ]  # fmt: skip
    began = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=fresh_shell_env(), capture_output=True, text=True, timeout=780)
    seconds = time.monotonic() - began
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert f"{VENV_BIN / 'python'} training/train.py --config training/configs/tiny-cpu.yaml" in output
    assert '"checkpoint": ' in output  # train.py's own result line, streamed from the job's log
    from ray.job_submission import JobStatus, JobSubmissionClient

    assert JobSubmissionClient(ray_head.dashboard).get_job_status(submission) == JobStatus.SUCCEEDED
    print(f"\n`clipguard train --submit` of tiny-cpu: {seconds:.0f}s")
    return JobRun(storage=storage, name="job", crops=crops, marker=marker, seconds=seconds)


# --- the documented ways to submit, from a fresh shell -------------------------------------------
def test_ray_job_submit_naming_the_environment_interpreter_runs_train_py(ray_head):
    """The README's raw form: `ray job submit ... -- "$PWD/.venv/bin/python" training/train.py`."""
    cmd = [RAY, "job", "submit", "--address", ray_head.dashboard, "--working-dir", ".", "--",
           str(VENV_BIN / "python"), "training/train.py", "--help"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=fresh_shell_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    assert "--config FILE" in proc.stdout and "succeeded" in proc.stdout


def test_submit_without_the_cluster_token_says_how_to_give_it(ray_head, tmp_path):
    cmd = [str(VENV_BIN / "clipguard"), "train", "--submit", "--ray-address", ray_head.dashboard,
           "--config", "training/configs/tiny-cpu.yaml", "--set", f"data.crops={tmp_path / 'crops.csv'}",
           "--set", f"run.storage_path={tmp_path}"]  # fmt: skip
    env = fresh_shell_env(RAY_AUTH_MODE="disabled")
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2 and "export RAY_AUTH_MODE=token" in proc.stderr, proc.stderr[-3000:]


def score_split(scorer: CropScorer, crops_csv: Path, split: str):
    rows = [r for r in read_crop_manifest(crops_csv) if r.split == split]
    scores = scorer.score(np.stack([load_crop(crops_csv.parent / r.crop_path) for r in rows]))
    return detection_metrics([r.video_id for r in rows], [r.label for r in rows], scores)


def stream_scorer(checkpoint: Path) -> CropScorer:
    """The stream's detector, built as workers/scorer_actor.py builds it (same random base: init_seed 0)."""
    model_cfg = ModelConfig(arch="ViT-Tiny-test", pretrained="none", checkpoint=checkpoint, device="cpu")
    return CropScorer.from_config(DetectorConfig.for_stream(model_cfg, 32), model_cfg.checkpoint)


# --- the submitted job ---------------------------------------------------------------------------
def test_job_trains_and_the_model_fits_its_training_videos(job_run):
    rows = read_log(job_run.run_dir / "train_log.csv")
    last = rows[-1]
    assert int(last["epoch"]) == 29
    first_loss = float(rows[0]["train_loss"])
    final_loss = np.mean([float(r["train_loss"]) for r in rows[-3:]])
    print(f"\ntrain loss {first_loss:.3f} -> {final_loss:.3f}; train video AUROC {float(last['train_video_auroc']):.3f}"
          f"; val video mAP {float(last['val_video_map']):.3f}; {job_run.seconds:.0f}s")  # fmt: skip
    assert final_loss < first_loss - 0.3  # the loss falls (the uniformity term takes it below zero)
    assert float(last["train_ce"]) < 0.5 * float(rows[0]["train_ce"])
    assert float(last["train_video_auroc"]) >= 0.9  # the model fits its training videos
    assert all(int(r["skipped_steps"]) == 0 for r in rows)


def test_killed_worker_resumes_from_the_checkpoint_not_from_scratch(job_run):
    assert job_run.marker.is_file()  # rank 1 did exit
    rows = read_log(job_run.run_dir / "train_log.csv")
    epochs = [int(r["epoch"]) for r in rows]
    assert epochs.count(0) == 1  # never restarted from scratch
    resumed = [r for r in rows if int(r["resumed_from"]) >= 0]
    assert resumed, "no epoch ran after a resume"
    first = resumed[0]
    assert int(first["epoch"]) == int(first["resumed_from"]) + 1  # continued right after its checkpoint epoch
    assert 0 <= int(first["resumed_from"]) < CRASH_EPOCH
    # The optimiser step carried over too: the resumed epoch does not start counting from 0.
    steps_per_epoch = int(rows[0]["step"])
    assert int(first["step"]) == (int(first["epoch"]) + 1) * steps_per_epoch
    assert epochs[-1] == 29 and sorted(set(epochs)) == list(range(30))


def test_exported_checkpoint_scores_a_video_through_the_stream_detector(job_run, face_data):
    root, crops_csv = face_data
    scorer = stream_scorer(job_run.exported)
    assert scorer.version.startswith("clipguard-ViT-Tiny-test-")
    # A video through the stream's own decoder and face cropper, then the detector.
    decoded = FrameDecoder(SourceConfig(video_root=root), SamplingConfig(num_frames=8)).decode(
        VideoJob(video_id="newton-fake", uri="videos/newton-fake.mp4")
    )
    crops = FaceCropper(
        FacesConfig(), FaceDetector(FacesConfig(), intra_op_threads=1), selection=VideoScoreConfig()
    ).crop_video("newton-fake", decoded.frames)
    scores = scorer.score(np.stack([c.image for c in crops.crops]))
    assert scores.shape == (len(crops.crops),) and np.isfinite(scores).all()
    assert ((scores >= 0) & (scores <= 1)).all()
    train, held_out = score_split(scorer, crops_csv, "train"), score_split(scorer, crops_csv, "test")
    manifest_metrics = read_manifest_metrics(job_run.exported)
    print(f"\nexported checkpoint (epoch selected on val mAP {manifest_metrics['val_video_map']:.3f}): "
          f"train video AUROC {train.video_auroc:.3f}, held-out identities video AUROC {held_out.video_auroc:.3f} "
          f"(frame {held_out.frame_auroc:.3f}, EER {held_out.video_eer:.3f}; random tower: no threshold)")  # fmt: skip


def read_manifest_metrics(path: Path) -> dict[str, float]:
    manifest = read_manifest(path)
    assert manifest.training_config["model"]["arch"] == "ViT-Tiny-test"
    assert manifest.training_config["data"]["val_split"] == "val" and manifest.preset == "paper"
    assert not any(key.startswith("test") for key in manifest.metrics)  # nothing from a test split
    return manifest.metrics


def test_exported_checkpoint_changes_only_layernorm_and_head_tensors(job_run):
    base = build_detector(TINY_DETECTOR)
    trained = build_detector(TINY_DETECTOR)
    manifest = load_checkpoint(trained, job_run.exported, preprocess=PreprocessConfig())
    assert manifest.base_fingerprint == base_fingerprint(base)  # every frozen tensor is the base tower's
    base_state, trained_state = base.state_dict(), trained.state_dict()
    changed = {name for name, t in trained_state.items() if not torch.equal(t, base_state[name])}
    assert changed <= {name for name in trained_state if is_trained_param(name)}
    assert any(is_layernorm_param(n) for n in changed) and {"head.fc.weight", "head.fc.bias"} <= changed
    assert set(load_file(str(job_run.exported))) == {n for n, _ in trained.named_parameters() if is_trained_param(n)}


# --- a restart of the same run ---------------------------------------------------------------------
def test_restart_with_resume_continues_the_same_run(job_run, ray_head):
    # One more epoch, on one worker: the checkpoint does not depend on the number of workers
    # (the global batch, hence the steps per epoch and the schedule, stay the same).
    overrides = [f"data.crops={job_run.crops}", f"run.storage_path={job_run.storage}", "run.name=job",
                 "optim.epochs=31", "run.num_workers=1"]  # fmt: skip
    cfg = with_absolute_paths(load_train_config(TINY, overrides))
    with pytest.raises(ConfigError, match="--resume"):
        run_training(cfg, resume=False)  # an existing run is never reused by accident
    ray.init(address=ray_head.address)
    try:
        result = run_training(cfg, resume=True)
    finally:
        ray.shutdown()
    assert result.error is None
    last = read_log(job_run.run_dir / "train_log.csv")[-1]
    assert (int(last["epoch"]), int(last["resumed_from"])) == (30, 29)
    assert int(last["step"]) == 31 * int(read_log(job_run.run_dir / "train_log.csv")[0]["step"])
    assert len([r for r in read_log(job_run.run_dir / "train_log.csv") if r["epoch"] == "30"]) == 1


# --- train_step / eval_step as plain functions (no Ray) ------------------------------------------
@pytest.fixture
def tiny():
    detector = build_detector(TINY_DETECTOR)
    optimizer = torch.optim.AdamW([p for p in detector.parameters() if p.requires_grad], lr=1e-2)
    g = torch.Generator().manual_seed(1)
    crops = torch.randint(0, 256, (6, 3, 256, 256), dtype=torch.uint8, generator=g)
    return detector, optimizer, crops, torch.tensor([0, 1, 0, 1, 0, 1])


def test_nan_loss_skips_the_step_and_never_reaches_the_optimiser(tiny, caplog):
    detector, optimizer, crops, labels = tiny
    before = {n: p.detach().clone() for n, p in detector.named_parameters()}
    hook = detector.tower.register_forward_hook(lambda module, args, out: out * float("nan"))
    result = train_step(TrainForward(detector, slerp=True), crops, labels, optimizer, loss_weights("paper"),
                        preprocess=PreprocessConfig(), autocast_dtype=None, step=7)  # fmt: skip
    hook.remove()
    assert result.skipped and "non-finite" in result.reason and result.losses == {}
    assert "step 7 skipped" in caplog.text
    assert optimizer.state == {}  # optimizer.step() never ran
    assert all(p.grad is None for p in detector.parameters())
    assert all(torch.equal(p, before[n]) for n, p in detector.named_parameters())
    ok = train_step(TrainForward(detector, slerp=True), crops, labels, optimizer, loss_weights("paper"),
                    preprocess=PreprocessConfig(), autocast_dtype=None)  # fmt: skip
    assert not ok.skipped and set(ok.losses) == {"ce", "align", "unif", "total"}
    assert not torch.equal(detector.head.fc.weight, before["head.fc.weight"])


def test_train_forward_applies_slerp_between_normalisation_and_head(tiny):
    detector, _, crops, labels = tiny
    pixels = clip_preprocess(crops, PreprocessConfig())
    plain = TrainForward(detector, slerp=False)(pixels, labels)
    assert torch.allclose(plain.embeddings, detector.embed(pixels))
    mixed = TrainForward(detector, slerp=True, seed=3)(pixels, labels)
    assert mixed.embeddings.shape == plain.embeddings.shape
    assert not torch.allclose(mixed.embeddings, plain.embeddings)
    assert torch.allclose(mixed.embeddings.norm(dim=-1), torch.ones(6), atol=1e-5)  # still on the sphere
    assert torch.allclose(mixed.logits, detector.head.classify(mixed.embeddings))  # the head sees the slerp


def test_eval_step_scores_exactly_like_the_stream_detector(tiny):
    detector, _, crops, _ = tiny
    scorer = CropScorer(detector, TINY_DETECTOR, version="test")
    expected = scorer.score(crops.permute(0, 2, 3, 1).numpy())
    got = eval_step(detector, crops, preprocess=PreprocessConfig(), autocast_dtype=None)
    assert np.allclose(got.numpy(), expected, atol=1e-6)


def test_each_rank_reads_its_own_shard():
    rows = [CropRow(f"v{i // 4}", f"c{i}.png", i % 2, "train", "d", i, 0, "") for i in range(10)]
    dataset = CropDataset(rows, Path("/nonexistent"))  # only indices are drawn here, no image is read
    shards = []
    for rank in range(2):
        _, sampler = train_loader(dataset, batch_size=2, rank=rank, world=2, seed=0, workers=0)
        sampler.set_epoch(3)
        shards.append(list(sampler))
    assert len(shards[0]) == len(shards[1]) == 5  # equal step counts, as DDP needs
    assert sorted(shards[0] + shards[1]) == list(range(10))
    evals = [eval_loader(dataset, batch_size=4, rank=r, world=3, workers=0).dataset.indices for r in range(3)]
    assert sorted(i for shard in evals for i in shard) == list(range(10))  # no padding, no crop twice
