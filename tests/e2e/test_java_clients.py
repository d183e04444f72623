"""Apache Kafka's own Java client and tools against the broker.

Jars come from tests/java/fetch-jars.sh (Maven, cached under ~/.cache/chronik/jars)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from kafkautil import create_topic, watermarks

pytestmark = pytest.mark.java

REPO = Path(__file__).resolve().parents[2]
JAVA_DIR = REPO / "tests" / "java"


def java_bin() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if not found:
        if os.environ.get("CI"):
            pytest.fail("java not found (run .ci/install-deps.sh)")
        pytest.skip("java not installed")
    return found


@pytest.fixture(scope="session")
def kafka_jars() -> str:
    """Directory with kafka-clients, kafka-tools and their dependencies (idempotent fetch)."""
    java_bin()
    proc = subprocess.run(["bash", str(JAVA_DIR / "fetch-jars.sh")], capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        pytest.fail(f"tests/java/fetch-jars.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    jars = proc.stdout.strip().splitlines()[-1]
    assert list(Path(jars).glob("kafka-clients-*.jar")), f"no kafka-clients jar in {jars}"
    return jars


def java_cmd(jars: str, *args: str) -> list[str]:
    return [java_bin(), "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp", f"{jars}/*", *args]


class JsonLinesProc:
    """A java tool whose stdout is JSON lines, read on a thread; stderr goes to a file."""

    def __init__(self, cmd: list[str], stderr_path: Path):
        self.events: list[dict] = []
        self.other: list[str] = []
        self.stderr_path = stderr_path
        self._err = open(stderr_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for raw in self.proc.stdout:
            line = raw.decode("utf-8", "replace").strip()
            if not line:
                continue
            try:
                self.events.append(json.loads(line))
            except json.JSONDecodeError:
                self.other.append(line)

    def named(self, name: str) -> list[dict]:
        return [e for e in list(self.events) if e.get("name") == name]

    def wait_for(self, cond, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            if self.proc.poll() is not None:
                self._t.join(5)
                if cond():
                    return
                raise AssertionError(f"{what}: process exited with {self.proc.returncode}; stderr:\n{self.stderr_tail()}")
            time.sleep(0.1)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}; stderr:\n{self.stderr_tail()}")

    def wait_exit(self, timeout: float) -> int | None:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._t.join(10)
        return self.proc.returncode

    def stop(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        self._t.join(5)
        self._err.close()

    def stderr_tail(self, n: int = 4000) -> str:
        self._err.flush()
        try:
            return self.stderr_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""


@pytest.mark.timeout(320)
def test_java_client_all_codecs(broker, kafka_jars, tmp_path):
    """Default Java producer (acks=all, idempotent) x each compression type, then a
    consumer group reads everything back (tests/java/ClientCheck.java)."""
    prefix = "java-cc-" + uuid.uuid4().hex[:8]
    cmd = java_cmd(kafka_jars, str(JAVA_DIR / "ClientCheck.java"), broker.bootstrap, prefix, "1000")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    out = proc.stdout + "\n--- stderr ---\n" + proc.stderr[-4000:]
    assert proc.returncode == 0, f"ClientCheck failed ({proc.returncode}):\n{out}"
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        assert f"OK {codec} 1000 records" in proc.stdout, out
    # independent check from Python: high watermarks add up to 1000 per topic
    for codec in ("none", "gzip", "snappy", "lz4", "zstd"):
        wm = watermarks(broker.bootstrap, f"{prefix}-{codec}")
        assert sum(hi - lo for lo, hi in wm.values()) == 1000, (codec, wm)


@pytest.mark.timeout(480)
def test_verifiable_producer_survives_kill9(restartable_broker, kafka_jars, tmp_path, topic_name):
    """VerifiableProducer (idempotent, acks=-1) keeps producing while the broker is
    SIGKILLed and restarted; then VerifiableConsumer reads the topic: every acked value
    is present, at its acked offset, and no value is duplicated."""
    b = restartable_broker
    max_messages, throughput, kill_after = 6000, 1000, 1500
    create_topic(b.bootstrap, topic_name, 3)
    props = tmp_path / "producer.properties"
    props.write_text("enable.idempotence=true\n"
                     "retries=2147483647\n"  # VerifiableProducer sets retries=0 unless told otherwise
                     "max.in.flight.requests.per.connection=5\n"
                     "delivery.timeout.ms=120000\n"
                     "reconnect.backoff.max.ms=1000\n")
    producer = JsonLinesProc(java_cmd(
        kafka_jars, "org.apache.kafka.tools.VerifiableProducer",
        "--bootstrap-server", b.bootstrap, "--topic", topic_name,
        "--max-messages", str(max_messages), "--throughput", str(throughput),
        "--acks", "-1", "--producer.config", str(props),
    ), tmp_path / "producer.stderr")
    try:
        producer.wait_for(lambda: len(producer.named("producer_send_success")) >= kill_after, 90,
                          f"{kill_after} acks before the kill")
        b.kill9()
        time.sleep(1.0)
        b.restart()
        code = producer.wait_exit(180)
        assert code is not None, "VerifiableProducer did not finish within 180s:\n" + producer.stderr_tail()
        assert code == 0, f"VerifiableProducer exited {code}:\n{producer.stderr_tail()}"
    finally:
        producer.stop()

    acked = producer.named("producer_send_success")
    failed = producer.named("producer_send_error")
    tool = producer.named("tool_data")
    assert tool and tool[-1]["sent"] == max_messages, tool
    assert len(acked) + len(failed) == max_messages, (len(acked), len(failed))
    assert len(acked) > kill_after
    assert len({(e["partition"], e["offset"]) for e in acked}) == len(acked), "two acks for one offset"

    total = sum(hi - lo for lo, hi in watermarks(b.bootstrap, topic_name).values())
    assert total >= len(acked), f"log holds {total} records, {len(acked)} were acked"
    consumer = JsonLinesProc(java_cmd(
        kafka_jars, "org.apache.kafka.tools.VerifiableConsumer",
        "--bootstrap-server", b.bootstrap, "--topic", topic_name,
        "--group-id", "vc-" + uuid.uuid4().hex[:8], "--max-messages", str(total),
        "--reset-policy", "earliest", "--verbose",
    ), tmp_path / "consumer.stderr")
    try:
        consumer.wait_for(lambda: len(consumer.named("record_data")) >= total, 120,
                          f"VerifiableConsumer to read {total} records")
        consumer.wait_exit(30)
    finally:
        consumer.stop()

    records = consumer.named("record_data")
    at = {(r["partition"], r["offset"]): r["value"] for r in records}
    values = [r["value"] for r in records]
    dups = sorted((v for v, n in Counter(values).items() if n > 1), key=int)
    assert not dups, f"{len(dups)} values duplicated in the log (idempotence broken?), e.g. {dups[:10]}"
    missing = [e["value"] for e in acked if e["value"] not in set(values)]
    assert not missing, f"{len(missing)} acked values not consumed, e.g. {missing[:10]}"
    moved = [(e["partition"], e["offset"], e["value"], at.get((e["partition"], e["offset"])))
             for e in acked if at.get((e["partition"], e["offset"])) != e["value"]]
    assert not moved, f"{len(moved)} acked values not at their acked offset, e.g. {moved[:5]}"
    assert set(values) <= {str(i) for i in range(max_messages)}, "log contains values nobody produced"
