#!/usr/bin/env bash
# franz-go's own integration tests (pkg/kgo, run against any broker named by KGO_SEEDS)
# against one chronik-broker and against a three-broker cluster: `make conformance`.
#
# The module comes from the Go module proxy at a pinned version; its test binary is built
# once and cached under ~/.cache/chronik. Tests that need what Chronik does not serve yet
# are skipped by name below, each with its reason (this list only shrinks). Exits non-zero
# if any test fails; prints pass/skip/fail counts per setup.
set -euo pipefail

FRANZ_GO=v1.22.3
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cache="${CHRONIK_CACHE:-$HOME/.cache/chronik}/franz-go-$FRANZ_GO"
broker="${CHRONIK_BROKER_BIN:-${CARGO_TARGET_DIR:-$repo/target}/release/chronik-broker}"
records="${KGO_TEST_RECORDS:-2000}"
log() { echo "conformance: $*" >&2; }

# name -> why it is skipped
declare -A SKIP=(
  [TestTxnEtl]="transactions are not served yet (its consumers wait for transactional records)"
)

build() {
  if [[ -x "$cache/kgo.test" ]]; then return; fi
  command -v go >/dev/null || { log "needs Go (>= 1.24)"; exit 2; }
  log "building franz-go $FRANZ_GO's kgo tests (once; cached in $cache)"
  local tmp; tmp="$(mktemp -d)"
  (cd "$tmp" && go mod init conformance >/dev/null 2>&1 &&
    go mod download -json "github.com/twmb/franz-go@$FRANZ_GO" >/dev/null)
  local src; src="$(go env GOMODCACHE)/github.com/twmb/franz-go@$FRANZ_GO"
  mkdir -p "$cache"
  rm -rf "$cache/src" && cp -r "$src" "$cache/src" && chmod -R u+w "$cache/src"
  (cd "$cache/src" && go test -c -o "$cache/kgo.test.tmp" ./pkg/kgo)
  mv "$cache/kgo.test.tmp" "$cache/kgo.test"
  rm -rf "$tmp"
}

pids=()
stop_brokers() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}
trap stop_brokers EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_brokers N DIR: N brokers on free ports; sets SEEDS and METRICS.
start_brokers() {
  local n=$1 dir=$2 i
  local -a kafka cluster metrics
  mkdir -p "$dir"
  for ((i = 1; i <= n; i++)); do
    kafka[i]=$(free_port); cluster[i]=$(free_port); metrics[i]=$(free_port)
  done
  SEEDS=""; METRICS=()
  for ((i = 1; i <= n; i++)); do
    local peers="" j
    for ((j = 1; j <= n; j++)); do
      ((j == i)) || peers+="${peers:+,}$j@127.0.0.1:${cluster[j]}"
    done
    "$broker" --node-id "$i" --data-dir "$dir/b$i" --kafka-addr "127.0.0.1:${kafka[i]}" \
      --cluster-addr "127.0.0.1:${cluster[i]}" --metrics-addr "127.0.0.1:${metrics[i]}" \
      ${peers:+--peers "$peers"} >"$dir/b$i.log" 2>&1 &
    pids+=($!)
    SEEDS+="${SEEDS:+,}127.0.0.1:${kafka[i]}"
    METRICS+=("127.0.0.1:${metrics[i]}")
  done
  local m deadline=$((SECONDS + 60))
  for m in "${METRICS[@]}"; do
    until curl -sf "http://$m/readyz" >/dev/null; do
      ((SECONDS < deadline)) || { log "brokers not ready; see $dir"; exit 1; }
      sleep 0.2
    done
  done
}

# run NAME RF: the suite against $SEEDS; prints counts, returns non-zero on failures.
run() {
  local name=$1 rf=$2 out="$work/$1.log" skip="" t
  for t in "${!SKIP[@]}"; do skip+="${skip:+|}$t"; done
  log "$name: franz-go $FRANZ_GO kgo tests, replication factor $rf, $records records"
  local rc=0
  (cd "$cache/src/pkg/kgo" && KGO_SEEDS="$SEEDS" KGO_TEST_RF="$rf" KGO_TEST_RECORDS="$records" \
    "$cache/kgo.test" -test.v -test.timeout 8m -test.skip "^($skip)\$") >"$out" 2>&1 || rc=$?
  local pass fail skipped
  pass=$(grep -cE '^--- PASS' "$out" || true)
  fail=$(grep -cE '^--- FAIL' "$out" || true)
  skipped=$(grep -cE '^--- SKIP' "$out" || true)
  echo "$name: $pass passed, $fail failed, $skipped skipped by the suite itself, ${#SKIP[@]} skipped here (rc $rc)"
  grep -E '^--- FAIL' "$out" | sed 's/^/    /' || true
  if ((rc != 0)); then tail -40 "$out"; fi
  return $rc
}

build
work="$(mktemp -d -t chronik-conformance-XXXX)"
log "work dir $work"
for t in "${!SKIP[@]}"; do echo "skipped: $t: ${SKIP[$t]}"; done
status=0
start_brokers 1 "$work/one"
run one-broker 1 || status=1
stop_brokers
start_brokers 3 "$work/three"
run three-brokers 3 || status=1
stop_brokers
exit $status
