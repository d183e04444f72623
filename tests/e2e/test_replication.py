"""Three chronik-brokers replicating every partition through Raft, driven by librdkafka:
leaders and ISR in Metadata, one cluster id, consumer groups on the coordinator, no
acknowledged record lost when a leader is killed with SIGKILL, and leadership handed
away on SIGTERM."""

import os
import shutil
import subprocess
import threading
import time

import pytest
from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import NewTopic
from kafkautil import (
    admin,
    admin_stub,
    confluent_read_all,
    retry_transient,
    subscribe_and_wait,
)

BROKERS = 3


def bootstrap(brokers) -> str:
    return ",".join(b.bootstrap for b in brokers)


def create_replicated(brokers, name, partitions, rf=3):
    a = admin(bootstrap(brokers))
    a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=rf)],
                    request_timeout=30)[name].result(timeout=30)
    return wait_replicated(brokers, name, partitions, rf)


def wait_replicated(brokers, name, partitions, rf, timeout=30, exclude=()):
    """Waits until every live broker's Metadata shows each partition with a leader and a
    full ISR; returns {partition: (leader, replicas, isr)} as the first broker sees it."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        views = []
        for b in brokers:
            if b in exclude:
                continue
            md = admin(b.bootstrap).list_topics(topic=name, timeout=10)
            t = md.topics.get(name)
            if t is None or t.error is not None or len(t.partitions) != partitions:
                break
            views.append({p.id: (p.leader, sorted(p.replicas), sorted(p.isrs))
                          for p in t.partitions.values()})
        else:
            first = views[0]
            healthy = all(leader > 0 and len(replicas) == rf and isr == replicas
                          for leader, replicas, isr in first.values())
            if healthy and all(v == first for v in views):
                return first
            last = views
        time.sleep(0.2)
    raise AssertionError(f"{name} not fully replicated with agreeing views: {last}")


def produce_acked(boot, topic, values, conf=None):
    """Produces values with acks=all and idempotence; returns the acknowledged ones."""
    acked, errors = [], []
    p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5, **(conf or {})})

    def cb(err, msg):
        (errors if err else acked).append(err or msg.value())

    for v in values:
        while True:
            try:
                p.produce(topic, value=v, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush(60)
    return acked, errors


def test_cluster_replicates_and_reports_leaders_and_isr(cluster_factory, topic_name, admin_pb):
    brokers = cluster_factory(BROKERS)
    boot = bootstrap(brokers)
    md = admin(boot).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    cluster_ids = {admin(b.bootstrap).list_topics(timeout=10).cluster_id for b in brokers}
    assert len(cluster_ids) == 1, f"brokers disagree on the cluster id: {cluster_ids}"

    view = create_replicated(brokers, topic_name, 6)
    leaders = [leader for leader, _, _ in view.values()]
    assert len(set(leaders)) == BROKERS, f"leadership not spread: {view}"

    values = [b"r%05d" % i for i in range(3000)]
    acked, errors = produce_acked(boot, topic_name, values)
    assert not errors and len(acked) == len(values)
    got = confluent_read_all(boot, topic_name, expected=len(values))
    assert sorted(r.value for r in got) == sorted(values)

    # Every broker's admin API sees the same partitions, leaders and full ISR, and every
    # broker as ready with its share of leaders.
    # (Views travel in leadership reports every 300 ms: allow them a moment to agree. The
    # reader's consumer group made __consumer_offsets just now: its partitions are still
    # electing their first leaders for a moment.)
    pb, _ = admin_pb
    for b in brokers:
        deadline = time.monotonic() + 10
        while True:
            status = admin_stub(b, admin_pb).ClusterStatus(
                pb.ClusterStatusRequest(include_partitions=True), timeout=10)
            mine = {p.partition: (p.leader, sorted(p.replicas), sorted(p.isr))
                    for p in status.partitions if p.topic == topic_name}
            settled = mine == view and status.summary.under_replicated == 0
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert mine == view, f"node {b.node_id} sees {mine}"
        assert sorted(br.node_id for br in status.brokers) == [1, 2, 3]
        assert all(br.ready for br in status.brokers)
        assert sum(br.leader_count for br in status.brokers) >= 6
        assert status.summary.under_replicated == 0


def test_follower_answers_not_leader_and_rf_above_brokers_is_refused(cluster_factory, topic_name):
    brokers = cluster_factory(BROKERS)
    a = admin(bootstrap(brokers))
    fut = a.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=4)])[topic_name]
    with pytest.raises(KafkaException) as err:
        fut.result(timeout=30)
    assert "INVALID_REPLICATION_FACTOR" in str(err.value)

    # RF 1: one broker holds the partition; the others must send clients to it.
    view = create_replicated(brokers, topic_name, 1, rf=1)
    leader = view[0][0]
    follower = next(b for b in brokers if b.node_id != leader)
    acked, errors = produce_acked(follower.bootstrap, topic_name, [b"via-metadata"])
    assert acked == [b"via-metadata"] and not errors


def sigkill_while_producing(brokers, topic, victim, before=2.0):
    """An idempotent acks=all producer sends unique values; `before` seconds in, the
    victim gets SIGKILL; 4 s later the producer stops and flushes. Returns the values
    acknowledged and how many were acknowledged before the kill (delivery errors fail)."""
    stop, acked, errors = threading.Event(), [], []

    def produce():
        p = Producer({"bootstrap.servers": bootstrap(brokers), "enable.idempotence": True,
                      "acks": "all", "linger.ms": 2, "message.timeout.ms": 90000})

        def cb(err, msg):
            (errors if err else acked).append(err or msg.value())

        i = 0
        while not stop.is_set():
            try:
                p.produce(topic, value=b"k%07d" % i, on_delivery=cb)
                i += 1
            except BufferError:
                pass
            p.poll(0.001)
        p.flush(120)

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(before)
    before_kill = len(acked)
    victim.kill9()
    time.sleep(4)
    stop.set()
    t.join(150)
    assert not t.is_alive()
    assert not errors, f"delivery errors after a leader failover: {errors[:5]}"
    return acked, before_kill


def assert_all_there_once(brokers, topic, acked):
    """Every acknowledged value is in the topic, read through `brokers`, exactly once."""
    got = confluent_read_all(bootstrap(brokers), topic, expected=len(acked))
    values = [r.value for r in got]
    assert len(values) == len(set(values)), "duplicates despite idempotence"
    missing = set(acked) - set(values)
    assert not missing, f"{len(missing)} acknowledged records lost, e.g. {sorted(missing)[:5]}"


def test_sigkill_of_a_leader_loses_no_acknowledged_record(cluster_factory, topic_name):
    brokers = cluster_factory(BROKERS)
    view = create_replicated(brokers, topic_name, 3)
    victim = next(b for b in brokers if b.node_id == view[0][0])
    acked, _ = sigkill_while_producing(brokers, topic_name, victim)
    assert len(acked) > 1000

    # The survivors elected new leaders and kept every acknowledged record, once each.
    assert_all_there_once([b for b in brokers if b is not victim], topic_name, acked)

    # The killed broker comes back, catches up, and rejoins every ISR.
    victim.start()
    wait_replicated(brokers, topic_name, 3, 3, timeout=60)


def test_sigterm_hands_leadership_away_before_exiting(cluster_factory, topic_name):
    brokers = cluster_factory(BROKERS)
    view = create_replicated(brokers, topic_name, 6)
    leaving = next(b for b in brokers if b.node_id == view[0][0])
    led = [p for p, (leader, _, _) in view.items() if leader == leaving.node_id]
    assert led

    assert leaving.terminate(timeout=30) == 0
    assert "leadership drained remaining=0" in leaving.log_tail().replace("\x1b[0m", "").replace(
        "\x1b[3m", "").replace("\x1b[2m", "")

    # Right after the exit (well inside an election timeout of ~1-2 s), the others
    # already name new leaders for every partition it led: they were handed over.
    survivors = [b for b in brokers if b is not leaving]
    md = admin(survivors[0].bootstrap).list_topics(topic=topic_name, timeout=10)
    now = {p.id: p.leader for p in md.topics[topic_name].partitions.values()}
    assert all(now[p] not in (-1, leaving.node_id) for p in led), now

    # And the two survivors keep serving acks=all writes.
    acked, errors = retry_transient(
        lambda: produce_acked(bootstrap(survivors), topic_name, [b"after-%d" % i for i in range(100)]))
    assert len(acked) == 100 and not errors


def test_brokers_stopped_together_exit_at_once_and_keep_their_records(cluster_factory, topic_name):
    brokers = cluster_factory(BROKERS)
    create_replicated(brokers, topic_name, 6)
    acked, errors = produce_acked(bootstrap(brokers), topic_name, [b"kept-%d" % i for i in range(300)])
    assert len(acked) == 300 and not errors

    # SIGTERM to every broker at once (`helm uninstall`, a node drained): each announces
    # that it is stopping and hands nothing to a peer that is stopping too, so none waits
    # out its 10 s drain passing leaderships back and forth.
    started = time.monotonic()
    for b in brokers:
        b.signal_stop()
    codes = [b.terminate(timeout=30) for b in brokers]
    took = time.monotonic() - started
    assert codes == [0] * len(brokers), codes
    assert took < 3, f"the brokers took {took:.1f} s to stop"

    for b in brokers:
        b.launch()
    for b in brokers:
        b.wait_ready(30)
    assert_all_there_once(brokers, topic_name, acked)


def test_a_new_broker_joins_the_running_cluster(cluster_factory, topic_name):
    brokers = cluster_factory(BROKERS)
    before = create_replicated(brokers, topic_name, 3)
    acked, errors = produce_acked(bootstrap(brokers), topic_name, [b"old-%d" % i for i in range(300)])
    assert len(acked) == 300 and not errors

    # Broker 4 starts empty, knowing the others: it joins (a learner of the metadata
    # group), catches up on the metadata log, registers and becomes ready.
    fourth = cluster_factory.add(brokers)
    md = admin(fourth.bootstrap).list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3, 4]
    assert len({admin(b.bootstrap).list_topics(timeout=10).cluster_id for b in brokers}) == 1
    # It serves metadata for partitions it does not host, and clients bootstrapping from
    # it alone read everything.
    assert wait_replicated(brokers, topic_name, 3, 3) == before
    got = confluent_read_all(fourth.bootstrap, topic_name, expected=300)
    assert sorted(r.value for r in got) == sorted(acked)

    # New topics place replicas on it: with RF 1 over 4 brokers and 8 partitions, each
    # broker gets two.
    spread = topic_name + "-new"
    view = create_replicated(brokers, spread, 8, rf=1)
    assert sorted(leader for leader, _, _ in view.values()) == [1, 1, 2, 2, 3, 3, 4, 4]
    acked, errors = produce_acked(fourth.bootstrap, spread, [b"new-%d" % i for i in range(400)])
    assert len(acked) == 400 and not errors

    # Restarted, it is still a member (its metadata state is on disk).
    fourth.restart()
    got = confluent_read_all(fourth.bootstrap, spread, expected=400)
    assert len(got) == 400


def wait_for(what, fn, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not within {timeout}s"
        time.sleep(0.3)


def test_rebalance_moves_replicas_to_a_new_broker_and_decommission_moves_them_off(
        cluster_factory, topic_name, admin_pb):
    pb, _ = admin_pb
    brokers = cluster_factory(BROKERS)
    create_replicated(brokers, topic_name, 6)
    first = [b"before-%d" % i for i in range(600)]
    acked, errors = produce_acked(bootstrap(brokers), topic_name, first)
    assert len(acked) == 600 and not errors
    cluster_factory.add(brokers)

    # Rebalance: broker 4 takes its share of the 18 replicas; every group ends with three
    # in-sync voters again, and nothing is lost or duplicated.
    api = admin_stub(brokers[0], admin_pb)
    api.Rebalance(pb.RebalanceRequest(), timeout=30)
    wait_for("the rebalance", lambda: api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done)
    view = wait_replicated(brokers, topic_name, 6, 3)
    load = {b.node_id: sum(b.node_id in r for _, r, _ in view.values()) for b in brokers}
    assert all(4 <= n <= 5 for n in load.values()), load
    got = confluent_read_all(bootstrap(brokers), topic_name, expected=600)
    assert sorted(r.value for r in got) == sorted(first)

    # The replicas moved onto broker 4 are its own after a crash too: restarted, it opens
    # them again and every group returns to three in-sync voters.
    brokers[3].kill9()
    brokers[3].restart()
    members = lambda v: {p: (r, isr) for p, (_, r, isr) in v.items()}  # noqa: E731
    assert members(wait_replicated(brokers, topic_name, 6, 3)) == members(view)

    # Decommission broker 1: its replicas move to the others; then it can go.
    api.Decommission(pb.DecommissionRequest(node_id=1), timeout=30)
    status = wait_for("the decommission", lambda: (
        lambda s: s if s.done else None)(api.DecommissionStatus(pb.DecommissionStatusRequest(node_id=1), timeout=10)))
    assert status.replicas_remaining == 0
    view = wait_replicated(brokers, topic_name, 6, 3)
    assert all(1 not in replicas for _, replicas, _ in view.values()), view
    leaving = brokers[0]
    assert leaving.terminate(timeout=30) == 0
    rest = brokers[1:]
    assert wait_replicated(rest, topic_name, 6, 3) == view
    second = [b"after-%d" % i for i in range(300)]
    acked, errors = produce_acked(bootstrap(rest), topic_name, second)
    assert len(acked) == 300 and not errors
    got = confluent_read_all(bootstrap(rest), topic_name, expected=900)
    values = [r.value for r in got]
    assert len(values) == len(set(values)) == 900
    assert set(values) == set(first) | set(second)


def test_brokers_leaving_together_never_receive_each_others_replicas(
        cluster_factory, topic_name, admin_pb):
    """A scale-down by two decommissions one broker after the other: the replicas of the
    second must not land on the first (which is about to go), nor bounce back to it."""
    pb, _ = admin_pb
    brokers = cluster_factory(BROKERS)
    create_replicated(brokers, topic_name, 6)
    cluster_factory.add(brokers)
    cluster_factory.add(brokers)
    api = admin_stub(brokers[0], admin_pb)
    api.Rebalance(pb.RebalanceRequest(), timeout=30)
    wait_for("the rebalance", lambda: api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done)
    view = wait_replicated(brokers, topic_name, 6, 3)
    assert any(5 in r for _, r, _ in view.values()) and any(4 in r for _, r, _ in view.values())
    acked, errors = produce_acked(bootstrap(brokers), topic_name, [b"%d" % i for i in range(300)])
    assert len(acked) == 300 and not errors

    for node in (5, 4):
        api.Decommission(pb.DecommissionRequest(node_id=node, also_leaving=[4, 5]), timeout=30)
        wait_for(f"the decommission of {node}", lambda: api.DecommissionStatus(
            pb.DecommissionStatusRequest(node_id=node), timeout=10).done)
    view = wait_replicated(brokers, topic_name, 6, 3)
    assert all(not {4, 5} & set(r) for _, r, _ in view.values()), view
    for b in brokers[3:]:
        assert b.terminate(timeout=30) == 0
    got = confluent_read_all(bootstrap(brokers[:3]), topic_name, expected=300)
    assert sorted(r.value for r in got) == sorted(acked)


def test_new_topics_are_placed_on_live_brokers_only(cluster_factory, topic_name):
    """A broker that is gone for good (scaled away, crashed) stays registered; a topic
    created afterwards must not get replicas on it, or its partitions start without the
    quorum they were promised."""
    brokers = cluster_factory(BROKERS)
    cluster_factory.add(brokers)
    brokers[3].kill9()
    time.sleep(4)  # past the liveness window of the brokers' leadership reports
    view = create_replicated(brokers[:3], topic_name, 6)
    assert all(4 not in replicas for _, replicas, _ in view.values()), view
    # With broker 3 down for a moment too, only two are alive: a new RF=3 topic goes to
    # 1, 2 and 3 (which still holds replicas), never to the departed 4, and is served by
    # the quorum of 1 and 2.
    brokers[2].kill9()
    time.sleep(4)
    name = topic_name + "-b"
    a = admin(bootstrap(brokers[:2]))
    a.create_topics([NewTopic(name, num_partitions=6, replication_factor=3)],
                    request_timeout=30)[name].result(timeout=30)
    p = Producer({"bootstrap.servers": bootstrap(brokers[:2]), "enable.idempotence": True})
    failed = []
    for partition in range(6):
        p.produce(name, b"served", partition=partition, on_delivery=lambda e, m: e and failed.append(e))
    assert p.flush(30) == 0 and not failed, f"not acknowledged by the quorum of 1 and 2: {failed}"
    md = admin(brokers[0].bootstrap).list_topics(topic=name, timeout=10)
    placed = {i: sorted(x.replicas) for i, x in md.topics[name].partitions.items()}
    assert all(r == [1, 2, 3] for r in placed.values()), placed


def test_decommission_refuses_when_replicas_have_nowhere_to_go(cluster_factory, topic_name, admin_pb):
    import grpc
    pb, _ = admin_pb
    brokers = cluster_factory(BROKERS)
    create_replicated(brokers, topic_name, 2)
    api = admin_stub(brokers[0], admin_pb)
    with pytest.raises(grpc.RpcError) as err:
        api.Decommission(pb.DecommissionRequest(node_id=2), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no other live broker" in err.value.details()


def test_replicas_are_listed_in_assignment_order_preferred_leader_first(
        cluster_factory, topic_name):
    """Kafka lists a partition's replicas in assignment order, the preferred leader
    first (kafka-topics --describe, kafka-leader-election and reassignment tools rely on
    it); CreateTopics spreads preferred leaders over the brokers."""
    brokers = cluster_factory(BROKERS)
    create_replicated(brokers, topic_name, BROKERS)
    for b in brokers:
        md = admin(b.bootstrap).list_topics(topic=topic_name, timeout=10)
        replicas = {p.id: list(p.replicas) for p in md.topics[topic_name].partitions.values()}
        assert {r[0] for r in replicas.values()} == {b.node_id for b in brokers}, replicas
        assert all(sorted(r) == [1, 2, 3] for r in replicas.values()), replicas


def test_list_groups_asked_of_every_broker_shows_an_active_group_once_as_stable(
        cluster_factory, topic_name):
    """Admin tools ask every broker for its groups and merge the answers; only the
    coordinator may report a group (others once reported it Empty)."""
    from confluent_kafka import Consumer, TopicPartition
    from kafka import KafkaAdminClient

    brokers = cluster_factory(BROKERS)
    create_replicated(brokers, topic_name, 3)
    group = f"active-{topic_name}"
    c = Consumer({"bootstrap.servers": bootstrap(brokers), "group.id": group,
                  "session.timeout.ms": 10000})
    kadmin = KafkaAdminClient(bootstrap_servers=bootstrap(brokers))
    try:
        subscribe_and_wait(c, topic_name, 30)
        # (committed offsets are replicated to every broker: the old mistake's trigger)
        c.commit(offsets=[TopicPartition(topic_name, 0, 0)], asynchronous=False)
        answers = {b.node_id: [g for g in kadmin.list_groups(broker_ids=[b.node_id])
                               if g["group_id"] == group] for b in brokers}
        listed = [(node, g["group_state"]) for node, gs in answers.items() for g in gs]
        assert len(listed) == 1 and listed[0][1] == "Stable", answers
    finally:
        kadmin.close()
        c.close()


def test_every_broker_names_the_leaders_as_soon_as_create_topics_returns(
        cluster_factory, topic_name):
    """Clients that cache metadata (kafka-go for 6 s) fail their first writes when the
    broker they ask right after CreateTopics knows no leader yet: CreateTopics answers
    once the new partitions' leaders are known across the cluster, as Kafka's does."""
    brokers = cluster_factory(BROKERS)
    a = admin(brokers[0].bootstrap)
    a.create_topics([NewTopic(topic_name, num_partitions=6, replication_factor=3)],
                    request_timeout=30)[topic_name].result(timeout=30)
    for b in brokers:
        md = admin(b.bootstrap).list_topics(topic=topic_name, timeout=10)
        parts = md.topics[topic_name].partitions.values()
        assert len(parts) == 6
        missing = [(p.id, p.error) for p in parts if p.leader < 0 or p.error is not None]
        assert not missing, f"broker {b.node_id} knows no leader for {missing}"


def kclient_binary() -> str:
    """e2e/kclient (franz-go), built once into the cache: a client that follows KIP-951's
    leader hints, as the Java client and librdkafka 2.4+ do too."""
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cache = os.environ.get("CHRONIK_CACHE", os.path.expanduser("~/.cache/chronik"))
    out = os.path.join(cache, "bin", "kclient")
    src = os.path.join(repo, "e2e", "kclient")
    newest = max(os.path.getmtime(os.path.join(src, f)) for f in os.listdir(src))
    if not os.path.exists(out) or os.path.getmtime(out) < newest:
        if shutil.which("go") is None:
            pytest.fail("needs Go to build e2e/kclient (franz-go)")
        subprocess.run(["go", "build", "-o", out, "."], cwd=src, check=True,
                       env={**os.environ, "CGO_ENABLED": "0"}, timeout=600)
    return out


def test_sigterm_of_a_leader_stalls_a_franz_go_producer_under_two_seconds(
        cluster_factory, topic_name):
    """A leader leaving on SIGTERM answers the batches still coming to it with
    NOT_LEADER_OR_FOLLOWER naming the new leader and its address (KIP-951), so the
    producer moves at once instead of waiting out a metadata refresh."""
    brokers = cluster_factory(BROKERS)
    view = create_replicated(brokers, topic_name, 1)
    leaving = next(b for b in brokers if b.node_id == view[0][0])
    producer = subprocess.Popen(
        [kclient_binary(), "produce", "-brokers", bootstrap(brokers), "-topic", topic_name,
         "-rate", "200", "-duration", "12s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(5)
        assert leaving.terminate(timeout=30) == 0
        out, _ = producer.communicate(timeout=90)
    finally:
        producer.kill()
    summary = next(line for line in out.splitlines() if line.startswith("summary "))
    fields = dict(f.split("=") for f in summary.split()[1:])
    acked = [line.split()[1].encode() for line in out.splitlines() if line.startswith("ack ")]
    assert producer.returncode == 0 and int(fields["failed"]) == 0, out[-2000:]
    assert len(acked) > 2000, summary
    print(summary)
    assert int(fields["max_stall_ms"]) < 2000, summary
    survivors = [b for b in brokers if b is not leaving]
    assert_all_there_once(survivors, topic_name, acked)


def test_a_move_that_cannot_progress_says_so_and_finishes_once_it_can(
        cluster_factory, topic_name, admin_pb):
    """Rebalance onto a broker that dies right after (still counted alive when the plan is
    made): RebalanceStatus names the stalled partitions and why, the log says it; the
    broker's restart lets the moves finish and the stall clears."""
    pb, _ = admin_pb
    config = {"move_stall_timeout_ms": 2000}
    brokers = cluster_factory(BROKERS, config=config)
    create_replicated(brokers, topic_name, 3)
    newcomer = cluster_factory.add(brokers, config=config)
    api = admin_stub(brokers[0], admin_pb)
    newcomer.kill9()
    api.Rebalance(pb.RebalanceRequest(), timeout=30)  # within the 3 s liveness window
    silent = f"broker {newcomer.node_id} is not heard from"
    status = wait_for("RebalanceStatus to report the moves stalled on the dead broker", lambda: (
        lambda s: s if s.stalled and all(silent in x for x in s.stalled) else None)(
            api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10)),
        timeout=30)
    print("stalled:", list(status.stalled), "|", status.message)
    assert not status.done
    assert "stalled" in status.message
    assert "no progress" in brokers[0].log_tail(200_000)
    newcomer.restart()
    wait_for("the rebalance", lambda: api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10).done)
    status = api.RebalanceStatus(pb.RebalanceStatusRequest(), timeout=10)
    assert not status.stalled, status.stalled
    view = wait_replicated(brokers, topic_name, 3, 3)
    assert any(newcomer.node_id in r for _, r, _ in view.values()), view
