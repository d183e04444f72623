"""Admin API: create / describe (metadata) / delete topics, error paths that must answer
(not hang), and topic auto-creation."""

import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Producer
from confluent_kafka.admin import NewTopic
from kafkautil import admin, confluent_produce, confluent_read_all, make_records, unique_topic, wait_for_partitions

TIMEOUT = 20


def create(bootstrap, *topics: NewTopic) -> dict:
    """create_topics; returns {name: None | KafkaError} (bounded wait)."""
    a = admin(bootstrap)  # keep a reference: futures fail with _DESTROY if the client is collected
    futs = a.create_topics(list(topics), request_timeout=TIMEOUT, operation_timeout=TIMEOUT)
    out = {}
    for name, fut in futs.items():
        try:
            fut.result(timeout=TIMEOUT + 5)
            out[name] = None
        except KafkaException as e:
            out[name] = e.args[0]
    return out


def topic_names(bootstrap) -> set[str]:
    return set(admin(bootstrap).list_topics(timeout=10).topics)


def assert_still_serving(broker, topic):
    """After an error path the broker must still be alive and answer normal requests."""
    if broker.proc is not None:
        assert broker.proc.poll() is None, "broker process died"
    sent = confluent_produce(broker.bootstrap, topic, make_records(5, "alive"))
    assert len(confluent_read_all(broker.bootstrap, topic, expected=5)) == len(sent)


def test_create_describe_delete(broker, topic_name):
    names = {f"{topic_name}-p{n}": n for n in (1, 3, 8)}
    res = create(broker.bootstrap, *(NewTopic(t, num_partitions=n, replication_factor=1) for t, n in names.items()))
    assert res == {t: None for t in names}, res

    a = admin(broker.bootstrap)
    for t, n in names.items():
        wait_for_partitions(a, t, n, timeout=TIMEOUT)
    md = a.list_topics(timeout=10)
    for t, n in names.items():
        tm = md.topics[t]
        assert tm.error is None
        assert sorted(tm.partitions) == list(range(n))
        for p in tm.partitions.values():
            assert p.leader in md.brokers, f"{t}[{p.id}] leader {p.leader} not among brokers {list(md.brokers)}"
            assert p.replicas and p.isrs

    # creating an existing topic is an error, and does not change it
    again = create(broker.bootstrap, NewTopic(f"{topic_name}-p3", num_partitions=5, replication_factor=1))
    err = again[f"{topic_name}-p3"]
    assert err is not None and err.code() == KafkaError.TOPIC_ALREADY_EXISTS, err
    assert len(a.list_topics(topic=f"{topic_name}-p3", timeout=10).topics[f"{topic_name}-p3"].partitions) == 3

    # delete two of them
    gone = [f"{topic_name}-p1", f"{topic_name}-p8"]
    for t, fut in a.delete_topics(gone, request_timeout=TIMEOUT, operation_timeout=TIMEOUT).items():
        fut.result(timeout=TIMEOUT + 5)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and set(gone) & topic_names(broker.bootstrap):
        time.sleep(0.2)
    left = topic_names(broker.bootstrap)
    assert not set(gone) & left, f"deleted topics still listed: {set(gone) & left}"
    assert f"{topic_name}-p3" in left


def test_delete_unknown_topic(broker, topic_name):
    a = admin(broker.bootstrap)
    futs = a.delete_topics([topic_name + "-nope"], request_timeout=TIMEOUT, operation_timeout=TIMEOUT)
    with pytest.raises(KafkaException) as ei:
        futs[topic_name + "-nope"].result(timeout=TIMEOUT + 5)
    assert ei.value.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART


@pytest.mark.parametrize("bad", ["bad name!", "x" * 300, "..", "a/b"])
def test_invalid_topic_name(broker, topic_name, bad):
    res = create(broker.bootstrap, NewTopic(bad, num_partitions=1, replication_factor=1))
    err = res[bad]
    assert err is not None, f"invalid topic name {bad!r} was accepted"
    assert err.code() == KafkaError.TOPIC_EXCEPTION, err  # INVALID_TOPIC_EXCEPTION (17)
    assert bad not in topic_names(broker.bootstrap)
    assert_still_serving(broker, topic_name)


def test_zero_partitions_rejected(broker, topic_name):
    t = topic_name + "-zero"
    err = create(broker.bootstrap, NewTopic(t, num_partitions=0, replication_factor=1))[t]
    assert err is not None and err.code() == KafkaError.INVALID_PARTITIONS, err
    assert t not in topic_names(broker.bootstrap)


