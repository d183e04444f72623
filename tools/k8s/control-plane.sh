#!/usr/bin/env bash
# A real, minimal Kubernetes control plane (etcd + kube-apiserver) running as
# local processes on 127.0.0.1, for the operator's integration tests.
#
#   tools/k8s/control-plane.sh start  DIR   # start (or find running), wait for /readyz
#   tools/k8s/control-plane.sh env    DIR   # print: export KUBECONFIG=DIR/kubeconfig
#   tools/k8s/control-plane.sh status DIR   # exit 0 when both processes are up
#   tools/k8s/control-plane.sh stop   DIR   # stop both (data and certs stay in DIR)
#
# `start` prints the same line as `env`, so `eval "$(control-plane.sh start DIR)"`
# works; every other message goes to stderr.
#
# DIR receives: pki/ (CA, serving cert, admin client cert, service-account
# key, all made with openssl), etcd/ (data), logs/, *.pid, ports, tokens.csv,
# kubeconfig (admin: client cert in group system:masters), admin.token (the
# same admin as a bearer token, for curl).
#
# No kubelet, scheduler or controller-manager: objects are stored and served
# (CRDs, RBAC, StatefulSets, ...) but nothing reconciles the built-in kinds.
# The ServiceAccount admission plugin is disabled because the controller that
# creates each namespace's "default" ServiceAccount is not running, and the
# endpoint reconciler is off: it would publish the advertise address 127.0.0.1
# as the "kubernetes" Endpoints, which validation rejects (loopback).
#
# Environment:
#   CHRONIK_K8S_BIN            directory holding etcd, kube-apiserver, kubectl
#                              (default: whatever tools/k8s/build.sh prints,
#                              building them first if they are not cached)
#   CHRONIK_K8S_START_TIMEOUT  seconds to wait for readiness (default 120)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
log() { printf '[k8s/control-plane] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() { echo "usage: $0 start|stop|status|env DIR" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
cmd="$1"
mkdir -p "$2"
DIR="$(cd "$2" && pwd)"
PKI="$DIR/pki"
TIMEOUT="${CHRONIK_K8S_START_TIMEOUT:-120}"

# --- processes ---------------------------------------------------------------

# shellcheck source=tools/k8s/processes.sh
source "$here/processes.sh"

# A TCP port on 127.0.0.1 that nothing listens on. Taken below the Linux
# ephemeral range so that outgoing connections do not grab it meanwhile.
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return
    fi
  done
  die "no free port found"
}

# wait_for NAME CHECK...: 0 once ready, 1 if the process died; on timeout stops
# everything and exits.
wait_for() {
  local rc=0
  wait_ready "$@" || rc=$?
  ((rc != 2)) || { stop_one kube-apiserver; stop_one etcd; die "$1 did not become ready"; }
  return $rc
}

# --- certificates ------------------------------------------------------------

