"""Seeded fault-injection runs: three chronik-brokers, each in its own network namespace,
an idempotent acks=all producer at a fixed rate into a 6-partition RF=3 topic, and a
schedule of faults drawn from a seed. After the schedule every fault is healed and the
run gets a verdict: acknowledged records lost, duplicated or reordered, replicas whose
high watermarks disagree, panics in any broker's log, brokers that died on their own,
and zombies (a live process that is not healthy and ready). Each fault gets three times:
until the other brokers name new leaders for what the victim led, until a new client
(bootstrapped from the other brokers) has an acknowledgement from each of those
partitions, and the longest time any partition went without an acknowledgement to the
running producer (whose librdkafka waits for requests to the old leader to time out).

    python3 tests/chaos/chaos.py --seeds 1-20 --faults 5 --load     # make chaos
    python3 tests/chaos/chaos.py --seeds 1 --cover                   # every fault once

Needs root (namespaces, nftables, tc) and the broker binary (CHRONIK_BROKER_BIN or
$CARGO_TARGET_DIR/release/chronik-broker).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# gRPC's fork handlers can deadlock starting a broker while a channel has threads (see
# tests/e2e/conftest.py); set before grpc is imported.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import disks  # noqa: E402
import netlab  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NODES = [1, 2, 3]
PARTITIONS = 6
RATE = 300  # records per second
EOS_DEBUG = os.environ.get("CHAOS_EOS_DEBUG", "1") != "0"
KAFKA_PORT, CLUSTER_PORT, METRICS_PORT = 9092, 9093, 9644
FAULTS = ["kill9", "sigterm", "sigstop", "isolate", "isolate_peers", "deafen", "slow",
          "disk_full"]
# Each broker's data directory is a small disk of its own; below MIN_FREE free bytes the
# broker refuses new records (storage_min_free_bytes), and the disk-full fault leaves it
# half of that.
DISK_MIB = 1024
MIN_FREE = 256 << 20


def log(msg: str) -> None:
    print(f"[chaos {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def broker_bin() -> Path:
    explicit = os.environ.get("CHRONIK_BROKER_BIN")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    return target / "release" / "chronik-broker"


def http_status(url: str, timeout: float = 2) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


# -- brokers ------------------------------------------------------------------------------

class Broker:
    def __init__(self, node: int, lab: netlab.Lab, workdir: Path):
        self.node, self.lab = node, lab
        self.ip = netlab.node_ip(node)
        self.data = workdir / f"b{node}"
        self.disk = disks.SmallDisk(workdir / f"b{node}.img", self.data, DISK_MIB)
        self.config = workdir / f"b{node}.toml"
        self.config.write_text(f"storage_min_free_bytes = {MIN_FREE}\n")
        self.log_path = workdir / f"b{node}.log"
        self.proc: subprocess.Popen | None = None
        self.expected_exit = False
        self.crashes: list[str] = []

    @property
    def bootstrap(self) -> str:
        return f"{self.ip}:{KAFKA_PORT}"

    @property
    def admin_addr(self) -> str:
        return f"{self.ip}:{CLUSTER_PORT}"

    def url(self, path: str) -> str:
        return f"http://{self.ip}:{METRICS_PORT}{path}"

    def start(self) -> None:
        peers = ",".join(f"{o}@{netlab.node_ip(o)}:{CLUSTER_PORT}" for o in NODES if o != self.node)
        cmd = self.lab.exec_prefix(self.node) + [
            str(broker_bin()), "--node-id", str(self.node), "--data-dir", str(self.data),
            "--kafka-addr", self.bootstrap, "--cluster-addr", self.admin_addr,
            "--metrics-addr", f"{self.ip}:{METRICS_PORT}", "--peers", peers,
            "--config", str(self.config),
        ]
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== start {time.strftime('%H:%M:%S')}\n".encode())
            f.flush()
            self.proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        self.expected_exit = False

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def check_crash(self) -> None:
        """Records an exit that no fault caused."""
        if self.proc is not None and not self.expected_exit and self.proc.poll() is not None:
            self.crashes.append(f"b{self.node} exited with {self.proc.returncode}")
            self.expected_exit = True

    def signal(self, sig: int) -> None:
        if self.alive:
            os.kill(self.proc.pid, sig)

    def kill9(self) -> None:
        self.expected_exit = True
        self.signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait(15)

    def terminate(self) -> int | None:
        self.expected_exit = True
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if not self.proc:
            return None
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def healthy(self) -> bool:
        return self.alive and http_status(self.url("/healthz")) == 200 and \
            http_status(self.url("/readyz")) == 200

    def panics(self) -> list[str]:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if "panicked at" in line or "panic:" in line]


# -- admin API ----------------------------------------------------------------------------

_ADMIN = None


def admin_pb():
    global _ADMIN
    if _ADMIN is None:
        from grpc_tools import protoc

        out = tempfile.mkdtemp(prefix="chaos-pb-")
        proto = "chronik/admin/v1/admin.proto"
        rc = protoc.main(["protoc", f"-I{REPO / 'api' / 'proto'}", f"--python_out={out}",
                          f"--grpc_python_out={out}", proto])
        assert rc == 0, "protoc failed on the admin proto"
        sys.path.insert(0, out)
        _ADMIN = (importlib.import_module("chronik.admin.v1.admin_pb2"),
                  importlib.import_module("chronik.admin.v1.admin_pb2_grpc"))
    return _ADMIN


def cluster_status(b: Broker):
    import grpc

    pb, stubs = admin_pb()
    with grpc.insecure_channel(b.admin_addr) as ch:
        return stubs.AdminStub(ch).ClusterStatus(
            pb.ClusterStatusRequest(include_partitions=True), timeout=3)


def partition_view(b: Broker, topic: str) -> dict[int, tuple[int, list[int], list[int], int]]:
    """{partition: (leader, replicas, isr, high watermark)} as broker b sees it."""
    st = cluster_status(b)
    return {p.partition: (p.leader, sorted(p.replicas), sorted(p.isr), p.high_watermark)
            for p in st.partitions if p.topic == topic}


# -- workload -----------------------------------------------------------------------------

@dataclass
class Workload:
    bootstrap: str
    topic: str
    acked: dict[int, tuple[int, float]] = field(default_factory=dict)  # seq -> (partition, t)
    errors: list[str] = field(default_factory=list)
    sent: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        from confluent_kafka import Producer

        p = Producer({
            "bootstrap.servers": self.bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "message.timeout.ms": 180000,
            # A frozen or cut-off leader never answers: give up on a request after 2 s
            # and ask for metadata again (idempotence keeps the retries exact).
            "request.timeout.ms": 2000, "topic.metadata.refresh.interval.ms": 1000,
            # librdkafka's idempotence log (epoch bumps and why, sequence errors): a few
            # hundred lines per run, and the evidence should an anomaly ever show up.
            "log_level": 3, **({"debug": "eos"} if EOS_DEBUG else {}),
        })

        def on_delivery(err, msg):
            seq = int(msg.value())
            if err:
                self.errors.append(f"{seq}: {err}")
            else:
                self.acked[seq] = (msg.partition(), time.monotonic())

        start = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - start) * RATE)
            while self.sent < due:
                try:
                    p.produce(self.topic, value=b"%d" % self.sent,
                              partition=self.sent % PARTITIONS, on_delivery=on_delivery)
                    self.sent += 1
                except BufferError:
                    break
            p.poll(0.01)
        p.flush(240)


def read_all(bootstrap: str, topic: str, highs: dict[int, int]
             ) -> tuple[dict[int, list[tuple[int, int]]], list[str]]:
    """Every record of every partition up to `highs`: ({partition: [(offset, seq)] in offset
    order}, redeliveries). A record is kept once per offset; an offset the consumer was
    given again (its position moved back, e.g. after validating it against a new leader's
    OffsetForLeaderEpoch) is reported as a redelivery, apart from a duplicate in the log."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"chaos-reader-{time.time()}",
                  "enable.auto.commit": False, "log_level": 3})
    out: dict[int, dict[int, int]] = {p: {} for p in highs}
    redelivered: list[str] = []
    pos = {p: 0 for p in highs}
    c.assign([TopicPartition(topic, p, 0) for p in highs])
    deadline = time.monotonic() + 120
    try:
        while any(pos[p] < highs[p] for p in highs) and time.monotonic() < deadline:
            msg = c.poll(0.5)
            if msg is None or msg.error():
                continue
            p, offset = msg.partition(), msg.offset()
            if offset < pos[p]:
                redelivered.append(f"p{p} offset {offset} delivered again at position {pos[p]}")
            if msg.value() != PROBE:
                out[p][offset] = int(msg.value())
            pos[p] = max(pos[p], offset + 1)
    finally:
        c.close()
    short = {p: (pos[p], highs[p]) for p in highs if pos[p] < highs[p]}
    if short:
        raise RuntimeError(f"could not read every record back: {short}")
    return {p: sorted(recs.items()) for p, recs in out.items()}, redelivered


