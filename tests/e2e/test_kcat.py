"""kcat (librdkafka CLI): metadata listing, produce with -P, consume with -C -e."""

import json
import shutil
import subprocess

import pytest
from kafkautil import create_topic, watermarks

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed (.ci/install-deps.sh)")

TIMEOUT = 60


def kcat(*args, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["kcat", *args], input=stdin, capture_output=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"kcat {' '.join(args)} exited {proc.returncode}: {proc.stderr.decode()[-2000:]}"
    return proc.stdout


def test_kcat_metadata(broker, topic_name):
    create_topic(broker.bootstrap, topic_name, 2)
    md = json.loads(kcat("-b", broker.bootstrap, "-L", "-J", "-m", "30"))
    names = {b["name"] for b in md["brokers"]}
    assert broker.bootstrap in names, f"advertised brokers {names} do not include {broker.bootstrap}"
    topics = {t["topic"]: t for t in md["topics"]}
    assert topic_name in topics
    parts = topics[topic_name]["partitions"]
    assert sorted(p["partition"] for p in parts) == [0, 1]
    ids = {b["id"] for b in md["brokers"]}
    assert all(p["leader"] in ids for p in parts)

    text = kcat("-b", broker.bootstrap, "-L", "-t", topic_name, "-m", "30").decode()
    assert f'topic "{topic_name}" with 2 partitions' in text, text


@pytest.mark.parametrize("codec", ["none", "lz4"])
def test_kcat_produce_consume(broker, topic_name, codec):
    lines = [f"k{i % 7}:value-{i}-" + "x" * (i % 50) for i in range(200)]
    data = ("\n".join(lines) + "\n").encode()
    kcat("-b", broker.bootstrap, "-t", topic_name, "-P", "-K:", "-z", codec, "-p", "0", stdin=data)

    (lo, hi), = watermarks(broker.bootstrap, topic_name).values()
    assert (lo, hi) == (0, len(lines))

    out = kcat("-b", broker.bootstrap, "-t", topic_name, "-C", "-o", "beginning", "-e", "-q",
               "-f", "%p|%o|%k|%s\\n", "-m", "30").decode()
    got = out.splitlines()
    expected = [f"0|{i}|{line.split(':', 1)[0]}|{line.split(':', 1)[1]}" for i, line in enumerate(lines)]
    assert got == expected

    # JSON envelope output, and -c to stop after N messages
    out = kcat("-b", broker.bootstrap, "-t", topic_name, "-C", "-o", "10", "-c", "5", "-e", "-q", "-J").decode()
    msgs = [json.loads(x) for x in out.splitlines()]
    assert [m["offset"] for m in msgs] == [10, 11, 12, 13, 14]
    assert [m["payload"] for m in msgs] == [lines[i].split(":", 1)[1] for i in range(10, 15)]