make_pki() {
  [[ -f "$PKI/admin.crt" && -f "$PKI/sa.key" && -f "$DIR/tokens.csv" ]] && return
  command -v openssl >/dev/null || die "openssl is required"
  log "generating certificates in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  (
    cd "$PKI"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=chronik-test-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign"
    sign() { # NAME SUBJECT EXTENSIONS
      openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
      printf '%s\n' "$3" >"$1.ext"
      openssl x509 -req -sha256 -days 3650 -in "$1.csr" -CA ca.crt -CAkey ca.key \
        -CAcreateserial -out "$1.crt" -extfile "$1.ext"
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign admin "/O=system:masters/CN=chronik-admin" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >"$DIR/logs/openssl.log" 2>&1 || { cat "$DIR/logs/openssl.log" >&2; die "openssl failed"; }
  # Static token for the same admin (token,user,uid,"group1,group2").
  local token
  token="$(openssl rand -hex 24)"
  (umask 077 && echo "$token" >"$DIR/admin.token" &&
    echo "$token,chronik-admin,chronik-admin,\"system:masters\"" >"$DIR/tokens.csv")
}

write_kubeconfig() { # PORT
  local tmp="$DIR/kubeconfig.tmp"
  (umask 077 && cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: chronik-test
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: chronik-admin
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/admin.crt")
    client-key-data: $(base64 -w0 <"$PKI/admin.key")
contexts:
- name: chronik-test
  context:
    cluster: chronik-test
    user: chronik-admin
    namespace: default
current-context: chronik-test
EOF
  )
  mv "$tmp" "$DIR/kubeconfig"
}

# --- commands ----------------------------------------------------------------

bin_dir() {
  if [[ -n "${CHRONIK_K8S_BIN:-}" ]]; then
    echo "$CHRONIK_K8S_BIN"
  else
    "$here/build.sh"
  fi
}

etcd_healthy() { curl -sf "http://127.0.0.1:$1/health" | grep -q '"health":"true"'; }
apiserver_ready() {
  curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://127.0.0.1:$1/readyz" | grep -qx ok
}

do_start() {
  if running_pid etcd >/dev/null && running_pid kube-apiserver >/dev/null && [[ -f "$DIR/kubeconfig" ]]; then
    log "already running in $DIR"
    echo "export KUBECONFIG=$DIR/kubeconfig"
    return
  fi
  stop_one kube-apiserver
  stop_one etcd
  local bin
  bin="$(bin_dir)"
  for b in etcd kube-apiserver; do [[ -x "$bin/$b" ]] || die "$bin/$b not found"; done
  command -v curl >/dev/null || die "curl is required"
  mkdir -p "$DIR/logs" "$DIR/etcd"
  chmod 700 "$DIR/etcd"
  make_pki

  local etcd_port peer_port api_port attempt
  for attempt in 1 2 3; do
    etcd_port="$(free_port)"
    peer_port="$(free_port)"
    log "starting etcd on 127.0.0.1:$etcd_port (log: $DIR/logs/etcd.log)"
    launch etcd "$bin/etcd" \
      --name chronik-test \
      --data-dir "$DIR/etcd/" \
      --listen-client-urls "http://127.0.0.1:$etcd_port" \
      --advertise-client-urls "http://127.0.0.1:$etcd_port" \
      --listen-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-cluster "chronik-test=http://127.0.0.1:$peer_port" \
      --unsafe-no-fsync \
      --log-level warn
    wait_for etcd etcd_healthy "$etcd_port" && break
    log "etcd exited (attempt $attempt)"
    ((attempt < 3)) || die "etcd failed to start"
  done

  for attempt in 1 2 3; do
    api_port="$(free_port)"
    log "starting kube-apiserver on https://127.0.0.1:$api_port (log: $DIR/logs/kube-apiserver.log)"
    launch kube-apiserver "$bin/kube-apiserver" \
      --etcd-servers "http://127.0.0.1:$etcd_port" \
      --bind-address 127.0.0.1 \
      --advertise-address 127.0.0.1 \
      --secure-port "$api_port" \
      --tls-cert-file "$PKI/apiserver.crt" \
      --tls-private-key-file "$PKI/apiserver.key" \
      --client-ca-file "$PKI/ca.crt" \
      --token-auth-file "$DIR/tokens.csv" \
      --authorization-mode RBAC \
      --service-cluster-ip-range 10.96.0.0/12 \
      --service-account-issuer https://kubernetes.default.svc.cluster.local \
      --service-account-key-file "$PKI/sa.pub" \
      --service-account-signing-key-file "$PKI/sa.key" \
      --disable-admission-plugins ServiceAccount \
      --endpoint-reconciler-type none \
      --allow-privileged=true \
      --profiling=false \
      --v 0
    wait_for kube-apiserver apiserver_ready "$api_port" && break
    log "kube-apiserver exited (attempt $attempt)"
    if ((attempt == 3)); then
      stop_one etcd
      die "kube-apiserver failed to start"
    fi
  done

  printf 'ETCD_PORT=%s\nAPISERVER_PORT=%s\n' "$etcd_port" "$api_port" >"$DIR/ports"
  write_kubeconfig "$api_port"
  log "ready: https://127.0.0.1:$api_port (etcd 127.0.0.1:$etcd_port)"
  echo "export KUBECONFIG=$DIR/kubeconfig"
}

case "$cmd" in
  start) do_start ;;
  stop)
    stop_one kube-apiserver
    stop_one etcd
    ;;
  status)
    ok=0
    for c in etcd kube-apiserver; do
      if pid="$(running_pid "$c")"; then log "$c: running (pid $pid)"; else log "$c: stopped"; ok=1; fi
    done
    exit $ok
    ;;
  env)
    [[ -f "$DIR/kubeconfig" ]] || die "no kubeconfig in $DIR (run: $0 start $DIR)"
    echo "export KUBECONFIG=$DIR/kubeconfig"
    ;;
  *) usage ;;
esac
