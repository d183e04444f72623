#!/usr/bin/env python3
"""How long a broker takes to join a cluster whose metadata log has a long history.

Three brokers on loopback go through BENCH_METADATA_CHANGES metadata changes (default 2000:
topics of one partition created and deleted in batches of 50, as a busy day of a cluster
that tools create scratch topics in might bring), then a fourth broker starts empty and
joins as a learner of the metadata group and is ready (`/readyz`) once it has caught up
and registered. The brokers compact the metadata log every `metadata_snapshot_entries`
(default 1000) entries, so the newcomer receives a snapshot of the catalog and at most
that many entries, not the history. Prints the time to create the history, the join
time, whether the join came from a snapshot, and the newcomer's data directory size.

    CHRONIK_BROKER_BIN=target/release/chronik-broker python3 bench/metadata_join.py
"""

import os
import sys
import tempfile
import time
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic
from local_cluster import data_mib, machine, running  # (puts tests/e2e on the import path)

from conftest import ChronikBroker  # noqa: E402

CHANGES = int(os.environ.get("BENCH_METADATA_CHANGES", "2000"))
BATCH = 50


def log(msg: str) -> None:
    print(f"metadata-join: {msg}", file=sys.stderr, flush=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="chronik-metadata-bench-"))
    with running(work, 3) as brokers:
        boot = ",".join(b.bootstrap for b in brokers)
        admin = AdminClient({"bootstrap.servers": boot})
        log(f"making {CHANGES} metadata changes (topics created and deleted, {BATCH} per request)")
        started = time.monotonic()
        made = 0
        round_ = 0
        while made < CHANGES:
            names = [f"scratch-{round_}-{i}" for i in range(BATCH)]
            for f in admin.create_topics([NewTopic(n, 1, 3) for n in names],
                                         operation_timeout=60, request_timeout=60).values():
                f.result(120)
            for f in admin.delete_topics(names, operation_timeout=60, request_timeout=60).values():
                f.result(120)
            made += 2 * BATCH
            round_ += 1
        history_s = time.monotonic() - started
        log(f"{made} changes in {history_s:.1f} s; starting broker 4")
        fourth = ChronikBroker(work / "node4", node_id=4)
        fourth.peers = [(o.node_id, o.admin_addr) for o in brokers]
        t0 = time.monotonic()
        fourth.launch()
        brokers.append(fourth)
        fourth.wait_ready(600)
        joined = time.monotonic() - t0
        print(f"metadata history: {made} changes ({made // 2} topics created and deleted) in {history_s:.1f} s")
        restored = "metadata restored from a snapshot" in fourth.log_path.read_text(errors="replace")
        how = "from a snapshot of the catalog" if restored else "replaying the metadata log"
        print(f"  a new broker joined ({how}) and was ready after {joined:.2f} s; "
              f"its data dir: {data_mib(fourth):.1f} MiB")
        print("  " + machine())


if __name__ == "__main__":
    main()
