#!/usr/bin/env bash
# A real single-node Kubernetes on this machine, as plain processes (no kind, no
# Docker): etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# containerd (+ runc), a CNI bridge, kubelet, kube-proxy (iptables) and CoreDNS
# (as a pod). Pods are real: images are imported tarballs (tools/images/pack.py).
#
#   tools/k8s/node.sh up     [DIR]   start (or complete) the node; idempotent
#   tools/k8s/node.sh down   [DIR]   stop everything, undo network state and side effects
#   tools/k8s/node.sh status [DIR]   exit 0 when every component runs and the node is Ready
#   tools/k8s/node.sh env    [DIR]   print: export KUBECONFIG=DIR/kubeconfig PATH=DIR/bin:$PATH
#   tools/k8s/node.sh import DIR FILE.tar...   import docker-archive images into the node
#   tools/k8s/node.sh purge  [DIR]   down, then delete DIR and the hostPath PV data
#
# DIR defaults to .k8s/ in the repository. `up` prints the `env` line on stdout
# (so `eval "$(node.sh up)"` works); everything else goes to stderr. Data (etcd,
# images, certificates) stays in DIR across down/up; `purge` for a fresh cluster.
#
# Fixed addresses (one node per machine): bridge chronik0 = 10.244.0.1/24 (the
# node IP; pods get 10.244.0.2-254), Services 10.96.0.0/12 (kubernetes 10.96.0.1,
# kube-dns 10.96.0.10), API server https://10.244.0.1:6443, etcd 127.0.0.1:12379.
# Nothing listens on the machine's other interfaces; pod traffic is confined to
# the bridge (FORWARD rules) and "unreachable" routes for 10.244.0.0/16 and
# 10.96.0.0/12 (metric 4000, kept after `down`) stop those subnets from ever
# following the default route. See tools/k8s/README.md for the settings and why.
#
# Needs root, containerd, runc, /usr/lib/cni (Debian: containerd runc
# containernetworking-plugins), iptables, ip, openssl, curl, gcc, python3.
#
# Environment:
#   CHRONIK_K8S_BIN            directory with the binaries (default: tools/k8s/build.sh)
#   CHRONIK_K8S_START_TIMEOUT  seconds to wait for each component (default 120)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
log() { printf '[k8s/node] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { echo "usage: $0 up|down|status|env|purge [DIR] | import DIR FILE.tar..." >&2; exit 2; }

[[ $# -ge 1 ]] || usage
cmd="$1"
shift
if [[ "$cmd" == import ]]; then
  [[ $# -ge 2 ]] || usage
else
  [[ $# -le 1 ]] || usage
fi
mkdir -p "${1:-$repo/.k8s}"
DIR="$(cd "${1:-$repo/.k8s}" && pwd)"
[[ $# -ge 1 ]] && shift
TIMEOUT="${CHRONIK_K8S_START_TIMEOUT:-120}"

# --- fixed network plan ------------------------------------------------------
BRIDGE=chronik0
NODE_IP=10.244.0.1
POD_SUBNET=10.244.0.0/24 # what this node's bridge and IPAM use
POD_CIDR=10.244.0.0/16   # the cluster's pod range (unreachable route, kube-proxy)
SVC_CIDR=10.96.0.0/12
DNS_IP=10.96.0.10
NODE_NAME=chronik-node
API_PORT=6443
ETCD_PORT=12379
ETCD_PEER_PORT=12380
UNREACHABLE_METRIC=4000
PAUSE_IMAGE=localhost/chronik/pause:1

PKI="$DIR/pki"
STATE="$DIR/state" # what `up` found before changing the machine; `down` restores it
CTRD="$DIR/containerd"
SOCK="$CTRD/containerd.sock"
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler volume-modes containerd kubelet kube-proxy)
# Where kube-controller-manager's hostPath provisioner creates volumes (root, 0750).
PV_ROOT=/tmp/hostpath_pv

# Saved sysctls: changed by the kubelet (kernel tunables), by us (ip_forward)
# or possibly by kube-proxy. Restored by `down`.
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward
  net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables
  net.bridge.bridge-nf-call-ip6tables net.netfilter.nf_conntrack_max)

# --- processes -----------------------------------------------------------------

# shellcheck source=tools/k8s/processes.sh
source "$here/processes.sh"

wait_for() { # NAME CHECK...: until CHECK passes; dies if NAME exits or on timeout
  wait_ready "$@" || die "$1 did not become ready (log: $DIR/logs/$1.log)"
}

bin_dir() {
  if [[ -n "${CHRONIK_K8S_BIN:-}" ]]; then echo "$CHRONIK_K8S_BIN"; else "$here/build.sh"; fi
}

kc() { "$BIN/kubectl" --kubeconfig "$DIR/kubeconfig" "$@"; }

# --- certificates and kubeconfigs --------------------------------------------

make_pki() {
  [[ -f "$PKI/done" ]] && return
  command -v openssl >/dev/null || die "openssl is required"
  log "generating certificates in $PKI"
  rm -rf "$PKI"
  mkdir -p "$PKI"
  (
    cd "$PKI"
    umask 077
    openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 3650 \
      -keyout ca.key -out ca.crt -subj "/CN=chronik-node-ca" \
      -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign"
    sign() { # NAME SUBJECT USAGE [SANS]
      openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
      {
        echo "basicConstraints=CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        echo "extendedKeyUsage=$3"
        [[ -n "${4:-}" ]] && echo "subjectAltName=$4"
      } >"$1.ext"
      openssl x509 -req -sha256 -days 3650 -in "$1.csr" -CA ca.crt -CAkey ca.key \
        -CAcreateserial -out "$1.crt" -extfile "$1.ext"
      rm -f "$1.csr" "$1.ext"
    }
    sign apiserver "/CN=kube-apiserver" serverAuth \
      "IP:$NODE_IP,IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:$NODE_NAME,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    sign admin "/O=system:masters/CN=chronik-admin" clientAuth
    sign controller-manager "/CN=system:kube-controller-manager" clientAuth
    sign scheduler "/CN=system:kube-scheduler" clientAuth
    sign kube-proxy "/CN=system:kube-proxy" clientAuth
    sign kubelet-client "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    sign kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
  ) >"$DIR/logs/openssl.log" 2>&1 || { cat "$DIR/logs/openssl.log" >&2; die "openssl failed"; }
  touch "$PKI/done"
}

write_kubeconfig() { # FILE CERT-NAME USER
  (umask 077 && cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: chronik-node
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $3
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$2.crt")
    client-key-data: $(base64 -w0 <"$PKI/$2.key")
contexts:
- name: chronik-node
  context:
    cluster: chronik-node
    user: $3
    namespace: default
current-context: chronik-node
EOF
  )
  mv "$1.tmp" "$1"
}

# --- machine state: saved once, restored by down ---------------------------

save_state() {
  mkdir -p "$STATE"
  [[ -f "$STATE/saved" ]] && return
  local s
  : >"$STATE/sysctl"
  for s in "${SYSCTLS[@]}"; do
    if v="$(sysctl -n "$s" 2>/dev/null)"; then printf '%s=%s\n' "$s" "$v" >>"$STATE/sysctl"; fi
  done
  [[ -e /var/log/containers ]] || touch "$STATE/created-var-log-containers"
  [[ -e /run/containerd ]] || touch "$STATE/created-run-containerd"
  nft list tables 2>/dev/null >"$STATE/nft-tables" || true
  touch "$STATE/saved"
}

restore_state() {
  [[ -f "$STATE/saved" ]] || return 0
  local kv
  while IFS= read -r kv; do
    [[ -n "$kv" ]] || continue
    if [[ "$(sysctl -n "${kv%%=*}" 2>/dev/null)" != "${kv#*=}" ]]; then
      log "restoring sysctl $kv"
      sysctl -q -w "$kv" >/dev/null || log "warning: cannot restore $kv"
    fi
  done <"$STATE/sysctl"
  if [[ -d /var/log/containers ]]; then
    # the kubelet's symlinks to our pod logs
    find /var/log/containers -maxdepth 1 -type l -lname "$DIR/*" -delete 2>/dev/null || true
    [[ -f "$STATE/created-var-log-containers" ]] && rmdir /var/log/containers 2>/dev/null || true
  fi
  if [[ -f "$STATE/created-run-containerd" && -d /run/containerd ]]; then
    # shim sockets (/run/containerd/s/*) of the shims we ran; no other containerd here
    rm -rf /run/containerd
  fi
  # iptables-nft tables that only the node created and that hold nothing now
  local fam ipt tbl
  for fam in ip ip6; do
    ipt=iptables
    [[ $fam == ip6 ]] && ipt=ip6tables
    for tbl in filter nat mangle raw; do
      grep -qx "table $fam $tbl" "$STATE/nft-tables" 2>/dev/null && continue
      nft list table "$fam" "$tbl" >/dev/null 2>&1 || continue
      if [[ -z "$("$ipt" -t "$tbl" -S 2>/dev/null | grep -v '^-P .* ACCEPT$')" ]]; then
        nft delete table "$fam" "$tbl" 2>/dev/null || true
      fi
    done
  done
  rm -rf "$STATE"
}

# --- network ----------------------------------------------------------------

ipt() { # FAMILY-BINARY ARGS...: iptables/ip6tables, quiet about missing tables
  "$@" 2>/dev/null
}

network_up() {
  # Unreachable routes first: whatever happens later, these subnets never take the
  # default route out of the machine. Kept after `down` on purpose.
  local net
  for net in "$POD_CIDR" "$SVC_CIDR"; do
    [[ -n "$(ip route show type unreachable "$net")" ]] ||
      ip route add unreachable "$net" metric "$UNREACHABLE_METRIC"
  done
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE ($NODE_IP/${POD_SUBNET#*/})"
    ip link add "$BRIDGE" type bridge
  fi
  [[ "$(ip -4 addr show dev "$BRIDGE")" == *"inet $NODE_IP/"* ]] ||
    ip addr add "$NODE_IP/${POD_SUBNET#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Service traffic between pods is routed (and DNATed) by the host.
  sysctl -q -w net.ipv4.ip_forward=1
  # Forwarded traffic may go from the bridge to the bridge, nowhere else.
  iptables -N CHRONIK-NODE 2>/dev/null || iptables -F CHRONIK-NODE
  iptables -A CHRONIK-NODE -i "$BRIDGE" -o "$BRIDGE" -j RETURN
  iptables -A CHRONIK-NODE -i "$BRIDGE" -j DROP
  iptables -A CHRONIK-NODE -o "$BRIDGE" -j DROP
  iptables -C FORWARD -j CHRONIK-NODE 2>/dev/null || iptables -I FORWARD 1 -j CHRONIK-NODE
}

# Remove the rules and chains of the kubelet (KUBE-FIREWALL, KUBE-KUBELET-CANARY,
# KUBE-IPTABLES-HINT), kube-proxy (KUBE-SERVICES, ...) and ours (CHRONIK-NODE).
iptables_clean() {
  local ipt tbl rule chain
  for ipt in iptables ip6tables iptables-legacy ip6tables-legacy; do
    command -v "$ipt" >/dev/null || continue
    for tbl in filter nat mangle raw; do
      # Listing a legacy table instantiates it in the kernel: look only at existing ones.
      case "$ipt" in
        iptables-legacy) grep -qx "$tbl" /proc/net/ip_tables_names 2>/dev/null || continue ;;
        ip6tables-legacy) grep -qx "$tbl" /proc/net/ip6_tables_names 2>/dev/null || continue ;;
      esac
      "$ipt" -t "$tbl" -S >/dev/null 2>&1 || continue
      # rules anywhere that jump to our chains
      while IFS= read -r rule; do
        # shellcheck disable=SC2086 # the rule is word-split as iptables-save wrote it
        eval "\"$ipt\" -t $tbl ${rule/#-A/-D}" 2>/dev/null || true
      done < <("$ipt" -t "$tbl" -S 2>/dev/null | grep -E '^-A ' | grep -E -- '-j (KUBE-|CHRONIK-NODE)' |
        grep -vE '^-A (KUBE-|CHRONIK-NODE)')
      for chain in $("$ipt" -t "$tbl" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 == "CHRONIK-NODE") { print $2 }'); do
        "$ipt" -t "$tbl" -F "$chain" 2>/dev/null || true
      done
      for chain in $("$ipt" -t "$tbl" -S 2>/dev/null | awk '$1 == "-N" && ($2 ~ /^KUBE-/ || $2 == "CHRONIK-NODE") { print $2 }'); do
        "$ipt" -t "$tbl" -X "$chain" 2>/dev/null || log "warning: $ipt -t $tbl -X $chain failed"
      done
    done
  done
}

network_down() {
  local veth
  for veth in $(ip -o link show master "$BRIDGE" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
    ip link del "$veth" 2>/dev/null || true
  done
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "deleting bridge $BRIDGE"
    ip link del "$BRIDGE"
  fi
  iptables_clean
}

# --- configuration files ------------------------------------------------------

write_configs() {
  mkdir -p "$DIR/config" "$DIR/cni/net.d" "$DIR/cni/ipam" "$CTRD"/{root,state,opt} \
    "$DIR/kubelet" "$DIR/pod-logs" "$DIR/kubeconfigs"
  write_kubeconfig "$DIR/kubeconfig" admin chronik-admin
  write_kubeconfig "$DIR/kubeconfigs/controller-manager" controller-manager system:kube-controller-manager
  write_kubeconfig "$DIR/kubeconfigs/scheduler" scheduler system:kube-scheduler
  write_kubeconfig "$DIR/kubeconfigs/kube-proxy" kube-proxy system:kube-proxy
  write_kubeconfig "$DIR/kubeconfigs/kubelet" kubelet-client "system:node:$NODE_NAME"

  cat >"$DIR/cni/net.d/10-chronik.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "chronik",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF

  # containerd 1.6 (Debian bookworm), everything under DIR.
  cat >"$DIR/config/containerd.toml" <<EOF
version = 2
root = "$CTRD/root"
state = "$CTRD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$SOCK"

[ttrpc]
  address = "$SOCK.ttrpc"

[debug]
  address = ""

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CTRD/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # The kubelet asks for oom_score_adj -998 for the sandbox; lowering it needs
  # CAP_SYS_RESOURCE, which this machine lacks: every sandbox then fails with
  # "can't get final child's PID from pipe: EOF". Clamp instead.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$CTRD/runc"
  # No registry is reachable from here and nothing may leave the machine: every image the
  # node runs is imported (node.sh import). A pull of anything else (an unknown image in
  # the e2e suite) is sent to a closed local port and fails at once.
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$DIR/config/certs.d"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$DIR/cni/net.d"
    max_conf_num = 1
EOF

  local registry
  for registry in docker.io registry.k8s.io localhost; do
    mkdir -p "$DIR/config/certs.d/$registry"
    cat >"$DIR/config/certs.d/$registry/hosts.toml" <<EOF
server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
  done

  cat >"$DIR/config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
containerRuntimeEndpoint: unix://$SOCK
# This machine: cgroup v1 (kubelet 1.34 refuses it unless told), no systemd, swap allowed.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: /etc/resolv.conf
podLogsDir: $DIR/pod-logs
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization:
  mode: Webhook
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
rotateCertificates: false
serverTLSBootstrap: false
# A test node on a shared disk: never evict or garbage-collect images for disk
# pressure (the locally imported images cannot be pulled again).
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
shutdownGracePeriod: 0s
shutdownGracePeriodCriticalPods: 0s
staticPodPath: ""
EOF

  cat >"$DIR/config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $DIR/kubeconfigs/kube-proxy
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clusterCIDR: $POD_CIDR
# NodePorts only on the bridge address, never on the machine's real interfaces.
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  # Masquerade all Service traffic: the reply of a pod reached through a
  # ClusterIP then returns through the host, which undoes the DNAT.
  masqueradeAll: true
  localhostNodePorts: false
  syncPeriod: 30s
  minSyncPeriod: 0s
# Leave the machine's conntrack sysctls alone.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# --- images -------------------------------------------------------------------

images_build() {
  mkdir -p "$DIR/images"
  if [[ ! -s "$DIR/images/pause.tar" || "$repo/tools/images/pause/pause.c" -nt "$DIR/images/pause.tar" ]]; then
    bash "$repo/tools/images/pause/build.sh" "$DIR/images/pause.tar" "$PAUSE_IMAGE"
  fi
  if [[ ! -s "$DIR/images/coredns.tar" || "$BIN/coredns" -nt "$DIR/images/coredns.tar" ]]; then
    local root="$DIR/images/coredns.rootfs"
    rm -rf "$root"
    mkdir -p "$root"
    cp "$BIN/coredns" "$root/coredns"
    python3 "$repo/tools/images/pack.py" "$root" "$COREDNS_IMAGE" "$DIR/images/coredns.tar" \
      --entrypoint '["/coredns"]' --user 65532:65532
    rm -rf "$root"
  fi
}

ctr_() { ctr -a "$SOCK" -n k8s.io "$@"; }

images_import() { # FILE...
  local f
  for f in "$@"; do
    log "importing $(basename "$f")"
    ctr_ images import --snapshotter overlayfs "$f" >&2
  done
}

# --- addons -----------------------------------------------------------------------

addons() {
  kc apply -f - >&2 <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: standard
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: kubernetes.io/host-path
reclaimPolicy: Delete
volumeBindingMode: Immediate
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:coredns}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
subjects:
- {kind: ServiceAccount, name: coredns, namespace: kube-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            ttl 5
        }
        cache 5
        loadbalance
    }
    # Pods cannot leave the machine, so there is no upstream: every other name is
    # answered NXDOMAIN at once (instead of SERVFAIL after a timeout).
    .:53 {
        errors
        template ANY ANY {
            rcode NXDOMAIN
        }
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector:
    matchLabels: {k8s-app: kube-dns}
  template:
    metadata:
      labels: {k8s-app: kube-dns}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      containers:
      - name: coredns
        image: $COREDNS_IMAGE
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        resources:
          requests: {cpu: 10m, memory: 20Mi}
          limits: {memory: 170Mi}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          runAsNonRoot: true
          capabilities: {drop: [ALL]}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
          periodSeconds: 10
          failureThreshold: 5
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        volumeMounts:
        - {name: config, mountPath: /etc/coredns, readOnly: true}
      volumes:
      - name: config
        configMap:
          name: coredns
          items: [{key: Corefile, path: Corefile}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns, kubernetes.io/name: CoreDNS}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: $DNS_IP
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

# --- checks ---------------------------------------------------------------------

# (no `curl | grep -q`: with pipefail, grep's early exit can fail the pipeline)
etcd_healthy() { [[ "$(curl -sf "http://127.0.0.1:$ETCD_PORT/health")" == *'"health":"true"'* ]]; }
https_ok() { # URL CERT: /healthz-style endpoint answering "ok"
  [[ "$(curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/$2.crt" --key "$PKI/$2.key" "$1")" == ok ]]
}
apiserver_ready() { https_ok "https://$NODE_IP:$API_PORT/readyz" admin; }
kcm_healthy() { [[ "$(curl -sfk --max-time 5 https://127.0.0.1:10257/healthz)" == ok ]]; }
scheduler_healthy() { [[ "$(curl -sfk --max-time 5 https://127.0.0.1:10259/healthz)" == ok ]]; }
containerd_ready() { [[ -S "$SOCK" ]] && ctr_ version; }
kubelet_healthy() { [[ "$(curl -sf --max-time 5 http://127.0.0.1:10248/healthz)" == ok ]]; }
node_ready() {
  [[ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}
proxy_healthy() { curl -sf --max-time 5 http://127.0.0.1:10256/healthz >/dev/null; }
coredns_ready() {
  [[ "$(kc -n kube-system get deploy coredns -o jsonpath='{.status.readyReplicas}')" == 1 ]]
}
sa_ready() { kc -n default get serviceaccount default; }

# --- up -------------------------------------------------------------------------

start_component() { # NAME CHECK-FUNCTION ARGS...: launch unless running, then wait for CHECK
  local name="$1" check="$2" t=$SECONDS
  shift 2
  if ! running_pid "$name" >/dev/null; then
    log "starting $name (log: $DIR/logs/$name.log)"
    launch "$name" "$@"
  fi
  wait_for "$name" "$check"
  log "$name ready ($((SECONDS - t))s)"
}

do_up() {
  local t0=$SECONDS
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  local tool
  for tool in containerd containerd-shim-runc-v2 runc ctr ip iptables nft openssl curl gcc python3 setsid; do
    command -v "$tool" >/dev/null || die "$tool not found (see .ci/install-deps.sh)"
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/loopback ]] ||
    die "CNI plugins not found in /usr/lib/cni (Debian: containernetworking-plugins)"
  BIN="$(bin_dir)"
  for tool in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns helm; do
    [[ -x "$BIN/$tool" ]] || die "$BIN/$tool not found"
  done
  COREDNS_IMAGE="localhost/chronik/coredns:$("$BIN/coredns" -version | awk -F- '/^CoreDNS-/ { print $2; exit }')"
  mkdir -p "$DIR/logs" "$DIR/bin" "$DIR/etcd"
  chmod 700 "$DIR/etcd"
  ln -sfn "$BIN/kubectl" "$DIR/bin/kubectl"
  ln -sfn "$BIN/helm" "$DIR/bin/helm"

  save_state
  network_up
  make_pki
  write_configs

  start_component etcd etcd_healthy "$BIN/etcd" \
    --name "$NODE_NAME" \
    --data-dir "$DIR/etcd/" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --log-level warn

  start_component kube-apiserver apiserver_ready "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address "$NODE_IP" \
    --advertise-address "$NODE_IP" \
    --secure-port "$API_PORT" \
    --tls-cert-file "$PKI/apiserver.crt" \
    --tls-private-key-file "$PKI/apiserver.key" \
    --client-ca-file "$PKI/ca.crt" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --service-cluster-ip-range "$SVC_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" \
    --service-account-signing-key-file "$PKI/sa.key" \
    --allow-privileged=true \
    --profiling=false \
    --v 0

  start_component kube-controller-manager kcm_healthy "$BIN/kube-controller-manager" \
    --kubeconfig "$DIR/kubeconfigs/controller-manager" \
    --authentication-kubeconfig "$DIR/kubeconfigs/controller-manager" \
    --authorization-kubeconfig "$DIR/kubeconfigs/controller-manager" \
    --bind-address 127.0.0.1 \
    --secure-port 10257 \
    --leader-elect=false \
    --cluster-name chronik \
    --use-service-account-credentials \
    --service-account-private-key-file "$PKI/sa.key" \
    --root-ca-file "$PKI/ca.crt" \
    --cluster-signing-cert-file "$PKI/ca.crt" \
    --cluster-signing-key-file "$PKI/ca.key" \
    --service-cluster-ip-range "$SVC_CIDR" \
    --cluster-cidr "$POD_CIDR" \
    --allocate-node-cidrs=false \
    --enable-hostpath-provisioner \
    --profiling=false \
    --v 0

  # The hostPath provisioner makes each volume root-owned 0750 and hostPath volumes get
  # no fsGroup ownership change, so non-root pods (Chronik's uid 65532) could not write
  # them. kind's local-path provisioner makes its volumes 0777; so does this loop, for
  # each new volume, well before the kubelet mounts it.
  start_component volume-modes true bash -c \
    'while :; do find "$1" -mindepth 1 -maxdepth 1 -type d ! -perm 0777 -exec chmod 0777 {} + 2>/dev/null; sleep 0.2; done' \
    "$DIR/volume-modes" "$PV_ROOT"

  start_component kube-scheduler scheduler_healthy "$BIN/kube-scheduler" \
    --kubeconfig "$DIR/kubeconfigs/scheduler" \
    --authentication-kubeconfig "$DIR/kubeconfigs/scheduler" \
    --authorization-kubeconfig "$DIR/kubeconfigs/scheduler" \
    --bind-address 127.0.0.1 \
    --secure-port 10259 \
    --leader-elect=false \
    --profiling=false \
    --v 0

  images_build
  start_component containerd containerd_ready containerd --config "$DIR/config/containerd.toml"
  local want=() f
  ctr_ images ls -q 2>/dev/null >"$DIR/images/present" || true
  grep -qx "$PAUSE_IMAGE" "$DIR/images/present" || want+=("$DIR/images/pause.tar")
  grep -qx "$COREDNS_IMAGE" "$DIR/images/present" || want+=("$DIR/images/coredns.tar")
  rm -f "$DIR/images/present"
  ((${#want[@]} == 0)) || images_import "${want[@]}"

  start_component kubelet kubelet_healthy "$BIN/kubelet" \
    --config "$DIR/config/kubelet.yaml" \
    --kubeconfig "$DIR/kubeconfigs/kubelet" \
    --root-dir "$DIR/kubelet" \
    --cert-dir "$DIR/kubelet/pki" \
    --hostname-override "$NODE_NAME" \
    --node-ip "$NODE_IP" \
    --v 0
  local t=$SECONDS
  wait_for kubelet node_ready
  log "node $NODE_NAME Ready ($((SECONDS - t))s)"

  start_component kube-proxy proxy_healthy "$BIN/kube-proxy" --config "$DIR/config/kube-proxy.yaml" --v 0
  # kube-proxy puts its jumps at the top of FORWARD (KUBE-FORWARD accepts Service
  # traffic); ours goes back in front so nothing forwarded leaves the bridge.
  iptables -D FORWARD -j CHRONIK-NODE 2>/dev/null || true
  iptables -I FORWARD 1 -j CHRONIK-NODE

  t=$SECONDS
  addons
  wait_for kubelet coredns_ready
  wait_for kube-controller-manager sa_ready
  log "CoreDNS ready ($((SECONDS - t))s)"
  log "up in $((SECONDS - t0))s: KUBECONFIG=$DIR/kubeconfig, kubectl and helm in $DIR/bin"
  echo "export KUBECONFIG=$DIR/kubeconfig PATH=$DIR/bin:\$PATH"
}

# --- down -----------------------------------------------------------------------

# Processes of pods and shims that belong to this node, by /proc scan.
node_pids() {
  local p cg
  for p in /proc/[0-9]*; do
    p="${p#/proc/}"
    [[ "$p" == "$$" ]] && continue
    # shims: their command line names our socket
    if [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline")" == *"-address $SOCK"* ]]; then
      echo "$p"
      continue
    fi
    # pod processes: in the kubelet's cgroup tree
    cg="$(cat "/proc/$p/cgroup" 2>/dev/null)" || continue
    grep -qE ':/kubepods(/|$)' <<<"$cg" && echo "$p"
  done
  return 0
}

unmount_under() { # DIR: every mount at or below DIR, deepest first
  local m
  for m in $(awk -v d="$1" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done
}

cgroups_clean() {
  local root d
  for root in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/kubepods /sys/fs/cgroup/k8s.io; do
    [[ -d "$root" ]] || continue
    find "$root" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d "$root" ]] && log "warning: cgroup $root still in use"
  done
  return 0
}

do_down() {
  local t0=$SECONDS pid id pids
  [[ $(id -u) -eq 0 ]] || die "must run as root"
  BIN="${CHRONIK_K8S_BIN:-}"
  [[ -n "$BIN" ]] || BIN="$(dirname "$(readlink -f "$DIR/bin/kubectl" 2>/dev/null || echo /nonexistent/x)")"

  stop_one kubelet 10
  # Pod containers: kill every task, then let containerd reap them.
  if running_pid containerd >/dev/null && [[ -S "$SOCK" ]]; then
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    sleep 0.5
    for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1 || true; done
  fi
  stop_one containerd 10
  # Whatever is left: shims, pod processes in the kubepods cgroups, runc state.
  pids="$(node_pids)"
  if [[ -n "$pids" ]]; then
    log "killing leftover pod and shim processes: $(echo $pids)"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for pid in $pids; do wait_gone "$pid" 5 || log "warning: pid $pid survived SIGKILL"; done
  fi
  if [[ -d "$CTRD/runc/k8s.io" ]]; then
    for id in $(runc --root "$CTRD/runc/k8s.io" list -q 2>/dev/null); do
      runc --root "$CTRD/runc/k8s.io" delete -f "$id" 2>/dev/null || true
    done
  fi

  stop_one kube-proxy 10
  stop_one kube-scheduler 10
  stop_one volume-modes 5
  stop_one kube-controller-manager 10
  stop_one kube-apiserver 15
  stop_one etcd 10

  # kube-proxy's own cleanup (iptables, ipvs and nftables rules), then the rest.
  if [[ -x "$BIN/kube-proxy" ]]; then
    "$BIN/kube-proxy" --cleanup --v 0 >>"$DIR/logs/kube-proxy-cleanup.log" 2>&1 || true
  fi
  unmount_under "$DIR"
  cgroups_clean
  network_down
  restore_state
  # Runtime state only: pods are gone, so are their IP allocations and netns.
  rm -rf "$DIR/cni/ipam" "$CTRD/state" "$DIR"/*.pid
  log "down in $((SECONDS - t0))s"
}

do_status() {
  local ok=0 c pid
  for c in "${COMPONENTS[@]}"; do
    if pid="$(running_pid "$c")"; then log "$c: running (pid $pid)"; else log "$c: stopped"; ok=1; fi
  done
  if ((ok == 0)); then
    BIN="$(dirname "$(readlink -f "$DIR/bin/kubectl")")"
    if node_ready; then log "node $NODE_NAME: Ready"; else log "node $NODE_NAME: not Ready"; ok=1; fi
  fi
  return $ok
}

do_purge() {
  do_down
  if [[ -n "$(awk -v d="$DIR" '$5 == d || index($5, d "/") == 1' /proc/self/mountinfo)" ]]; then
    die "mounts remain under $DIR; not deleting it"
  fi
  log "deleting $DIR and $PV_ROOT"
  rm -rf --one-file-system "$DIR" "$PV_ROOT"
}

case "$cmd" in
  up) do_up ;;
  down) do_down ;;
  status) do_status ;;
  env)
    [[ -f "$DIR/kubeconfig" ]] || die "no kubeconfig in $DIR (run: $0 up $DIR)"
    echo "export KUBECONFIG=$DIR/kubeconfig PATH=$DIR/bin:\$PATH"
    ;;
  import)
    running_pid containerd >/dev/null || die "containerd of $DIR is not running (run: $0 up $DIR)"
    for f in "$@"; do [[ -f "$f" ]] || die "$f: no such file"; done
    images_import "$@"
    ;;
  purge) do_purge ;;
  *) usage ;;
esac
