#!/usr/bin/env python3
"""Pack a root filesystem directory into a docker-archive image tarball.

No Docker engine and no registry needed: the tarball is what `docker save` writes
for a one-layer image, and `ctr -n k8s.io images import FILE` (or
`tools/k8s/node.sh import DIR FILE`) loads it into containerd, where pods use it with
`imagePullPolicy: Never`.

    tools/images/pack.py ROOTFS NAME:TAG OUT.tar \\
        [--entrypoint '["/bin/app", "--flag"]'] [--cmd '["arg"]'] \\
        [--user 65532:65532] [--env KEY=VALUE]... [--workdir /] \\
        [--expose 8080/tcp]... [--label KEY=VALUE]...

The tarball holds:
  layer.tar      ROOTFS as one layer: entries sorted, mtime SOURCE_DATE_EPOCH (default 0),
                 owner root:root (or the files' own with --keep-owner), so the same
                 input gives byte-identical output and the same image id
  config.json    the image config; rootfs.diff_ids = [sha256 of layer.tar]
  manifest.json  [{"Config": "config.json", "RepoTags": ["NAME:TAG"], "Layers": ["layer.tar"]}]

containerd normalizes NAME the way docker does: "chronik/broker:1" becomes
docker.io/chronik/broker:1, "localhost/chronik/broker:1" stays as it is. The pod spec
must name the image exactly as containerd lists it (or in the short form that
normalizes to it). stdout carries nothing; the image id (sha256 of config.json) is
printed on stderr.
"""

import argparse
import hashlib
import io
import json
import os
import platform
import sys
import tarfile

ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
        "s390x": "s390x", "riscv64": "riscv64"}


def json_list(text):
    """A JSON array of strings, or a single plain string."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return [text]
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise argparse.ArgumentTypeError("expected a JSON array of strings")
    return value


def layer_tar(rootfs, mtime, keep_owner):
    """The rootfs as an uncompressed tar in memory, deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = []
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in sorted(dirs + files):
                paths.append(os.path.join(top, name))
            # os.walk does not descend into symlinked directories; they are added as links
        for path in sorted(paths, key=lambda p: os.path.relpath(p, rootfs)):
            arcname = os.path.relpath(path, rootfs)
            info = tar.gettarinfo(path, arcname)
            info.mtime = mtime
            if not keep_owner:
                info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.pax_headers = {}
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    return buf.getvalue()


def add_bytes(tar, name, data, mtime):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rootfs", help="directory that becomes the image's /")
    p.add_argument("tag", help="NAME:TAG for manifest.json RepoTags")
    p.add_argument("out", help="the docker-archive tarball to write")
    p.add_argument("--entrypoint", type=json_list, help='JSON array, e.g. \'["/pause"]\'')
    p.add_argument("--cmd", type=json_list, help="JSON array of default arguments")
    p.add_argument("--user", help="user[:group] the process runs as, e.g. 65532:65532")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--workdir", help="working directory")
    p.add_argument("--expose", action="append", default=[], metavar="PORT/PROTO")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--stop-signal", help="e.g. SIGTERM")
    p.add_argument("--arch", default=ARCH.get(platform.machine(), platform.machine()),
                   help="image architecture (default: this machine's)")
    p.add_argument("--keep-owner", action="store_true",
                   help="keep the files' uid/gid instead of root:root")
    a = p.parse_args()

    if not os.path.isdir(a.rootfs):
        p.error(f"{a.rootfs}: not a directory")
    if ":" not in a.tag.rsplit("/", 1)[-1]:
        p.error(f"{a.tag}: give NAME:TAG")
    for kv in a.env + a.label:
        if "=" not in kv:
            p.error(f"{kv}: expected KEY=VALUE")
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))

    layer = layer_tar(a.rootfs, mtime, a.keep_owner)
    diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()

    env = list(a.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    cfg = {"Env": env}
    if a.entrypoint is not None:
        cfg["Entrypoint"] = a.entrypoint
    if a.cmd is not None:
        cfg["Cmd"] = a.cmd
    if a.user:
        cfg["User"] = a.user
    if a.workdir:
        cfg["WorkingDir"] = a.workdir
    if a.expose:
        cfg["ExposedPorts"] = {e if "/" in e else e + "/tcp": {} for e in a.expose}
    if a.label:
        cfg["Labels"] = dict(kv.split("=", 1) for kv in a.label)
    if a.stop_signal:
        cfg["StopSignal"] = a.stop_signal
    created = "1970-01-01T00:00:00Z" if mtime == 0 else \
        __import__("datetime").datetime.fromtimestamp(mtime, __import__("datetime").timezone.utc) \
        .strftime("%Y-%m-%dT%H:%M:%SZ")
    config = {
        "architecture": a.arch,
        "os": "linux",
        "created": created,
        "config": cfg,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": "tools/images/pack.py"}],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    manifest = [{"Config": "config.json", "RepoTags": [a.tag], "Layers": ["layer.tar"]}]
    manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()

    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        add_bytes(tar, "layer.tar", layer, mtime)
        add_bytes(tar, "config.json", config_bytes, mtime)
        add_bytes(tar, "manifest.json", manifest_bytes, mtime)
    os.replace(tmp, a.out)
    image_id = hashlib.sha256(config_bytes).hexdigest()
    print(f"pack: {a.tag} -> {a.out} ({len(layer)} byte layer, id sha256:{image_id[:12]})",
          file=sys.stderr)


if __name__ == "__main__":
    main()
