"""The gpu_node section: defaults keep today's stream; combinations that cannot work are refused."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from clipguard.config import ClipguardConfig


def test_defaults_keep_the_cpu_stage_path_with_auto_devices():
    cfg = ClipguardConfig()
    assert cfg.gpu_node.actors == 0  # decoder -> face -> detector actors, as before
    assert (cfg.gpu_node.decode_device, cfg.gpu_node.faces_device, cfg.model.device) == ("auto", "auto", "auto")


def test_env_selects_the_gpu_stage_and_bad_values_are_errors(monkeypatch):
    monkeypatch.setenv("CLIPGUARD_GPU_NODE__ACTORS", "2")
    monkeypatch.setenv("CLIPGUARD_AUTOSCALE__ENABLED", "false")  # the GPU stage pool is sized by gpu_node.actors
    monkeypatch.setenv("CLIPGUARD_GPU_NODE__DECODE_DEVICE", "cuda")
    cfg = ClipguardConfig()
    assert cfg.gpu_node.actors == 2 and cfg.gpu_node.decode_device == "cuda"
    with pytest.raises(ValidationError):
        ClipguardConfig(gpu_node={"faces_device": "gpu"})
    with pytest.raises(ValidationError, match="batch_buckets"):
        ClipguardConfig(model={"batch_buckets": (0, 64)})


def test_autoscaling_pools_a_gpu_node_does_not_have_is_refused():
    with pytest.raises(ValidationError, match="gpu_node.actors"):
        ClipguardConfig(gpu_node={"actors": 1}, autoscale={"enabled": True})
