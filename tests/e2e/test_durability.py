"""Durability: every message acked with acks=all survives kill -9 of the broker."""

import time

import pytest
from confluent_kafka import KafkaError, Producer
from kafkautil import Rec, assert_same_records, confluent_read_all, create_topic, make_records, watermarks

PARTITIONS = 3


class AckRecorder:
    def __init__(self, bootstrap, topic, **conf):
        self.topic = topic
        self.acked: list[Rec] = []
        self.failed: list[tuple[Rec, KafkaError]] = []
        self.p = Producer({
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "message.timeout.ms": 60000,
            "reconnect.backoff.max.ms": 1000,
            **conf,
        })

    def send(self, r: Rec, partition: int):
        def cb(err, msg):
            if err is None:
                r.partition, r.offset = msg.partition(), msg.offset()
                self.acked.append(r)
            else:
                self.failed.append((r, err))
        while True:
            try:
                self.p.produce(self.topic, value=r.value, key=r.key, headers=r.headers or None,
                               partition=partition, on_delivery=cb)
                break
            except BufferError:
                self.p.poll(0.05)
        self.p.poll(0)

    def flush(self, timeout=90):
        return self.p.flush(timeout)


@pytest.mark.timeout(360)
def test_acked_messages_survive_kill9(restartable_broker, topic_name):
    b = restartable_broker
    create_topic(b.bootstrap, topic_name, PARTITIONS)

    # phase 1: fully acked, then SIGKILL with no chance of a clean shutdown
    rec = AckRecorder(b.bootstrap, topic_name)
    phase1 = make_records(1500, "dur1", seed=11)
    for i, r in enumerate(phase1):
        rec.send(r, i % PARTITIONS)
    assert rec.flush() == 0
    assert not rec.failed, rec.failed[:3]
    assert len(rec.acked) == len(phase1)

    b.kill9()
    b.restart()
    got = confluent_read_all(b.bootstrap, topic_name, expected=len(phase1))
    assert_same_records(rec.acked, got)

    # phase 2: SIGKILL while produce requests are in flight; the producer keeps
    # retrying across the restart. Whatever was acked must be there afterwards.
    phase2 = make_records(3000, "dur2", seed=12)
    acked_before = len(rec.acked)
    for i, r in enumerate(phase2[:1500]):
        rec.send(r, i % PARTITIONS)
    # let part of it be acked, then kill mid-stream
    deadline = time.monotonic() + 30
    while len(rec.acked) < acked_before + 200 and time.monotonic() < deadline:
        rec.p.poll(0.01)
    b.kill9()
    for i, r in enumerate(phase2[1500:]):  # queued while the broker is down
        rec.send(r, i % PARTITIONS)
    time.sleep(0.5)
    b.restart()
    assert rec.flush(120) == 0, "producer could not deliver after the broker restarted"

    acked = rec.acked
    assert len(acked) >= len(phase1) + 200
    got = confluent_read_all(b.bootstrap, topic_name, expected=len(acked))
    by_pos = {(g.partition, g.offset): g for g in got}
    missing = [(r.partition, r.offset) for r in acked if (r.partition, r.offset) not in by_pos]
    assert not missing, f"{len(missing)} acked records lost after kill -9, e.g. {missing[:10]}"
    wrong = [(r.partition, r.offset) for r in acked if by_pos[(r.partition, r.offset)].value != r.value]
    assert not wrong, f"{len(wrong)} acked offsets hold different data, e.g. {wrong[:10]}"
    # acked offsets are unique and within the high watermarks
    assert len({(r.partition, r.offset) for r in acked}) == len(acked)
    wm = watermarks(b.bootstrap, topic_name)
    assert all(r.offset < wm[r.partition][1] for r in acked)
    # the producer retried across the restart, so nothing should have failed for good
    # (without idempotence a retried batch may legitimately appear twice in the log)
    assert not rec.failed, f"{len(rec.failed)} deliveries failed: {rec.failed[:3]}"
    assert len(acked) == len(phase1) + len(phase2)
