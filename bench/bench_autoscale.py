"""Autoscaling and node loss on a real multi-node Ray cluster: the timeline, as a table and a plot.

Runs the two scenarios of ``tests/autoscale_scenario.py`` (the same code the test
``tests/cluster/test_autoscale_cluster.py`` asserts on) on one local cluster: a head
plus GPU-declaring worker nodes started with ``ray start``, embedded Kafka and Redis.

1. Growth: a backlog is published; pools start at their minimum; the detector pool
   grows; a detector the cluster cannot place waits, pending and without traffic, until
   a new GPU node joins (more videos arrive until a second detector serves); after
   the backlog the pools shrink back, draining first.
2. Node loss: mid-backlog, a worker node holding a consumer and a detector is killed
   (SIGKILL to its raylet and every worker); the stream goes on.

Writes ``bench/results/autoscale.md`` (timelines, events, checks) and ``autoscale.png``.

    python -m bench.bench_autoscale                       # 24 + 24 videos
    python -m bench.bench_autoscale --videos 12 --no-write  # quick look, nothing written
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "token")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")

import argparse  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import ray  # noqa: E402

from clipguard.assets import assets_dir  # noqa: E402
from clipguard.config import KafkaConfig, RedisConfig  # noqa: E402
from clipguard.model_files import MODEL_DIR_ENV  # noqa: E402
from pipeline.embedded_services import embedded_services  # noqa: E402
from pipeline.verdict_store import VerdictStore  # noqa: E402
from tests import autoscale_scenario as sc  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def table(timeline: sc.Timeline, every_s: float = 3.0) -> list[str]:
    """One row about every ``every_s`` seconds, plus every row with an event."""
    rows = ["| t s | lag | stored | videos/s | decoders | face | detectors ready | pending | draining | event |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    last = -1e9
    for s in timeline.samples:
        if s.event or s.t - last >= every_s or s is timeline.samples[-1]:
            dec = f"{s.decoders}" + (f" (+{s.decoders_pending})" if s.decoders_pending else "")
            face = f"{s.faces}" + (f" (+{s.faces_pending})" if s.faces_pending else "")
            rows.append(f"| {s.t:.1f} | {s.lag} | {s.stored} | {s.videos_per_s:.2f} | {dec} | {face} | "
                        f"{s.detectors} | {s.detectors_pending} | {s.detectors_draining} | {s.event} |")  # fmt: skip
            last = s.t
    return rows


def plot(timelines: list[tuple[str, sc.Timeline]], path: Path) -> None:
    fig, axes = plt.subplots(2, len(timelines), figsize=(7 * len(timelines), 6.5), sharex="col", squeeze=False)
    for col, (title, tl) in enumerate(timelines):
        t = tl.column("t")
        top, bottom = axes[0][col], axes[1][col]
        top.step(t, tl.column("detectors"), where="post", label="detectors ready", lw=2)
        top.step(t, tl.column("detectors_pending"), where="post", label="detectors pending", ls="--")
        top.step(t, tl.column("detectors_draining"), where="post", label="detectors draining", ls=":")
        top.step(t, tl.column("faces"), where="post", label="face actors", alpha=0.7)
        top.step(t, tl.column("decoders"), where="post", label="decoders", alpha=0.7)
        top.set_ylabel("actors")
        top.set_title(title)
        top.legend(loc="upper right", fontsize=8)
        bottom.plot(t, tl.column("lag"), label="Kafka lag (videos)")
        bottom.plot(t, tl.column("stored"), label="verdicts stored")
        rate = bottom.twinx()
        rate.plot(t, tl.column("videos_per_s"), color="grey", alpha=0.6, label="videos/s (4 s window)")
        rate.set_ylabel("videos/s")
        bottom.set_xlabel("seconds since the stream came up")
        bottom.set_ylabel("videos")
        bottom.legend(loc="upper left", fontsize=8)
        rate.legend(loc="upper right", fontsize=8)
        for at, text in tl.events:
            if "node" in text:
                for ax in (top, bottom):
                    ax.axvline(at, color="red", alpha=0.4)
                top.annotate(text.split(" (")[0], (at, top.get_ylim()[1] * 0.92), fontsize=7, color="red")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=24, help="backlog size of each scenario")
    parser.add_argument("--no-write", action="store_true", help="print the tables, write nothing")
    args = parser.parse_args()
    os.environ.setdefault(MODEL_DIR_ENV, str(assets_dir() / "models"))
    logging.basicConfig(level=logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="bench-autoscale-"))
    ids = sc.make_videos(work, 7 * args.videos)  # two backlogs and the growth scenario's reserve
    load_start = os.getloadavg()
    started = datetime.now(UTC)
    wall = time.monotonic()
    with embedded_services(workdir=work) as (kafka, redis):
        cluster = sc.start_cluster(log_dir=work)
        try:
            cluster_s = time.monotonic() - wall

            def configs(tag: str) -> tuple[KafkaConfig, RedisConfig]:
                return (KafkaConfig(bootstrap=kafka.bootstrap, topic=f"bench-{tag}", group_id=f"bench-{tag}"),
                        RedisConfig(url=redis.url, key_prefix=f"bench-{tag}"))  # fmt: skip

            tag = uuid.uuid4().hex[:6]
            k, r = configs(f"grow-{tag}")
            grow_cfg = sc.scenario_config(k, r, cluster.address, work)
            growth = sc.run_growth(cluster, grow_cfg, ids[: args.videos], reserve=ids[2 * args.videos :])
            grow_ok = _stored_all(grow_cfg, growth.notes["published_ids"])
            k, r = configs(f"loss-{tag}")
            loss_cfg = sc.node_loss_config(k, r, cluster.address, work)
            loss = sc.run_node_loss(cluster, loss_cfg, ids[args.videos : 2 * args.videos])
            loss_ok = _stored_all(loss_cfg, ids[args.videos : 2 * args.videos])
        finally:
            cluster.stop()
    shutil.rmtree(work, ignore_errors=True)
    load_end = os.getloadavg()
    total_s = time.monotonic() - wall
    lines = report(growth, loss, grow_ok, loss_ok, started, load_start, load_end, cluster_s, total_s, args.videos)
    print("\n".join(lines))
    if not args.no_write:
        RESULTS.mkdir(exist_ok=True)
        plot([("1. growth under a backlog, shrink when idle", growth),
              ("2. a worker node killed mid-backlog", loss)], RESULTS / "autoscale.png")  # fmt: skip
        (RESULTS / "autoscale.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _stored_all(cfg, ids: list[str]) -> dict[str, int]:
    store = VerdictStore(cfg.redis)
    statuses: dict[str, int] = {}
    for vid in ids:
        v = store.get(vid)
        key = v.status if v else "missing"
        statuses[key] = statuses.get(key, 0) + 1
    events = store.client.xlen(f"{store.prefix}:verdicts")
    return {**statuses, "verdict events": int(events)}


def report(growth, loss, grow_ok, loss_ok, started, load_start, load_end, cluster_s, total_s, n) -> list[str]:
    notes = loss.notes
    fmt = ", ".join
    return [
        "# Autoscaling and node loss on a multi-node Ray cluster",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"shared with other jobs (load average 1/5/15 min: {fmt(f'{v:.1f}' for v in load_start)} at the start, "
        f"{fmt(f'{v:.1f}' for v in load_end)} at the end); Ray {ray.__version__}. Written by "
        "`python -m bench.bench_autoscale`; the test `tests/cluster/test_autoscale_cluster.py` runs the same "
        "scenarios (`tests/autoscale_scenario.py`) and asserts on them.",
        "",
        "**Cluster**: one head (`ray start --head`, 0 CPUs: only drivers talk to it) and worker nodes "
        "`g1`, `g2` (later `g3`), each `ray start --num-cpus=3 --num-gpus=1` on loopback in its own process "
        "group. The GPUs are logical: a detector actor asks for one (`stream.detector_num_gpus=1`), so at "
        "most one detector fits a node, and its model runs on the CPU device. Kafka (embedded broker, 2 "
        "partitions) and Redis are the embedded pair.",
        "",
        f"**Work**: {n} videos per scenario, each 480x270 with two faces per frame, 3 sampled frames (6 crops); "
        f"detector `{sc.DETECTOR_ARCH}` with random weights (open_clip's config, nothing downloaded), so the "
        "detector has the most work per video, as with crowded videos on a real deployment. The tiny "
        "`ViT-Tiny-test` costs less per crop than the face stage's alignment: with it no correct policy "
        "would ever grow the detectors.",
        "",
        "**Policy**: the shipped one with fast settings: decisions every 2 s, target drain 4 s, cooldowns "
        "4 s (up) / 6 s (down), bounds decoders 1-2 (= partitions), face 1-2, detectors 1-3. Rates per "
        "stage are measured over each actor's own busy time; arrivals from the topic's log-end offsets.",
        "",
        f"Cluster start (head + 2 nodes registered): {cluster_s:.0f} s; whole run {total_s:.0f} s.",
        "",
        "![timeline](autoscale.png)",
        "",
        "## 1. Growth under a backlog, a pending detector, shrink when idle",
        "",
        f"Published: {growth.notes.get('published')} videos ({n} at the start, the rest topped up while no "
        f"second detector was ready: traffic goes on until the grown pool serves). "
        f"Verdicts: {grow_ok}. Calls sent to a detector while it was pending: "
        f"{len(growth.early_calls)} (must be 0). Detectors (created -> ready, seconds): "
        f"{fmt(f'{name} at start' if c < 0 else f'{name} {c:.0f} -> {r:.0f}' for name, c, r in growth.ready_log)}. "
        f"Scenario wall time {growth.notes.get('wall_s')} s.",
        "",
        *table(growth),
        "",
        "## 2. A worker node killed mid-backlog",
        "",
        f"Killed `{notes.get('victim')}` at t={notes.get('killed_at')} s with {notes.get('stored_at_kill')} of "
        f"{notes.get('published')} verdicts stored and a lag of {notes.get('lag_at_kill')}; it held "
        f"{fmt(notes.get('lost', []))}. Verdicts: {loss_ok}. Lost actors replaced by the pools (unresponsive "
        f"for `actor_unresponsive_s` = 8 s): {notes.get('replaced', {}) or 'none'}; the others Ray restarted "
        f"in place on a live node. Retired by scale-downs after the kill: {notes.get('retired', {}) or 'none'}. "
        "Consumers before "
        f"{notes.get('decoders_before')}, after {notes.get('decoders_after')} (videos each took since it "
        f"last started: {notes.get('received_since_start')}); where every actor ran "
        f"before: {notes.get('before')}; after: {notes.get('after')}. Scenario wall time "
        f"{loss.notes.get('wall_s')} s.",
        "",
        *table(loss),
        "",
        "Notes: `lag` is the Kafka lag summed over partitions (unread + in flight); `stored` counts verdict "
        "events in Redis; `videos/s` is stored verdicts per second over the last 4 s. A pending actor "
        "is created but not ready (waiting for a node, or loading): it gets no work. A draining actor "
        "was retired by a scale-down and finishes its in-flight calls. After a node loss the lag can rise "
        "again when the restarted consumer rejoins the group: the rebalance moves partitions, and videos "
        "in flight on a revoked partition are redone by the new owner (at-least-once); the verdict store "
        "drops a repeat with the same content, so the verdict events stay one per video. Timings on this shared 2-core "
        "machine are slow and vary with the other jobs' load; the sequence of events is the point.",
    ]


if __name__ == "__main__":
    main()
