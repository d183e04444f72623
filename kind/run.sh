#!/usr/bin/env bash
# Chronik's end-to-end suite on kind: creates the cluster (kind/cluster.yaml) unless it
# exists, builds the images with Docker (and a second broker build for the upgrade), loads them into the nodes, and runs e2e/
# (which installs the chart and proves each scenario against real pods).
#
#   kind/run.sh            # needs docker, kind, kubectl, helm and python3 on PATH
#   KEEP_CLUSTER=1 kind/run.sh   # leave the cluster running afterwards
#
# On Linux the nodes' addresses are reachable from the host, which the external-listener
# scenario uses.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
name="${KIND_CLUSTER:-chronik}"
tag="${CHRONIK_TAG:-$(awk -F'"' '/^version *=/ {print $2; exit}' "$repo/Cargo.toml")}"
log() { echo "kind: $*" >&2; }

for tool in docker kind kubectl helm python3; do
  command -v "$tool" >/dev/null || { log "$tool is not on PATH"; exit 2; }
done
if ! kind get clusters | grep -qx "$name"; then
  log "creating cluster $name"
  kind create cluster --name "$name" --config "$repo/kind/cluster.yaml" --wait 120s
fi
kubeconfig="$(mktemp)"
trap 'rm -f "$kubeconfig"; [[ -n "${KEEP_CLUSTER:-}" ]] || kind delete cluster --name "$name"' EXIT
kind get kubeconfig --name "$name" >"$kubeconfig"

log "building images (tag $tag)"
docker build --target broker -t "chronik-broker:$tag" "$repo"
docker build --target operator -t "chronik-operator:$tag" "$repo"
# A second build reporting another version, for the rolling-upgrade scenario.
docker build --target broker --build-arg CHRONIK_VERSION="$tag-next" -t "chronik-broker:$tag-next" "$repo"
docker build -t "chronik-kclient:$tag" "$repo/e2e/kclient"
for image in "chronik-broker:$tag" "chronik-broker:$tag-next" "chronik-operator:$tag" "chronik-kclient:$tag"; do
  kind load docker-image --name "$name" "$image"
done

log "running the e2e suite"
KUBECONFIG="$kubeconfig" CHRONIK_TAG="$tag" \
  E2E_SIGNAL_CONTAINER="docker exec {node} ctr -n k8s.io task kill -s {signal} {id}" \
  python3 "$repo/e2e/run.py"
