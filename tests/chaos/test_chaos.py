"""The short form of the fault-injection suite, for CI: one seeded run that injects every
kind of fault once (SIGKILL, SIGTERM, SIGSTOP, a broker cut off, cut off from its peers,
deaf to its peers, a slow link) into three brokers in network namespaces, while a
producer writes at a fixed rate, and demands a clean verdict. `make chaos` runs the long
form (20 seeds on a loaded machine)."""

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaos  # noqa: E402


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces")
def test_every_fault_once_loses_nothing_and_recovers(tmp_path):
    verdict = chaos.run(seed=int(os.environ.get("CHAOS_SEED", "1")), faults=0, cover=True,
                        workdir=tmp_path)
    print("\n" + verdict.line())
    assert verdict.faults and len(verdict.faults) == len(chaos.FAULTS)
    assert verdict.acked > 1000
    assert verdict.ok, verdict.line() + "\n" + "\n".join(
        verdict.hw_disagree + verdict.panics + verdict.crashes + verdict.zombies
        + verdict.redelivered + verdict.details)
    # Every partition acknowledged again soon after every fault was healed.
    slow = [f for f in verdict.faults if f.recovery is None or f.recovery > f.seconds + 5]
    assert not slow, f"slow recoveries: {slow}"
    # Where a fault took leaders away, a new client could write to every one of their
    # partitions within 3 s.
    late = [f for f in verdict.faults
            if f.failover is not None and (f.writable is None or f.writable > 3.0)]
    assert not late, f"partitions not writable within 3 s: {late}"
