#!/usr/bin/env bash
# Builds Chronik's images without a Docker engine or a registry, with the content the
# Dockerfile describes: the stripped binary at /usr/local/bin, run as 65532:65532, on
# Debian 12's C/C++ runtime (the libraries `ldd` names, from this Debian 12 machine, as
# gcr.io/distroless/cc-debian12 carries them), plus /etc/passwd, /etc/group and CA
# certificates. Also the e2e client image (e2e/kclient, franz-go, static).
#
#   tools/images/build.sh OUT_DIR [TAG [NEXT_BROKER]]
#
# writes OUT_DIR/{broker,operator,kclient}.tar, and with NEXT_BROKER (a broker binary built
# with CHRONIK_BUILD_VERSION=TAG-next, for the e2e rolling upgrade) OUT_DIR/broker-next.tar
# tagged TAG-next. TAG defaults to the workspace version. The binaries come from
# $CARGO_TARGET_DIR/release (build them first: `make build`; `make images` does it all).
# Prints each image's size.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${1:?usage: build.sh OUT_DIR [TAG]}"
next_broker="${3:-}"
tag="${2:-$(awk -F'"' '/^version *=/ {print $2; exit}' "$repo/Cargo.toml")}"
target="${CARGO_TARGET_DIR:-$repo/target}/release"
cache="${CHRONIK_CACHE:-$HOME/.cache/chronik}"
log() { echo "images: $*" >&2; }
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# A rootfs with the non-root user, certificates and the runtime libraries of $1.
base_rootfs() {
  local root="$1" binary="$2" lib
  mkdir -p "$root"/{etc,tmp,usr/local/bin,home/nonroot}
  chmod 1777 "$root/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
  # Every shared library the binary loads, at the path the dynamic loader looks in.
  for lib in $(ldd "$binary" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
}

image() { # name binary tag file [extra pack args...]
  local name="$1" binary="$2" tag="$3" file="$4"; shift 4
  local root="$work/$file"
  [[ -x "$binary" ]] || { log "$binary is missing (run: make build)"; exit 1; }
  base_rootfs "$root" "$binary"
  cp "$binary" "$root/usr/local/bin/chronik-$name"
  strip "$root/usr/local/bin/chronik-$name"
  python3 "$repo/tools/images/pack.py" "$root" "chronik-$name:$tag" "$out/$file.tar" \
    --user 65532:65532 --env PATH=/usr/local/bin:/usr/bin:/bin \
    --entrypoint "[\"/usr/local/bin/chronik-$name\"]" "$@" 2>/dev/null
  log "chronik-$name:$tag $(du -m "$out/$file.tar" | cut -f1) MB ($out/$file.tar)"
}

broker_ports=(--env CHRONIK_DATA_DIR=/var/lib/chronik --expose 9092/tcp --expose 9093/tcp --expose 9644/tcp)
image broker "$target/chronik-broker" "$tag" broker "${broker_ports[@]}"
[[ -z "$next_broker" ]] || image broker "$next_broker" "$tag-next" broker-next "${broker_ports[@]}"
image operator "$target/chronik-operator" "$tag" operator --expose 8080/tcp

# The e2e and `helm test` client: static, so its rootfs needs nothing else.
export GOMODCACHE="${GOMODCACHE:-$cache/go/mod}" GOCACHE="${GOCACHE:-$cache/go/build}"
(cd "$repo/e2e/kclient" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$work/kclient.bin" .)
mkdir -p "$work/kclient/usr/local/bin" "$work/kclient/etc"
cp "$work/kclient.bin" "$work/kclient/usr/local/bin/kclient"
printf 'nonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$work/kclient/etc/passwd"
python3 "$repo/tools/images/pack.py" "$work/kclient" "chronik-kclient:$tag" "$out/kclient.tar" \
  --user 65532:65532 --env PATH=/usr/local/bin --entrypoint '["/usr/local/bin/kclient"]' 2>/dev/null
log "chronik-kclient:$tag $(du -m "$out/kclient.tar" | cut -f1) MB"
