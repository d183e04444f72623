"""Racks (`--rack`): brokers report them (Metadata, DescribeCluster), each partition's
replicas are spread over them, and a consumer that names its rack (`client.rack`) reads
from an in-sync replica there (KIP-392 follower fetching): librdkafka and the Java
consumer read exactly what the leaders committed, the followers count what they served,
and a consumer whose follower is SIGKILLed mid-read goes on from the leader."""

import subprocess
import threading
import time

import pytest
from confluent_kafka import Producer
from kafka import KafkaConsumer
from kafkautil import (
    admin,
    assert_same_records,
    confluent_produce,
    confluent_read_all,
    make_records,
)
from test_java_clients import java_cmd, kafka_jars  # noqa: F401  (a fixture)
from test_replication import bootstrap, create_replicated
from test_snapshots import metric

RACKS = {1: "a", 2: "a", 3: "b", 4: "b"}
FOLLOWER_BYTES = "chronik_follower_fetched_bytes_total"
REDIRECTS = "chronik_fetch_preferred_replica_total"


@pytest.fixture
def racked(cluster_factory):
    """Four brokers, two in rack a (1, 2) and two in rack b (3, 4)."""
    return cluster_factory(4, args=lambda b: ["--rack", RACKS[b.node_id]],
                           env={"CHRONIK_LOG": "info,raft=warn,chronik_broker::protocol::fetch=debug"})


def fetch_log_lines(brokers, topic):
    """The brokers' debug lines on why a consumer was (not) sent to a follower."""
    lines = []
    for b in brokers:
        with open(b.log_path, errors="replace") as log:
            lines += [f"broker {b.node_id}: {line.rstrip()}" for line in log
                      if topic in line and "DEBUG" in line]
    return "\n".join(sorted(lines, key=lambda line: line.split(": ", 1)[1])[-60:])


def in_rack(brokers, rack):
    return [b for b in brokers if RACKS[b.node_id] == rack]


def counted(brokers, name):
    return sum(metric(b, name) for b in brokers)


def test_brokers_report_their_racks_and_replicas_span_them(racked, topic_name):
    boot = bootstrap(racked)
    a = admin(boot)  # (kept alive until its future resolves)
    cluster = a.describe_cluster(request_timeout=10).result()
    assert {n.id: n.rack for n in cluster.nodes} == RACKS, "DescribeCluster"
    # Metadata, as a Java-like client (kafka-python) reads it.
    c = KafkaConsumer(bootstrap_servers=boot)
    try:
        c.topics()
        assert {b.node_id: b.rack for b in c._client.cluster.brokers()} == RACKS, "Metadata"
    finally:
        c.close()
    placed = create_replicated(racked, topic_name, 8, rf=2)
    for part, (leader, replicas, _) in placed.items():
        assert {RACKS[r] for r in replicas} == {"a", "b"}, (part, replicas)
    leaders = sorted(leader for leader, _, _ in placed.values())
    assert leaders == [1, 1, 2, 2, 3, 3, 4, 4], f"leadership not spread: {placed}"


def rack_b_read(racked, topic, produced, conf=None):
    """Reads `topic` as a consumer in rack b; checks it is exactly what was acked."""
    got = confluent_read_all(bootstrap(racked), topic, expected=len(produced),
                             conf={"client.rack": "b", **(conf or {})})
    assert_same_records(produced, got)


def test_a_consumer_reads_from_an_in_sync_replica_in_its_rack(racked, topic_name):
    placed = create_replicated(racked, topic_name, 6, rf=2)
    led_from_a = [p for p, (leader, _, _) in placed.items() if RACKS[leader] == "a"]
    assert led_from_a, placed
    produced = confluent_produce(bootstrap(racked), topic_name, make_records(3000, "rack"),
                                 conf={"acks": "all", "enable.idempotence": True})
    a, b = in_rack(racked, "a"), in_rack(racked, "b")
    before = (counted(b, FOLLOWER_BYTES), counted(a, REDIRECTS), counted(a, FOLLOWER_BYTES))
    rack_b_read(racked, topic_name, produced)
    served_by_b = counted(b, FOLLOWER_BYTES) - before[0]
    redirects = counted(a, REDIRECTS) - before[1]
    print(f"rack-b followers served {served_by_b:.0f} bytes; rack-a leaders redirected "
          f"{redirects:.0f} partition fetches ({len(led_from_a)} partitions led from rack a)")
    assert redirects >= len(led_from_a), "rack-a leaders never named a rack-b replica"
    assert served_by_b > 0, "no rack-b follower served the rack-b consumer"
    assert counted(a, FOLLOWER_BYTES) == before[2], "a rack-a follower served a rack-b consumer"
    # Without a rack, everything comes from the leaders.
    before_plain = counted(racked, FOLLOWER_BYTES)
    assert_same_records(produced, confluent_read_all(bootstrap(racked), topic_name,
                                                     expected=len(produced)))
    assert counted(racked, FOLLOWER_BYTES) == before_plain


