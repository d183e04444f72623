#!/usr/bin/env bash
# Smoke check of a running single-node cluster (tools/k8s/node.sh up DIR): real pods,
# volumes, DNS and Services. Builds a tiny static test image (tools/k8s/nettool),
# imports it, then in a namespace of its own:
#   - a headless Service + a 3-replica StatefulSet with volumeClaimTemplates
#     -> every pod Running and Ready, every PVC Bound (default StorageClass,
#        hostPath provisioner), each pod wrote its volume at start
#   - DNS from inside a pod: SRV _echo._tcp.web.<ns>.svc.cluster.local returns all
#     3 pods, A records of pods (short and full names) and of kubernetes.default
#   - pod-to-pod TCP by pod DNS name
#   - a ClusterIP Service reachable from a pod by name and by IP (kube-proxy),
#     and the API server through kubernetes.default.svc:443
#   - the service-account token is mounted; kubectl logs and exec work
# then deletes the namespace and checks that its PVs are gone.
#
#   tools/k8s/node-smoke.sh [DIR]      (DIR as for node.sh, default .k8s/)
#
# Exits non-zero on the first failed check (the namespace is deleted either way).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
DIR="$(cd "${1:-$repo/.k8s}" && pwd)"
NS=chronik-smoke
IMAGE=localhost/chronik/nettool:smoke
TIMEOUT="${CHRONIK_K8S_SMOKE_TIMEOUT:-180}"
log() { printf '[k8s/node-smoke] %s\n' "$*" >&2; }
fail() {
  log "FAILED: $*"
  kc get pods,pvc,pv,svc,endpointslices -o wide >&2 || true
  kc get events --sort-by=.lastTimestamp >&2 || true
  exit 1
}

"$here/node.sh" status "$DIR" >/dev/null 2>&1 || { "$here/node.sh" status "$DIR" || true; fail "the node in $DIR is not up (run: tools/k8s/node.sh up $DIR)"; }
kubectl="$DIR/bin/kubectl"
kc() { "$kubectl" --kubeconfig "$DIR/kubeconfig" -n "$NS" "$@"; }
x() { kc exec "$1" -- /nettool "${@:2}"; } # run nettool in pod $1

# --- the test image -------------------------------------------------------------
t=$SECONDS
work="$(mktemp -d)"
cleanup() {
  rm -rf "$work"
  if [[ -n "${keep:-}" ]]; then return; fi
  "$kubectl" --kubeconfig "$DIR/kubeconfig" delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
}
trap cleanup EXIT
mkdir -p "$work/rootfs/data"
cache="${CHRONIK_CACHE:-$HOME/.cache/chronik}"
(cd "$here/nettool" && CGO_ENABLED=0 GOCACHE="${GOCACHE:-$cache/go/build}" GOFLAGS=-mod=mod \
  go build -trimpath -ldflags "-s -w" -o "$work/rootfs/nettool" .)
python3 "$repo/tools/images/pack.py" "$work/rootfs" "$IMAGE" "$work/nettool.tar" \
  --entrypoint '["/nettool"]' --expose 8080/tcp
"$here/node.sh" import "$DIR" "$work/nettool.tar"
log "test image built and imported ($((SECONDS - t))s)"

# --- a StatefulSet behind a headless Service, and a ClusterIP Service -----------------
"$kubectl" --kubeconfig "$DIR/kubeconfig" delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
"$kubectl" --kubeconfig "$DIR/kubeconfig" create namespace "$NS" >/dev/null
t=$SECONDS
kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{name: echo, port: 8080, protocol: TCP}]
---
apiVersion: v1
kind: Service
metadata: {name: web-vip}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: 8080, protocol: TCP}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: web
  replicas: 3
  podManagementPolicy: Parallel
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: nettool
        image: $IMAGE
        imagePullPolicy: Never
        env:
        - {name: PORT, value: "8080"}
        - {name: DATA_FILE, value: /data/hello}
        ports: [{name: echo, containerPort: 8080}]
        readinessProbe:
          tcpSocket: {port: 8080}
          periodSeconds: 1
        volumeMounts: [{name: data, mountPath: /data}]
  volumeClaimTemplates:
  - metadata: {name: data}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {requests: {storage: 16Mi}}
EOF
kc rollout status statefulset/web --timeout "${TIMEOUT}s" >&2 || fail "StatefulSet web not ready"
log "3 pods Ready $((SECONDS - t))s after apply"

for i in 0 1 2; do
  phase="$(kc get pvc "data-web-$i" -o jsonpath='{.status.phase}')"
  [[ "$phase" == Bound ]] || fail "PVC data-web-$i is $phase"
  sc="$(kc get pvc "data-web-$i" -o jsonpath='{.spec.storageClassName}')"
  [[ "$sc" == standard ]] || fail "PVC data-web-$i got StorageClass '$sc', not the default 'standard'"
  got="$(x "web-$i" cat /data/hello)" || fail "web-$i: cannot read /data/hello"
  [[ "$got" == "web-$i" ]] || fail "web-$i: /data/hello holds '$got'"
  [[ "$(kc get pod "web-$i" -o jsonpath='{.status.phase}')" == Running ]] || fail "web-$i not Running"
done
log "ok: 3 pods Running/Ready, 3 PVCs Bound (StorageClass standard), volumes written by the pods"

