"""The metadata quorum keeps itself whole: brokers added later are promoted to metadata
voters up to the target count, and a decommissioned broker hands its vote to another
broker before it goes, so that a cluster can replace every broker it started with, one by
one, while producers and consumers run, and survive a voter's SIGKILL in the middle."""

import threading
import time
import uuid

from confluent_kafka import Consumer, Producer
from kafkautil import admin_stub, confluent_read_all
from test_replication import bootstrap, create_replicated, wait_for, wait_replicated


def members(broker, admin_pb):
    pb, _ = admin_pb
    s = admin_stub(broker, admin_pb).ClusterStatus(pb.ClusterStatusRequest(), timeout=10)
    return sorted(s.metadata_voters), sorted(s.metadata_learners)


class Traffic:
    """An idempotent acks=all producer and a consumer group, both running until stopped."""

    def __init__(self, boot: str, topic: str):
        self.boot, self.topic = boot, topic
        self.acked: list[bytes] = []
        self.errors: list[str] = []
        self.consumed = 0
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.produce), threading.Thread(target=self.consume)]
        for t in self.threads:
            t.start()

    def produce(self):
        p = Producer({"bootstrap.servers": self.boot, "enable.idempotence": True, "acks": "all",
                      "linger.ms": 5, "message.timeout.ms": 120000})

        def cb(err, msg):
            if err:
                self.errors.append(str(err))
            else:
                self.acked.append(msg.value())

        i = 0
        while not self.stop.is_set():
            p.produce(self.topic, value=b"v-%d" % i, on_delivery=cb)
            i += 1
            p.poll(0.01)
        p.flush(120)

    def consume(self):
        c = Consumer({"bootstrap.servers": self.boot, "group.id": "quorum-" + uuid.uuid4().hex,
                      "auto.offset.reset": "earliest", "enable.auto.commit": True})
        c.subscribe([self.topic])
        while not self.stop.is_set():
            msg = c.poll(0.2)
            if msg is not None and not msg.error():
                self.consumed += 1
        c.close()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(180)


def test_the_metadata_quorum_moves_to_brokers_added_later(cluster_factory, topic_name, admin_pb):
    pb, _ = admin_pb
    brokers = cluster_factory(3)
    create_replicated(brokers, topic_name, 3)
    for _ in range(3):
        cluster_factory.add(brokers)
    # Six brokers: five voters (the automatic target from five brokers on), one learner.
    wait_for("five metadata voters", lambda: len(members(brokers[0], admin_pb)[0]) == 5, timeout=60)
    assert sorted(sum(members(brokers[0], admin_pb), [])) == [1, 2, 3, 4, 5, 6]
    api = admin_stub(brokers[3], admin_pb)
    api.Rebalance(pb.RebalanceRequest(), timeout=30)
    wait_for("the rebalance", lambda: api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done)

    traffic = Traffic(bootstrap(brokers[3:]), topic_name)
    try:
        for node in (1, 2, 3):
            api.Decommission(pb.DecommissionRequest(node_id=node), timeout=30)
            if node == 2:
                # A metadata voter dies in the middle of a hand-over and comes back.
                brokers[4].kill9()
                time.sleep(1)
                brokers[4].restart()
            status = lambda n=node: api.DecommissionStatus(pb.DecommissionStatusRequest(node_id=n), timeout=10)  # noqa: E731
            try:
                wait_for(f"the decommission of broker {node}", lambda: status().done, timeout=120)
            except AssertionError as e:
                raise AssertionError(f"{e}: {status().message}") from None
            voters, _ = members(brokers[3], admin_pb)
            assert node not in voters, (node, voters)
            assert brokers[node - 1].terminate(timeout=30) == 0
        consumed_before = traffic.consumed
        # The new brokers alone: three voters, every partition served, metadata writable.
        rest = brokers[3:]
        # (The old brokers stay learners: a broker that leaves keeps receiving the metadata
        # log until it stops, since the partitions it led move by it.)
        wait_for("three metadata voters", lambda: members(rest[0], admin_pb)[0] == [4, 5, 6], timeout=30)
        wait_replicated(rest, topic_name, 3, 3)
        create_replicated(rest, topic_name + "-after", 2)
        wait_for("the consumer group going on", lambda: traffic.consumed > consumed_before, timeout=60)
    finally:
        traffic.finish()
    assert not traffic.errors, traffic.errors[:5]
    assert len(traffic.acked) > 0
    got = confluent_read_all(bootstrap(brokers[3:]), topic_name, expected=len(traffic.acked))
    values = [r.value for r in got]
    assert len(values) == len(set(values)), "duplicates"
    assert set(traffic.acked) <= set(values)
