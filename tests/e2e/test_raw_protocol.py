"""Hostile bytes on a raw socket must not hang or kill the broker, and must not affect
other clients: afterwards a normal client still produces and consumes."""

import random
import socket
import struct
import time

import pytest
from kafkautil import confluent_produce, confluent_read_all, make_records

API_VERSIONS = 18
UNSUPPORTED_VERSION = 35
PEER_TIMEOUT = 10


def host_port(bootstrap):
    host, _, port = bootstrap.rpartition(":")
    return host, int(port)


def connect(broker) -> socket.socket:
    s = socket.create_connection(host_port(broker.bootstrap), timeout=PEER_TIMEOUT)
    s.settimeout(PEER_TIMEOUT)
    return s


def request_header_v1(api_key: int, api_version: int, correlation_id: int, client_id: bytes = b"e2e-raw") -> bytes:
    return struct.pack(">hhih", api_key, api_version, correlation_id, len(client_id)) + client_id


def frame(payload: bytes) -> bytes:
    return struct.pack(">i", len(payload)) + payload


def read_response_or_close(s: socket.socket, timeout: float = PEER_TIMEOUT):
    """Returns ("closed", bytes_before_close) or ("frame", payload). Fails if neither
    happens within timeout (that would be a hang)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return "closed", buf
        except socket.timeout:
            break
        if not chunk:
            return "closed", buf
        buf += chunk
        if len(buf) >= 4:
            (size,) = struct.unpack(">i", buf[:4])
            if 0 <= size <= len(buf) - 4:
                return "frame", buf[4:4 + size]
    pytest.fail(f"broker neither answered nor closed the connection within {timeout}s (got {buf[:64]!r})")


def parse_api_versions_v0(payload: bytes):
    corr, err, n = struct.unpack(">ihi", payload[:10])
    apis, off = {}, 10
    for _ in range(max(n, 0)):
        key, lo, hi = struct.unpack(">hhh", payload[off:off + 6])
        apis[key] = (lo, hi)
        off += 6
    return corr, err, apis


def assert_broker_alive_and_serving(broker, topic):
    if broker.proc is not None:
        assert broker.proc.poll() is None, f"broker process exited with {broker.proc.returncode}"
    sent = confluent_produce(broker.bootstrap, topic, make_records(20, "after-garbage"))
    got = {(r.partition, r.offset): r.value for r in confluent_read_all(broker.bootstrap, topic)}
    assert [got.get((r.partition, r.offset)) for r in sent] == [r.value for r in sent]


def test_api_versions_raw(broker):
    """Sanity check of the framing used below: ApiVersions v0 answers with the core APIs."""
    with connect(broker) as s:
        s.sendall(frame(request_header_v1(API_VERSIONS, 0, 7)))
        kind, payload = read_response_or_close(s)
    assert kind == "frame", "broker closed the connection on a valid ApiVersions v0 request"
    corr, err, apis = parse_api_versions_v0(payload)
    assert corr == 7 and err == 0
    for key in (0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 18, 19, 20):  # produce..apiversions, create/delete topics
        assert key in apis, f"api key {key} missing from ApiVersions: {sorted(apis)}"
        lo, hi = apis[key]
        assert 0 <= lo <= hi


def test_api_versions_unsupported_version(broker):
    """A too-new ApiVersions request gets UNSUPPORTED_VERSION in a v0 response (clients
    rely on this to downgrade), not a dropped connection."""
    with connect(broker) as s:
        s.sendall(frame(request_header_v1(API_VERSIONS, 999, 8) + b"\x00"))
        kind, payload = read_response_or_close(s)
    assert kind == "frame", "connection closed instead of UNSUPPORTED_VERSION response"
    corr, err, apis = parse_api_versions_v0(payload)
    assert corr == 8 and err == UNSUPPORTED_VERSION
    assert API_VERSIONS in apis


def test_garbage_and_truncated_frames(broker, topic_name):
    rnd = random.Random(1234)

    # 1. random bytes on many connections (broker may wait for more data, or close)
    for i in range(20):
        with connect(broker) as s:
            s.sendall(rnd.randbytes(rnd.choice([1, 3, 4, 7, 64, 1000, 8192])))
            time.sleep(0.01)

    # 2. a 2 GB length prefix: must be refused (connection closed), not allocated
    for size_prefix in (struct.pack(">I", 0x7FFFFFFF), struct.pack(">I", 0x80000000), struct.pack(">I", 0xFFFFFFFF)):
        with connect(broker) as s:
            s.sendall(size_prefix + b"\x00\x12\x00\x00")
            kind, _ = read_response_or_close(s)
            assert kind == "closed", f"length prefix {size_prefix.hex()} was not refused"

    # 3. a valid-looking header with an unknown api key: error response or close, no hang
    for api_key in (1000, 32767, -1):
        with connect(broker) as s:
            s.sendall(frame(request_header_v1(api_key, 0, 4242) + b"\x00" * 16))
            kind, payload = read_response_or_close(s)
            if kind == "frame":
                assert struct.unpack(">i", payload[:4])[0] == 4242

    # 4. undecodable body after a valid Produce / Metadata / Fetch header (0xff.. is a
    #    malformed varint / negative length everywhere): error response or close, no hang
    for api_key, version in ((0, 9), (3, 12), (1, 13), (0, 3), (3, 1)):
        with connect(broker) as s:
            s.sendall(frame(request_header_v1(api_key, version, 99) + b"\xff" * 64))
            read_response_or_close(s)

    # 4b. arrays declaring billions of elements in a few bytes (found by `make fuzz`: the
    #     decoder used to ask for 106 GB and the broker aborted): refused like any bad body
    huge_arrays = (
        bytes([0, 3, 0, 0, 255, 44, 0, 13, 0, 0, 88, 0, 0, 0, 0, 7, 0]),  # Metadata v0, 1.47e9 topics
        request_header_v1(3, 4, 11) + struct.pack(">i", 0x7FFFFFF0) + b"\x00",  # Metadata v4
        request_header_v1(19, 2, 12) + struct.pack(">i", 0x40000000),  # CreateTopics v2
    )
    for payload in huge_arrays:
        with connect(broker) as s:
            s.sendall(frame(payload))
            kind, _ = read_response_or_close(s)
            assert kind == "closed", f"{payload.hex()} was answered"
    assert_broker_alive_and_serving(broker, topic_name + "-arrays")

    # 5. truncated frames, then close from our side
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 100) + b"\x00" * 10)
    with connect(broker) as s:
        s.sendall(struct.pack(">i", 1000) + request_header_v1(0, 9, 5) + b"\x00\x01")
    with connect(broker) as s:
        s.sendall(b"\x00\x00")  # half a length prefix
    with connect(broker) as s:
        s.sendall(frame(b""))  # zero-length frame

    # 6. a connection that stays open with half a frame must not block other clients
    idle = connect(broker)
    try:
        idle.sendall(struct.pack(">i", 64) + b"\x00\x03")
        assert_broker_alive_and_serving(broker, topic_name)
    finally:
        idle.close()

    # and a well-formed request on a fresh connection still works
    with connect(broker) as s:
        s.sendall(frame(request_header_v1(API_VERSIONS, 0, 77)))
        kind, payload = read_response_or_close(s)
    assert kind == "frame" and parse_api_versions_v0(payload)[:2] == (77, 0)
    assert_broker_alive_and_serving(broker, topic_name + "-2")


OFFSET_FOR_LEADER_EPOCH = 23
FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH = 74, 75


def offset_for_leader_epoch(broker, topic, leader_epoch, current_leader_epoch=-1):
    """One OffsetForLeaderEpoch v2 for partition 0: (error code, epoch, end offset)."""
    name = topic.encode()
    body = struct.pack(">ih", 1, len(name)) + name + struct.pack(
        ">iiii", 1, 0, current_leader_epoch, leader_epoch)
    with connect(broker) as s:
        s.sendall(frame(request_header_v1(OFFSET_FOR_LEADER_EPOCH, 2, 7) + body))
        kind, payload = read_response_or_close(s)
    assert kind == "frame", "the broker closed the connection"
    corr, _throttle, topics, tlen = struct.unpack(">iiih", payload[:14])
    assert (corr, topics) == (7, 1)
    rest = payload[14 + tlen:]
    parts, err, partition, epoch, end = struct.unpack(">ihiiq", rest[:22])
    assert (parts, partition) == (1, 0)
    return err, epoch, end


def test_offset_for_leader_epoch_answers_as_kafkas_epoch_cache(broker, topic_name):
    from confluent_kafka import Consumer, TopicPartition

    confluent_produce(broker.bootstrap, topic_name, make_records(3, "epoch"))
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "epochs"})
    c.assign([TopicPartition(topic_name, 0, 0)])
    msg = None
    deadline = time.monotonic() + 20
    while (msg is None or msg.error()) and time.monotonic() < deadline:
        msg = c.poll(0.5)
    c.close()
    current = msg.leader_epoch()
    assert current is not None and current >= 0

    # The current epoch ends where the log does.
    assert offset_for_leader_epoch(broker, topic_name, current) == (0, current, 3)
    # An epoch the leader has not reached is unknown.
    assert offset_for_leader_epoch(broker, topic_name, current + 5) == (0, -1, -1)
    # A client that knows a newer or older current epoch than the broker is told so.
    err, *_ = offset_for_leader_epoch(broker, topic_name, current, current + 1)
    assert err == UNKNOWN_LEADER_EPOCH
    if current > 0:
        err, *_ = offset_for_leader_epoch(broker, topic_name, current, current - 1)
        assert err == FENCED_LEADER_EPOCH
        # An epoch before every epoch with data ends where the first of them starts.
        assert offset_for_leader_epoch(broker, topic_name, 0) == (0, 0, 0)


def test_a_request_in_a_version_not_served_is_logged_by_api_and_version(chronik_broker):
    """kafka-go sends CreatePartitions v0 without asking ApiVersions: the broker closes
    the connection (the version's layout is unknown to it) and says why in its log."""
    create_partitions = 37
    with connect(chronik_broker) as s:
        s.sendall(frame(request_header_v1(create_partitions, 0, 1) + b"\x00" * 16))
        kind, _ = read_response_or_close(s)
    assert kind == "closed"
    deadline = time.monotonic() + 5
    while "CreatePartitions v0 is not supported" not in chronik_broker.log_tail():
        assert time.monotonic() < deadline, chronik_broker.log_tail()[-2000:]
        time.sleep(0.1)
