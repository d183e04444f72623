#!/usr/bin/env bash
# Build the pinned kube-apiserver, kubectl and etcd (versions from go.mod in
# this directory) into a cache directory and print that bin directory.
#
#   BIN=$(tools/k8s/build.sh)        # -> $CHRONIK_CACHE/k8s/<version>/bin
#
# Idempotent: when the binaries for the pinned go.mod/go.sum already exist the
# script returns at once without invoking go (no network, no compiler).
# stdout carries only the bin directory; all logs go to stderr.
#
# Environment:
#   CHRONIK_CACHE       cache root (default $HOME/.cache/chronik)
#   GOMODCACHE, GOCACHE default to $CHRONIK_CACHE/go/{mod,build} so that module
#                       downloads and compiled packages survive between runs
#   CHRONIK_K8S_NICE    niceness for the go builds (default 19: keep the Rust
#                       build ahead on a 2-core machine)
#   CHRONIK_K8S_REBUILD=1  ignore the existing binaries and build again
set -euo pipefail

# Bump when the build recipe below changes in a way that changes the output.
BUILD_REV=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[k8s/build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

modver() { # version of a required module, read from go.mod
  awk -v m="$1" '$1 == m && $2 ~ /^v/ { print $2; exit }' "$here/go.mod"
}
K8S_VERSION="$(modver k8s.io/kubernetes)"
ETCD_VERSION="$(modver go.etcd.io/etcd/server/v3)"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || die "cannot read pinned versions from $here/go.mod"

CACHE="${CHRONIK_CACHE:-$HOME/.cache/chronik}"
VERSION_DIR="$CACHE/k8s/${K8S_VERSION}-etcd${ETCD_VERSION#v}"
BIN="$VERSION_DIR/bin"
BINARIES=(kube-apiserver kubectl etcd)

stamp="$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-16)-r$BUILD_REV"

have_all() {
  local b
  [[ -f "$VERSION_DIR/stamp" && "$(cat "$VERSION_DIR/stamp")" == "$stamp" ]] || return 1
  for b in "${BINARIES[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
}

if [[ "${CHRONIK_K8S_REBUILD:-0}" != 1 ]] && have_all; then
  log "cached: kubernetes $K8S_VERSION, etcd $ETCD_VERSION in $BIN"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || die "go is not installed (Go >= 1.24 is needed)"
mkdir -p "$CACHE/k8s"

# One build at a time per cache (parallel test jobs may all call this script).
exec 9>"$CACHE/k8s/.build.lock"
if command -v flock >/dev/null; then
  flock 9
  if [[ "${CHRONIK_K8S_REBUILD:-0}" != 1 ]] && have_all; then
    log "built by a concurrent run: $BIN"
    echo "$BIN"
    exit 0
  fi
fi

export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export CGO_ENABLED=0 # static binaries, as the upstream release builds

log "building kubernetes $K8S_VERSION (kube-apiserver, kubectl) and etcd $ETCD_VERSION with $(go version)"
log "GOMODCACHE=$GOMODCACHE GOCACHE=$GOCACHE"

# Version stamping as kubernetes' hack/lib/version.sh does it; without it the
# binaries report v0.0.0-master and kubectl warns about version skew.
minor="${K8S_VERSION#v*.}"; minor="${minor%%.*}"
major="${K8S_VERSION#v}"; major="${major%%.*}"
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
  ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.gitCommit= -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

tmp="$VERSION_DIR.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/bin"
trap 'rm -rf "$tmp"' EXIT

build() { # build OUTPUT PACKAGE
  local start=$SECONDS
  log "go build $2 -> $1"
  (cd "$here" && nice -n "${CHRONIK_K8S_NICE:-19}" \
    go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/$1" "$2") >&2
  log "built $1 in $((SECONDS - start))s"
}
total=$SECONDS
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kubectl k8s.io/kubernetes/cmd/kubectl

"$tmp/bin/kube-apiserver" --version >&2
"$tmp/bin/etcd" --version >&2

echo "$stamp" >"$tmp/stamp"
printf 'kubernetes %s\netcd %s\n%s\n' "$K8S_VERSION" "$ETCD_VERSION" "$(go version)" >"$tmp/VERSIONS"
rm -rf "$VERSION_DIR"
mv "$tmp" "$VERSION_DIR"
trap - EXIT
log "done in $((SECONDS - total))s: $BIN"
echo "$BIN"
