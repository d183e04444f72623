"""Small disks of our own: an ext4 filesystem in a sparse file, loop-mounted, so that a
broker's data directory can be filled up on purpose (the disk-full fault) without
touching the machine's real disk. Real ext4 keeps fsync and space accounting honest,
which a tmpfs would not.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def sh(*args: str) -> None:
    r = subprocess.run(list(args), capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")


class SmallDisk:
    FILLER = "chaos-filler"

    def __init__(self, image: Path, mountpoint: Path, size_mib: int):
        self.image, self.mountpoint = image, mountpoint
        self.unmount()  # a leftover of an interrupted run
        with open(image, "wb") as f:
            f.truncate(size_mib << 20)
        # No blocks reserved for root: the broker runs as root and must see what is free.
        sh("mkfs.ext4", "-q", "-F", "-m", "0", str(image))
        mountpoint.mkdir(parents=True, exist_ok=True)
        sh("mount", "-o", "loop", str(image), str(mountpoint))

    def free_bytes(self) -> int:
        st = os.statvfs(self.mountpoint)
        return st.f_bavail * st.f_frsize

    def fill(self, leave: int) -> None:
        """Takes all free space but `leave` bytes."""
        size = self.free_bytes() - leave
        if size > 0:
            with open(self.mountpoint / self.FILLER, "ab") as f:
                os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size + size)

    def unfill(self) -> None:
        (self.mountpoint / self.FILLER).unlink(missing_ok=True)

    def unmount(self) -> None:
        if os.path.ismount(self.mountpoint):
            subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
        self.image.unlink(missing_ok=True)
