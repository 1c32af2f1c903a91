"""The RayCluster's GPU pods fit the fused GPU stage actor at its configured resources (README "GPU node")."""

from __future__ import annotations

from clipguard.config import GpuNodeConfig
from tests.deploy.test_kuberay_manifests import stream_cluster


def test_a_gpu_pod_holds_one_gpu_stage_actor():
    groups = {g["groupName"]: g for g in stream_cluster()["spec"]["workerGroupSpecs"]}
    params = groups["gpu-workers"]["rayStartParams"]
    actor = GpuNodeConfig()
    assert actor.num_gpus == float(params["num-gpus"]) == 1.0  # one actor per GPU: frames cross to it once
    assert actor.num_cpus <= float(params["num-cpus"])
    assert 2 * actor.num_cpus > float(params["num-cpus"])  # not two actors on one GPU by accident
