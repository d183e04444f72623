"""Consumer groups with confluent-kafka: rebalances across joins/leaves, exactly-once
consumption per committed position, and committed offsets surviving a broker restart."""

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from kafkautil import create_topic, make_records, subscribe_and_wait, watermarks

PARTITIONS = 6


def new_consumer(bootstrap: str, group: str, name: str, **extra) -> Consumer:
    return Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": name,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        **extra,
    })


RETRIABLE = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
}


def committed_offsets(c: Consumer, topic: str, timeout: float = 30) -> dict[int, int]:
    """Committed offsets per partition, retrying the transient errors a broker may give
    right after a restart (coordinator still loading)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            tps = c.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
            return {tp.partition: tp.offset for tp in tps}
        except KafkaException as e:
            if e.args[0].code() not in RETRIABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def produce_round(bootstrap: str, topic: str, tag: str, per_partition: int):
    recs = make_records(per_partition * PARTITIONS, tag)
    for i, r in enumerate(recs):
        r.key = f"{tag}-{i}".encode()
        r.headers = []
    # explicit partitions so every partition gets the same share
    from confluent_kafka import Producer

    errors, p = [], Producer({"bootstrap.servers": bootstrap})
    for i, r in enumerate(recs):
        def cb(err, msg, r=r):
            if err:
                errors.append(err)
            else:
                r.partition, r.offset = msg.partition(), msg.offset()
        p.produce(topic, value=r.value, key=r.key, partition=i % PARTITIONS, on_delivery=cb)
        p.poll(0)
    assert p.flush(30) == 0 and not errors, errors[:5]
    return recs


class Member:
    def __init__(self, bootstrap, group, name, log):
        self.name = name
        self.log = log  # shared list of (name, partition, offset, value, committed_ok)
        self.assigned: set[int] = set()
        self.c = new_consumer(bootstrap, group, name)
        self.closed = False

    def subscribe(self, topic):
        def on_assign(consumer, partitions):
            self.assigned = {tp.partition for tp in partitions}

        def on_revoke(consumer, partitions):
            self.assigned = set()

        self.c.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)

    def step(self, timeout=0.1):
        if self.closed:
            return
        msg = self.c.poll(timeout)
        if msg is None:
            return
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                return
            raise KafkaException(msg.error())
        ok = True
        try:
            self.c.commit(message=msg, asynchronous=False)
        except KafkaException as e:
            # e.g. REBALANCE_IN_PROGRESS / ILLEGAL_GENERATION: the offset was not committed,
            # so the next owner may legitimately see this message again
            ok = False
            print(f"{self.name}: commit of {msg.partition()}@{msg.offset()} failed: {e}")
        self.log.append((self.name, msg.partition(), msg.offset(), msg.value(), ok))

    def close(self):
        if not self.closed:
            self.c.close()
            self.closed = True


def pump(members, until, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for m in members:
            m.step(0.05)
        if until():
            return
    state = {m.name: sorted(m.assigned) for m in members if not m.closed}
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; assignments {state}")


def balanced(members, total=PARTITIONS):
    live = [m for m in members if not m.closed]
    sets = [m.assigned for m in live]
    union = set().union(*sets) if sets else set()
    disjoint = sum(len(s) for s in sets) == len(union)
    return all(sets) and disjoint and union == set(range(total))


def test_group_rebalance_exactly_once(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    group = "g-" + uuid.uuid4().hex[:8]
    log = []
    sent = produce_round(broker.bootstrap, topic_name, "r1", per_partition=30)

    c1, c2, c3 = (Member(broker.bootstrap, group, f"c{i}", log) for i in (1, 2, 3))
    members = [c1, c2]
    try:
        for m in members:
            m.subscribe(topic_name)
        pump(members, lambda: balanced(members) and len(log) >= 60, 60, "c1+c2 to share 6 partitions")
        assert c1.assigned and c2.assigned

        # third member joins later
        members.append(c3)
        c3.subscribe(topic_name)
        pump(members, lambda: balanced(members), 60, "c1+c2+c3 to share 6 partitions")
        assert all(len(m.assigned) == 2 for m in members), {m.name: m.assigned for m in members}
        sent += produce_round(broker.bootstrap, topic_name, "r2", per_partition=20)
        pump(members, lambda: len({(p, o) for _, p, o, _, _ in log}) >= len(sent) - 30, 60,
             "most of round 2 to be consumed")
        seen_by = {name for name, *_ in log}

        # one member leaves
        c1.close()
        pump(members, lambda: balanced(members), 60, "c2+c3 to take over c1's partitions")
        assert c2.assigned and c3.assigned
        sent += produce_round(broker.bootstrap, topic_name, "r3", per_partition=20)
        expected = {(r.partition, r.offset) for r in sent}
        pump(members, lambda: expected <= {(p, o) for _, p, o, _, _ in log}, 60,
             "every message to be consumed")
        assert {"c1", "c2", "c3"} <= seen_by | {name for name, *_ in log}, "some member consumed nothing"
    finally:
        for m in (c1, c2, c3):
            m.close()

    # every message consumed, with the right content
    by_pos = {(r.partition, r.offset): r.value for r in sent}
    consumed = {}
    for name, p, o, v, ok in log:
        assert by_pos.get((p, o)) == v, f"{name} got wrong value at {p}@{o}"
        consumed.setdefault((p, o), []).append((name, ok))
    assert set(consumed) == set(by_pos), f"missing: {sorted(set(by_pos) - set(consumed))[:10]}"
    # exactly once per committed position: a message whose commit succeeded is never
    # delivered again; only messages whose commit failed may repeat
    dups = {k: v for k, v in consumed.items() if len(v) > 1}
    bad = {k: v for k, v in dups.items() if any(ok for _, ok in v[:-1])}
    assert not bad, f"messages redelivered after a successful commit: {list(bad.items())[:5]}"

    # committed offsets == high watermarks
    wm = watermarks(broker.bootstrap, topic_name)
    c = new_consumer(broker.bootstrap, group, "checker")
    try:
        committed = committed_offsets(c, topic_name)
    finally:
        c.close()
    assert committed == {p: hi for p, (lo, hi) in wm.items()}


@pytest.mark.parametrize("how", ["terminate", "kill9"])
def test_committed_offsets_survive_restart(restartable_broker, topic_name, how):
    broker = restartable_broker
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    sent = produce_round(broker.bootstrap, topic_name, "off", per_partition=20)
    group = "g-" + uuid.uuid4().hex[:8]
    commit_at = {p: 7 + p for p in range(PARTITIONS)}

    c = new_consumer(broker.bootstrap, group, "before")
    try:
        subscribe_and_wait(c, topic_name, 60)
        assert len(c.assignment()) == PARTITIONS
        c.commit(offsets=[TopicPartition(topic_name, p, o) for p, o in commit_at.items()],
                 asynchronous=False)
        assert committed_offsets(c, topic_name) == commit_at
    finally:
        c.close()

    if how == "kill9":
        broker.kill9()
        broker.restart()
    else:
        broker.restart()

    c = new_consumer(broker.bootstrap, group, "after", **{"enable.partition.eof": True})
    got = []
    try:
        assert committed_offsets(c, topic_name) == commit_at
        c.subscribe([topic_name])
        want = sum(20 - o for o in commit_at.values())
        eof = set()
        deadline = time.monotonic() + 60
        while (len(got) < want or len(eof) < PARTITIONS) and time.monotonic() < deadline:
            msg = c.poll(0.2)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(msg.partition())
                    continue
                raise KafkaException(msg.error())
            got.append((msg.partition(), msg.offset(), msg.value()))
    finally:
        c.close()

    expected = sorted((r.partition, r.offset, r.value) for r in sent if r.offset >= commit_at[r.partition])
    assert sorted(got) == expected, (
        f"resumed consumption differs: got {len(got)} records, expected {len(expected)}; "
        f"first offsets seen {sorted({(p, min(o for q, o, _ in got if q == p)) for p, _, _ in got})}"
    )


def test_a_member_commits_in_its_revoke_callback_while_the_group_rebalances(broker, topic_name):
    """Kafka takes a commit with the current generation during PreparingRebalance: what
    consumers commit when their partitions are revoked. Refusing it (as Chronik once did)
    makes every rebalance deliver the revoked partitions' last records twice."""
    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    sent = produce_round(broker.bootstrap, topic_name, "rv", per_partition=5)
    group = "g-" + uuid.uuid4().hex[:8]
    first = new_consumer(broker.bootstrap, group, "first")
    second = new_consumer(broker.bootstrap, group, "second")
    outcomes = []

    def commit_on_revoke(consumer, partitions):
        try:
            consumer.commit(asynchronous=False)
            outcomes.append("ok")
        except KafkaException as e:
            outcomes.append(e.args[0].name())

    try:
        first.subscribe([topic_name], on_revoke=commit_on_revoke)
        got = 0
        deadline = time.monotonic() + 30
        while got < len(sent) and time.monotonic() < deadline:
            msg = first.poll(0.2)
            if msg is not None and not msg.error():
                got += 1
        assert got == len(sent)
        second.subscribe([topic_name])  # its JoinGroup starts a rebalance
        deadline = time.monotonic() + 30
        while not outcomes and time.monotonic() < deadline:
            first.poll(0.1)
            second.poll(0.1)
        assert outcomes and outcomes[0] == "ok", f"commit on revoke: {outcomes}"
    finally:
        first.close()
        second.close()
    c = new_consumer(broker.bootstrap, group, "checker")
    try:
        assert committed_offsets(c, topic_name) == {p: 5 for p in range(PARTITIONS)}
    finally:
        c.close()