# -- one run ------------------------------------------------------------------------------

@dataclass
class FaultResult:
    kind: str
    victim: int
    seconds: float
    # longest time a partition went without acknowledgements (client-observed outage)
    recovery: float | None
    # time until the other brokers named new leaders for the victim's partitions
    failover: float | None = None
    # time until a new client, bootstrapped from the other brokers, had an acknowledgement
    # from every partition the victim led (what a client without stale connections sees)
    writable: float | None = None


def fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}s"


@dataclass
class Verdict:
    seed: int
    faults: list[FaultResult]
    acked: int = 0
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivery_errors: int = 0
    hw_disagree: list[str] = field(default_factory=list)
    panics: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)
    zombies: list[str] = field(default_factory=list)
    # offsets the verifying consumer was handed twice (its position moved back)
    redelivered: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.reordered or self.delivery_errors
                    or self.redelivered or self.hw_disagree or self.panics or self.crashes
                    or self.zombies)

    def line(self) -> str:
        faults = ", ".join(
            f"{f.kind}(b{f.victim} {f.seconds:.1f}s: failover {fmt(f.failover)}, "
            f"writable {fmt(f.writable)}, "
            f"outage {fmt(f.recovery)})" for f in self.faults)
        return (f"seed {self.seed}: {'OK' if self.ok else 'ANOMALY'} acked={self.acked} "
                f"lost={self.lost} duplicated={self.duplicated} reordered={self.reordered} "
                f"delivery_errors={self.delivery_errors} redelivered={len(self.redelivered)} "
                f"hw_disagree={len(self.hw_disagree)} "
                f"panics={len(self.panics)} crashes={len(self.crashes)} "
                f"zombies={len(self.zombies)} | {faults}")


