"""Checkpoints of __consumer_offsets: a coordinator whose partition gathered
`offsets_checkpoint_records` records restates the live offsets at the end of the log and
moves the log start past the old records, so the partition (and what a new coordinator
reads) stays about as large as the live state. Brokers are SIGKILLed in turn (seven
kills) while the groups commit, so that kills land while checkpoints are being written;
no committed offset may be lost or turn back to an older value. Driven by librdkafka (confluent-kafka)."""

import time

from confluent_kafka import KafkaException, TopicPartition
from kafkautil import admin, watermarks
from test_coordinators import commit_sync, committed, consumer
from test_faults import metric
from test_replication import bootstrap, create_replicated

OFFSETS_TOPIC = "__consumer_offsets"
EVERY = 200  # offsets_checkpoint_records
CONFIG = {"offsets_checkpoint_records": EVERY, "offsets_topic_partitions": 3,
          "retention_check_interval_ms": 500}
PARTITIONS = 6  # committed per group, one record each per commit (committed() reads 6)
GROUPS = 9
ROUNDS = 120


def log(msg: str) -> None:
    print(f"[offsets-checkpoints {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def offsets_watermarks(brokers) -> dict[int, tuple[int, int]]:
    deadline = time.monotonic() + 30
    while True:
        try:
            return watermarks(bootstrap(brokers), OFFSETS_TOPIC)
        except KafkaException:
            assert time.monotonic() < deadline, "no watermarks for the offsets topic"
            time.sleep(0.3)


def test_checkpoints_bound_the_offsets_log_and_lose_no_commit(cluster_factory, topic_name):
    brokers = cluster_factory(3, config=CONFIG)
    boot = bootstrap(brokers)
    create_replicated(brokers, topic_name, PARTITIONS)
    groups = [f"cp{i}-{topic_name}" for i in range(GROUPS)]
    consumers = {g: consumer(boot, g) for g in groups}
    expected: dict[str, dict[int, int]] = {}
    # Broker killed at these rounds, each brought back 3 rounds later.
    kill_at = {r: brokers[i % 3] for i, r in enumerate(range(15, ROUNDS - 10, 15))}
    down = None
    started = time.monotonic()
    for r in range(1, ROUNDS + 1):
        for g in groups:
            want = {p: r * 10 + p for p in range(PARTITIONS)}
            commit_sync(consumers[g], [TopicPartition(topic_name, p, o) for p, o in want.items()],
                        timeout=90)
            expected[g] = want
        if r in kill_at:
            down = (kill_at[r], r)
            log(f"round {r}: SIGKILL of broker {down[0].node_id}")
            down[0].kill9()
        elif down and r == down[1] + 3:
            down[0].start()
            log(f"round {r}: broker {down[0].node_id} back")
            down = None
    for c in consumers.values():
        c.close()
    log(f"{ROUNDS} rounds of {GROUPS} commits in {time.monotonic() - started:.0f} s")

    # Each offsets partition's log start moved, and what is above it is about a
    # threshold's worth (plus what came in while a checkpoint was written), not the
    # thousands of records committed.
    deadline = time.monotonic() + 30
    while True:
        marks = offsets_watermarks(brokers)
        # (Partitions without groups hold only their leaders' barrier records.)
        used = {p: (lo, hi) for p, (lo, hi) in marks.items() if hi >= EVERY}
        if used and all(lo > 0 and hi - lo < 2 * EVERY for lo, hi in used.values()):
            break
        assert time.monotonic() < deadline, f"offsets partitions not checkpointed: {marks}"
        time.sleep(0.5)
    total = sum(hi for _, hi in used.values())
    log(f"offsets partitions (log start, end): {used}; {total} records written in all")
    assert total > 3 * EVERY * len(used) // 2, f"too few records to need checkpoints: {used}"
    assert sum(metric(b, "chronik_offsets_checkpoints_total") or 0 for b in brokers) > 0

    for g in groups:
        assert committed(boot, g, topic_name) == expected[g], g
    log("every group's last commit read back")

    # A coordinator that takes over reads only what is above the log start: SIGKILL the
    # broker leading the most offsets partitions; the survivors serve every group.
    md = admin(boot).list_topics(OFFSETS_TOPIC, timeout=10).topics[OFFSETS_TOPIC]
    leaders = [p.leader for p in md.partitions.values()]
    victim_id = max(set(leaders), key=leaders.count)
    victim = next(b for b in brokers if b.node_id == victim_id)
    victim.kill9()
    survivors = bootstrap([b for b in brokers if b is not victim])
    for g in groups:
        assert committed(survivors, g, topic_name) == expected[g], g
    log(f"after the SIGKILL of broker {victim_id}, the survivors serve every group")
