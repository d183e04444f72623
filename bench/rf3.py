#!/usr/bin/env python3
"""Three brokers, replication factor 3: what a replicated cluster costs, and failover.

Runs one system (`chronik` or `kafka`) as three brokers on loopback: Chronik with its Raft
quorum (every partition acknowledged once a majority has it on disk), Apache Kafka 4.x as
three KRaft nodes (broker + controller each) with min.insync.replicas=2. On a topic of
BENCH_PARTITIONS partitions, RF 3, with Kafka's own tools and acks=all:
  - a warm-up, then ProducerPerformance unthrottled: throughput, p99, the three brokers'
    CPU per MB produced (summed) and bytes they wrote to storage per byte produced;
  - ConsumerPerformance over the same records: fetch-only MB/s, CPU per MB consumed;
  - ProducerPerformance at BENCH_RF3_FIXED_RATE_MBS (default 5) for BENCH_FIXED_SECONDS:
    p50/p99/p99.9;
  - failover: an idempotent producer at a fixed 500 records/s into a one-partition RF 3
    topic; the partition's leader is SIGKILLed; the time from the kill to the first
    acknowledgement of a record sent after it (necessarily by the new leader); the median
    and the longest of BENCH_FAILOVER_TRIALS (3) trials, the broker restarted in between.
Appends `SYSTEM.rf3_*` and `SYSTEM.failover_s` lines to RESULTS (bench/run.sh's format);
progress goes to stderr.

    python3 bench/rf3.py chronik|kafka RESULTS WORK_DIR
Environment: CHRONIK_BROKER_BIN, JARS (client jars), KAFKA_LIBS (server jars), JAVA,
BENCH_RF3_RECORDS (default 300000), BENCH_FAILOVER_TRIALS (default 3), BENCH_RECORD_SIZE, BENCH_PARTITIONS,
BENCH_RF3_FIXED_RATE_MBS, BENCH_FIXED_SECONDS, BENCH_TOOL_HEAP, BENCH_STEP_TIMEOUT.
"""

import base64
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RECORDS = int(os.environ.get("BENCH_RF3_RECORDS", "300000"))
RECORD_SIZE = int(os.environ.get("BENCH_RECORD_SIZE", "1024"))
PARTITIONS = int(os.environ.get("BENCH_PARTITIONS", "6"))
# (Three brokers of either kind sharing two cores take far less than one: the fixed rate
# must stay below what both sustain.)
FIXED_RATE_MBS = int(os.environ.get("BENCH_RF3_FIXED_RATE_MBS", "5"))
FIXED_SECONDS = int(os.environ.get("BENCH_FIXED_SECONDS", "15"))
TOOL_HEAP = os.environ.get("BENCH_TOOL_HEAP", "-Xms256m -Xmx512m").split()
STEP_TIMEOUT = int(os.environ.get("BENCH_STEP_TIMEOUT", "180"))
JAVA = os.environ.get("JAVA", "java")
CLK_TCK = os.sysconf("SC_CLK_TCK")
FAILOVER_RATE = 500  # records/s


def log(msg: str) -> None:
    now = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    print(f"bench: [rf3 {now}] {msg}", file=sys.stderr, flush=True)


# -- processes -------------------------------------------------------------------------

def cpu_ticks(pids) -> int:
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def proc_sum(pids, file: str, key: str) -> int:
    """The number after `key` in /proc/PID/`file`, summed over `pids`."""
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(key):
                total += int(line.split()[1])
    return total


def write_bytes(pids) -> int:
    """Bytes the processes sent to storage."""
    return proc_sum(pids, "io", "write_bytes:")


def peak_rss_mib(pids) -> float:
    return proc_sum(pids, "status", "VmHWM:") / 1024


class ChronikCluster:
    def __init__(self, work: Path):
        import local_cluster
        subprocess.run(["rm", "-rf", str(work / "chronik-rf3")], check=True)
        self.brokers = local_cluster.start(work / "chronik-rf3", 3)

    @property
    def bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers)

    def pids(self):
        return [b.proc.pid for b in self.brokers]

    def kill9(self, node_id: int) -> None:
        next(b for b in self.brokers if b.node_id == node_id).kill9()

    def restart(self, node_id: int) -> None:
        next(b for b in self.brokers if b.node_id == node_id).start(60)

    def topic_configs(self) -> dict:
        return {}

    def stop(self) -> None:
        for b in self.brokers:
            b.stop()