def test_commits_without_membership_are_refused_while_the_group_has_members(
        broker, topic_name):
    """An admin client's commit (no member id, generation -1) is for an empty group only,
    as in Kafka: while consumers are members it is UNKNOWN_MEMBER_ID."""
    from confluent_kafka import ConsumerGroupTopicPartitions
    from kafkautil import admin

    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    produce_round(broker.bootstrap, topic_name, "adm", per_partition=5)
    group = "g-" + uuid.uuid4().hex[:8]
    a = admin(broker.bootstrap)

    def alter(offset):
        req = ConsumerGroupTopicPartitions(group, [TopicPartition(topic_name, 0, offset)])
        try:
            result = a.alter_consumer_group_offsets([req])[group].result(15)
            err = result.topic_partitions[0].error
            return err.code() if err else KafkaError.NO_ERROR
        except KafkaException as e:
            return e.args[0].code()

    member = new_consumer(broker.bootstrap, group, "member")
    try:
        subscribe_and_wait(member, topic_name, 30)
        assert alter(2) == KafkaError.UNKNOWN_MEMBER_ID
    finally:
        member.close()
    assert alter(3) == KafkaError.NO_ERROR  # empty now
    c = new_consumer(broker.bootstrap, group, "checker")
    try:
        assert committed_offsets(c, topic_name)[0] == 3
    finally:
        c.close()


