"""Faults inside a broker, injected with fail points (FAILPOINTS, tikv/fail-rs): a log
writer that lags behind the Raft driver, a driver that panics, a driver that stalls; and
a leader frozen with SIGSTOP. Acknowledged records survive, a broker never lives on
without its Raft driver, health probes tell a stalled driver, and Metadata never names a
leader that Raft no longer has. A disk that fills up makes the broker refuse records with
a Kafka error until space returns."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest
from confluent_kafka import Producer
from kafkautil import admin, confluent_read_all, http_get
from test_replication import assert_all_there_once, create_replicated, sigkill_while_producing

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))  # disks.py


def test_sigkill_of_a_leader_whose_log_writer_lags_loses_no_acknowledged_record(
        cluster_factory, topic_name):
    # Every pass of every log writer waits 100 ms first: Readies queue up behind it, the
    # interleaving that once let a leader acknowledge entries it had not written.
    brokers = cluster_factory(3, env={"FAILPOINTS": "raft-log-writer=sleep(100)"})
    view = create_replicated(brokers, topic_name, 3)
    victim = next(b for b in brokers if b.node_id == view[0][0])
    acked, before_kill = sigkill_while_producing(brokers, topic_name, victim, before=3)
    assert before_kill > 100, f"only {before_kill} records acknowledged before the kill"
    assert_all_there_once([b for b in brokers if b is not victim], topic_name, acked)


def wait_exit(b, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b.proc.poll() is not None:
            return b.proc.returncode
        time.sleep(0.1)
    return None


def test_a_panic_in_the_raft_driver_ends_the_broker(broker_process):
    # The driver's loop panics on its 40th round, a few seconds after start.
    b = broker_process(env={"FAILPOINTS": "raft-driver=40*off->panic(injected)"})
    b.launch()
    code = wait_exit(b, 60)
    assert code is not None, "the broker lives on without its Raft driver"
    assert code != 0, "a broker that lost its Raft driver exited with code 0"
    log = b.log_tail()
    assert "injected" in log and "raft-driver" in log and "the broker stops" in log, log[-3000:]


def test_a_stalled_raft_driver_fails_the_health_probes_and_recovers(broker_process):
    # Once the broker is up, one round of the driver's loop takes 8 s.
    b = broker_process(env={"FAILPOINTS": "raft-driver=200*off->1*sleep(8000)->off"})
    b.start()
    status, body = http_get(b.metrics_url + "/healthz")
    assert status == 200, body

    def wait_status(path, want, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = http_get(b.metrics_url + path)
            if status == want:
                return body
            time.sleep(0.1)
        raise AssertionError(f"{path} never answered {want}")

    body = wait_status("/healthz", 503, 60)
    assert "stalled" in body
    status, body = http_get(b.metrics_url + "/readyz")
    assert status == 503 and "stalled" in body, body
    wait_status("/healthz", 200, 15)
    wait_status("/readyz", 200, 15)
    assert b.alive


def leaders(b, topic):
    md = admin(b.bootstrap).list_topics(topic=topic, timeout=10)
    return {p.id: p.leader for p in md.topics[topic].partitions.values()}


def test_a_frozen_leader_is_replaced_quickly_and_not_advertised_after_it_wakes(
        cluster_factory, topic_name):
    brokers = cluster_factory(3)
    view = create_replicated(brokers, topic_name, 6)
    victim = next(b for b in brokers if b.node_id == view[0][0])
    led = [p for p, (leader, _, _) in view.items() if leader == victim.node_id]
    survivors = [b for b in brokers if b is not victim]

    os.kill(victim.pid, signal.SIGSTOP)
    frozen = time.monotonic()
    try:
        deadline = frozen + 15
        while True:
            now = [leaders(b, topic_name) for b in survivors]
            if all(all(v[p] not in (-1, victim.node_id) for p in led) for v in now):
                break
            assert time.monotonic() < deadline, f"no new leaders for {led}: {now}"
            time.sleep(0.05)
        replaced = time.monotonic() - frozen
        print(f"\nleaders of a frozen broker replaced after {replaced:.2f} s")
        assert replaced < 3.0, f"new leaders took {replaced:.2f} s"
        time.sleep(2)
    finally:
        os.kill(victim.pid, signal.SIGCONT)

    # Awake, it learns the new terms and names the same leaders as everyone else;
    # it never goes on advertising itself for partitions it no longer leads.
    deadline = time.monotonic() + 10
    while True:
        views = [leaders(b, topic_name) for b in brokers]
        stale = [p for p in led if views[brokers.index(victim)][p] == victim.node_id]
        if not stale and all(v == views[0] for v in views):
            break
        assert time.monotonic() < deadline, f"views disagree after SIGCONT: {views}"
        time.sleep(0.1)


def metric(b, name):
    status, body = http_get(b.metrics_url + "/metrics")
    assert status == 200
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to loop-mount a small disk")
def test_a_full_disk_refuses_records_with_a_storage_error_and_recovers(
        request, tmp_path, topic_name):
    import disks
    from conftest import ChronikBroker, _register
    from kafka import KafkaProducer
    from kafka.errors import KafkaStorageError

    b = ChronikBroker(tmp_path, config={"storage_min_free_bytes": 64 << 20})
    disk = disks.SmallDisk(tmp_path / "disk.img", b.data_dir, 256)
    _register(request, b)
    request.addfinalizer(disk.unmount)
    request.addfinalizer(b.stop)
    b.start()
    acked, errors = [], []

    def cb(err, msg):
        (errors if err else acked).append(err or msg.value())

    patient = Producer({"bootstrap.servers": b.bootstrap, "enable.idempotence": True,
                        "acks": "all", "message.timeout.ms": 90000})
    for i in range(100):
        patient.produce(topic_name, value=b"before-%03d" % i, on_delivery=cb)
    assert patient.flush(30) == 0 and len(acked) == 100 and not errors

    assert metric(b, "chronik_storage_full") == 0  # exported from the start
    disk.fill(leave=32 << 20)
    deadline = time.monotonic() + 10
    while metric(b, "chronik_storage_full") != 1:
        assert time.monotonic() < deadline, "the broker did not notice its disk is full"
        time.sleep(0.1)
    # A client that does not retry is told why: KAFKA_STORAGE_ERROR.
    impatient = KafkaProducer(bootstrap_servers=b.bootstrap, acks="all", retries=0)
    with pytest.raises(KafkaStorageError):
        impatient.send(topic_name, b"refused").get(timeout=15)
    impatient.close()
    # A retrying producer's records wait for space instead of failing or vanishing.
    for i in range(50):
        patient.produce(topic_name, value=b"during-%03d" % i, on_delivery=cb)
    patient.poll(3)
    assert len(acked) == 100, "records acknowledged while the disk is full"
    assert "disk nearly full" in b.log_tail()

    disk.unfill()
    assert patient.flush(60) == 0, "records still waiting after space returned"
    assert not errors, errors[:3]
    assert len(acked) == 150
    assert metric(b, "chronik_storage_full") == 0
    values = [r.value for r in confluent_read_all(b.bootstrap, topic_name, expected=150)]
    assert values == [b"before-%03d" % i for i in range(100)] + \
        [b"during-%03d" % i for i in range(50)]
    assert b.alive
