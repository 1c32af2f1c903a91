"""The train-step benchmark runs on the CPU as a smoke test (tiny tower, bf16 autocast forced on the CPU)."""

from __future__ import annotations

from bench import bench_train_step


def test_smoke_run_times_each_variant_and_writes_the_table(tmp_path):
    out = tmp_path / "train_step.md"
    argv = ["--arch", "ViT-Tiny-test", "--device", "cpu", "--batch", "4", "--warmup", "1", "--steps", "2",
            "--variants", "autocast,bf16-frozen", "--cpu-bf16", "--out", str(out)]  # fmt: skip
    assert bench_train_step.main(argv) == 0
    rows = {line.split("|")[1].strip(): line.split("|")[2:] for line in out.read_text().splitlines()
            if line.startswith("| autocast") or line.startswith("| bf16-frozen")}  # fmt: skip
    assert set(rows) == {"autocast", "bf16-frozen"}
    assert all(float(cells[0]) > 0 for cells in rows.values())  # crops/s


def test_without_bf16_autocast_the_cast_variants_say_why_they_did_not_run(tmp_path):
    out = tmp_path / "train_step.md"
    argv = ["--arch", "ViT-Tiny-test", "--device", "cpu", "--batch", "2", "--warmup", "0", "--steps", "1",
            "--variants", "bf16-frozen", "--out", str(out)]  # fmt: skip
    assert bench_train_step.main(argv) == 0
    assert "| bf16-frozen | n/a: fp32 on cpu (the cast needs bf16 autocast)" in out.read_text()
