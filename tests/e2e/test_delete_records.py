"""DeleteRecords (Kafka's AdminClient.deleteRecords, librdkafka's delete_records): the
partition's log start moves for every reader at once, on every replica, across restarts
and leader changes; storage below it is freed by the retention pass. Driven by
confluent-kafka's admin client and consumer."""

import json
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafkautil import admin, create_topic, watermarks
from test_coordinators import commit_sync, consumer
from test_faults import metric
from test_java_clients import java_cmd, kafka_jars  # noqa: F401 (a fixture)
from test_replication import bootstrap, create_replicated

PER_PARTITION = 100


def log(msg: str) -> None:
    print(f"[delete-records {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def produce(boot: str, topic: str, partitions: int) -> None:
    """PER_PARTITION acknowledged records in each partition, in batches of a few."""
    errors = []
    p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 20,
                  "batch.num.messages": 7})
    for i in range(PER_PARTITION):
        for part in range(partitions):
            p.produce(topic, value=b"%d" % i, partition=part,
                      on_delivery=lambda err, msg: err and errors.append(err))
        p.poll(0)
    assert p.flush(30) == 0 and not errors, errors


def stable_log_bytes(b) -> float:
    """chronik_log_size_bytes once it stopped changing."""
    last, deadline = None, time.monotonic() + 15
    while True:
        now = metric(b, "chronik_log_size_bytes")
        if now == last or time.monotonic() > deadline:
            return now
        last = now
        time.sleep(1)


def delete_records(boot: str, topic: str, offsets: dict[int, int]) -> dict[int, object]:
    """{partition: low watermark, or the KafkaError it failed with}."""
    a = admin(boot)
    futures = a.delete_records([TopicPartition(topic, p, o) for p, o in offsets.items()],
                               request_timeout=30, operation_timeout=10)
    out = {}
    for tp, f in futures.items():
        try:
            out[tp.partition] = f.result(timeout=60).low_watermark
        except KafkaException as e:
            out[tp.partition] = e.args[0]
    return out


def read_from(boot: str, topic: str, partition: int, offset: int, reset: str = "error",
              end: int = PER_PARTITION):
    """Offsets a consumer assigned at `offset` receives up to `end`, or the error it
    gets."""
    c = Consumer({"bootstrap.servers": boot, "group.id": f"read-{time.monotonic_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": reset})
    try:
        c.assign([TopicPartition(topic, partition, offset)])
        got, deadline = [], time.monotonic() + 30
        while time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                if got and got[-1] == end - 1:
                    break
                continue
            if m.error():
                return m.error()
            got.append(m.offset())
        return got
    finally:
        c.close()


def settled_watermarks(boot: str, topic: str, want: dict, timeout: float = 30):
    """The partitions' (low, high) once they are `want`, or the last seen. Each try asks
    with a new consumer and a short timeout: one that asked a leader just killed would
    wait for it (librdkafka keeps the metadata it had)."""
    deadline = time.monotonic() + timeout
    while True:
        c = Consumer({"bootstrap.servers": boot, "group.id": f"wm-{time.monotonic_ns()}"})
        try:
            marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=3) for p in want}
        except KafkaException as e:
            marks = repr(e)
        finally:
            c.close()
        if marks == want or time.monotonic() > deadline:
            return marks
        time.sleep(0.3)


def test_delete_records_moves_the_log_start_for_every_reader(broker_factory, topic_name):
    b = broker_factory({"retention_check_interval_ms": 200})
    boot = b.bootstrap
    create_topic(boot, topic_name, 2)
    c = consumer(boot, f"g-{topic_name}")
    commit_sync(c, [TopicPartition(topic_name, 0, 50)])  # (makes the offsets topic)
    c.close()
    offsets_bytes = stable_log_bytes(b)  # (its partitions' barrier records and the commit)
    produce(boot, topic_name, 2)
    assert watermarks(boot, topic_name) == {0: (0, 100), 1: (0, 100)}
    topic_bytes = metric(b, "chronik_log_size_bytes") - offsets_bytes

    # 37 lies inside a batch (the producer sent batches of up to 7): the start is exactly
    # there all the same; -1 deletes up to the high watermark.
    assert delete_records(boot, topic_name, {0: 37, 1: -1}) == {0: 37, 1: 100}
    assert watermarks(boot, topic_name) == {0: (37, 100), 1: (100, 100)}
    assert read_from(boot, topic_name, 0, 37) == list(range(37, 100))
    # Below the start is out of range (a consumer resetting to earliest lands on 37).
    err = read_from(boot, topic_name, 0, 10)
    assert isinstance(err, KafkaError) and err.code() == KafkaError._AUTO_OFFSET_RESET, err
    assert read_from(boot, topic_name, 0, 10, reset="earliest") == list(range(37, 100))

    # The start never moves back; beyond the high watermark and the internal offsets
    # topic are refused with Kafka's errors.
    assert delete_records(boot, topic_name, {0: 10}) == {0: 37}
    out = delete_records(boot, topic_name, {0: 101})
    assert out[0].code() == KafkaError.OFFSET_OUT_OF_RANGE, out
    out = delete_records(boot, "__consumer_offsets", {0: 0})
    assert out[0].code() == KafkaError.TOPIC_EXCEPTION, out

    # The retention pass frees the batches wholly below the start, though the topic keeps
    # its records forever otherwise.
    # (All of partition 1 and a third of partition 0 go: about two thirds of the topic.)
    deadline = time.monotonic() + 10
    while (left := metric(b, "chronik_log_size_bytes") - offsets_bytes) > topic_bytes * 0.5:
        assert time.monotonic() < deadline, f"the topic still holds {left} of its {topic_bytes} bytes"
        time.sleep(0.2)

    # A SIGKILL and restart keep the start; new records continue the offsets.
    b.kill9()
    b.start()
    assert watermarks(boot, topic_name) == {0: (37, 100), 1: (100, 100)}
    produce(boot, topic_name, 2)
    assert watermarks(boot, topic_name) == {0: (37, 200), 1: (100, 200)}


