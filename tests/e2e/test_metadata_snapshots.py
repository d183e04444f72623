"""The metadata log compacts itself behind a snapshot of the catalog: a broker that needs
entries from before the compaction point (a new one joining, one that was down while the
cluster changed) receives the catalog instead of the history, takes on exactly what it
says (topics made and deleted meanwhile, brokers, placement), hosts what it is given,
and keeps all of it across a SIGKILL, also one right after the snapshot arrived."""

import time

from confluent_kafka.admin import NewTopic
from kafkautil import admin, admin_stub, confluent_read_all
from test_replication import bootstrap, create_replicated, produce_acked, wait_for, wait_replicated
from test_snapshots import metric

# Compact every 50 entries (beyond the 100 kept): a few dozen topic changes do it.
CONFIG = {"metadata_snapshot_entries": 50}


def churn(brokers, prefix: str, rounds: int = 100) -> None:
    """Makes 2 x `rounds` metadata entries: topics created, then deleted."""
    a = admin(bootstrap(brokers))
    names = [f"{prefix}-{i}" for i in range(rounds)]
    for start in range(0, rounds, 25):
        some = names[start:start + 25]
        for f in a.create_topics([NewTopic(n, 1, 1) for n in some], request_timeout=60).values():
            f.result(60)
        for f in a.delete_topics(some, request_timeout=60).values():
            f.result(60)


def compacted(brokers) -> bool:
    return all(metric(b, "chronik_metadata_log_compactions_total") >= 1 for b in brokers)


def topics_seen_by(broker) -> set[str]:
    return {t for t in admin(broker.bootstrap).list_topics(timeout=10).topics if not t.startswith("__")}


def log_has(broker, text: str) -> bool:
    return text in broker.log_path.read_text(errors="replace")


def test_a_new_broker_joins_from_a_snapshot_of_the_catalog(cluster_factory, topic_name, admin_pb):
    pb, _ = admin_pb
    brokers = cluster_factory(3, config=CONFIG)
    create_replicated(brokers, topic_name, 3)
    acked, errors = produce_acked(bootstrap(brokers), topic_name, [b"v-%d" % i for i in range(300)])
    assert not errors and len(acked) == 300, errors[:5]
    churn(brokers, topic_name + "-churn")
    wait_for("every broker compacting its metadata log", lambda: compacted(brokers), timeout=30)
    expected = topics_seen_by(brokers[0])
    assert expected == {topic_name}, expected

    # Broker 4 joins: its metadata log starts after the compaction point, from a snapshot.
    # SIGKILLed the moment the snapshot arrived, it must come back whole from its disk
    # (or receive another one).
    fourth = cluster_factory.add(brokers, config=CONFIG)
    wait_for("the catalog snapshot arriving", lambda: log_has(fourth, "metadata restored from a snapshot"),
             timeout=30)
    fourth.kill9()
    fourth.restart()
    assert topics_seen_by(fourth) == expected
    s = admin_stub(fourth, admin_pb).ClusterStatus(pb.ClusterStatusRequest(), timeout=10)
    assert sorted(b.node_id for b in s.brokers) == [1, 2, 3, 4], s.brokers
    assert sum(metric(b, "chronik_raft_snapshots_sent_total") for b in brokers[:3]) >= 1

    # It takes replicas and serves them: a rebalance moves some of the topic onto it.
    api = admin_stub(brokers[0], admin_pb)
    api.Rebalance(pb.RebalanceRequest(), timeout=30)
    wait_for("the rebalance", lambda: api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done,
             timeout=60)
    view = wait_replicated(brokers, topic_name, 3, 3)
    assert any(4 in replicas for _, replicas, _ in view.values()), view
    got = sorted(r.value for r in confluent_read_all(fourth.bootstrap, topic_name))
    assert got == sorted(acked)

    # A topic made now is known to all four at once (the log goes on after the snapshot).
    later = topic_name + "-later"
    create_replicated(brokers, later, 4)
    assert later in topics_seen_by(fourth)


def test_a_broker_down_while_the_catalog_moved_on_catches_up_from_a_snapshot(
        cluster_factory, topic_name, admin_pb):
    pb, _ = admin_pb
    brokers = cluster_factory(3, config=CONFIG)
    old, new = topic_name + "-old", topic_name + "-new"
    create_replicated(brokers, old, 2)
    produce_acked(bootstrap(brokers), old, [b"old-%d" % i for i in range(100)])

    # Broker 3 is away while the old topic is deleted, a new one made, and the log
    # compacted past everything broker 3 has.
    brokers[2].kill9()
    time.sleep(4)  # past the liveness window: new topics are placed on live brokers only
    up = brokers[:2]
    a = admin(bootstrap(up))
    a.delete_topics([old], request_timeout=30)[old].result(30)
    a.create_topics([NewTopic(new, 2, 3)], request_timeout=30)[new].result(30)
    acked, errors = produce_acked(bootstrap(up), new, [b"new-%d" % i for i in range(200)])
    assert not errors and len(acked) == 200, errors[:5]
    churn(up, topic_name + "-churn")
    wait_for("the live brokers compacting their metadata logs", lambda: compacted(up), timeout=30)

    brokers[2].restart()
    wait_for("broker 3 restoring the catalog", lambda: log_has(brokers[2], "metadata restored from a snapshot"),
             timeout=30)
    assert topics_seen_by(brokers[2]) == {new}
    # Its replicas of the new topic (placed on it while it was down) catch up and serve.
    wait_replicated(brokers, new, 2, 3, timeout=60)
    assert sorted(r.value for r in confluent_read_all(brokers[2].bootstrap, new)) == sorted(acked)

    # Back from its own disk after a SIGKILL: the same catalog, no snapshot needed.
    restored = metric(brokers[2], "chronik_metadata_snapshots_restored_total")
    assert restored >= 1
    brokers[2].kill9()
    brokers[2].restart()
    assert topics_seen_by(brokers[2]) == {new}
    wait_replicated(brokers, new, 2, 3, timeout=60)
    time.sleep(1)
    assert metric(brokers[2], "chronik_metadata_snapshots_restored_total") == 0