class KafkaCluster:
    """Three KRaft nodes, each broker and controller, as plain java processes."""

    def __init__(self, work: Path):
        libs = os.environ["KAFKA_LIBS"]
        self.dir = work / "kafka-rf3"
        subprocess.run(["rm", "-rf", str(self.dir)], check=True)
        ports = [(29192 + 10 * i, 29193 + 10 * i) for i in range(3)]
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in enumerate(ports))
        cluster_id = "-"
        while cluster_id.startswith("-"):  # (StorageTool would read it as an option)
            cluster_id = base64.urlsafe_b64encode(os.urandom(16)).decode().rstrip("=")
        self.ports = [p for p, _ in ports]
        self.procs, self.commands = [], []
        for i, (port, cport) in enumerate(ports):
            node = self.dir / f"node{i + 1}"
            (node / "logs").mkdir(parents=True)
            conf = node / "server.properties"
            conf.write_text(f"""process.roles=broker,controller
node.id={i + 1}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={node / 'data'}
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
min.insync.replicas=2
group.initial.rebalance.delay.ms=0
""")
            log4j = node / "log4j2.properties"
            log4j.write_text(f"""status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {node / 'logs' / 'server.log'}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
""")
            java = [JAVA, f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{libs}/*"]
            subprocess.run(java[:1] + ["-Xmx256m"] + java[1:] +
                           ["kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(conf)],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.commands.append(
                java[:1] + ["-Xms256m", "-Xmx1g", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"] + java[1:]
                + ["kafka.Kafka", str(conf)])
            self.procs.append(self.launch(i))
        for i in range(3):
            self.wait_started(i)

    def launch(self, i: int) -> subprocess.Popen:
        node = self.dir / f"node{i + 1}"
        server_log = node / "logs" / "server.log"
        if server_log.exists():  # (readiness is read from it)
            server_log.rename(node / "logs" / f"server.log.{time.monotonic_ns()}")
        return subprocess.Popen(self.commands[i], stdout=open(node / "kafka.out", "a"),
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_started(self, i: int) -> None:
        deadline = time.monotonic() + 120
        server_log = self.dir / f"node{i + 1}" / "logs" / "server.log"
        while not (server_log.exists() and "Kafka Server started" in server_log.read_text()):
            if self.procs[i].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kafka node {i + 1} did not start; see {server_log}")
            time.sleep(0.5)

    def restart(self, node_id: int) -> None:
        self.procs[node_id - 1] = self.launch(node_id - 1)
        self.wait_started(node_id - 1)

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def pids(self):
        return [p.pid for p in self.procs]

    def kill9(self, node_id: int) -> None:
        p = self.procs[node_id - 1]
        p.send_signal(signal.SIGKILL)
        p.wait(30)

    def topic_configs(self) -> dict:
        return {"min.insync.replicas": "2"}

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()


# -- workloads -------------------------------------------------------------------------

def create_topic(cluster, name: str, partitions: int) -> None:
    a = AdminClient({"bootstrap.servers": cluster.bootstrap})
    f = a.create_topics([NewTopic(name, partitions, 3, config=cluster.topic_configs())],
                        request_timeout=60)[name]
    f.result(timeout=60)
    deadline = time.monotonic() + 60
    while True:  # every partition led, with its three replicas in sync
        t = a.list_topics(name, timeout=10).topics[name]
        if len(t.partitions) == partitions and all(
                p.leader > 0 and len(p.isrs) == 3 for p in t.partitions.values()):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"topic {name} not fully replicated: {t.partitions}")
        time.sleep(0.3)


def perf(main: str, args: list[str], out: Path) -> str:
    cmd = [JAVA, *TOOL_HEAP, "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
           "-cp", f"{os.environ['JARS']}/*", f"org.apache.kafka.tools.{main}", *args]
    log(f"{main} {shlex.join(args)}")
    with open(out, "w") as f:
        subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=STEP_TIMEOUT, check=True,
                       stdin=subprocess.DEVNULL)
    return out.read_text()


SUMMARY = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg "
                     r"latency, ([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, "
                     r"(\d+) ms 99\.9th\.$", re.M)


def produce(cluster, topic: str, records: int, throughput: int, out: Path) -> dict:
    text = perf("ProducerPerformance",
                ["--topic", topic, "--num-records", str(records), "--record-size", str(RECORD_SIZE),
                 "--throughput", str(throughput), "--producer-props",
                 f"bootstrap.servers={cluster.bootstrap}", "acks=all"], out)
    found = SUMMARY.findall(text)
    if not found:
        raise RuntimeError(f"no ProducerPerformance summary in {out}")
    sent, _, mbps, _, _, p50, _, p99, p999 = found[-1]
    log(f"{sent} sent, {mbps} MB/s, p50 {p50} ms, p99 {p99} ms, p99.9 {p999} ms")
    return {"sent": int(sent), "mbps": float(mbps), "p50": int(p50), "p99": int(p99),
            "p999": int(p999)}


def consume(cluster, topic: str, records: int, out: Path) -> dict:
    text = perf("ConsumerPerformance",
                ["--bootstrap-server", cluster.bootstrap, "--topic", topic, "--messages",
                 str(records), "--timeout", "30000"], out)
    lines = [line for line in text.splitlines() if line.startswith("start.time, ")
             or re.match(r"^\d{4}-\d\d-\d\d ", line)]
    if len(lines) < 2:
        raise RuntimeError(f"no ConsumerPerformance summary in {out}")
    row = dict(zip([h.strip() for h in lines[-2].split(",")], [v.strip() for v in lines[-1].split(",")]))
    log(f"consumed {row['data.consumed.in.nMsg']} records, fetch-only {row['fetch.MB.sec']} MB/s")
    return {"n": int(row["data.consumed.in.nMsg"]), "fetch_mbps": float(row["fetch.MB.sec"])}


FAILOVER_TRIALS = int(os.environ.get("BENCH_FAILOVER_TRIALS", "3"))


def failovers(cluster) -> list[float]:
    """FAILOVER_TRIALS failovers, each on a new topic, the killed broker back in between."""
    times = []
    for trial in range(FAILOVER_TRIALS):
        seconds, killed = failover(cluster, f"failover-{trial}")
        times.append(seconds)
        cluster.restart(killed)
    return times


def failover(cluster, topic: str) -> tuple[float, int]:
    """Seconds from the SIGKILL of a partition's leader to the first acknowledgement of a
    record sent after it (only a new leader can give that; a record sent before may have
    been acknowledged by the old leader just before it died), under a fixed-rate
    idempotent producer."""
    create_topic(cluster, topic, 1)
    acks: list[tuple[float, float]] = []  # (sent, acknowledged)
    errors: list = []
    # Metadata every 100 ms: librdkafka otherwise often finds a new leader only at its
    # once-a-second scan of unavailable partitions, and the figure is the brokers'.
    p = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "enable.idempotence": True,
                  "linger.ms": 0, "topic.metadata.refresh.interval.ms": 100})

    def delivered(sent, err):
        if err:
            errors.append(err)
        else:
            acks.append((sent, time.monotonic()))

    stop = threading.Event()

    def run():
        payload = b"x" * RECORD_SIZE
        next_at = time.monotonic()
        while not stop.is_set():
            p.produce(topic, payload, partition=0,
                      on_delivery=lambda err, _msg, sent=time.monotonic(): delivered(sent, err))
            p.poll(0)
            next_at += 1 / FAILOVER_RATE
            time.sleep(max(0.0, next_at - time.monotonic()))
        p.flush(60)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(5)
    md = AdminClient({"bootstrap.servers": cluster.bootstrap}).list_topics(topic, timeout=10)
    leader = md.topics[topic].partitions[0].leader
    log(f"failover: SIGKILL of partition {topic}-0's leader, broker {leader}")
    killed_at = time.monotonic()
    cluster.kill9(leader)
    deadline = killed_at + 60
    while not any(sent > killed_at for sent, _ in list(acks)) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(2)
    stop.set()
    t.join(90)
    after = [acked for sent, acked in acks if sent > killed_at]
    if not after:
        raise RuntimeError("no record acknowledged within 60 s of the leader's SIGKILL")
    seconds = min(after) - killed_at
    log(f"failover: first record acknowledged {seconds:.3f} s after the kill "
        f"({len(acks)} acknowledged, {len(errors)} failed)")
    if errors:
        raise RuntimeError(f"{len(errors)} records failed during failover: {errors[:3]}")
    return seconds, leader


def main() -> int:
    system, results, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    out = {}
    cluster = ChronikCluster(work) if system == "chronik" else KafkaCluster(work)
    try:
        log(f"{system}: three brokers up at {cluster.bootstrap}")
        pids = cluster.pids()
        create_topic(cluster, "rf3-warmup", PARTITIONS)
        create_topic(cluster, "rf3", PARTITIONS)
        produce(cluster, "rf3-warmup", RECORDS, -1, work / f"{system}-rf3-warmup.log")
        t0, io0 = cpu_ticks(pids), write_bytes(pids)
        prod = produce(cluster, "rf3", RECORDS, -1, work / f"{system}-rf3-producer.log")
        t1, io1 = cpu_ticks(pids), write_bytes(pids)
        mb = prod["sent"] * RECORD_SIZE / 2**20
        out["rf3_prod_mbps"] = prod["mbps"]
        out["rf3_prod_p99"] = prod["p99"]
        out["rf3_broker_cpu_ms_mb"] = round(1000 * (t1 - t0) / CLK_TCK / mb, 2)
        out["rf3_disk_write_per_byte"] = round((io1 - io0) / (prod["sent"] * RECORD_SIZE), 2)
        cons = consume(cluster, "rf3", RECORDS, work / f"{system}-rf3-consumer.log")
        t2 = cpu_ticks(pids)
        out["rf3_cons_fetch_mbps"] = cons["fetch_mbps"]
        out["rf3_cons_cpu_ms_mb"] = round(1000 * (t2 - t1) / CLK_TCK / mb, 2)
        rate = FIXED_RATE_MBS * 2**20 // RECORD_SIZE
        fixed = produce(cluster, "rf3", rate * FIXED_SECONDS, rate, work / f"{system}-rf3-fixed.log")
        out["rf3_fixed_p50"], out["rf3_fixed_p99"], out["rf3_fixed_p999"] = (
            fixed["p50"], fixed["p99"], fixed["p999"])
        out["rf3_peak_rss_mib"] = round(peak_rss_mib(pids), 1)
        out["rf3_valid"] = "yes" if prod["sent"] == RECORDS and cons["n"] == RECORDS else "NO"
        times = sorted(failovers(cluster))
        out["failover_s"] = round(times[len(times) // 2], 3)  # (the median)
        out["failover_max_s"] = round(times[-1], 3)
    finally:
        with open(results, "a") as f:
            for k, v in out.items():
                f.write(f"{system}.{k}={v}\n")
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
