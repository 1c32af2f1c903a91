"""The training config: presets as docs/method.md says, misspelt keys refused, typed --set overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from clipguard.errors import ConfigError
from training.train_config import TrainConfig, build_train_config, load_train_config, parse_override

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


@pytest.mark.parametrize("name", ["paper", "gend", "ce-only", "tiny-cpu"])
def test_every_shipped_config_loads(name):
    cfg = load_train_config(CONFIGS / f"{name}.yaml")
    assert cfg.run.name and cfg.data.val_split == "val"


def test_presets_match_the_method():
    paper, gend, ce = (load_train_config(CONFIGS / f"{n}.yaml") for n in ("paper", "gend", "ce-only"))
    assert paper.loss.weights().to_dict() == {"ce": 1.0, "unif": 0.1, "align": 0.1, "slerp": True}
    assert gend.loss.weights().to_dict() == {"ce": 1.0, "unif": 0.5, "align": 0.1, "slerp": False}
    assert ce.loss.weights().to_dict() == {"ce": 1.0, "unif": 0.0, "align": 0.0, "slerp": True}
    for cfg in (paper, gend, ce):
        assert (cfg.model.arch, cfg.model.pretrained, cfg.model.quick_gelu) == ("ViT-L-14", "openai", True)
        assert cfg.data.batch_size == 128 and cfg.optim.betas == (0.9, 0.999) and cfg.optim.weight_decay == 0.0
        assert cfg.run.precision == "auto"
    assert (paper.optim.schedule, paper.optim.lr, paper.optim.lr_min, paper.optim.epochs) == ("cosine", 8e-5, 5e-5, 10)
    o = gend.optim
    assert (o.schedule, o.lr, o.lr_min, o.warmup_epochs, o.warmup_lr, o.restart_epochs) == (
        "gend",
        3e-4,
        1e-5,
        1,
        1e-5,
        10,
    )


def test_misspelt_key_in_yaml_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optim:\n  lr_mx: 1.0e-3\n")
    with pytest.raises(ConfigError, match="optim.lr_mx"):
        load_train_config(path)


def test_unknown_section_is_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("optimizer:\n  lr: 1.0e-3\n")
    with pytest.raises(ConfigError, match="optimizer"):
        load_train_config(path)


def test_overrides_are_typed():
    cfg = load_train_config(
        CONFIGS / "paper.yaml",
        ["optim.lr=1e-3", "augment.enabled=false", "optim.betas=[0.9, 0.98]", "run.num_workers=4", "loss.align=0.5"],
    )
    assert cfg.optim.lr == pytest.approx(1e-3) and isinstance(cfg.optim.lr, float)
    assert cfg.augment.enabled is False
    assert cfg.optim.betas == (0.9, 0.98)
    assert cfg.run.num_workers == 4
    assert cfg.loss.weights().align == 0.5 and cfg.loss.weights().unif == 0.1  # the rest stays the preset's


def test_misspelt_override_is_an_error():
    with pytest.raises(ConfigError, match="optim.lrr"):
        load_train_config(CONFIGS / "paper.yaml", ["optim.lrr=1e-3"])
    with pytest.raises(ConfigError, match="section.field=value"):
        parse_override("optim.lr")
    with pytest.raises(ConfigError, match="not a section"):
        load_train_config(None, ["run.name=foo", "run.name.x=1"])


def test_wrongly_typed_override_is_an_error():
    with pytest.raises(ConfigError, match="optim.epochs"):
        load_train_config(None, ["optim.epochs=many"])


def test_selecting_on_the_test_split_is_refused():
    with pytest.raises(ConfigError, match="never selected on a test split"):
        load_train_config(CONFIGS / "paper.yaml", ["data.val_split=test"])
    with pytest.raises(ConfigError, match="both"):
        load_train_config(None, ["data.val_split=train"])


def test_config_is_frozen():
    cfg = TrainConfig()
    with pytest.raises(ValidationError):
        cfg.optim.lr = 1.0  # type: ignore[misc]


def test_fault_injection_needs_all_three_fields():
    with pytest.raises(ConfigError, match="set together"):
        load_train_config(None, ["fault.rank=1"])
    cfg = load_train_config(None, ["fault.rank=1", "fault.epoch=2", "fault.marker=/tmp/x"])
    assert cfg.fault.enabled


def test_json_dump_round_trips_as_the_workers_receive_it():
    cfg = load_train_config(CONFIGS / "gend.yaml", ["data.crops=/data/crops.csv"])
    again = build_train_config(cfg.model_dump(mode="json"))
    assert again == cfg
    assert again.data.crops == Path("/data/crops.csv")


def test_a_yaml_that_is_not_a_mapping_is_refused(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_train_config(path)


def test_relative_output_paths_are_refused_inside_a_ray_job(monkeypatch, tmp_path):
    from training.train import with_absolute_paths

    monkeypatch.chdir(tmp_path)
    cfg = with_absolute_paths(load_train_config(CONFIGS / "tiny-cpu.yaml"))
    assert cfg.run.storage_path == tmp_path / "runs" and cfg.data.crops.is_absolute()
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", '{"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}')
    with pytest.raises(ConfigError, match="temporary copy"):
        with_absolute_paths(load_train_config(CONFIGS / "tiny-cpu.yaml"))
    absolute = with_absolute_paths(load_train_config(CONFIGS / "tiny-cpu.yaml", [f"run.storage_path={tmp_path}"]))
    assert absolute.run.storage_path == tmp_path


def test_lr_floor_above_peak_is_refused():
    with pytest.raises(ConfigError, match="lr_min"):
        load_train_config(None, ["optim.lr=1e-5", "optim.lr_min=1e-4"])


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        (None, "cannot read crop manifest"),
        (["v1,c1.png,0,train,d,0,0,", "v2,c2.png,1,train,d,0,0,"], "split 'val' has 0 crops"),
        (["v1,c1.png,0,train,d,0,0,", "v2,c2.png,1,train,d,0,0,", "v3,c3.png,0,val,d,0,0,"], "both real and fake"),
    ],
    ids=["missing", "no-val-split", "one-class-val"],
)
def test_train_py_refuses_unusable_data_before_ray_or_a_run_folder(tmp_path, capsys, rows, words):
    import ray

    from training.crop_manifest import CROP_COLUMNS
    from training.train import main

    crops = tmp_path / "crops.csv"
    if rows is not None:
        crops.write_text(",".join(CROP_COLUMNS) + "\n" + "\n".join(rows) + "\n")
    code = main(["--config", str(CONFIGS / "tiny-cpu.yaml"), "--set", f"data.crops={crops}",
                 "--set", f"run.storage_path={tmp_path / 'runs'}"])  # fmt: skip
    assert code == 2 and words in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "runs").exists()