def test_delete_records_moves_every_replica_and_survives_a_leader_kill(
        cluster_factory, topic_name):
    brokers = cluster_factory(3, config={"retention_check_interval_ms": 300})
    boot = bootstrap(brokers)
    layout = create_replicated(brokers, topic_name, 2)
    produce(boot, topic_name, 2)
    assert delete_records(boot, topic_name, {0: 64, 1: 3}) == {0: 64, 1: 3}
    assert watermarks(boot, topic_name) == {0: (64, 100), 1: (3, 100)}
    log("records deleted; SIGKILL of partition 0's leader")

    # The replica that takes over has the same start: it applied the same entry.
    victim = next(b for b in brokers if b.node_id == layout[0][0])
    victim.kill9()
    survivors = [b for b in brokers if b is not victim]
    marks = settled_watermarks(bootstrap(survivors), topic_name, {0: (64, 100), 1: (3, 100)})
    assert marks == {0: (64, 100), 1: (3, 100)}, marks
    assert read_from(bootstrap(survivors), topic_name, 0, 64) == list(range(64, 100))

    # Deleting more while the victim is away, then bringing it back: it learns the new
    # start from the log (or a snapshot) and, leading again, answers with it.
    assert delete_records(bootstrap(survivors), topic_name, {0: 90}) == {0: 90}
    victim.start()
    for b in survivors:
        b.kill9()
        b.start()
    want = {0: (90, 100), 1: (3, 100)}
    assert settled_watermarks(boot, topic_name, want) == want
    assert read_from(boot, topic_name, 0, 90) == list(range(90, 100))


def test_a_producer_keeps_producing_while_records_are_deleted(broker, topic_name):
    """Deletion races appends: the start never passes the high watermark and no
    acknowledged record above the start is lost."""
    boot = broker.bootstrap
    create_topic(boot, topic_name, 1)
    errors, acked = [], []
    p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 2})
    for round_ in range(20):
        for i in range(50):
            p.produce(topic_name, value=b"%d" % (round_ * 50 + i), partition=0,
                      on_delivery=lambda err, msg: errors.append(err) if err else acked.append(msg.offset()))
        p.poll(0)
        low = delete_records(boot, topic_name, {0: -1})[0]
        assert isinstance(low, int), low
    assert p.flush(30) == 0 and not errors, errors
    low, high = watermarks(boot, topic_name)[0]
    assert high == 1000 and len(acked) == 1000
    assert low <= high
    if low < high:
        got = read_from(boot, topic_name, 0, low, end=high)
        assert got == list(range(low, high)), got[:3]


@pytest.mark.java
def test_kafkas_delete_records_tool(broker, kafka_jars, tmp_path, topic_name):
    """kafka-delete-records.sh (DeleteRecordsCommand, Kafka's Java admin client)."""
    boot = broker.bootstrap
    create_topic(boot, topic_name, 1)
    produce(boot, topic_name, 1)
    spec = tmp_path / "offsets.json"
    spec.write_text(json.dumps({"version": 1, "partitions": [
        {"topic": topic_name, "partition": 0, "offset": 42}]}))
    proc = subprocess.run(
        java_cmd(kafka_jars, "org.apache.kafka.tools.DeleteRecordsCommand",
                 "--bootstrap-server", boot, "--offset-json-file", str(spec)),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{topic_name}-0" in proc.stdout and "low_watermark: 42" in proc.stdout, proc.stdout
    assert watermarks(boot, topic_name) == {0: (42, 100)}
