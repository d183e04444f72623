"""Raft snapshots: a replica that needs entries retention already dropped from its
leader's log (here a broker added after the log start moved) catches up from a snapshot
that the leader streams to it, then serves the same offsets and records, keeps the
idempotent producer's state, and keeps all of it across a SIGKILL."""

import time

from confluent_kafka import Producer
from confluent_kafka.admin import NewTopic
from kafkautil import admin, admin_stub, confluent_read_all, http_get, watermarks
from test_replication import bootstrap, wait_for, wait_replicated

PARTITIONS = 2


def produce(p: Producer, topic: str, values: list[bytes], ts: int | None = None) -> None:
    """Produces values round-robin over the partitions and fails on any delivery error."""
    errors = []

    def cb(err, _msg):
        if err:
            errors.append(err)

    for i, v in enumerate(values):
        kwargs = {"timestamp": ts} if ts is not None else {}
        p.produce(topic, value=v, partition=i % PARTITIONS, on_delivery=cb, **kwargs)
        p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:5]


def leaders(brokers, topic: str) -> dict[int, int]:
    md = admin(bootstrap(brokers)).list_topics(topic=topic, timeout=10)
    return {p.id: p.leader for p in md.topics[topic].partitions.values()}


def lead_from(brokers, node: int, partitions, topic, admin_pb) -> None:
    """Hands the leadership of `partitions` to `node`, their only other voter being the
    current leader (replication factor 2)."""
    pb, _ = admin_pb

    def settled():
        current = leaders(brokers, topic)
        for part in partitions:
            if current[part] != node and current[part] > 0:
                leader = next(b for b in brokers if b.node_id == current[part])
                admin_stub(leader, admin_pb).DrainLeadership(
                    pb.DrainLeadershipRequest(node_id=leader.node_id), timeout=30)
        return all(current[part] == node for part in partitions)

    wait_for(f"broker {node} leading {partitions}", settled, timeout=30)


def metric(broker, name: str) -> float:
    _, text = http_get(broker.metrics_url + "/metrics")
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def three_brokers_with_a_topic(cluster_factory, topic: str):
    """Three brokers enforcing retention every 300 ms, and `topic` (RF 2, records kept for
    ten minutes) replicated."""
    brokers = cluster_factory(3, config={"retention_check_interval_ms": 300})
    a = admin(bootstrap(brokers))  # kept alive until the future resolves
    a.create_topics([NewTopic(topic, PARTITIONS, 2, config={"retention.ms": "600000"})],
                    request_timeout=30)[topic].result(30)
    wait_replicated(brokers, topic, PARTITIONS, 2)
    return brokers


def test_a_replica_added_after_retention_catches_up_from_a_snapshot(
        cluster_factory, topic_name, admin_pb):
    pb, _ = admin_pb
    brokers = three_brokers_with_a_topic(cluster_factory, topic_name)
    boot = bootstrap(brokers)

    # One idempotent producer throughout: its sequence state must travel in the snapshot.
    p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})
    hour_ago = int(time.time() * 1000) - 3600 * 1000
    produce(p, topic_name, [b"old-%d" % i for i in range(400)], ts=hour_ago)
    produce(p, topic_name, [b"kept-%d" % i for i in range(400)])
    # Retention drops the hour-old batches: the leaders compact their Raft logs below them.
    wait_for("retention", lambda: all(lo > 0 for lo, _ in watermarks(boot, topic_name).values()))
    before = [(r.partition, r.offset, r.value) for r in confluent_read_all(boot, topic_name)]
    assert sorted(v for _, _, v in before) == sorted(b"kept-%d" % i for i in range(400))
    marks = watermarks(boot, topic_name)

    # Broker 4 joins and the rebalance gives it replicas whose first entries no leader has
    # any more: only a snapshot can bring it up to date.
    fourth = cluster_factory.add(brokers)
    api = admin_stub(brokers[0], admin_pb)
    api.Rebalance(pb.RebalanceRequest(), timeout=30)
    wait_for("the rebalance", lambda: api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done,
             timeout=60)
    view = wait_replicated(brokers, topic_name, PARTITIONS, 2)
    hosted = sorted(part for part, (_, replicas, _) in view.items() if 4 in replicas)
    assert hosted, view
    assert metric(fourth, "chronik_raft_snapshots_installed_total") >= len(hosted)
    assert sum(metric(b, "chronik_raft_snapshots_sent_total") for b in brokers[:3]) >= len(hosted)

    # Served by broker 4: the same log start, offsets and records.
    lead_from(brokers, 4, hosted, topic_name, admin_pb)
    assert watermarks(boot, topic_name) == marks
    assert [(r.partition, r.offset, r.value) for r in confluent_read_all(fourth.bootstrap, topic_name)] == before

    # The producer goes on where it was: broker 4 knows its sequence numbers.
    produce(p, topic_name, [b"after-%d" % i for i in range(200)])
    got = [(r.partition, r.offset, r.value) for r in confluent_read_all(boot, topic_name)]
    assert [r for r in got if not r[2].startswith(b"after-")] == before
    assert sorted(r[2] for r in got if r[2].startswith(b"after-")) == sorted(b"after-%d" % i for i in range(200))

    # The installed snapshot is on broker 4's disk: after a SIGKILL it serves it all again.
    fourth.kill9()
    fourth.restart()
    wait_replicated(brokers, topic_name, PARTITIONS, 2)
    lead_from(brokers, 4, hosted, topic_name, admin_pb)
    again = confluent_read_all(fourth.bootstrap, topic_name)
    assert [(r.partition, r.offset, r.value) for r in again] == got


def test_a_replica_short_of_disk_space_takes_no_snapshot_until_space_returns(
        cluster_factory, topic_name, admin_pb):
    pb, _ = admin_pb
    brokers = three_brokers_with_a_topic(cluster_factory, topic_name)
    boot = bootstrap(brokers)
    p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all"})
    produce(p, topic_name, [b"old-%d" % i for i in range(200)],
            ts=int(time.time() * 1000) - 3600 * 1000)
    produce(p, topic_name, [b"kept-%d" % i for i in range(200)])
    wait_for("retention", lambda: all(lo > 0 for lo, _ in watermarks(boot, topic_name).values()))

    # Broker 4's margin is larger than any disk: it is short of space from the start.
    fourth = cluster_factory.add(brokers, config={"storage_min_free_bytes": 1 << 60})
    api = admin_stub(brokers[0], admin_pb)
    api.Rebalance(pb.RebalanceRequest(), timeout=30)
    time.sleep(5)
    # (A broker short of space refuses both the entries and any snapshot offered.)
    assert not api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done
    assert metric(fourth, "chronik_raft_snapshots_installed_total") == 0

    # Space returns (the usual margin): the snapshots go through and the move finishes.
    fourth.config_path.write_text("")
    fourth.restart()
    wait_for("the rebalance", lambda: api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done,
             timeout=60)
    view = wait_replicated(brokers, topic_name, PARTITIONS, 2)
    hosted = [part for part, (_, replicas, _) in view.items() if 4 in replicas]
    assert hosted and metric(fourth, "chronik_raft_snapshots_installed_total") >= len(hosted)
