"""One logging setup: text/JSON on the driver, the same for every actor through the job's LoggingConfig."""

from __future__ import annotations

import json
import logging

import ray

from clipguard.config import LogConfig
from clipguard.contracts import SourceRef, Verdict
from clipguard.logging_setup import JSONFormatter, TextFormatter, configure_logging, ray_logging_args
from clipguard.ray_connection import ray_connection
from pipeline.consume_loop import log_verdict


def _record(**extra) -> logging.LogRecord:
    record = logging.getLogger("pipeline.test").makeRecord(
        "pipeline.test", logging.INFO, "f.py", 1, "verdict %s", ("done",), None, extra=extra
    )
    return record


def test_json_lines_carry_ray_keys_and_the_extra_fields():
    doc = json.loads(JSONFormatter().format(_record(video_id="a/b.mp4", stage="verdict", timings_s={"decode": 0.5})))
    assert doc["message"] == "verdict done" and doc["levelname"] == "INFO" and doc["name"] == "pipeline.test"
    assert doc["video_id"] == "a/b.mp4" and doc["stage"] == "verdict" and doc["timings_s"] == {"decode": 0.5}
    assert {"asctime", "filename", "lineno", "process"} <= set(doc)


def test_text_lines_end_with_the_extra_fields():
    line = TextFormatter().format(_record(video_id="a b", stage="faces", timings_s={"faces": 1.25}))
    assert "INFO pipeline.test: verdict done" in line
    assert line.endswith('video_id=a b stage=faces timings_s={"faces":1.25}')


def test_every_verdict_logs_its_id_stage_and_timings(caplog):
    verdict = Verdict("clips/a.mp4", "done", "m-1", p_fake=0.7, label="fake", source=SourceRef("t", 1, 9),
                      timings_s={"decode": 0.4, "faces": 1.0, "detect": 0.2, "total": 1.6})  # fmt: skip
    with caplog.at_level(logging.INFO, logger="pipeline.consume_loop"):
        log_verdict(verdict)
    (record,) = caplog.records
    assert record.video_id == "clips/a.mp4" and record.stage == "verdict" and record.source == "t[1]@9"
    assert record.timings_s == {"decode": 0.4, "faces": 1.0, "detect": 0.2, "total": 1.6}
    assert record.status == "done" and record.label == "fake" and record.p_fake == 0.7


def test_configure_logging_replaces_its_handlers_and_writes_the_file(tmp_path):
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        configure_logging(LogConfig(format="json", file=tmp_path / "a.log"), console_level="ERROR")
        configure_logging(LogConfig(format="json", file=tmp_path / "run.log"), console_level="ERROR")
        ours = [h for h in root.handlers if h not in before]
        assert len(ours) == 2  # console + file, the first call's pair replaced
        logging.getLogger("workers.x").info("hello", extra={"video_id": "v"})
        logging.getLogger("kafka.conn").info("chatter")  # third-party INFO: dropped
        for h in ours:
            h.flush()
        lines = [json.loads(line) for line in (tmp_path / "run.log").read_text().splitlines()]
        assert [(d["name"], d["message"], d["video_id"]) for d in lines] == [("workers.x", "hello", "v")]
    finally:
        for h in [h for h in root.handlers if h not in before]:
            root.removeHandler(h)
            h.close()


def test_actors_log_with_the_drivers_format_and_level(ray_address):
    @ray.remote
    def worker_logging():
        root = logging.getLogger()
        return root.level, [type(h.formatter).__name__ for h in root.handlers]

    with ray_connection(address=ray_address, **ray_logging_args(LogConfig(format="json", level="WARNING"))):
        level, formatters = ray.get(worker_logging.remote())
    assert level == logging.WARNING and "JSONFormatter" in formatters
