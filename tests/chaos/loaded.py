"""Runs a command while every core is kept busy (`make chaos` runs the replication and
fault e2e tests this way): the Raft faults this suite hunts appeared only on a loaded
machine.

    python3 tests/chaos/loaded.py python3 -m pytest tests/e2e/test_replication.py
"""

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaos  # noqa: E402


def main() -> int:
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    load = chaos.start_load()
    try:
        return subprocess.call(sys.argv[1:])
    finally:
        for p in load:
            p.kill()


if __name__ == "__main__":
    sys.exit(main())
