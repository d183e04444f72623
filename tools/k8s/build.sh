#!/usr/bin/env bash
# Build the pinned Kubernetes binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl), etcd, CoreDNS and helm
# (versions from go.mod here, coredns/go.mod and helm/go.mod) into a cache
# directory and print that bin directory.
#
#   BIN=$(tools/k8s/build.sh)        # -> $CHRONIK_CACHE/k8s/<version>/bin
#
# Idempotent: when the binaries for the pinned go.mod/go.sum files already exist the
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
#
# `build.sh --check` exits 0 when the binaries are there, 1 otherwise, and never builds.
set -euo pipefail

# Bump when the build recipe below changes in a way that changes the output.
BUILD_REV=2

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[k8s/build] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

modver() { # MODULE [GO.MOD]: version of a required module, read from go.mod
  awk -v m="$1" '($1 == m && $2 ~ /^v/) || ($1 == "require" && $2 == m) { print ($1 == "require" ? $3 : $2); exit }' "$here/${2:-go.mod}"
}
K8S_VERSION="$(modver k8s.io/kubernetes)"
ETCD_VERSION="$(modver go.etcd.io/etcd/server/v3)"
[[ -n "$K8S_VERSION" && -n "$ETCD_VERSION" ]] || die "cannot read pinned versions from $here/go.mod"
COREDNS_VERSION="$(modver github.com/coredns/coredns coredns/go.mod)"
HELM_VERSION="$(modver helm.sh/helm/v3 helm/go.mod)"
[[ -n "$COREDNS_VERSION" && -n "$HELM_VERSION" ]] || die "cannot read pinned versions from $here/{coredns,helm}/go.mod"

CACHE="${CHRONIK_CACHE:-$HOME/.cache/chronik}"
VERSION_DIR="$CACHE/k8s/${K8S_VERSION}-etcd${ETCD_VERSION#v}"
BIN="$VERSION_DIR/bin"
# The main module's binaries: all built by one `go build`, so that the packages
# they share (client-go, apiserver, ...) are compiled once.
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
BINARIES=(etcd "${K8S_CMDS[@]}" coredns helm)

stamp="$(cd "$here" && cat go.mod go.sum coredns/go.mod coredns/go.sum helm/go.mod helm/go.sum |
  sha256sum | cut -c1-16)-r$BUILD_REV"

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
[[ "${1:-}" == --check ]] && exit 1 # `build.sh --check`: are the binaries there? (no build)

command -v go >/dev/null || die "go is not installed (Go >= 1.24 is needed)"
mkdir -p "$CACHE/k8s"

# One build at a time per cache (parallel test jobs may all call this script).
exec 9>"$CACHE/k8s/.build.lock"
if command -v flock >/dev/null; then
  flock -n 9 || { log "waiting for the build in progress (another caller holds $CACHE/k8s/.build.lock)"; flock 9; }
  if [[ "${CHRONIK_K8S_REBUILD:-0}" != 1 ]] && have_all; then
    log "built by a concurrent run: $BIN"
    echo "$BIN"
    exit 0
  fi
fi

export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
export GOCACHE="${GOCACHE:-$CACHE/go/build}"
export CGO_ENABLED=0 # static binaries, as the upstream release builds

log "building kubernetes $K8S_VERSION (${K8S_CMDS[*]}), etcd $ETCD_VERSION, coredns $COREDNS_VERSION, helm $HELM_VERSION with $(go version)"
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

# go build DIR LDFLAGS PACKAGE...: one invocation per module; binaries land in
# $tmp/bin named after the package's last path element (a trailing /vN is
# skipped: go.etcd.io/etcd/server/v3 -> "server").
gobuild() {
  local dir="$1" flags="$2" start=$SECONDS
  shift 2
  log "go build ($dir) $*"
  (cd "$here/$dir" && nice -n "${CHRONIK_K8S_NICE:-19}" \
    go build -trimpath -ldflags "$flags" -o "$tmp/bin/" "$@") >&2
  log "built $dir in $((SECONDS - start))s"
}
total=$SECONDS
k8s_pkgs=()
for c in "${K8S_CMDS[@]}"; do k8s_pkgs+=("k8s.io/kubernetes/cmd/$c"); done
gobuild . "$ldflags" go.etcd.io/etcd/server/v3 "${k8s_pkgs[@]}"
mv "$tmp/bin/server" "$tmp/bin/etcd"

# CoreDNS: the version is a constant in coremain; only the commit is stamped.
gobuild coredns "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" \
  github.com/coredns/coredns

# helm, stamped as its Makefile does (the kubernetes minor it assumes for
# .Capabilities and deprecation lint comes from its client-go version).
helm_k8s="$(modver k8s.io/client-go helm/go.mod)" # v0.34.2 -> 1.34
helm_k8s_minor="${helm_k8s#v0.}"; helm_k8s_minor="${helm_k8s_minor%%.*}"
helm_flags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
helm_flags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  helm_flags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$helm_k8s_minor"
done
gobuild helm "$helm_flags" helm.sh/helm/v3/cmd/helm

for b in "${BINARIES[@]}"; do [[ -x "$tmp/bin/$b" ]] || die "go build did not produce $b"; done
"$tmp/bin/kube-apiserver" --version >&2
"$tmp/bin/kubelet" --version >&2
"$tmp/bin/etcd" --version >&2
"$tmp/bin/coredns" -version >&2
"$tmp/bin/helm" version --short >&2

echo "$stamp" >"$tmp/stamp"
printf 'kubernetes %s\netcd %s\ncoredns %s\nhelm %s\n%s\n' "$K8S_VERSION" "$ETCD_VERSION" \
  "$COREDNS_VERSION" "$HELM_VERSION" "$(go version)" >"$tmp/VERSIONS"
rm -rf "$VERSION_DIR"
mv "$tmp" "$VERSION_DIR"
trap - EXIT
log "done in $((SECONDS - total))s: $BIN"
echo "$BIN"
