"""Progress lines: n/N, rate and ETA as plain lines (logs), a bar on a terminal."""

from __future__ import annotations

import io

from training.progress import Progress, format_eta, progress_line


def test_plain_lines_say_how_far_how_fast_and_how_long():
    assert (
        progress_line("prepare", 30, 120, "videos", 10.0) == "prepare 30/120 videos (25%)  3.00 videos/s  ETA 0:00:30"
    )
    assert progress_line("score cdf", 0, 5, "crops", 0.0).endswith("0.00 crops/s  ETA ?")
    assert format_eta(3 * 3600 + 2 * 60 + 5.4) == "3:02:05" and format_eta(float("nan")) == "?"


def test_plain_lines_are_throttled_but_notes_and_the_last_line_always_print():
    out = io.StringIO()
    progress = Progress("epoch 1/3", "steps", stream=out, tty=False, min_interval_s=3600).start(4)
    for _ in range(3):
        progress.advance()  # the first prints (no line yet), the next two fall inside the interval
    progress.advance(note="done  32 crops  v1")
    progress.close()
    lines = out.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines] == ["epoch 1/3 1/4 steps (25%)", "epoch 1/3 4/4 steps (100%)"]
    assert lines[-1].endswith("done  32 crops  v1") and "steps/s  ETA" in lines[-1]
    noted = io.StringIO()
    problems = Progress("prepare", "videos", stream=noted, tty=False, min_interval_s=3600).start(5)
    problems.advance()
    problems.advance(note="skipped  0 crops  bad.mp4 (corrupt: moov atom not found)", always=True)
    assert noted.getvalue().count("\n") == 2 and "prepare 2/5 videos" in noted.getvalue()


def test_a_terminal_gets_a_bar_with_problem_notes_above_it():
    out = io.StringIO()
    progress = Progress("prepare", "videos", stream=out, tty=True).start(3)
    progress.advance(note="done  4 crops  a")  # counted by the bar, not written
    progress.advance(note="no_face  0 crops  b", always=True)
    progress.advance()
    progress.close()
    text = out.getvalue()
    assert "3/3" in text and "no_face  0 crops  b" in text and "done  4 crops  a" not in text


def test_epoch_table_ends_with_the_run_eta(tmp_path, capsys):
    from training.train_log import ProgressLog, read_log

    log = ProgressLog(tmp_path, total_epochs=4)
    log.write({"epoch": 0, "train_loss": 0.7, "epoch_s": 30.0})
    log.write({"epoch": 1, "train_loss": 0.6, "epoch_s": 50.0})
    header, first, second = capsys.readouterr().out.splitlines()
    assert header.split()[-2:] == ["run", "ETA"]
    assert first.split()[-1] == "0:01:30" and second.split()[-1] == "0:01:20"  # epochs left x mean epoch so far
    assert list(read_log(tmp_path / "train_log.csv")[0]) == ["epoch", "train_loss", "epoch_s"]  # not in the CSV
