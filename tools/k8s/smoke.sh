#!/usr/bin/env bash
# End-to-end check of the harness: build (or reuse) the binaries, start a
# control plane in a temporary directory, exercise it with kubectl (namespaces,
# a CustomResourceDefinition + custom resource, schema validation, RBAC), stop.
# Exits non-zero on the first failure. Usage: tools/k8s/smoke.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(mktemp -d "${TMPDIR:-/tmp}/chronik-k8s-smoke.XXXXXX")"
cleanup() {
  "$here/control-plane.sh" stop "$dir" || true
  rm -rf "$dir"
}
trap cleanup EXIT

bin="$("$here/build.sh")"
eval "$("$here/control-plane.sh" start "$dir")"
k() { echo "+ kubectl $*" >&2; "$bin/kubectl" "$@"; }

k version
k get ns
k apply -f - <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.chronik.io
spec:
  group: test.chronik.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              replicas: {type: integer, minimum: 1}
    subresources: {status: {}}
EOF
k wait --for condition=established --timeout=60s crd/widgets.test.chronik.io
k apply -f - <<'EOF'
apiVersion: test.chronik.io/v1alpha1
kind: Widget
metadata: {name: w1, namespace: default}
spec: {replicas: 3}
EOF
k get crd widgets.test.chronik.io
k get widgets
[[ "$(k get widget w1 -o jsonpath='{.spec.replicas}')" == 3 ]]
k api-resources | grep test.chronik.io

# The CRD's OpenAPI schema is enforced.
if k apply -f - <<'EOF' 2>"$dir/invalid.err"; then
apiVersion: test.chronik.io/v1alpha1
kind: Widget
metadata: {name: bad, namespace: default}
spec: {replicas: 0}
EOF
  echo "FAIL: invalid Widget was accepted" >&2
  exit 1
fi
grep -q "greater than or equal to 1" "$dir/invalid.err"

# RBAC is enforced: a fresh service account may not list widgets, and its
# token (issued through the TokenRequest API) authenticates.
k create serviceaccount smoke
can="$(k auth can-i list widgets.test.chronik.io --as system:serviceaccount:default:smoke || true)"
[[ "$can" == no ]]
server="$(k config view --minify -o jsonpath='{.clusters[0].cluster.server}')"
sa_kubeconfig="$dir/smoke-sa.kubeconfig"
KUBECONFIG="$sa_kubeconfig" "$bin/kubectl" config set-cluster c --server "$server" \
  --certificate-authority "$dir/pki/ca.crt" >/dev/null
KUBECONFIG="$sa_kubeconfig" "$bin/kubectl" config set-credentials sa --token "$(k create token smoke)" >/dev/null
KUBECONFIG="$sa_kubeconfig" "$bin/kubectl" config set-context c --cluster c --user sa >/dev/null
KUBECONFIG="$sa_kubeconfig" "$bin/kubectl" config use-context c >/dev/null
if KUBECONFIG="$sa_kubeconfig" "$bin/kubectl" get widgets 2>"$dir/rbac.err"; then
  echo "FAIL: service account without RBAC could list widgets" >&2
  exit 1
fi
grep -q 'User "system:serviceaccount:default:smoke" cannot list' "$dir/rbac.err"

echo "k8s smoke: ok"