# --- DNS from inside a pod ------------------------------------------------------
want="$(printf 'web-%s.web.%s.svc.cluster.local. 8080\n' 0 "$NS" 1 "$NS" 2 "$NS")"
srv=""
for _ in $(seq 1 20); do # endpoints of just-Ready pods reach CoreDNS within a second or two
  srv="$(x web-0 srv "_echo._tcp.web.$NS.svc.cluster.local" 2>&1)" && [[ "$srv" == "$want" ]] && break
  sleep 0.5
done
[[ "$srv" == "$want" ]] || fail "SRV _echo._tcp.web.$NS.svc.cluster.local returned:
$srv
expected:
$want"
log "ok: SRV _echo._tcp.web.$NS.svc.cluster.local -> $(echo "$srv" | cut -d. -f1 | tr '\n' ' ')"

ip1="$(kc get pod web-1 -o jsonpath='{.status.podIP}')"
[[ -n "$ip1" ]] || fail "web-1 has no pod IP"
got="$(x web-0 host web-1.web)" || fail "A web-1.web from web-0 failed"
[[ "$got" == "$ip1" ]] || fail "A web-1.web (search path) from web-0: '$got', web-1 has $ip1"
got="$(x web-2 host "web-1.web.$NS.svc.cluster.local")" || fail "A web-1.web.$NS.svc.cluster.local from web-2 failed"
[[ "$got" == "$ip1" ]] || fail "A web-1.web.$NS.svc.cluster.local from web-2: '$got', want $ip1"
got="$(x web-0 host kubernetes.default)" || fail "A kubernetes.default failed"
[[ "$got" == 10.96.0.1 ]] || fail "A kubernetes.default: '$got'"
if got="$(x web-0 host no-such-name.example 2>&1)"; then fail "no-such-name.example resolved: $got"; fi
log "ok: A records (web-1.web -> $ip1, kubernetes.default -> 10.96.0.1), unknown names fail fast"

# --- TCP: pod to pod, through the ClusterIP Service, to the API server ----------------
got="$(x web-0 get "web-1.web.$NS.svc.cluster.local:8080")" || fail "web-0 -> web-1:8080 failed"
[[ "$got" == "web-1 "* ]] || fail "web-0 -> web-1:8080 answered '$got'"
got="$(x web-2 get "$ip1:8080")" || fail "web-2 -> $ip1:8080 failed"
[[ "$got" == "web-1 "* ]] || fail "web-2 -> $ip1:8080 answered '$got'"
log "ok: pod-to-pod TCP (web-0 -> web-1 by name, web-2 -> web-1 by IP)"

vip="$(kc get svc web-vip -o jsonpath='{.spec.clusterIP}')"
seen=""
for _ in $(seq 1 30); do # kube-proxy spreads connections: see every backend at least once
  got="$(x web-0 get web-vip:80)" || fail "web-0 -> web-vip:80 failed"
  [[ "$got" == web-[012]" "* ]] || fail "web-0 -> web-vip:80 answered '$got'"
  seen+="${got%% *}"$'\n'
  [[ $(sort -u <<<"$seen" | grep -c .) -eq 3 ]] && break
done
got="$(x web-1 get "$vip:80")" || fail "web-1 -> $vip:80 failed"
[[ "$got" == web-[012]" "* ]] || fail "web-1 -> $vip:80 answered '$got'"
log "ok: ClusterIP Service web-vip ($vip:80) from pods, backends seen: $(sort -u <<<"$seen" | tr '\n' ' ')"
got="$(x web-0 dial kubernetes.default.svc:443)" || fail "web-0 -> kubernetes.default.svc:443 failed"
[[ "$got" == "connected 10.96.0.1:443" ]] || fail "web-0 -> kubernetes.default.svc:443: '$got'"
log "ok: API server reachable from a pod through kubernetes.default.svc:443"

# --- service account token, logs -------------------------------------------------
got="$(x web-0 cat /var/run/secrets/kubernetes.io/serviceaccount/namespace)" || fail "no service-account namespace file"
[[ "$got" == "$NS" ]] || fail "service-account namespace file holds '$got'"
got="$(x web-0 cat /var/run/secrets/kubernetes.io/serviceaccount/token)" || fail "no service-account token"
[[ "$got" == ey* ]] || fail "the service-account token is not a JWT"
got="$(kc logs web-0)" || fail "kubectl logs web-0 failed"
[[ "$got" == *"web-0 serving on :8080"* ]] || fail "kubectl logs web-0 shows no start line"
log "ok: service-account token mounted, kubectl logs/exec work"

# --- clean up ----------------------------------------------------------------------
pvs="$(kc get pvc -o jsonpath='{range .items[*]}{.spec.volumeName}{"\n"}{end}')"
t=$SECONDS
"$kubectl" --kubeconfig "$DIR/kubeconfig" delete namespace "$NS" --wait=true --timeout "${TIMEOUT}s" >/dev/null ||
  fail "namespace $NS not deleted"
for pv in $pvs; do
  for _ in $(seq 1 60); do
    "$kubectl" --kubeconfig "$DIR/kubeconfig" get pv "$pv" >/dev/null 2>&1 || break
    sleep 0.5
  done
  if "$kubectl" --kubeconfig "$DIR/kubeconfig" get pv "$pv" >/dev/null 2>&1; then
    fail "PV $pv not deleted"
  fi
done
keep=1
log "ok: namespace and its PVs deleted ($((SECONDS - t))s)"
log "all checks passed"