@pytest.mark.parametrize("count", [100_000, 2**31 - 1])
def test_absurd_partition_count_rejected(broker, topic_name, count):
    """librdkafka refuses > 100000 locally, so send the request with kafka-python."""
    from kafka.admin import KafkaAdminClient
    from kafka.admin import NewTopic as KNewTopic
    from kafka.errors import KafkaError as KPError

    t = f"{topic_name}-huge"
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=TIMEOUT * 1000)
    started = time.monotonic()
    try:
        with pytest.raises(KPError) as ei:
            a.create_topics([KNewTopic(t, num_partitions=count, replication_factor=1)],
                            timeout_ms=TIMEOUT * 1000)
    finally:
        a.close()
    took = time.monotonic() - started
    # Apache Kafka answers POLICY_VIOLATION (44); INVALID_PARTITIONS / INVALID_REQUEST are fine too
    assert getattr(ei.value, "errno", None) in (44, 37, 42), repr(ei.value)
    assert took < TIMEOUT, f"took {took:.1f}s to refuse"
    assert t not in topic_names(broker.bootstrap)
    assert_still_serving(broker, topic_name)


def test_auto_create_on_produce_metadata(broker, topic_name):
    """A producer's metadata request creates the topic with the default partition count (1)."""
    p = Producer({"bootstrap.servers": broker.bootstrap})
    deadline = time.monotonic() + TIMEOUT
    tm = None
    while time.monotonic() < deadline:
        tm = p.list_topics(topic=topic_name, timeout=10).topics.get(topic_name)
        if tm is not None and tm.error is None and tm.partitions:
            break
        time.sleep(0.2)
    assert tm is not None and tm.error is None, tm
    assert len(tm.partitions) == 1
    sent = confluent_produce(broker.bootstrap, topic_name, make_records(10, "auto"))
    assert len(confluent_read_all(broker.bootstrap, topic_name, expected=10)) == len(sent)


# -- chronik config (TOML) -----------------------------------------------------------

def test_config_default_partitions(broker_factory):
    b = broker_factory({"default_partitions": 3})
    t = unique_topic("cfg-default-partitions")
    recs = confluent_produce(b.bootstrap, t, make_records(30, "dp"))
    a = admin(b.bootstrap)
    wait_for_partitions(a, t, 3, timeout=TIMEOUT)
    assert {r.partition for r in recs} <= {0, 1, 2}


def test_config_auto_create_disabled(broker_factory):
    b = broker_factory({"auto_create_topics": False})
    t = unique_topic("cfg-no-autocreate")
    p = Producer({"bootstrap.servers": b.bootstrap})
    md = p.list_topics(topic=t, timeout=10)
    tm = md.topics.get(t)
    assert tm is not None and tm.error is not None, f"topic {t} was auto-created: {tm}"
    assert tm.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART, tm.error
    assert t not in topic_names(b.bootstrap)
    # explicit creation still works
    assert create(b.bootstrap, NewTopic(t, num_partitions=2, replication_factor=1)) == {t: None}
    wait_for_partitions(admin(b.bootstrap), t, 2, timeout=TIMEOUT)


def test_a_transactional_producer_is_told_at_once_that_transactions_are_not_offered(
        chronik_broker):
    """Until transactions exist, a transactional producer fails fast with a clear,
    non-retriable error instead of retrying COORDINATOR_NOT_AVAILABLE forever."""
    p = Producer({"bootstrap.servers": chronik_broker.bootstrap, "transactional.id": "tx-1"})
    started = time.monotonic()
    with pytest.raises(KafkaException) as e:
        p.init_transactions(20)
    assert time.monotonic() - started < 10, "the producer kept retrying"
    assert e.value.args[0].code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED, e.value


@pytest.mark.parametrize("compression", ["none", "zstd"])
def test_list_offsets_by_time_finds_the_record_not_just_its_batch(broker, topic_name,
                                                                 compression):
    """Kafka answers ListOffsets for a timestamp with the first *record* at or after it,
    and MAX_TIMESTAMP with the record holding the largest timestamp, also inside one
    (compressed) batch."""
    from confluent_kafka import Consumer, TopicPartition
    from confluent_kafka.admin import OffsetSpec

    base = int(time.time() * 1000) - 60_000
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 500,
                  "compression.type": compression})
    for i, ts in enumerate([base + 1000, base + 3000, base + 2000]):  # one batch
        p.produce(topic_name, value=b"r%d" % i, partition=0, timestamp=ts)
    assert p.flush(30) == 0
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "times"})
    try:
        def at(ts):
            return c.offsets_for_times([TopicPartition(topic_name, 0, ts)], timeout=10)[0].offset
        assert at(base + 500) == 0
        assert at(base + 1500) == 1  # the record at base+3000 is the first at or after
        assert at(base + 2500) == 1
        assert at(base + 3500) == -1  # none: the end
    finally:
        c.close()
    tp = TopicPartition(topic_name, 0)
    a = admin(broker.bootstrap)  # (kept: a dropped client never completes its futures)
    result = a.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(10)
    assert (result.offset, result.timestamp) == (1, base + 3000)