def wait_until(what: str, fn, timeout: float, brokers: list[Broker]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for b in brokers:
            b.check_crash()
        try:
            if fn():
                return
        except Exception:  # noqa: BLE001 - a broker still starting or cut off
            pass
        time.sleep(0.2)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def converged(brokers: list[Broker], topic: str, same_hw: bool = False) -> bool:
    """Every broker healthy and ready, every partition led with a full ISR, all brokers
    naming the same leaders and (with `same_hw`, once producing stopped) every replica at
    the same high watermark."""
    if not all(b.healthy() for b in brokers):
        return False
    views = [partition_view(b, topic) for b in brokers]
    if any(len(v) != PARTITIONS for v in views):
        return False
    for p in range(PARTITIONS):
        leaders = {v[p][0] for v in views}
        hws = {v[p][3] for v in views}
        leader, replicas, isr, _ = views[0][p]
        if len(leaders) != 1 or leader <= 0 or isr != replicas or (same_hw and len(hws) != 1):
            return False
    return True


def pick_victim(rng: random.Random, brokers: list[Broker], topic: str) -> Broker:
    """Mostly the leader of some partition (faults there hurt), sometimes any broker."""
    if rng.random() < 0.75:
        for b in brokers:
            try:
                view = partition_view(b, topic)
                leader = view[rng.randrange(PARTITIONS)][0]
                return next(x for x in brokers if x.node == leader)
            except Exception:  # noqa: BLE001
                continue
    return rng.choice(brokers)


def led_by(b: Broker, brokers: list[Broker], topic: str) -> set[int]:
    for x in brokers:
        try:
            return {p for p, v in partition_view(x, topic).items() if v[0] == b.node}
        except Exception:  # noqa: BLE001
            continue
    return set()


def failover_time(victim: Broker, brokers: list[Broker], topic: str, led: set[int],
                  t0: float, until: float) -> float | None:
    """Seconds from t0 until every other broker names a leader other than the victim for
    each partition it led; None if that did not happen before `until`."""
    others = [b for b in brokers if b is not victim]
    while time.monotonic() < until:
        try:
            views = [partition_view(b, topic) for b in others]
            if all(v[p][0] not in (-1, victim.node) for v in views for p in led):
                return time.monotonic() - t0
        except Exception:  # noqa: BLE001
            pass
        time.sleep(0.05)
    return None


PROBE = b"probe"  # values the verdict ignores


class _Lines(logging.Handler):
    """Collects a client's debug log; `interesting` leaves out the per-message chatter."""

    NOISE = ("Produce MessageSet", "produce messageset", "Enqueue", "MsgId", "DRAIN")

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def interesting(self, limit: int = 60) -> list[str]:
        kept = [line for line in self.lines if not any(n in line for n in self.NOISE)]
        return kept[-limit:]


def writable_time(victim: Broker, brokers: list[Broker], topic: str, led: set[int],
                  t0: float, until: float) -> float | None:
    """Seconds from t0 until a fresh producer, bootstrapped from the brokers other than
    the victim, got an acknowledgement from every partition the victim led."""
    from confluent_kafka import Producer

    boot = ",".join(b.bootstrap for b in brokers if b is not victim)
    while time.monotonic() < until:
        # The client's own account (metadata it got, where it sent what) is kept and shown
        # only when an attempt fails.
        trace = _Lines()
        logger = logging.getLogger(f"chaos.probe.{id(trace)}")
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(trace)
        p = Producer({"bootstrap.servers": boot, "acks": "all", "linger.ms": 0,
                      "message.timeout.ms": 1500, "debug": "metadata,topic,msg,broker",
                      "logger": logger})
        acked: set[int] = set()
        failed: dict[int, str] = {}

        def on_delivery(err, m):
            if err:
                failed[m.partition()] = err.name()
            else:
                acked.add(m.partition())

        for part in led:
            p.produce(topic, value=PROBE, partition=part, on_delivery=on_delivery)
        p.flush(2)
        logger.removeHandler(trace)
        if acked == led:
            return time.monotonic() - t0
        # What a client met on the way is what to look at when this takes long.
        log(f"  probe at {time.monotonic() - t0:.2f}s: not yet writable: "
            f"{ {part: failed.get(part, 'no answer') for part in sorted(led - acked)} }")
        for line in trace.interesting():
            log(f"    {line}")
        time.sleep(0.05)
    return None


def inject(kind: str, victim: Broker, lab: netlab.Lab, seconds: float,
           brokers: list[Broker], topic: str) -> tuple[float | None, float | None]:
    """Applies a fault for `seconds`, then undoes it (restart, SIGCONT, heal). Returns
    how long the other brokers took to name new leaders for what the victim led, and how
    long until a new client could write to all of it (None for a fault that takes no
    leadership away, or when it did not happen in time)."""
    n = victim.node
    led = led_by(victim, brokers, topic)
    t0 = time.monotonic()
    if kind == "kill9":
        victim.kill9()
    elif kind == "sigterm":
        code = victim.terminate()
        if code not in (0, None):
            victim.crashes.append(f"b{n} exited with {code} after SIGTERM")
    elif kind == "sigstop":
        victim.signal(signal.SIGSTOP)
    elif kind == "disk_full":
        victim.disk.fill(leave=MIN_FREE // 2)
    else:
        {"isolate": lab.isolate, "isolate_peers": lab.isolate_from_peers,
         "deafen": lab.deafen_to_peers, "slow": lab.slow}[kind](n)
    # A slow link or a full disk leaves leadership where it is (a full leader refuses
    # records with a retriable error until space returns).
    moves = kind not in ("slow", "disk_full") and led
    failover = failover_time(victim, brokers, topic, led, t0, t0 + seconds) if moves else None
    writable = writable_time(victim, brokers, topic, led, t0, t0 + seconds) if moves else None
    time.sleep(max(0.0, t0 + seconds - time.monotonic()))
    if kind in ("kill9", "sigterm"):
        victim.start()
    elif kind == "sigstop":
        victim.signal(signal.SIGCONT)
    elif kind == "disk_full":
        victim.disk.unfill()
    else:
        lab.heal(n)
    return failover, writable


def outage(w: Workload, t0: float, t1: float) -> float | None:
    """The longest time, over partitions, without any acknowledgement between t0 (the
    fault began) and t1 (the cluster converged after it was undone): how long it took
    until every partition acknowledged again. None when a partition got none at all."""
    times: dict[int, list[float]] = {p: [t0] for p in range(PARTITIONS)}
    for _, (p, t) in list(w.acked.items()):
        if t0 <= t <= t1:
            times[p].append(t)
    if any(len(ts) == 1 for ts in times.values()):
        return None
    return max(max(b - a for a, b in zip(sorted(ts), sorted(ts)[1:]))
               for ts in times.values())


def run(seed: int, faults: int, cover: bool, workdir: Path) -> Verdict:
    rng = random.Random(seed)
    schedule = list(FAULTS)
    rng.shuffle(schedule)
    if not cover:
        schedule = [rng.choice(FAULTS) for _ in range(faults)]
    lab = netlab.Lab(NODES)
    brokers = [Broker(n, lab, workdir) for n in NODES]
    topic = f"chaos-{seed}"
    verdict = Verdict(seed, [])
    w = None
    thread = None
    try:
        for b in brokers:
            b.start()
        wait_until("three ready brokers", lambda: all(b.healthy() for b in brokers), 60,
                   brokers)
        from confluent_kafka.admin import AdminClient, NewTopic

        boot = ",".join(b.bootstrap for b in brokers)
        a = AdminClient({"bootstrap.servers": boot, "log_level": 3})
        a.create_topics([NewTopic(topic, PARTITIONS, 3)])[topic].result(30)
        wait_until("the topic replicated", lambda: converged(brokers, topic), 60, brokers)
        w = Workload(boot, topic)
        thread = threading.Thread(target=w.run, daemon=True)
        thread.start()
        time.sleep(3)
        for kind in schedule:
            victim = pick_victim(rng, brokers, topic)
            seconds = round(rng.uniform(3, 8), 1)
            log(f"seed {seed}: {kind} on b{victim.node} for {seconds}s")
            t0 = time.monotonic()
            failover, writable = inject(kind, victim, lab, seconds, brokers, topic)
            wait_until("the cluster to converge after the fault",
                       lambda: converged(brokers, topic), 60, brokers)
            time.sleep(rng.uniform(1, 3))
            rec = outage(w, t0, time.monotonic())
            verdict.faults.append(FaultResult(kind, victim.node, seconds, rec, failover,
                                              writable))
            log(f"seed {seed}: {kind}: new leaders after {fmt(failover)}, writable by a new "
                f"client after {fmt(writable)}, longest time "
                f"without acknowledgements {fmt(rec)}")
        time.sleep(2)
        w.stop.set()
        thread.join(300)
        try:
            wait_until("the cluster to converge at the end",
                       lambda: converged(brokers, topic, same_hw=True), 60, brokers)
        except TimeoutError:
            pass  # judged below: disagreeing high watermarks are reported, not waited out
        judge(verdict, w, brokers, topic)
    finally:
        if w is not None:
            w.stop.set()
        for b in brokers:
            b.check_crash()
            verdict.crashes.extend(b.crashes)
            verdict.panics.extend(f"b{b.node}: {line}" for line in b.panics())
        for b in brokers:
            if b.alive and not b.healthy():
                verdict.zombies.append(f"b{b.node} alive but not healthy and ready")
            b.terminate()
        for b in brokers:
            b.disk.unmount()
        lab.close()
    return verdict


def judge(v: Verdict, w: Workload, brokers: list[Broker], topic: str) -> None:
    views = [partition_view(b, topic) for b in brokers]
    highs = {}
    for p in range(PARTITIONS):
        hws = {f"b{b.node}": views[i][p][3] for i, b in enumerate(brokers)}
        if len(set(hws.values())) != 1:
            v.hw_disagree.append(f"p{p}: {hws}")
        highs[p] = max(hws.values())
    records, v.redelivered = read_all(",".join(b.bootstrap for b in brokers), topic, highs)
    seen: dict[int, list[tuple[int, int]]] = {}
    for p, recs in records.items():
        for offset, s in recs:
            seen.setdefault(s, []).append((p, offset))
        # one producer, one partition: offsets follow the order of sending
        for i, ((_, a), (offset, b)) in enumerate(zip(recs, recs[1:])):
            if b <= a:
                v.reordered += 1
                around = recs[max(0, i - 3):i + 5]
                v.details.append(f"p{p} offset {offset}: (offset, seq) {around}")
    for s, places in seen.items():
        if len(places) > 1:
            v.details.append(f"seq {s} stored {len(places)} times: (partition, offset) {places}")
    v.acked = len(w.acked)
    v.lost = sum(1 for s in w.acked if s not in seen)
    v.duplicated = sum(1 for places in seen.values() if len(places) > 1)
    v.delivery_errors = len(w.errors)


# -- CPU contention -----------------------------------------------------------------------

def start_load() -> list[subprocess.Popen]:
    """One busy process per core, for the whole run: the failures this suite hunts showed
    up only on a loaded machine."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)]


def parse_seeds(text: str) -> list[int]:
    seeds = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi or lo) + 1))
    return seeds


def summary(verdicts: list[Verdict]) -> str:
    """Per fault type: how often, new leaders after (p50, max), writable by a new client
    after (p50, max), and the longest time a partition of the running producer went
    without acknowledgements (p50, max)."""
    def stats(xs: list[float | None]) -> str:
        ok = [x for x in xs if x is not None]
        if not ok:
            return "     n/a      n/a"
        return f"{statistics.median(ok):8.2f} {max(ok):8.2f}"

    lines = ["", "fault          runs   new leaders p50/max (s)   writable p50/max (s)"
             "   outage p50/max (s)"]
    for kind in FAULTS:
        fs = [f for v in verdicts for f in v.faults if f.kind == kind]
        if fs:
            lines.append(f"{kind:<14} {len(fs):4}   {stats([f.failover for f in fs])}"
                         f"         {stats([f.writable for f in fs])}"
                         f"      {stats([f.recovery for f in fs])}")
    bad = [v for v in verdicts if not v.ok]
    lines.append(f"\n{len(verdicts) - len(bad)} passed, {len(bad)} failed")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1", help="e.g. 1-20 or 3,7")
    ap.add_argument("--faults", type=int, default=5, help="faults per run")
    ap.add_argument("--cover", action="store_true", help="every fault type once per run")
    ap.add_argument("--load", action="store_true", help="saturate every core meanwhile")
    ap.add_argument("--json", help="write the verdicts here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("chaos: needs root (network namespaces, nftables, tc)", file=sys.stderr)
        return 2
    load = start_load() if args.load else []
    verdicts = []
    try:
        for seed in parse_seeds(args.seeds):
            with tempfile.TemporaryDirectory(prefix=f"chaos-{seed}-") as d:
                try:
                    v = run(seed, args.faults, args.cover, Path(d))
                except Exception as e:  # noqa: BLE001 - a run that cannot finish is a verdict
                    v = Verdict(seed, [])
                    v.zombies.append(f"run did not finish: {e}")
                    logs = sorted(Path(d).glob("b*.log"))
                    for p in logs:
                        tail = p.read_text(errors="replace")[-3000:]
                        print(f"--- {p.name} (tail)\n{tail}", flush=True)
                print(v.line(), flush=True)
                for detail in v.hw_disagree + v.panics + v.crashes + v.zombies + v.redelivered + v.details:
                    print(f"    {detail}", flush=True)
                if not v.ok:
                    # The brokers' logs of a failed run outlive its temporary directory.
                    kept = Path(tempfile.mkdtemp(prefix=f"chaos-failed-{seed}-"))
                    for log_file in Path(d).glob("b*.log"):
                        shutil.copy(log_file, kept)
                    print(f"    broker logs kept in {kept}", flush=True)
                verdicts.append(v)
    finally:
        for p in load:
            p.kill()
    print(summary(verdicts), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps([v.__dict__ | {"faults": [f.__dict__ for f in v.faults]}
                                               for v in verdicts], indent=2, default=str))
    return 0 if all(v.ok for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
