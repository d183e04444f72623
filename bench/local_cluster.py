"""Brokers on loopback for the bench scripts, with the e2e suite's broker class
(tests/e2e/conftest.py): started together as a new cluster, stopped by the caller."""

import os
import sys
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from conftest import ChronikBroker  # noqa: E402


def start(work: Path, n: int, config: dict | None = None) -> list:
    """n brokers (node ids 1..n) that bootstrap a cluster together; returned ready."""
    brokers = [ChronikBroker(work / f"node{i}", config=config, node_id=i) for i in range(1, n + 1)]
    for b in brokers:
        b.peers = [(o.node_id, o.admin_addr) for o in brokers if o is not b]
        b.launch()
    for b in brokers:
        b.wait_ready(60)
    return brokers


@contextmanager
def running(work: Path, n: int, config: dict | None = None):
    """`start`, and every broker in the list (the caller may add some) stopped after."""
    brokers = start(work, n, config)
    try:
        yield brokers
    finally:
        for b in brokers:
            b.stop()


def data_mib(broker) -> float:
    """The size of a broker's data directory."""
    return sum(f.stat().st_size for f in broker.data_dir.rglob("*") if f.is_file()) / 2**20


def machine() -> str:
    """The machine and commit a figure was measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), "unknown")
    commit = os.popen(f"git -C {REPO} rev-parse --short HEAD").read().strip()
    return f"machine: {os.cpu_count()} x {cpu}; commit {commit}"
