import time
from contextlib import ExitStack, closing

from kafka import KafkaConsumer, TopicPartition

from pipeline.kafka_publisher import JobPublisher, ensure_topic
from pipeline.kafka_source import KafkaSource


def _publish(cfg, ids):
    ensure_topic(cfg)
    pub = JobPublisher(cfg)
    for vid in ids:
        pub.publish(vid)
    pub.flush()
    pub.close()


def _drain(source, want, capacity=100, timeout=30):
    got, deadline = [], time.monotonic() + timeout
    while len(got) < want and time.monotonic() < deadline:
        got += source.poll(capacity)
    return got


def _committed(cfg):
    c = KafkaConsumer(bootstrap_servers=cfg.bootstrap, group_id=cfg.group_id, enable_auto_commit=False)
    try:
        return {p: c.committed(TopicPartition(cfg.topic, p)) for p in range(cfg.partitions)}
    finally:
        c.close()


def test_kafka_source_commits_only_done_prefix_and_resumes_after_restart(kafka_config):
    cfg = kafka_config.model_copy(update={"partitions": 1})
    _publish(cfg, [f"v{i}" for i in range(5)])
    src = KafkaSource(cfg)
    msgs = _drain(src, 5)
    assert [m.job.video_id for m in msgs] == [f"v{i}" for i in range(5)]
    # finish v0, v1, v3: only 0..1 form a prefix -> commit offset 2
    for m in (msgs[0], msgs[1], msgs[3]):
        assert src.done(m.job.source)
    assert src.commit() == {TopicPartition(cfg.topic, 0): 2}
    src.close()
    assert _committed(cfg)[0] == 2

    # a restarted member resumes at the first unfinished message (v2), v3 is redone
    src2 = KafkaSource(cfg)
    again = _drain(src2, 3)
    assert [m.job.video_id for m in again] == ["v2", "v3", "v4"]
    for m in again:
        src2.done(m.job.source)
    src2.commit()
    src2.close()
    assert _committed(cfg)[0] == 5


def test_kafka_source_capacity_bounds_what_is_handed_out(kafka_config):
    cfg = kafka_config.model_copy(update={"partitions": 1})
    _publish(cfg, [f"v{i}" for i in range(6)])
    src = KafkaSource(cfg)
    first = _drain(src, 2, capacity=2)
    assert len(first) == 2
    # no capacity: nothing more is handed out, however long we poll
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        assert src.poll(0) == []
    assert src.in_flight == 2
    for m in first:
        src.done(m.job.source)
    rest = _drain(src, 4, capacity=4)
    assert [m.job.video_id for m in first + rest] == [f"v{i}" for i in range(6)]
    src.close()


def test_kafka_source_malformed_values_arrive_as_dead_letters(kafka_config):
    cfg = kafka_config.model_copy(update={"partitions": 1})
    ensure_topic(cfg)
    pub = JobPublisher(cfg)
    pub.publish_raw(b"\x00\xff\xfe")
    pub.publish_raw(b'{"video_id":')
    pub.publish("ok")
    pub.flush()
    src = KafkaSource(cfg)
    msgs = _drain(src, 3)
    assert [m.dead_letter is not None for m in msgs] == [True, True, False]
    assert msgs[0].dead_letter.source.offset == 0
    src.close()


def test_kafka_source_lag_counts_unread_and_in_flight(kafka_config):
    cfg = kafka_config.model_copy(update={"partitions": 1})
    _publish(cfg, [f"v{i}" for i in range(4)])
    src = KafkaSource(cfg)
    got = _drain(src, 1, capacity=1)
    assert len(got) == 1
    assert src.lag() == {0: 4}  # 3 unread + 1 in flight
    src.close()


def test_kafka_source_reports_log_ends_that_grow_with_arrivals_and_the_partition_count(kafka_config):
    """What the autoscaler's arrival rate and decoder cap read: exact log ends, the topic's partitions."""
    cfg = kafka_config.model_copy(update={"partitions": 2})
    _publish(cfg, [f"v{i}" for i in range(6)])
    src = KafkaSource(cfg)
    try:
        _drain(src, 6)
        lag, ends = src.lag_and_ends()
        assert sum(ends.values()) == 6 and set(ends) == {0, 1}
        assert src.partition_count() == 2
        _publish(cfg, [f"w{i}" for i in range(4)])
        _drain(src, 4)
        assert sum(src.lag_and_ends()[1].values()) == 10  # 4 arrived since
    finally:
        src.close()


def _split(a, b):
    """Each member owns one of the two partitions."""
    mine, theirs = a.consumer.assignment(), b.consumer.assignment()
    return len(mine) == 1 and len(theirs) == 1 and not mine & theirs


def test_kafka_source_rebalance_commits_finished_work_and_hands_over_the_rest(kafka_config):
    cfg = kafka_config.model_copy(update={"partitions": 2})
    _publish(cfg, [f"v{i}" for i in range(8)])
    with ExitStack() as sources:  # closed even when an assertion fails: no consumer outlives the test
        a = sources.enter_context(closing(KafkaSource(cfg)))
        first = _drain(a, 8)
        assert len(first) == 8 and {m.job.source.partition for m in first} == {0, 1}
        finished = [m for m in first if m.job.source.offset == 0]  # first message of each partition
        for m in finished:
            assert a.done(m.job.source)
        # The consume loop commits finished prefixes after every poll; a failed commit is retried.
        committed, deadline = {}, time.monotonic() + 30
        while not committed and time.monotonic() < deadline:
            committed = a.commit()
        assert committed == {TopicPartition(cfg.topic, p): 1 for p in (0, 1)}
        # A second member joins and takes one partition over. Wait for the split to settle: on a
        # loaded machine the group can pass through other assignments first (a missed heartbeat).
        b = sources.enter_context(closing(KafkaSource(cfg)))
        got_b, deadline = [], time.monotonic() + 120
        while time.monotonic() < deadline and not _split(a, b):
            a.poll(100)
            got_b += b.poll(100)
        assert _split(a, b), (a.consumer.assignment(), b.consumer.assignment())
        moved = {tp.partition for tp in b.consumer.assignment()}

        def from_moved():
            return [m.job.source.offset for m in got_b if m.job.source.partition in moved]

        # b resumes right after a's finished prefix of the moved partition
        while time.monotonic() < deadline and len(from_moved()) < 3:
            a.poll(100)
            got_b += b.poll(100)
        assert from_moved()[:3] == [1, 2, 3]  # a redo after a passing assignment may repeat them
        # a's late results for the moved partition no longer commit
        late = [m for m in first if m.job.source.partition in moved and m.job.source.offset > 0]
        assert late and not any(a.done(m.job.source) for m in late)