def non_loopback_ip():
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # no packet is sent: this only picks a route
            ip = s.getsockname()[0]
        except OSError:
            return None
    return None if ip.startswith("127.") else ip


def test_describe_groups_shows_each_members_own_address(request, tmp_path, topic_name):
    from conftest import EXTERNAL_BOOTSTRAP, ChronikBroker, _register
    from kafkautil import admin

    ip = non_loopback_ip()
    if ip is None or EXTERNAL_BOOTSTRAP:
        pytest.skip("needs a non-loopback address and a broker of our own")
    b = ChronikBroker(tmp_path)
    b.bootstrap = f"{ip}:{b.port}"  # listen and advertise there: clients come from it
    _register(request, b)
    request.addfinalizer(b.stop)
    b.start()
    create_topic(b.bootstrap, topic_name, 1)
    group = "g-" + uuid.uuid4().hex[:8]
    c = new_consumer(b.bootstrap, group, "far-away")
    try:
        subscribe_and_wait(c, topic_name, 30)
        a = admin(b.bootstrap)  # (kept: a dropped client never completes its futures)
        described = a.describe_consumer_groups([group])[group].result(15)
        hosts = [m.host for m in described.members]
        assert hosts == [f"/{ip}"], hosts
    finally:
        c.close()


def test_committed_offsets_go_with_a_deleted_topic(broker, topic_name):
    """As in Kafka: a topic created again under a deleted one's name starts without the
    old group positions (which would otherwise point into a log that is gone)."""
    from confluent_kafka.admin import NewTopic
    from kafkautil import admin

    create_topic(broker.bootstrap, topic_name, PARTITIONS)
    group = "g-" + uuid.uuid4().hex[:8]
    c = new_consumer(broker.bootstrap, group, "committer")
    try:
        c.commit(offsets=[TopicPartition(topic_name, 0, 5)], asynchronous=False)
        assert committed_offsets(c, topic_name)[0] == 5
    finally:
        c.close()
    a = admin(broker.bootstrap)
    a.delete_topics([topic_name])[topic_name].result(30)
    deadline = time.monotonic() + 30
    while True:
        try:
            a.create_topics([NewTopic(topic_name, PARTITIONS, 1)])[topic_name].result(30)
            break
        except KafkaException as e:
            # the deletion may still be settling
            assert time.monotonic() < deadline, e
            time.sleep(0.5)
    c = new_consumer(broker.bootstrap, group, "checker")
    try:
        assert set(committed_offsets(c, topic_name).values()) == {-1001}  # OFFSET_INVALID
    finally:
        c.close()
