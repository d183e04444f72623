"""A second Kafka listener for clients outside the brokers' own network (what a Kubernetes
NodePort listener is): on it, Metadata and FindCoordinator name every broker by its
external address, so a client that only reaches those addresses bootstraps, produces to
every partition leader and consumes in a group; the internal listener keeps answering
with internal addresses."""

import subprocess
import time

from confluent_kafka import Consumer
from conftest import broker_bin, free_port
from kafkautil import admin, confluent_read_all
from test_replication import create_replicated, produce_acked

# The external listeners live on another loopback address, so that no answer can pass for
# the other listener's by accident.
EXTERNAL_HOST = "127.0.0.2"


def external_args(ports):
    def args(b):
        ports[b.node_id] = free_port()
        addr = f"{EXTERNAL_HOST}:{ports[b.node_id]}"
        return ["--external-kafka-addr", addr, "--advertised-external-kafka-addr", addr]
    return args


def advertised(bootstrap):
    md = admin(bootstrap).list_topics(timeout=10)
    return {b.id: f"{b.host}:{b.port}" for b in md.brokers.values()}


def test_external_clients_see_external_addresses_and_reach_every_leader(
        cluster_factory, topic_name):
    ports: dict[int, int] = {}
    brokers = cluster_factory(3, args=external_args(ports))
    external = {i: f"{EXTERNAL_HOST}:{p}" for i, p in ports.items()}
    internal = {b.node_id: b.bootstrap for b in brokers}

    for b in brokers:
        assert advertised(b.bootstrap) == internal
        assert advertised(external[b.node_id]) == external

    leaders = create_replicated(brokers, topic_name, 6)
    assert {leader for leader, _, _ in leaders.values()} == {1, 2, 3}, leaders

    ext_bootstrap = external[1]
    values = [f"v{i}".encode() for i in range(300)]
    acked, errors = produce_acked(ext_bootstrap, topic_name, values)
    assert not errors and sorted(acked) == sorted(values)

    got = confluent_read_all(ext_bootstrap, topic_name)
    assert sorted(r.value for r in got) == sorted(values)

    # A group consumer: FindCoordinator on the external listener names an external address.
    c = Consumer({"bootstrap.servers": ext_bootstrap, "group.id": f"g-{topic_name}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    try:
        c.subscribe([topic_name])
        seen = []
        deadline = time.monotonic() + 60
        while len(seen) < len(values) and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and not m.error():
                seen.append(m.value())
        assert sorted(seen) == sorted(values)
        committed = c.commit(asynchronous=False)
        # Partitions that held no record have no position (OFFSET_INVALID) to commit.
        assert not [tp for tp in committed if tp.error], committed
        assert sum(tp.offset for tp in committed if tp.offset >= 0) == len(values)
    finally:
        c.close()


def test_an_external_address_without_an_external_listener_is_refused(tmp_path):
    r = subprocess.run(
        [str(broker_bin()), "--data-dir", str(tmp_path / "data"),
         "--kafka-addr", f"127.0.0.1:{free_port()}",
         "--advertised-external-kafka-addr", "example.com:31090"],
        capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert "--advertised-external-kafka-addr needs --external-kafka-addr" in r.stderr + r.stdout
