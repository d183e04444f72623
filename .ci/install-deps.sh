#!/usr/bin/env bash
# Idempotent installation of everything the build and the e2e tests need:
#   - Debian packages (apt-get update once, only when something is missing)
#   - Python test requirements (tests/requirements.txt)
#   - Apache Kafka Java client jars (tests/java/fetch-jars.sh, cached in ~/.cache/chronik/jars)
#   - kube-apiserver, etcd and kubectl for the operator's integration tests, and the rest of
#     a single-node cluster (kubelet, controller-manager, scheduler, kube-proxy, CoreDNS,
#     helm: tools/k8s/node.sh) (tools/k8s/build.sh, cached in ~/.cache/chronik/k8s)
# Safe to run repeatedly, as root, non-interactively (CI=true, no stdin).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${CHRONIK_CACHE:-$HOME/.cache/chronik}"
mkdir -p "$cache"
log() { echo "install-deps: $*" >&2; }

# -- Debian packages ---------------------------------------------------------------------
apt_pkgs=(
  build-essential pkg-config make     # cargo build-scripts, make test
  protobuf-compiler clang libclang-dev  # prost/tonic build, bindgen
  kcat                                 # e2e: kcat tests
  python3 python3-dev python3-pip      # e2e: pytest (+ headers if a wheel must be built)
  openjdk-17-jdk-headless maven        # e2e: Java client / kafka-tools tests
  curl ca-certificates procps
  openssl                              # operator tests: tools/k8s/control-plane.sh makes its certificates
  iproute2 nftables e2fsprogs          # chaos suite: namespaces, partitions, slow links, small disks
  containerd runc containernetworking-plugins iptables conntrack  # tools/k8s/node.sh: a real node
)
missing=()
for p in "${apt_pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]] && command -v sudo >/dev/null; then SUDO=sudo; else SUDO=; fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q </dev/null
  $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
else
  log "Debian packages: all present"
fi

# `make run` needs only the build tools above.
if [[ "${CHRONIK_DEPS:-all}" == "build" ]]; then
  log "done (build tools only)"
  exit 0
fi

# -- Python requirements -----------------------------------------------------------------
# The interpreter `make test` uses (Makefile: PYTHON ?= python3).
PY="${PYTHON:-$(command -v python3 || command -v python)}"
req="$repo/tests/requirements.txt"
stamp="$cache/pip-$(echo "$PY" | sha256sum | cut -c1-12).stamp"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] &&
   "$PY" -c "import pytest, pytest_timeout, confluent_kafka, kafka, snappy, lz4.frame, zstandard" 2>/dev/null; then
  log "Python requirements: up to date ($PY)"
else
  log "installing Python requirements with $PY"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_INPUT=1
  # Debian's system python is "externally managed"; the tests own this interpreter's site-packages
  export PIP_BREAK_SYSTEM_PACKAGES=1
  "$PY" -m pip install -q -r "$req" </dev/null
  "$PY" -c "import pytest, pytest_timeout, confluent_kafka, kafka, snappy, lz4.frame, zstandard"
  echo "$want" > "$stamp"
fi

# -- Java jars (kafka-clients, kafka-tools, slf4j-simple) --------------------------------
jars="$(bash "$repo/tests/java/fetch-jars.sh" </dev/null)"
log "Java jars: $jars"

# -- Kubernetes test binaries (operator integration tests) -------------------------------
# operator/tests/api_server.rs starts a real etcd + kube-apiserver (tools/k8s/README.md).
# Built from the Go module proxy at the versions pinned in tools/k8s/go.mod, with the
# machine's Go (>= 1.24). Cached: instant when present; cold it takes about 8 minutes on two
# cores. Built here so that the test run itself does not spend that time (the test harness
# calls the same script and would build them otherwise).
# With CHRONIK_K8S_BACKGROUND=1 (`make test` sets it) a cold build runs in the background,
# niced, beside the cargo build that comes next: the Rust build leaves part of a core idle
# for much of its 28 minutes. The first user (the operator tests, node.sh) calls build.sh,
# which waits on the build's lock and so gets the finished binaries (or, if the background
# build failed, builds again in the foreground and shows why).
k8s_log="$cache/k8s-build.log"
if [[ "${CHRONIK_K8S_BACKGROUND:-0}" == 1 ]] && ! bash "$repo/tools/k8s/build.sh" --check >/dev/null 2>&1; then
  nohup bash "$repo/tools/k8s/build.sh" </dev/null >"$k8s_log" 2>&1 &
  log "Kubernetes test binaries: building in the background (log: $k8s_log)"
else
  k8s_bin="$(bash "$repo/tools/k8s/build.sh" </dev/null)"
  log "Kubernetes test binaries: $k8s_bin"
fi

# -- Apache Kafka broker (only for validation / benchmarks) ------------------------------
if [[ "${CHRONIK_FETCH_KAFKA:-0}" == "1" ]]; then
  bash "$repo/bench/kafka-local.sh" fetch </dev/null
fi
log "done"
