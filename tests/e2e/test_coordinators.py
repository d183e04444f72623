"""Group coordination spread over the cluster: consumer groups hash to partitions of the
internal __consumer_offsets topic, whose leaders coordinate them; committed offsets are
records there, so they survive a coordinator's SIGKILL and its groups resume on the next
leader. Driven by librdkafka (confluent-kafka) and kafka-python's admin client."""

import threading
import time

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from kafka import KafkaAdminClient
from kafkautil import admin, create_topic, retry_transient
from test_replication import bootstrap, create_replicated

OFFSETS_TOPIC = "__consumer_offsets"
PARTITIONS = 6
PER_PARTITION = 100
GROUPS = 50


def log(msg: str) -> None:
    print(f"[coordinators {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def consumer(boot: str, group: str, **extra) -> Consumer:
    return Consumer({"bootstrap.servers": boot, "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest",
                     "session.timeout.ms": 10000, "heartbeat.interval.ms": 1000, **extra})


# What a client sees while a coordinator moves (or is still being made).
MOVING = {KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE,
          KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.REQUEST_TIMED_OUT,
          KafkaError._TIMED_OUT, KafkaError._WAIT_COORD, KafkaError._TRANSPORT}


def commit_sync(c: Consumer, offsets: list[TopicPartition] | None = None,
                timeout: float = 60) -> None:
    """Commits (the given offsets, or what the consumer read), retrying while the
    group's coordinator moves."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if offsets is None:
                c.commit(asynchronous=False)
            else:
                c.commit(offsets=offsets, asynchronous=False)
            return
        except KafkaException as e:
            code = e.args[0].code()
            if code == KafkaError._NO_OFFSET:
                return
            if code not in MOVING or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def produce_evenly(boot: str, topic: str) -> None:
    """PER_PARTITION acknowledged records in each partition."""
    errors = []
    p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})
    for i in range(PARTITIONS * PER_PARTITION):
        p.produce(topic, value=b"%d" % i, partition=i % PARTITIONS,
                  on_delivery=lambda err, msg: err and errors.append(err))
        p.poll(0)
    assert p.flush(60) == 0 and not errors, errors


def committed(boot: str, group: str, topic: str, timeout: float = 60) -> dict[int, int]:
    c = consumer(boot, group)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset
                for tp in retry_transient(lambda: c.committed(tps, timeout=10), timeout)}
    finally:
        c.close()


def coordinators(boot: str, groups: list[str]) -> dict[str, int]:
    """Each group's coordinator as FindCoordinator names it."""
    a = admin(boot)
    out = {}
    for g, f in a.describe_consumer_groups(groups, request_timeout=30).items():
        out[g] = f.result(timeout=60).coordinator.id
    return out


def test_groups_spread_over_coordinators_and_survive_a_coordinators_sigkill(
        cluster_factory, topic_name):
    brokers = cluster_factory(3)
    boot = bootstrap(brokers)
    create_replicated(brokers, topic_name, PARTITIONS)
    produce_evenly(boot, topic_name)
    log("records produced")

    # 50 groups commit distinct offsets (admin-style, without membership).
    groups = [f"g{i:02d}-{topic_name}" for i in range(GROUPS)]
    expected = {}
    for i, g in enumerate(groups):
        c = consumer(boot, g)
        want = {p: (i + p) % 50 + 1 for p in range(PARTITIONS)}
        commit_sync(c, [TopicPartition(topic_name, p, o) for p, o in want.items()])
        c.close()
        expected[g] = want
    log(f"{GROUPS} groups committed")
    coordinator_of = coordinators(boot, groups)
    assert set(coordinator_of.values()) == {1, 2, 3}, coordinator_of

    # The offsets topic is internal, replicated on every broker.
    kadmin = KafkaAdminClient(bootstrap_servers=boot)
    try:
        (described,) = kadmin.describe_topics([OFFSETS_TOPIC])
        assert described["is_internal"] is True, described
    finally:
        kadmin.close()
    offsets = admin(boot).list_topics(OFFSETS_TOPIC, timeout=10).topics[OFFSETS_TOPIC]
    assert {len(p.replicas) for p in offsets.partitions.values()} == {3}

    # Live groups: two coordinated by the victim, one by another broker; each consumes
    # part of the topic and commits, then keeps running across the kill.
    victim_id = coordinator_of[groups[0]]
    victim = next(b for b in brokers if b.node_id == victim_id)
    on_victim = [g for g in groups if coordinator_of[g] == victim_id][:2]
    elsewhere = [g for g in groups if coordinator_of[g] != victim_id][:1]
    live = on_victim + elsewhere
    stop_at = {}
    threads, failures = [], []
    progress = {g: 0 for g in live}
    killed = threading.Event()

    def run(group: str) -> None:
        c = consumer(boot, group)
        try:
            c.subscribe([topic_name])
            start = expected[group]
            # Reads from the committed offsets to the end, committing every 20 records.
            remaining = sum(PER_PARTITION - start[p] for p in range(PARTITIONS))
            seen, since_commit = 0, 0
            deadline = time.monotonic() + 120
            while seen < remaining and time.monotonic() < deadline:
                if seen >= remaining // 3 and not killed.is_set():
                    # Holds its place until the kill (librdkafka heartbeats meanwhile).
                    time.sleep(0.05)
                    continue
                m = c.poll(0.2)
                if m is None or m.error():
                    continue
                seen += 1
                since_commit += 1
                progress[group] = seen
                if since_commit >= 20:
                    commit_sync(c)
                    since_commit = 0
            commit_sync(c)
            stop_at[group] = seen
            if seen < remaining:
                failures.append((group, f"read {seen} of its {remaining} records"))
        except Exception as e:  # noqa: BLE001 (reported by the test thread)
            failures.append((group, repr(e)))
        finally:
            c.close()

    for g in live:
        t = threading.Thread(target=run, args=(g,))
        t.start()
        threads.append(t)
    deadline = time.monotonic() + 60
    while min(progress.values()) < 40 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert min(progress.values()) >= 40, f"live groups did not start consuming: {progress}"
    log(f"live groups consuming {progress}; SIGKILL of coordinator {victim_id}")
    victim.kill9()
    killed.set()
    for t in threads:
        t.join(180)
    assert not failures, failures
    log(f"live groups finished: {stop_at}")
    survivors = [b for b in brokers if b is not victim]
    survivors_boot = bootstrap(survivors)

    # Every group's offsets are there after the kill: the live ones consumed to the end.
    for g in groups:
        want = ({p: PER_PARTITION for p in range(PARTITIONS)} if g in live else expected[g])
        assert committed(survivors_boot, g, topic_name) == want, g
    moved = coordinators(survivors_boot, on_victim)
    assert victim_id not in moved.values(), moved

    log("every group's offsets read back from the survivors")
    # The victim comes back and the groups it coordinated are still whole.
    victim.start()
    for g in on_victim:
        assert committed(boot, g, topic_name) == {p: PER_PARTITION for p in range(PARTITIONS)}


def test_the_offsets_topic_is_internal_and_written_only_by_coordinators(broker, topic_name):
    boot = broker.bootstrap
    create_topic(boot, topic_name, 1)
    c = consumer(boot, f"g-{topic_name}")
    commit_sync(c, [TopicPartition(topic_name, 0, 0)])
    c.close()

    deadline = time.monotonic() + 30
    while True:  # (its partitions elect their leaders once made)
        md = admin(boot).list_topics(timeout=10)
        t = md.topics.get(OFFSETS_TOPIC)
        if t and t.partitions and all(p.leader > 0 for p in t.partitions.values()):
            break
        assert time.monotonic() < deadline, f"{OFFSETS_TOPIC} without leaders: {t}"
        time.sleep(0.2)
    kadmin = KafkaAdminClient(bootstrap_servers=boot)
    try:
        (described,) = kadmin.describe_topics([OFFSETS_TOPIC])
        assert described["is_internal"] is True
    finally:
        kadmin.close()
    # A single broker keeps one replica of each partition.
    assert {len(p.replicas) for p in md.topics[OFFSETS_TOPIC].partitions.values()} == {1}

    # Clients cannot write to it or delete it.
    errors = []
    p = Producer({"bootstrap.servers": boot, "message.send.max.retries": 0})
    p.produce(OFFSETS_TOPIC, value=b"x", partition=0,
              on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert errors and errors[0] is not None
    assert errors[0].code() == KafkaError.TOPIC_EXCEPTION, errors
    a = admin(boot)  # (kept alive until its future resolves)
    f = a.delete_topics([OFFSETS_TOPIC], operation_timeout=10)[OFFSETS_TOPIC]
    with pytest.raises(KafkaException) as e:
        f.result(timeout=30)
    assert e.value.args[0].code() == KafkaError.TOPIC_EXCEPTION
