"""Shared helpers for the e2e tests (importable because pytest puts tests/e2e on sys.path)."""

from __future__ import annotations

import random
import re
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]


def http_get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    """GET url; returns (status, body). Connection errors raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def unique_topic(hint: str = "t") -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", hint).strip("-._")[:60] or "t"
    return f"{base}-{uuid.uuid4().hex[:8]}"


def admin(bootstrap: str, **extra) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, **extra})


def create_topic(bootstrap: str, name: str, partitions: int, timeout: float = 30) -> None:
    """Create a topic and wait until metadata shows all partitions with a leader."""
    a = admin(bootstrap)
    fut = a.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)],
                          request_timeout=timeout, operation_timeout=timeout)[name]
    fut.result(timeout=timeout)
    wait_for_partitions(a, name, partitions, timeout)
    # and every partition leader answers ListOffsets (partition loaded, not just in metadata)
    watermarks(bootstrap, name)


def wait_for_partitions(a: AdminClient, name: str, partitions: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        md = a.list_topics(topic=name, timeout=10)
        t = md.topics.get(name)
        if t is not None and t.error is None and len(t.partitions) == partitions and all(
            p.leader >= 0 and p.error is None for p in t.partitions.values()
        ):
            return
        last = t
        time.sleep(0.2)
    raise AssertionError(f"topic {name} did not get {partitions} partitions with leaders: {last!r}")


def topic_partitions(bootstrap: str, topic: str, timeout: float = 10) -> list[int]:
    md = admin(bootstrap).list_topics(topic=topic, timeout=timeout)
    t = md.topics[topic]
    if t.error is not None:
        raise KafkaException(t.error)
    return sorted(t.partitions)


# errors a healthy broker may answer for a moment (e.g. right after a restart)
TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
}


def retry_transient(fn, timeout: float = 30):
    """Call fn(), retrying KafkaExceptions with a transient error code until timeout."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except KafkaException as e:
            if e.args[0].code() not in TRANSIENT or time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def watermarks(bootstrap: str, topic: str, timeout: float = 10) -> dict[int, tuple[int, int]]:
    """{partition: (low, high)} for every partition of the topic."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "wm-" + uuid.uuid4().hex,
                  "enable.auto.commit": False})
    try:
        parts = retry_transient(lambda: topic_partitions(bootstrap, topic, timeout))
        return {p: retry_transient(lambda p=p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout))
                for p in parts}
    finally:
        c.close()


@dataclass
class Rec:
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    partition: int = -1
    offset: int = -1


def make_records(n: int, tag: str, seed: int = 1) -> list[Rec]:
    """Deterministic mix: compressible text, random bytes, empty values, null keys,
    headers on some records and one large (~200 KB) compressible value."""
    rnd = random.Random(seed)
    recs = []
    for i in range(n):
        prefix = f"{tag}-{i:06d}|".encode()
        kind = i % 4
        if kind == 0:
            body = (b"the quick brown fox jumps over the lazy dog " * rnd.randint(0, 40))
        elif kind == 1:
            body = rnd.randbytes(rnd.randint(0, 300))
        elif kind == 2:
            body = str(i).encode() * rnd.randint(1, 50)
        else:
            body = b""
        value = prefix + body
        if i == 7:
            value = b""  # empty (not null) value
        if i == n // 2:
            value = prefix + (b"0123456789abcdef" * 12800)  # ~200 KB
        key = None if i % 5 == 0 else f"k{i % 17}".encode()
        headers = [("idx", str(i).encode()), ("bin", bytes([i % 256, 0, 255]))] if i % 10 == 3 else []
        recs.append(Rec(key, value, headers))
    return recs


def confluent_produce(bootstrap: str, topic: str, recs: list[Rec], conf: dict | None = None,
                      flush_timeout: float = 60) -> list[Rec]:
    """Produce recs; fills in partition/offset from delivery reports. Raises on any error."""
    errors = []
    p = Producer({"bootstrap.servers": bootstrap, **(conf or {})})

    def cb_for(r: Rec):
        def cb(err, msg):
            if err is not None:
                errors.append(err)
            else:
                r.partition, r.offset = msg.partition(), msg.offset()
        return cb

    for r in recs:
        while True:
            try:
                p.produce(topic, value=r.value, key=r.key, headers=r.headers or None,
                          on_delivery=cb_for(r))
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    remaining = p.flush(flush_timeout)
    assert remaining == 0, f"{remaining} messages still undelivered after {flush_timeout}s"
    assert not errors, f"delivery errors: {errors[:5]} (total {len(errors)})"
    return recs


def confluent_read_all(bootstrap: str, topic: str, timeout: float = 60,
                       expected: int | None = None, conf: dict | None = None) -> list[Rec]:
    """Read every partition of topic from the beginning up to its current high watermark
    (or until `expected` records are read, whichever is later). Returns records
    sorted by (partition, offset). `conf` adds consumer settings (e.g. client.rack)."""
    wm = watermarks(bootstrap, topic)
    c = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "reader-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": True,
        **(conf or {}),
    })
    out: list[Rec] = []
    try:
        c.assign([TopicPartition(topic, p, 0 if lo <= 0 else lo) for p, (lo, hi) in wm.items()])
        pos = {p: lo for p, (lo, hi) in wm.items()}
        deadline = time.monotonic() + timeout

        def done() -> bool:
            caught_up = all(pos[p] >= hi for p, (lo, hi) in wm.items())
            return caught_up and (expected is None or len(out) >= expected)

        while not done() and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            out.append(Rec(msg.key(), msg.value(), list(msg.headers() or []),
                           msg.partition(), msg.offset()))
            pos[msg.partition()] = msg.offset() + 1
    finally:
        c.close()
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


def kafka_python_read_all(bootstrap: str, topic: str, timeout: float = 60) -> list[Rec]:
    """Same as confluent_read_all, with kafka-python."""
    from kafka import KafkaConsumer
    from kafka import TopicPartition as KTP

    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=30000)
    out: list[Rec] = []
    try:
        parts = c.partitions_for_topic(topic)
        deadline = time.monotonic() + timeout
        while not parts and time.monotonic() < deadline:
            time.sleep(0.2)
            parts = c.partitions_for_topic(topic)
        assert parts, f"kafka-python sees no partitions for {topic}"
        tps = [KTP(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps, timeout_ms=10000)
        while time.monotonic() < deadline:
            if all(c.position(tp) >= ends[tp] for tp in tps):
                break
            for tp, msgs in c.poll(timeout_ms=500).items():
                for m in msgs:
                    out.append(Rec(m.key, m.value, [(k, v) for k, v in (m.headers or [])],
                                   m.partition, m.offset))
    finally:
        c.close()
    out.sort(key=lambda r: (r.partition, r.offset))
    return out


def norm_headers(h) -> list[tuple[str, bytes]]:
    return [(k, bytes(v) if v is not None else None) for k, v in (h or [])]


def assert_same_records(sent: list[Rec], got: list[Rec], check_headers: bool = True) -> None:
    """Every sent record is found at its acked (partition, offset) with the same content,
    and nothing else is in the log."""
    by_pos = {(r.partition, r.offset): r for r in got}
    assert len(by_pos) == len(got), "duplicate (partition, offset) in fetched records"
    missing, wrong = [], []
    for r in sent:
        g = by_pos.get((r.partition, r.offset))
        if g is None:
            missing.append((r.partition, r.offset))
            continue
        if g.value != r.value or g.key != r.key or (
            check_headers and norm_headers(g.headers) != norm_headers(r.headers)
        ):
            wrong.append({"at": (r.partition, r.offset),
                          "sent": (r.key, (r.value or b"")[:40], len(r.value or b""), norm_headers(r.headers)),
                          "got": (g.key, (g.value or b"")[:40], len(g.value or b""), norm_headers(g.headers))})
    assert not missing, f"{len(missing)} of {len(sent)} acked records missing, e.g. {missing[:10]}"
    assert not wrong, f"{len(wrong)} records differ, e.g. {wrong[:3]}"
    assert len(got) == len(sent), f"log has {len(got)} records, produced {len(sent)}"


def admin_stub(broker, admin_pb):
    """An Admin gRPC stub for the broker's --cluster-addr (admin_pb: the conftest fixture)."""
    import grpc

    _, stubs = admin_pb
    channel = grpc.insecure_channel(broker.admin_addr)
    grpc.channel_ready_future(channel).result(timeout=10)
    return stubs.AdminStub(channel)


def subscribe_and_wait(c, topic: str, timeout: float = 30) -> None:
    """Subscribes a group consumer and polls until the group assigned it partitions.
    Records polled while waiting are dropped: call it before the records that matter
    are produced."""
    c.subscribe([topic])
    deadline = time.monotonic() + timeout
    while not c.assignment() and time.monotonic() < deadline:
        c.poll(0.2)
    assert c.assignment(), f"no partitions of {topic} assigned within {timeout:.0f}s"
