"""Retention: old batches are dropped by time and by size, moving the log start offset,
while newer data stays readable."""

import time

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from kafkautil import admin, confluent_read_all, unique_topic, watermarks

CHECK_MS = 300


def produce(bootstrap, topic, n, ts=None, size=100):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0, "batch.num.messages": 1})
    for i in range(n):
        kwargs = {"timestamp": ts} if ts is not None else {}
        p.produce(topic, value=b"%06d" % i + b"x" * size, partition=0, **kwargs)
        p.flush(10)  # one batch per message, so retention can drop them one by one
    assert p.flush(10) == 0


def create(bootstrap, topic, config):
    a = admin(bootstrap)  # keep the client alive until the future resolves
    futures = a.create_topics([NewTopic(topic, 1, 1, config=config)])
    futures[topic].result(30)


def wait_low_watermark_above(bootstrap, topic, floor, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        low, high = watermarks(bootstrap, topic)[0]
        if low > floor:
            return low, high
        time.sleep(0.2)
    raise AssertionError(f"log start of {topic} never moved past {floor}: {watermarks(bootstrap, topic)}")


def test_time_retention_drops_old_batches(broker_factory):
    b = broker_factory({"retention_check_interval_ms": CHECK_MS})
    t = unique_topic("retention-time")
    create(b.bootstrap, t, {"retention.ms": "60000"})
    hour_ago = int(time.time() * 1000) - 3600 * 1000
    produce(b.bootstrap, t, 5, ts=hour_ago)   # older than retention.ms
    produce(b.bootstrap, t, 3)                # fresh
    low, high = wait_low_watermark_above(b.bootstrap, t, 0)
    assert (low, high) == (5, 8)
    got = confluent_read_all(b.bootstrap, t, expected=3)
    assert [r.value[:6] for r in got] == [b"000000", b"000001", b"000002"]


def test_size_retention_keeps_the_newest_bytes(broker_factory):
    b = broker_factory({"retention_check_interval_ms": CHECK_MS})
    t = unique_topic("retention-size")
    create(b.bootstrap, t, {"retention.bytes": "2000"})
    produce(b.bootstrap, t, 40, size=200)
    low, high = wait_low_watermark_above(b.bootstrap, t, 0)
    assert high == 40
    assert 0 < low < 40
    got = confluent_read_all(b.bootstrap, t, expected=high - low)
    assert len(got) == high - low
    assert got[-1].value[:6] == b"000039"
