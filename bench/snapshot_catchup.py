#!/usr/bin/env python3
"""How long a new replica takes to catch up a large partition by Raft snapshot.

Three brokers on loopback; a one-partition topic with two replicas holds BENCH_SNAPSHOT_MIB
MiB (default 1024) of 16 KiB records behind a log start that retention moved, so that its
leader's Raft log no longer starts at index 1 and a new replica can only catch up from a
snapshot. The follower replica is then decommissioned: its replacement, the third broker,
receives the partition as a snapshot streamed in chunks, installs it, and joins the
in-sync set. Prints the time from Decommission to DecommissionStatus done, the snapshot's
bytes (the leader's metrics), the replicas and in-sync set after, and the machine.

    CHRONIK_BROKER_BIN=target/release/chronik-broker python3 bench/snapshot_catchup.py
"""

import os
import sys
import tempfile
import time
from pathlib import Path

# Brokers are started with fork + exec while gRPC channels (the admin API's) have threads
# running; gRPC's fork handlers can then deadlock the fork itself (grpc/grpc#13873, #17986:
# a CI run hung in Popen). A child that execs at once needs none of them. Read when grpc
# is first imported, so set before any import that may bring it in.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import grpc
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec
from local_cluster import data_mib, machine, running  # (puts tests/e2e on the import path)

from conftest import PROTO_ROOT  # noqa: E402
from kafkautil import http_get  # noqa: E402

MIB = int(os.environ.get("BENCH_SNAPSHOT_MIB", "1024"))
RECORD = 16 * 1024
TOPIC = "catchup"


def log(msg: str) -> None:
    print(f"snapshot-catchup: {msg}", file=sys.stderr, flush=True)


def metric(broker, name: str) -> float:
    _, text = http_get(broker.metrics_url + "/metrics")
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name + " ") or line.startswith(name + "{"))


def admin_stub(broker):
    from grpc_tools import protoc
    out = Path(tempfile.mkdtemp(prefix="admin_pb"))
    assert protoc.main(["protoc", f"-I{PROTO_ROOT}", f"--python_out={out}",
                        f"--grpc_python_out={out}", "chronik/admin/v1/admin.proto"]) == 0
    sys.path.insert(0, str(out))
    from chronik.admin.v1 import admin_pb2, admin_pb2_grpc
    channel = grpc.insecure_channel(broker.admin_addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    return admin_pb2, admin_pb2_grpc.AdminStub(channel)


def partition(boot: str):
    md = AdminClient({"bootstrap.servers": boot}).list_topics(topic=TOPIC, timeout=10)
    p = md.topics[TOPIC].partitions[0]
    return p.leader, sorted(p.replicas), sorted(p.isrs)


def offsets(boot: str) -> tuple[int, int]:
    """The partition's log start and high watermark (ListOffsets: no consumer group, so no
    `__consumer_offsets` replicas that the decommission would have to move too)."""
    a = AdminClient({"bootstrap.servers": boot})
    tp = TopicPartition(TOPIC, 0)
    lo = a.list_offsets({tp: OffsetSpec.earliest()})[tp].result(30).offset
    hi = a.list_offsets({tp: OffsetSpec.latest()})[tp].result(30).offset
    return lo, hi


def wait(what, fn, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.2)
    raise SystemExit(f"snapshot-catchup: timed out waiting for {what}")


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="chronik-snapshot-bench-"))
    with running(work, 3, {"retention_check_interval_ms": 500}) as brokers:
        boot = ",".join(b.bootstrap for b in brokers)
        admin = AdminClient({"bootstrap.servers": boot})
        admin.create_topics([NewTopic(TOPIC, 1, 2, config={"retention.ms": "600000"})])[TOPIC].result(30)
        wait("the topic's replicas", lambda: (lambda p: p[0] > 0 and len(p[2]) == 2)(partition(boot)), 30)

        log(f"producing {MIB} MiB of {RECORD // 1024} KiB records (one hour-old batch first)")
        p = Producer({"bootstrap.servers": boot, "acks": "all", "enable.idempotence": True,
                      "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "none"})
        p.produce(TOPIC, b"old", partition=0, timestamp=int(time.time() * 1000) - 3_600_000)
        p.flush(30)
        value = os.urandom(RECORD)
        started = time.monotonic()
        for _ in range(MIB * 1024 * 1024 // RECORD):
            while True:
                try:
                    p.produce(TOPIC, value, partition=0)
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
        assert p.flush(300) == 0
        log(f"produced in {time.monotonic() - started:.1f} s")
        wait("retention to move the log start", lambda: offsets(boot)[0] > 0, 60)
        lo, hi = offsets(boot)

        leader, replicas, _ = partition(boot)
        leaving = next(r for r in replicas if r != leader)
        newcomer = next(b for b in brokers if b.node_id not in replicas)
        leader_b = next(b for b in brokers if b.node_id == leader)
        pb, api = admin_stub(leader_b)
        sent_before = metric(leader_b, "chronik_raft_snapshot_bytes_sent_total")
        log(f"partition on {replicas} (leader {leader}), offsets {lo}..{hi}: decommissioning {leaving}, "
            f"broker {newcomer.node_id} takes its replica")
        t0 = time.monotonic()
        api.Decommission(pb.DecommissionRequest(node_id=leaving), timeout=30)
        wait("the decommission", lambda: api.DecommissionStatus(
            pb.DecommissionStatusRequest(node_id=leaving), timeout=10).done, 1800)
        caught_up = time.monotonic() - t0
        snap_bytes = metric(leader_b, "chronik_raft_snapshot_bytes_sent_total") - sent_before
        installed = metric(newcomer, "chronik_raft_snapshots_received_total")
        _, replicas_after, isr_after = wait("Metadata to show the new replica in sync", lambda: (
            lambda p: p if newcomer.node_id in p[2] and leaving not in p[1] else None)(partition(boot)), 30)
        print(f"partition of {MIB} MiB ({hi - lo} records of {RECORD} B, log start {lo}):")
        print(f"  new replica caught up by snapshot and in sync after {caught_up:.1f} s "
              f"({MIB / caught_up:.0f} MiB/s), Decommission to DecommissionStatus done")
        print(f"  snapshot bytes sent by the leader: {snap_bytes / 2**20:.0f} MiB; snapshots installed "
              f"on broker {newcomer.node_id}: {installed:.0f}; its data dir: {data_mib(newcomer):.0f} MiB")
        print(f"  replicas now {replicas_after}, in sync {isr_after}")
        print("  " + machine())


if __name__ == "__main__":
    main()
