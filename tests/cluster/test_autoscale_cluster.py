"""Autoscaling and node loss on a real multi-node Ray cluster (head + GPU-declaring worker nodes on loopback).

The scenarios and the timeline live in ``tests/autoscale_scenario.py``; ``bench/bench_autoscale.py``
runs the same scenarios and writes ``bench/results/autoscale.md`` (with a plot). One cluster serves
both tests, in this order: the growth test adds node g3, the node-loss test kills one of g1..g3.
"""

from __future__ import annotations

import pytest

from pipeline.verdict_store import VerdictStore
from tests import autoscale_scenario as sc
from tests.reliability.stream_harness import assert_stream_invariants

RESERVE = 120  # IDs the growth scenario may publish while its new detector loads (symlinks: cheap)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = sc.start_cluster(log_dir=tmp_path_factory.mktemp("cluster-logs"))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("autoscale-videos")
    return root, sc.make_videos(root, 48 + RESERVE)


def _print(timeline):
    for s in timeline.samples:
        print(s)
    print(timeline.events, timeline.notes)


@pytest.mark.timeout(420)
def test_detectors_grow_under_a_backlog_wait_for_a_node_and_shrink_when_idle(
    cluster, videos, kafka_config, redis_config
):
    root, ids = videos
    cfg = sc.scenario_config(kafka_config, redis_config, cluster.address, root)
    timeline = sc.run_growth(cluster, cfg, ids[:24], reserve=ids[48:])
    _print(timeline)
    assert timeline.notes["finished"], "the backlog was not stored and the pools not back at their minimum in time"
    detectors = timeline.column("detectors")
    assert detectors[0] == 1, "the detector pool starts at its minimum"
    assert max(detectors) >= 2, "the detector pool grew under the backlog"
    assert max(timeline.column("detectors_pending")) >= 1, "a detector waited for a node"
    assert "g3" in cluster.nodes, "the pending detector made the scenario add a GPU node"
    assert not timeline.early_calls, f"calls reached detectors before they were ready: {timeline.early_calls}"
    grew_at = next(i for i, d in enumerate(detectors) if d >= 2)
    assert detectors[-1] == 1 and max(detectors[grew_at:]) >= 2, "it shrank back to the minimum when idle"
    assert timeline.samples[-1].lag == 0
    assert timeline.notes["topic_partitions"] == 2 and max(timeline.column("decoders")) <= 2
    published = timeline.notes["published_ids"]
    assert published[:24] == ids[:24]
    store = VerdictStore(cfg.redis)
    assert_stream_invariants(cfg, store, published)
    assert all(store.get(v).status == "done" for v in published)


@pytest.mark.timeout(420)
def test_losing_a_worker_node_mid_backlog_loses_no_video_and_stops_no_consumer(
    cluster, videos, kafka_config, redis_config
):
    root, ids = videos
    cfg = sc.node_loss_config(kafka_config, redis_config, cluster.address, root)
    timeline = sc.run_node_loss(cluster, cfg, ids[24:48])
    _print(timeline)
    notes = timeline.notes
    assert notes["finished"], "in time after the node loss: not every video stored, or a consumer not back"
    assert "victim" in notes, "no node held both a consumer and a detector"
    assert notes["lag_at_kill"] > 0 and notes["stored_at_kill"] < len(ids[24:48]), "the node died mid-backlog"
    victim, lost = notes["victim"], notes["lost"]
    assert any(name.startswith("detector") for name in lost) and set(lost) & set(notes["decoders_before"])
    # Nothing lost, nothing announced twice with different content, offsets committed to the end.
    store = VerdictStore(cfg.redis)
    assert_stream_invariants(cfg, store, ids[24:48])
    statuses = {v: store.get(v).status for v in ids[24:48]}
    assert set(statuses.values()) == {"done"}, statuses
    # No consumer stopped: the same decoders consume (each re-synced with the current pools, which the
    # scenario waits for), the lost one restarted on a live node.
    assert notes["decoders_after"] == notes["decoders_before"]
    after = notes["after"]
    assert victim not in after.values(), f"an actor is still on the dead node: {after}"
    for name in set(lost) & set(notes["decoders_before"]):
        assert after.get(name) not in (None, victim), f"{name} was not restarted elsewhere: {after}"
    # The lost detector was replaced by a new member (placed once a GPU is free: the cluster lost one),
    # or a scale-down retired it first (the autoscaler grows the pool again when the work needs it).
    for name in (n for n in lost if n.startswith("detector")):
        handled = name in notes.get("replaced", {}) or name in notes.get("retired", {})
        assert handled, (name, notes.get("replaced"), notes.get("retired"))
