"""Chronik's HTTP endpoints and Prometheus metrics (skipped against an external broker)."""

import math
import re
import time

from confluent_kafka import Producer
from kafkautil import confluent_read_all, create_topic, http_get

_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str):
    """Returns (samples, types): samples = list of (name, {label: value}, float)."""
    samples, types = [], {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 4 and parts[1] == "TYPE":
                types[parts[2]] = parts[3].strip()
            continue
        m = _LINE.match(line)
        assert m, f"unparseable metrics line: {raw!r}"
        name, labels, value = m.group(1), m.group(2) or "", m.group(3)
        samples.append((name, dict(_LABEL.findall(labels)), float(value)))
    return samples, types


def scrape(broker):
    status, body = http_get(broker.metrics_url + "/metrics", timeout=10)
    assert status == 200, f"/metrics answered {status}"
    return parse_prometheus(body)


def total(samples, name, **labels) -> float:
    return sum(v for n, lab, v in samples if n == name and all(lab.get(k) == w for k, w in labels.items()))


def has(samples, name, **labels) -> bool:
    return any(n == name and all(lab.get(k) == w for k, w in labels.items()) for n, lab, _ in samples)


def check_histogram(samples, name, **labels):
    """Buckets cumulative and monotonic, +Inf bucket == _count, _sum present."""
    buckets = sorted(
        ((float(lab["le"]) if lab["le"] not in ("+Inf", "Inf") else math.inf), v)
        for n, lab, v in samples
        if n == name + "_bucket" and all(lab.get(k) == w for k, w in labels.items())
    )
    assert buckets, f"no {name}_bucket samples for {labels}"
    counts = [v for _, v in buckets]
    assert counts == sorted(counts), f"{name} buckets not cumulative: {buckets}"
    assert buckets[-1][0] == math.inf, f"{name} has no +Inf bucket"
    count = total(samples, name + "_count", **labels)
    assert buckets[-1][1] == count, f"{name}: +Inf bucket {buckets[-1][1]} != _count {count}"
    assert has(samples, name + "_sum", **labels)
    return count


def test_health_endpoints(chronik_broker):
    for path in ("/healthz", "/readyz"):
        status, _ = http_get(chronik_broker.metrics_url + path)
        assert status == 200, f"{path} answered {status}"
    status, body = http_get(chronik_broker.metrics_url + "/metrics")
    assert status == 200
    samples, types = parse_prometheus(body)
    assert samples, "no samples in /metrics"


def test_produce_fetch_metrics(chronik_broker, topic_name):
    b = chronik_broker
    create_topic(b.bootstrap, topic_name, 3)
    before, _ = scrape(b)

    n, payload_bytes = 50, 0
    p = Producer({"bootstrap.servers": b.bootstrap, "linger.ms": 0, "acks": "all"})
    errors = []
    for i in range(n):
        value = (f"metric-{i}-" + "m" * 1000).encode()
        payload_bytes += len(value)
        p.produce(topic_name, value=value, partition=i % 3,
                  on_delivery=lambda err, msg: err and errors.append(err))
        assert p.flush(10) == 0  # one Produce request per message
    assert not errors, errors
    produce_requests = n

    mid, types = scrape(b)
    d_req = total(mid, "chronik_requests_total", api="Produce") - total(before, "chronik_requests_total", api="Produce")
    assert d_req >= produce_requests, f"Produce request counter grew by {d_req}, made {produce_requests}"
    d_in = total(mid, "chronik_bytes_in_total") - total(before, "chronik_bytes_in_total")
    assert d_in >= payload_bytes, f"bytes-in grew by {d_in}, produced {payload_bytes} payload bytes"

    hist_before = total(before, "chronik_request_duration_seconds_count", api="Produce")
    hist_count = check_histogram(mid, "chronik_request_duration_seconds", api="Produce")
    assert hist_count - hist_before >= produce_requests
    assert types.get("chronik_request_duration_seconds") == "histogram"

    assert total(mid, "chronik_partitions") >= 3
    # a single node leads every partition it hosts, as its Raft groups report
    assert total(mid, "chronik_raft_leader_count") == total(mid, "chronik_partitions")
    assert total(mid, "chronik_log_size_bytes") >= payload_bytes
    assert "chronik_raft_commit_latency_seconds" in types or has(mid, "chronik_raft_commit_latency_seconds_count"), \
        "chronik_raft_commit_latency_seconds histogram missing"
    if has(mid, "chronik_raft_commit_latency_seconds_count"):
        check_histogram(mid, "chronik_raft_commit_latency_seconds")

    got = confluent_read_all(b.bootstrap, topic_name, expected=n)
    assert len(got) == n
    deadline = time.monotonic() + 5
    while True:  # fetch responses may be counted just after they are sent
        after, _ = scrape(b)
        d_out = total(after, "chronik_bytes_out_total") - total(mid, "chronik_bytes_out_total")
        if d_out >= payload_bytes or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert d_out >= payload_bytes, f"bytes-out grew by {d_out}, consumed {payload_bytes} payload bytes"
    assert total(after, "chronik_requests_total", api="Fetch") >= 1
    assert total(after, "chronik_requests_total", api="Metadata") >= 1