@pytest.mark.java
@pytest.mark.timeout(240)
def test_the_java_consumer_reads_from_its_rack(racked, topic_name, kafka_jars):  # noqa: F811
    placed = create_replicated(racked, topic_name, 4, rf=2)
    values = [f"java-rack-{i:05d}".encode() for i in range(2000)]
    # Into every partition alike: a sticky partitioner may leave the partitions led from
    # rack b empty, and then there is nothing for a rack-a follower to serve.
    acked = []
    produce_evenly(bootstrap(racked), topic_name, values, len(placed), acked)
    assert sorted(acked) == sorted(values)
    a, b = in_rack(racked, "a"), in_rack(racked, "b")
    led_from_b = [p for p, (leader, _, _) in placed.items() if RACKS[leader] == "b"]
    assert led_from_b, placed
    before = counted(a, FOLLOWER_BYTES)
    redirects_before = counted(b, REDIRECTS)
    cmd = java_cmd(kafka_jars, "org.apache.kafka.tools.consumer.ConsoleConsumer",
                   "--bootstrap-server", bootstrap(racked), "--topic", topic_name,
                   "--from-beginning", "--max-messages", str(len(values)), "--timeout-ms", "60000",
                   "--consumer-property", "client.rack=a",
                   "--property", "print.partition=true", "--property", "print.offset=true")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    read = {}
    for line in proc.stdout.splitlines():
        fields = dict(f.split(":", 1) for f in line.split("\t")[:2])
        read[(int(fields["Partition"]), int(fields["Offset"]))] = line.split("\t")[2]
    assert sorted(read.values()) == sorted(v.decode() for v in values)
    assert len(read) == len(values)
    # Offsets are dense from 0 in every partition: exactly the committed log.
    for part in placed:
        offsets = sorted(o for p, o in read if p == part)
        assert offsets == list(range(len(offsets))), (part, offsets[:5])
    served = counted(a, FOLLOWER_BYTES) - before
    print(f"rack-a followers served {served:.0f} bytes to the Java consumer")
    assert served > 0, (
        "the Java consumer with client.rack=a never read from a rack-a follower; "
        f"rack-b leaders redirected {counted(b, REDIRECTS) - redirects_before:.0f} fetches; "
        f"placement {placed}; the brokers said:\n{fetch_log_lines(racked, topic_name)}\n"
        f"the consumer said:\n{proc.stderr[-2000:]}")
    assert counted(b, FOLLOWER_BYTES) == 0


def produce_evenly(boot, topic, values, partitions, acked):
    """Produces `values` round-robin over the partitions, slowly enough (~5,000/s) for a
    reader to follow the tail; appends the acknowledged ones to `acked`."""
    p = Producer({"bootstrap.servers": boot, "enable.idempotence": True, "acks": "all",
                  "linger.ms": 5})

    def cb(err, msg):
        if not err:
            acked.append(msg.value())

    for i, v in enumerate(values):
        p.produce(topic, value=v, partition=i % partitions, on_delivery=cb)
        p.poll(0)
        if i % 500 == 499:
            time.sleep(0.1)
    p.flush(60)


@pytest.mark.timeout(180)
def test_a_consumer_whose_follower_is_killed_goes_on_from_the_leader(racked, topic_name):
    """Rack-b consumer reading from the rack-b followers while records keep coming; one
    of those followers is SIGKILLed mid-read: every acked record is still read once."""
    # Three replicas, so that every partition keeps a quorum without the victim.
    create_replicated(racked, topic_name, 4, rf=3)
    values = [f"kill-{i:05d}".encode() for i in range(20000)]
    acked: list[bytes] = []
    producing = threading.Thread(target=produce_evenly,
                                 args=(bootstrap(racked), topic_name, values, 4, acked))
    producing.start()
    got: list = []
    reader = threading.Thread(target=lambda: got.extend(confluent_read_all(
        bootstrap(racked), topic_name, timeout=120, expected=len(values),
        conf={"client.rack": "b"})))
    time.sleep(1.0)
    reader.start()
    deadline = time.monotonic() + 30
    serving = []
    while not serving and time.monotonic() < deadline:
        serving = [b for b in in_rack(racked, "b") if metric(b, FOLLOWER_BYTES) > 0]
        time.sleep(0.05)
    assert serving, "no rack-b follower served the rack-b consumer"
    time.sleep(0.3)  # mid-read: more of it still to come from the victim
    victim = serving[0]
    served = metric(victim, FOLLOWER_BYTES)
    producing_was_alive = producing.is_alive()
    victim.kill9()
    print(f"SIGKILL of broker {victim.node_id} after it served {served:.0f} bytes as a follower")
    producing.join(120)
    reader.join(150)
    assert not reader.is_alive(), "the rack-b consumer did not finish"
    assert len(acked) == len(values)
    assert sorted(r.value for r in got) == sorted(acked)
    assert producing_was_alive, "production ended before the SIGKILL: not mid-read"
