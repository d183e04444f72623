#!/usr/bin/env bash
# Build the pod sandbox image: pause.c as a static binary, packed by ../pack.py.
#   tools/images/pause/build.sh OUT.tar [NAME:TAG]   (default localhost/chronik/pause:1)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:?usage: $0 OUT.tar [NAME:TAG]}"
tag="${2:-localhost/chronik/pause:1}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs"
${CC:-gcc} -static -Os -s -Wall -Wextra -Werror -o "$work/rootfs/pause" "$here/pause.c"
python3 "$here/../pack.py" "$work/rootfs" "$tag" "$out" --entrypoint '["/pause"]' --user 65535:65535
