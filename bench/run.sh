#!/usr/bin/env bash
# shellcheck disable=SC2317  # (false positive: functions run through run_phase and the EXIT trap)
# Chronik vs Apache Kafka on this machine, in one run (`make bench`).
#
# For each broker in turn (Chronik first, then Apache Kafka 4.1.1 via bench/kafka-local.sh):
# fresh data dir, create topics `warmup` and `bench` (BENCH_PARTITIONS partitions, RF 1), warm
# the broker up with an unmeasured ProducerPerformance run into `warmup` (a JVM broker is far
# slower until its JIT has compiled the produce path; brokers run for days, so the steady state
# is what counts), then run kafka-tools' ProducerPerformance (acks=all, unthrottled, 1 KiB
# records) into `bench` and ConsumerPerformance over the same records, and read the broker's
# peak RSS (VmHWM). CPU seconds used by the broker and by the producer tool during the measured
# produce are read too: on a small machine the producer's own CPU bounds every broker's
# throughput, and the report says where that bound lies. Then an idle Chronik with 1,000 and
# one with 10,000 partitions (topics of 100): RSS and CPU use while doing nothing.
# Then both again as three brokers with replication factor 3 (bench/rf3.py): the same
# workloads with CPU and disk summed over the brokers, and failover after a leader's SIGKILL.
# Prints a table (Chronik, Kafka, Chronik/Kafka, targets) and writes it as markdown to BENCH_OUT.
#
# Environment:
#   CHRONIK_BROKER_BIN   chronik-broker binary (required unless BENCH_ONLY=kafka)
#   BENCH_RECORDS        records produced and consumed per broker (default 1000000)
#   BENCH_WARMUP_RECORDS records produced into `warmup` before measuring (default 1000000; 0: none)
#   BENCH_RECORD_SIZE    bytes per record (default 1024)
#   BENCH_PARTITIONS     partitions of topic `bench` (default 6)
#   BENCH_ONLY           chronik | kafka: run one broker only (default: both)
#   BENCH_SKIP_IDLE      1: skip the idle Chronik measurements
#   BENCH_IDLE_PARTITIONS partition counts of the idle Chronik measurements (default "1000 10000")
#   BENCH_IDLE_WAIT      seconds over which an idle Chronik's CPU use is measured (default 10)
#   BENCH_OUT            markdown results file (default bench/last-results.md)
#   BENCH_JSON           the same figures as JSON {date, commit, machine, metrics: {NAME: {chronik,
#                        kafka, ratio}}} (default bench/last-results.json)
#   BENCH_FIXED_RATE_MBS produce rate of the fixed-rate latency run (default 20 MB/s)
#   BENCH_FIXED_SECONDS  length of the fixed-rate run (default 15)
#   BENCH_WORK           scratch dir: data dirs, broker and tool logs (default ${TMPDIR:-/tmp}/chronik-bench)
#   BENCH_KEEP_DATA      1: keep the brokers' data dirs after the run
#   BENCH_STRICT         1: exit non-zero when a target is not met (default: only when a step fails)
#   BENCH_STEP_TIMEOUT   seconds allowed to each perf-tool run (default 180)
#   BENCH_TOOL_HEAP      JVM heap options of the perf tools (default -Xms256m -Xmx512m)
#   BENCH_PRODUCER_PROPS extra producer properties, space separated (k=v k=v)
#   BENCH_CHRONIK_ARGS   extra chronik-broker arguments
#   BENCH_SKIP_RF3       1: skip the three-broker runs (bench/rf3.py: RF 3 costs, latency, failover)
#   BENCH_RF3_RECORDS    records of the three-broker produce and consume (default 300000)
#   BENCH_RF3_FIXED_RATE_MBS  produce rate of the three-broker fixed-rate run (default 5 MB/s)
#   BENCH_QUICK          1: the same runs, smaller (200,000 records, 5 s fixed rate, 100,000 at RF 3)
#   PYTHON               python with confluent-kafka, used to create topics (default python3)
# Kafka's own settings (heap, ports) are kafka-local.sh's: KAFKA_HEAP_OPTS, KAFKA_LOCAL_PORT, ...
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"

if [[ "${BENCH_QUICK:-0}" == 1 ]]; then  # the same shape, smaller: a few minutes
  : "${BENCH_RECORDS:=200000}" "${BENCH_WARMUP_RECORDS:=200000}" "${BENCH_FIXED_SECONDS:=5}"
  : "${BENCH_RF3_RECORDS:=100000}" "${BENCH_IDLE_WAIT:=5}"
  export BENCH_RF3_RECORDS BENCH_FIXED_SECONDS
fi
RECORDS="${BENCH_RECORDS:-1000000}"
WARMUP="${BENCH_WARMUP_RECORDS:-1000000}"
RECORD_SIZE="${BENCH_RECORD_SIZE:-1024}"
PARTITIONS="${BENCH_PARTITIONS:-6}"
ONLY="${BENCH_ONLY:-}"
IDLE_WAIT="${BENCH_IDLE_WAIT:-10}"
IDLE_PARTITIONS="${BENCH_IDLE_PARTITIONS:-1000 10000}"
FIXED_RATE_MBS="${BENCH_FIXED_RATE_MBS:-20}"
FIXED_SECONDS="${BENCH_FIXED_SECONDS:-15}"
OUT_JSON="${BENCH_JSON:-$repo/bench/last-results.json}"
OUT_MD="${BENCH_OUT:-$repo/bench/last-results.md}"
WORK="${BENCH_WORK:-${TMPDIR:-/tmp}/chronik-bench}"
STEP_TIMEOUT="${BENCH_STEP_TIMEOUT:-180}"
TOOL_HEAP="${BENCH_TOOL_HEAP:--Xms256m -Xmx512m}"
PYTHON="${PYTHON:-python3}"
CHRONIK_KAFKA_ADDR=127.0.0.1:29092
CHRONIK_METRICS_ADDR=127.0.0.1:29644
export KAFKA_LOCAL_DIR="$WORK/kafka"          # our own Kafka run dir: never touches another one
KAFKA_PORT="${KAFKA_LOCAL_PORT:-19092}"
KAFKA_ADDR="127.0.0.1:$KAFKA_PORT"
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

case "$ONLY" in ""|chronik|kafka) ;; *) echo "bench: BENCH_ONLY must be chronik or kafka" >&2; exit 2 ;; esac
[[ "$RECORDS" =~ ^[0-9]+$ && "$RECORDS" -gt 0 ]] || { echo "bench: BENCH_RECORDS must be a positive integer" >&2; exit 2; }
[[ "$WARMUP" =~ ^[0-9]+$ ]] || { echo "bench: BENCH_WARMUP_RECORDS must be a non-negative integer" >&2; exit 2; }

log() { echo "bench: $*" >&2; }
want() { [[ -z "$ONLY" || "$ONLY" == "$1" ]]; }

RESULTS="$WORK/results.env"   # key=value lines written by the phases (they run in subshells)
CMDS="$WORK/commands.txt"     # exact commands, for the markdown report
CHRONIK_PID_FILE="$WORK/chronik.pid"

# ---------------------------------------------------------------------------------------------
# cleanup: always stop both brokers (only the ones this script started: pid file / own run dir)

stop_chronik() {
  [[ -f "$CHRONIK_PID_FILE" ]] || return 0
  local pid; pid="$(cat "$CHRONIK_PID_FILE")"
  # only our broker: a pid file left by a killed run may name a reused pid
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null \
      && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "--kafka-addr $CHRONIK_KAFKA_ADDR"; then
    log "stopping chronik (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then log "chronik still alive after 30 s, SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$CHRONIK_PID_FILE"
}

stop_kafka() {
  if [[ -f "$KAFKA_LOCAL_DIR/kafka.pid" ]]; then "$here/kafka-local.sh" stop || true; fi
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  stop_chronik || true
  stop_kafka || true
  if [[ "${BENCH_KEEP_DATA:-0}" != 1 ]]; then
    rm -rf "$WORK"/chronik-data-* "$KAFKA_LOCAL_DIR/data" 2>/dev/null || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# helpers

put() { echo "$1=$2" >> "$RESULTS"; }            # record a result
r_env() { awk -F= -v k="$1" '$1 == k { v = $2 } END { print v }' "$RESULTS"; }  # read one back
note_cmd() { printf '%s\n' "$*" >> "$CMDS"; }     # record a command for the report
quote() { local s="" a; for a in "$@"; do s+="$(printf '%q' "$a") "; done; echo "${s% }"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

status_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null; }
fmt() { if [[ -n "$2" ]]; then awk -v d="$1" -v x="$2" 'BEGIN { printf("%." d "f", x) }'; fi; }  # fmt DECIMALS NUMBER
busy_between() { # busy_between STAT_A STAT_B: share of all CPUs busy between two /proc/stat lines
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " "); t = 0
    for (i = 2; i <= n; i++) t += y[i] - x[i]
    idle = (y[5] - x[5]) + (y[6] - x[6]); printf "%d", (t > 0 ? 100 * (t - idle) / t : 0) }'
}
cpu_busy_pct() { # share of all CPUs busy over the next 2 s
  local a; a="$(head -n 1 /proc/stat)"; sleep 2; busy_between "$a" "$(head -n 1 /proc/stat)"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
CLK_TCK="$(getconf CLK_TCK)"
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null; }  # user + system, in clock ticks
write_bytes() { awk '$1 == "write_bytes:" { print $2 }' "/proc/$1/io" 2>/dev/null; }  # bytes it sent to storage
per_mb() { awk -v t0="$1" -v t1="$2" -v hz="$CLK_TCK" -v mb="$3" 'BEGIN { if (mb > 0) printf "%.2f", 1000 * (t1 - t0) / hz / mb }'; }

# create_topics BOOTSTRAP TIMEOUT_S NAME:PARTITIONS...  (RF 1), then wait until every partition
# has a leader in Metadata. Uses confluent-kafka (librdkafka).
create_topics() {
  "$PYTHON" - "$@" <<'PY'
import sys, time
from confluent_kafka.admin import AdminClient, NewTopic
bootstrap, timeout = sys.argv[1], float(sys.argv[2])
want = {}
for spec in sys.argv[3:]:
    name, parts = spec.rsplit(":", 1)
    want[name] = int(parts)
admin = AdminClient({"bootstrap.servers": bootstrap})
futures = admin.create_topics([NewTopic(n, p, 1) for n, p in want.items()],
                              operation_timeout=timeout, request_timeout=timeout)
for name, fut in futures.items():
    fut.result()
deadline = time.time() + timeout
while True:
    md = admin.list_topics(timeout=10)
    missing = []
    for name, parts in want.items():
        t = md.topics.get(name)
        if t is None or t.error is not None or len(t.partitions) != parts:
            missing.append(f"{name}: {'absent' if t is None else t.error or len(t.partitions)}")
            continue
        missing += [f"{name}/{p.id}: leader {p.leader} {p.error or ''}"
                    for p in t.partitions.values() if p.error is not None or p.leader < 0]
    if not missing:
        break
    if time.time() > deadline:
        sys.exit("topics not ready: " + "; ".join(missing[:10]))
    time.sleep(0.5)
print(f"created {len(want)} topic(s), {sum(want.values())} partition(s)", file=sys.stderr)
PY
}

perf_java() { # perf_java MAIN_CLASS ARGS...  (kafka-tools on the client jars, modest heap)
  local main="$1"; shift
  # shellcheck disable=SC2086
  timeout --foreground --kill-after=10 "$STEP_TIMEOUT" "$JAVA" $TOOL_HEAP -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp "$JARS/*" "$main" "$@"
}

# ---------------------------------------------------------------------------------------------
# brokers

start_chronik() { # start_chronik DATA_DIR LOG
  local dir="$1" logf="$2"
  [[ -n "${CHRONIK_BROKER_BIN:-}" ]] || { log "CHRONIK_BROKER_BIN is not set"; return 1; }
  [[ -x "$CHRONIK_BROKER_BIN" ]] || { log "CHRONIK_BROKER_BIN=$CHRONIK_BROKER_BIN is not an executable"; return 1; }
  if port_open "${CHRONIK_KAFKA_ADDR##*:}" || port_open "${CHRONIK_METRICS_ADDR##*:}"; then
    log "port ${CHRONIK_KAFKA_ADDR##*:} or ${CHRONIK_METRICS_ADDR##*:} already in use"; return 1
  fi
  rm -rf "$dir"; mkdir -p "$dir"
  # shellcheck disable=SC2206
  local cmd=("$CHRONIK_BROKER_BIN" --node-id 1 --data-dir "$dir" --kafka-addr "$CHRONIK_KAFKA_ADDR"
             --metrics-addr "$CHRONIK_METRICS_ADDR" --cluster-addr 127.0.0.1:29093 ${BENCH_CHRONIK_ARGS:-})
  note_cmd "$(quote "${cmd[@]}")"
  log "starting chronik: ${cmd[*]}"
  "${cmd[@]}" >"$logf" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" > "$CHRONIK_PID_FILE"
  local deadline=$((SECONDS + 60))
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "chronik exited during startup; last output ($logf):"; tail -n 40 "$logf" >&2; return 1
    fi
    if curl -sf "http://$CHRONIK_METRICS_ADDR/readyz" >/dev/null 2>&1; then
      log "chronik is ready (pid $pid)"; return 0
    fi
    sleep 0.25
  done
  log "chronik not ready after 60 s; last output ($logf):"; tail -n 40 "$logf" >&2
  return 1
}

start_kafka() {
  note_cmd "KAFKA_LOCAL_DIR=$(quote "$KAFKA_LOCAL_DIR") bench/kafka-local.sh start   # Kafka ${KAFKA_VERSION:-4.1.1} KRaft, heap ${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}, G1"
  "$here/kafka-local.sh" start
}

# ---------------------------------------------------------------------------------------------
# one broker: topic, produce, consume, memory

bench_broker() { # bench_broker chronik|kafka
  local b="$1" bootstrap pid datadir
  if [[ "$b" == chronik ]]; then
    datadir="$WORK/chronik-data-bench"
    start_chronik "$datadir" "$WORK/chronik-bench.log"
    bootstrap="$CHRONIK_KAFKA_ADDR"; pid="$(cat "$CHRONIK_PID_FILE")"
  else
    start_kafka
    bootstrap="$KAFKA_ADDR"; pid="$(cat "$KAFKA_LOCAL_DIR/kafka.pid")"; datadir="$KAFKA_LOCAL_DIR/data"
  fi
  put "$b.started" 1

  note_cmd "$PYTHON <confluent-kafka AdminClient> create_topics(warmup bench, partitions=$PARTITIONS, replication_factor=1) on $bootstrap"
  create_topics "$bootstrap" 60 "warmup:$PARTITIONS" "bench:$PARTITIONS"

  # -- warm-up (not measured)
  local rc=0
  if (( WARMUP > 0 )); then
    # shellcheck disable=SC2206
    local wargs=(--topic warmup --num-records "$WARMUP" --record-size "$RECORD_SIZE" --throughput -1
                 --producer-props "bootstrap.servers=$bootstrap" acks=all ${BENCH_PRODUCER_PROPS:-})
    note_cmd "java $TOOL_HEAP -cp '<jars>/*' org.apache.kafka.tools.ProducerPerformance $(quote "${wargs[@]}")   # warm-up, not measured"
    log "[$b] warm-up: ProducerPerformance $WARMUP records into topic warmup"
    perf_java org.apache.kafka.tools.ProducerPerformance "${wargs[@]}" >"$WORK/$b-warmup.log" 2>&1 || rc=$?
    if [[ $rc -ne 0 ]]; then log "[$b] warm-up failed (exit $rc):"; tail -n 30 "$WORK/$b-warmup.log" >&2; return "$rc"; fi
    grep -E '^[0-9]+ records sent, .* 99\.9th\.' "$WORK/$b-warmup.log" | tail -n 1 | sed 's/^/  warm-up: /' >&2 || true
  fi

  # -- produce
  # shellcheck disable=SC2206
  local pargs=(--topic bench --num-records "$RECORDS" --record-size "$RECORD_SIZE" --throughput -1
               --producer-props "bootstrap.servers=$bootstrap" acks=all ${BENCH_PRODUCER_PROPS:-})
  note_cmd "java $TOOL_HEAP -cp '<jars>/*' org.apache.kafka.tools.ProducerPerformance $(quote "${pargs[@]}")"
  log "[$b] ProducerPerformance: $RECORDS x $RECORD_SIZE B, acks=all"
  local plog="$WORK/$b-producer.log" ptime="$WORK/$b-producer.cpu" broker_t0 broker_t1
  broker_t0="$(cpu_ticks "$pid")"; local stat0; stat0="$(head -n 1 /proc/stat)"
  local io0; io0="$(write_bytes "$pid")"
  # bash's `time` reports the tool's user and system CPU seconds (JVM start-up included)
  { TIMEFORMAT='%U %S'; time perf_java org.apache.kafka.tools.ProducerPerformance "${pargs[@]}" >"$plog" 2>&1; } 2>"$ptime" || rc=$?
  broker_t1="$(cpu_ticks "$pid")"; put "$b.machine_busy" "$(busy_between "$stat0" "$(head -n 1 /proc/stat)")"
  local io1; io1="$(write_bytes "$pid")"
  local summary sent rps mbps avg max p50 p95 p99 p999
  summary="$(grep -E '^[0-9]+ records sent, .* 99\.9th\.' "$plog" | tail -n 1 || true)"
  if [[ $rc -ne 0 || -z "$summary" ]]; then
    log "[$b] ProducerPerformance failed (exit $rc); last output ($plog):"; tail -n 30 "$plog" >&2; return $((rc ? rc : 1))
  fi
  echo "$summary" >&2
  put "$b.prod_summary" "$summary"
  # "N records sent, R records/sec (M MB/sec), A ms avg latency, X ms max latency, P ms 50th, Q ms 95th, S ms 99th, T ms 99.9th."
  read -r sent rps mbps avg max p50 p95 p99 p999 < <(echo "$summary" | sed -E \
    's/^([0-9]+) records sent, ([0-9.]+) records\/sec \(([0-9.]+) MB\/sec\), ([0-9.]+) ms avg latency, ([0-9.]+) ms max latency, ([0-9]+) ms 50th, ([0-9]+) ms 95th, ([0-9]+) ms 99th, ([0-9]+) ms 99.9th\.$/\1 \2 \3 \4 \5 \6 \7 \8 \9/')
  put "$b.prod_sent" "$sent"; put "$b.prod_rps" "$rps"; put "$b.prod_mbps" "$mbps"; put "$b.prod_avg" "$avg"
  put "$b.prod_max" "$max"; put "$b.prod_p50" "$p50"; put "$b.prod_p95" "$p95"; put "$b.prod_p99" "$p99"; put "$b.prod_p999" "$p999"
  local errs; errs="$(grep -c 'Exception' "$plog" || true)"
  put "$b.prod_errors" "$errs"
  [[ "$errs" == 0 ]] || log "[$b] WARNING: $errs exception line(s) in $plog (failed sends are not counted in the throughput)"
  if [[ "$sent" != "$RECORDS" ]]; then log "[$b] WARNING: only $sent of $RECORDS records acknowledged"; fi
  put "$b.disk_mib" "$(du -sm "$datadir" 2>/dev/null | cut -f1)"
  # CPU per MB produced: the broker's (during the measured run) and the producer tool's
  local mb tool_s broker_s
  mb="$(awk -v n="$sent" -v s="$RECORD_SIZE" 'BEGIN { printf "%.3f", n * s / 1048576 }')"
  tool_s="$(awk '{ printf "%.2f", $1 + $2 }' "$ptime")"
  broker_s="$(awk -v a="$broker_t0" -v b="$broker_t1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz }')"
  put "$b.broker_cpu_s" "$broker_s"; put "$b.tool_cpu_s" "$tool_s"
  put "$b.broker_cpu_ms_mb" "$(awk -v c="$broker_s" -v m="$mb" 'BEGIN { if (m > 0) printf "%.2f", 1000 * c / m }')"
  put "$b.tool_cpu_ms_mb" "$(awk -v c="$tool_s" -v m="$mb" 'BEGIN { if (m > 0) printf "%.2f", 1000 * c / m }')"
  # Bytes the broker had written to storage per byte produced (WAL, data files, compactions
  # so far; Kafka's page-cache writes count when dirtied, flushed or not).
  if [[ -n "$io0" && -n "$io1" ]]; then
    put "$b.disk_write_per_byte" "$(awk -v a="$io0" -v z="$io1" -v n="$sent" -v s="$RECORD_SIZE" 'BEGIN { if (n > 0) printf "%.2f", (z - a) / (n * s) }')"
  fi

  # -- consume
  local cargs=(--bootstrap-server "$bootstrap" --topic bench --messages "$RECORDS" --timeout 30000)
  note_cmd "java $TOOL_HEAP -cp '<jars>/*' org.apache.kafka.tools.ConsumerPerformance $(quote "${cargs[@]}")"
  log "[$b] ConsumerPerformance: $RECORDS records"
  local clog="$WORK/$b-consumer.log"; rc=0
  local cons_t0 cons_t1; cons_t0="$(cpu_ticks "$pid")"
  perf_java org.apache.kafka.tools.ConsumerPerformance "${cargs[@]}" >"$clog" 2>&1 || rc=$?
  cons_t1="$(cpu_ticks "$pid")"
  put "$b.cons_cpu_ms_mb" "$(per_mb "$cons_t0" "$cons_t1" "$mb")"
  local header values
  header="$(grep -E '^start\.time, ' "$clog" | tail -n 1 || true)"
  values="$(grep -E '^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9:]+, ' "$clog" | tail -n 1 || true)"
  if [[ $rc -ne 0 || -z "$header" || -z "$values" || "$values" == "$header" ]]; then
    log "[$b] ConsumerPerformance failed (exit $rc); last output ($clog):"; tail -n 30 "$clog" >&2; return $((rc ? rc : 1))
  fi
  echo "$header" >&2; echo "$values" >&2
  put "$b.cons_summary" "$values"
  local -A c=()
  local -a hs vs
  IFS=',' read -r -a hs <<<"$header"; IFS=',' read -r -a vs <<<"$values"
  local i
  for i in "${!hs[@]}"; do c["$(echo "${hs[$i]}" | tr -d ' ')"]="$(echo "${vs[$i]:-}" | tr -d ' ')"; done
  put "$b.cons_n" "${c[data.consumed.in.nMsg]:-}"
  put "$b.cons_mbps" "$(fmt 2 "${c[MB.sec]:-}")"; put "$b.cons_mps" "$(fmt 1 "${c[nMsg.sec]:-}")"
  put "$b.cons_fetch_mbps" "$(fmt 2 "${c[fetch.MB.sec]:-}")"; put "$b.cons_fetch_mps" "$(fmt 1 "${c[fetch.nMsg.sec]:-}")"
  put "$b.cons_rebalance_ms" "${c[rebalance.time.ms]:-}"
  if grep -q 'WARNING: Exiting before consuming' "$clog"; then
    log "[$b] WARNING: consumer timed out before $RECORDS records (got ${c[data.consumed.in.nMsg]:-?})"
  fi

  # -- memory: the broker's peak resident set over its whole life (VmHWM)
  local hwm rss
  hwm="$(status_kib "$pid" VmHWM)"; rss="$(status_kib "$pid" VmRSS)"
  [[ -n "$hwm" ]] || { log "[$b] cannot read /proc/$pid/status (broker died?)"; return 1; }
  put "$b.peak_rss_mib" "$(mib "$hwm")"; put "$b.end_rss_mib" "$(mib "$rss")"
  log "[$b] peak RSS $(mib "$hwm") MiB, RSS now $(mib "$rss") MiB"
  fixed_rate "$b" "$bootstrap"

  # valid: every record acknowledged without error and consumed back
  if [[ "$sent" == "$RECORDS" && "$errs" == 0 && "${c[data.consumed.in.nMsg]:-}" == "$RECORDS" ]]; then
    put "$b.valid" yes
  else
    put "$b.valid" NO; log "[$b] WARNING: run not valid (acked $sent, exception lines $errs, consumed ${c[data.consumed.in.nMsg]:-?} of $RECORDS)"
  fi
}

# Produce latency at a rate neither broker saturates: BENCH_FIXED_RATE_MBS for
# BENCH_FIXED_SECONDS into the same topic, acks=all, after the saturated runs.
fixed_rate() { # fixed_rate chronik|kafka BOOTSTRAP
  local b="$1" bootstrap="$2" rc=0
  local rate=$((FIXED_RATE_MBS * 1048576 / RECORD_SIZE))
  # shellcheck disable=SC2206
  local fargs=(--topic bench --num-records "$((rate * FIXED_SECONDS))" --record-size "$RECORD_SIZE"
               --throughput "$rate" --producer-props "bootstrap.servers=$bootstrap" acks=all ${BENCH_PRODUCER_PROPS:-})
  note_cmd "java $TOOL_HEAP -cp '<jars>/*' org.apache.kafka.tools.ProducerPerformance $(quote "${fargs[@]}")   # fixed rate"
  log "[$b] ProducerPerformance at a fixed $FIXED_RATE_MBS MB/s ($rate records/s) for ${FIXED_SECONDS}s"
  local flog="$WORK/$b-fixed-rate.log"
  perf_java org.apache.kafka.tools.ProducerPerformance "${fargs[@]}" >"$flog" 2>&1 || rc=$?
  local summary
  summary="$(grep -E '^[0-9]+ records sent, .* 99\.9th\.' "$flog" | tail -n 1 || true)"
  if [[ $rc -ne 0 || -z "$summary" ]]; then
    log "[$b] fixed-rate ProducerPerformance failed (exit $rc); last output ($flog):"; tail -n 30 "$flog" >&2; return $((rc ? rc : 1))
  fi
  echo "$summary" >&2
  put "$b.fixed_summary" "$summary"
  local p50 p99 p999
  read -r p50 p99 p999 < <(echo "$summary" | sed -E 's/^.* ([0-9]+) ms 50th, [0-9]+ ms 95th, ([0-9]+) ms 99th, ([0-9]+) ms 99\.9th\.$/\1 \2 \3/')
  put "$b.fixed_p50" "$p50"; put "$b.fixed_p99" "$p99"; put "$b.fixed_p999" "$p999"
}

# idle_chronik PARTITIONS: an idle Chronik holding PARTITIONS partitions (topics of 100):
# its RSS, and its CPU use over BENCH_IDLE_WAIT seconds of doing nothing.
idle_chronik() {
  local n="$1" k="idle$1"
  start_chronik "$WORK/chronik-data-$k" "$WORK/chronik-$k.log"
  local pid; pid="$(cat "$CHRONIK_PID_FILE")"
  local specs=() t topics=$((n / 100))
  for t in $(seq 1 "$topics"); do specs+=("idle-$t:100"); done
  note_cmd "$PYTHON <confluent-kafka AdminClient> create_topics(idle-1..idle-$topics, partitions=100 each, replication_factor=1) on $CHRONIK_KAFKA_ADDR; sleep 5; read CPU time for ${IDLE_WAIT}s and VmRSS"
  log "[chronik-$k] creating $topics topics x 100 partitions"
  local t0=$SECONDS
  create_topics "$CHRONIK_KAFKA_ADDR" 600 "${specs[@]}"
  put "$k.create_s" "$((SECONDS - t0))"
  sleep 5  # (the elections' aftermath settles)
  log "[chronik-$k] measuring ${IDLE_WAIT}s of idleness"
  local c0 c1; c0="$(cpu_ticks "$pid")"; sleep "$IDLE_WAIT"; c1="$(cpu_ticks "$pid")"
  put "$k.cpu_pct" "$(awk -v a="$c0" -v b="$c1" -v hz="$CLK_TCK" -v s="$IDLE_WAIT" 'BEGIN { printf "%.1f", 100 * (b - a) / hz / s }')"
  local rss hwm
  rss="$(status_kib "$pid" VmRSS)"; hwm="$(status_kib "$pid" VmHWM)"
  [[ -n "$rss" ]] || { log "[chronik-$k] cannot read /proc/$pid/status (broker died?)"; return 1; }
  put "$k.rss_mib" "$(mib "$rss")"; put "$k.hwm_mib" "$(mib "$hwm")"
  log "[chronik-$k] RSS $(mib "$rss") MiB (peak $(mib "$hwm") MiB), CPU $(r_env "$k.cpu_pct")% of a core"
}

# rf3 chronik|kafka: three brokers, RF 3 (bench/rf3.py appends its figures to RESULTS)
rf3() {
  note_cmd "JARS=<jars> KAFKA_LIBS=<kafka libs> BENCH_RF3_RECORDS=${BENCH_RF3_RECORDS:-300000} $PYTHON bench/rf3.py $1 <results> <work>"
  JARS="$JARS" KAFKA_LIBS="${CHRONIK_CACHE:-$HOME/.cache/chronik}/kafka/${KAFKA_VERSION:-4.1.1}/libs" JAVA="$JAVA" \
    BENCH_RECORD_SIZE="$RECORD_SIZE" BENCH_PARTITIONS="$PARTITIONS" \
    BENCH_FIXED_SECONDS="$FIXED_SECONDS" BENCH_TOOL_HEAP="$TOOL_HEAP" BENCH_STEP_TIMEOUT="$STEP_TIMEOUT" \
    timeout --foreground --kill-after=10 900 "$PYTHON" "$here/rf3.py" "$1" "$RESULTS" "$WORK"
}

run_phase() { # run_phase NAME FUNC ARGS...: isolated so one broker's failure doesn't stop the other
  local name="$1"; shift
  local rc=0
  set +e
  ( set -e; "$@" )
  rc=$?
  set -e
  stop_chronik; stop_kafka
  # Ctrl-C / SIGTERM reach the perf tool first (bash then drops its own INT trap): stop here
  if [[ $rc -eq 130 || $rc -eq 143 ]]; then log "interrupted during phase $name"; exit "$rc"; fi
  if [[ $rc -ne 0 ]]; then log "phase $name FAILED (exit $rc)"; put "$name.failed" "$rc"; FAILED+=("$name"); fi
}

# ---------------------------------------------------------------------------------------------
# main

mkdir -p "$WORK"
stop_chronik   # one left by a killed run
: > "$RESULTS"; : > "$CMDS"
FAILED=()

log "ensuring client jars and the Kafka server jars"
JARS="$("$repo/tests/java/fetch-jars.sh")"
"$here/kafka-local.sh" fetch
python_ok=1; "$PYTHON" -c 'import confluent_kafka' 2>/dev/null || python_ok=0
[[ $python_ok == 1 ]] || { log "$PYTHON cannot import confluent_kafka (pip install confluent-kafka)"; exit 1; }
if want chronik; then
  [[ -x "${CHRONIK_BROKER_BIN:-}" ]] || { log "CHRONIK_BROKER_BIN (${CHRONIK_BROKER_BIN:-unset}) is not an executable; set BENCH_ONLY=kafka to skip Chronik"; exit 1; }
fi

started_at="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
busy_before="$(cpu_busy_pct)"
log "records=$RECORDS size=$RECORD_SIZE partitions=$PARTITIONS only=${ONLY:-both} work=$WORK cpu busy before start=${busy_before}%"
if (( busy_before > 20 )); then
  log "WARNING: the CPUs were ${busy_before}% busy before the run: other work on this machine will skew the numbers"
fi
t_start=$SECONDS
# (not `want x && run_phase`: inside an && list bash ignores set -e in the phase's subshell too)
if want chronik; then run_phase chronik bench_broker chronik; fi
if want kafka; then run_phase kafka bench_broker kafka; fi
if want chronik && [[ "${BENCH_SKIP_IDLE:-0}" != 1 ]]; then
  for n in $IDLE_PARTITIONS; do run_phase "idle$n" idle_chronik "$n"; done
fi
if [[ "${BENCH_SKIP_RF3:-0}" != 1 ]]; then
  if want chronik; then run_phase rf3-chronik rf3 chronik; fi
  if want kafka; then run_phase rf3-kafka rf3 kafka; fi
fi
elapsed=$((SECONDS - t_start))
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
# report

declare -A R=()
while IFS='=' read -r k v; do [[ -n "$k" ]] && R["$k"]="$v"; done < "$RESULTS"
r() { echo "${R[$1]:-}"; }
ratio() { # ratio A B -> A/B with 2 decimals, or "-"
  local num='^-?[0-9]+([.][0-9]+)?$'
  if [[ "$1" =~ $num && "$2" =~ $num ]]; then awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2f", a / b }'; else echo "-"; fi
}
cmp_ok() { # cmp_ok EXPR A B: awk boolean on a, b -> MET / NOT MET / n/a
  if [[ -n "$2" && -n "$3" ]]; then awk -v a="$2" -v b="$3" "BEGIN { if ($1) print \"MET\"; else print \"NOT MET\" }"; else echo "n/a"; fi
}
dash() { local v="$1"; echo "${v:--}"; }

rows=(
  "valid|valid (all acked, no errors, all consumed)"
  "prod_rps|produce records/s"
  "prod_mbps|produce MB/s"
  "prod_avg|produce avg latency (ms)"
  "prod_p50|produce p50 latency (ms)"
  "prod_p95|produce p95 latency (ms)"
  "prod_p99|produce p99 latency (ms)"
  "prod_p999|produce p99.9 latency (ms)"
  "prod_max|produce max latency (ms)"
  "prod_errors|produce exception lines"
  "cons_mbps|consume MB/s (incl. group join)"
  "cons_mps|consume msgs/s (incl. group join)"
  "cons_fetch_mbps|consume MB/s (fetch only)"
  "cons_fetch_mps|consume msgs/s (fetch only)"
  "cons_rebalance_ms|consumer group join (ms)"
  "cons_n|records consumed"
  "machine_busy|all CPUs busy during produce (%)"
  "broker_cpu_s|broker CPU during produce (s)"
  "broker_cpu_ms_mb|broker CPU per MB produced (ms)"
  "cons_cpu_ms_mb|broker CPU per MB consumed (ms)"
  "disk_write_per_byte|bytes written to disk per byte produced"
  "fixed_p50|fixed-rate produce p50 latency (ms)"
  "fixed_p99|fixed-rate produce p99 latency (ms)"
  "fixed_p999|fixed-rate produce p99.9 latency (ms)"
  "tool_cpu_s|producer tool CPU (s)"
  "tool_cpu_ms_mb|producer tool CPU per MB (ms)"
  "peak_rss_mib|broker peak RSS, VmHWM (MiB)"
  "disk_mib|data dir after produce (MiB)"
  "rf3_valid|RF 3: valid (all acked, all consumed)"
  "rf3_prod_mbps|RF 3: produce MB/s"
  "rf3_prod_p99|RF 3: produce p99 latency (ms)"
  "rf3_broker_cpu_ms_mb|RF 3: CPU of 3 brokers per MB produced (ms)"
  "rf3_cons_cpu_ms_mb|RF 3: CPU of 3 brokers per MB consumed (ms)"
  "rf3_disk_write_per_byte|RF 3: bytes 3 brokers wrote per byte produced"
  "rf3_cons_fetch_mbps|RF 3: consume MB/s (fetch only)"
  "rf3_fixed_p50|RF 3: fixed-rate produce p50 latency (ms)"
  "rf3_fixed_p99|RF 3: fixed-rate produce p99 latency (ms)"
  "rf3_fixed_p999|RF 3: fixed-rate produce p99.9 latency (ms)"
  "rf3_peak_rss_mib|RF 3: peak RSS of 3 brokers (MiB)"
  "failover_s|failover: leader SIGKILL to next ack, median (s)"
  "failover_max_s|failover: leader SIGKILL to next ack, longest (s)"
)

valid_note=""
for b in chronik kafka; do
  if [[ "$(r "$b.valid")" == NO ]]; then valid_note+="$b run NOT valid (see 'valid' row): its numbers do not count. "; fi
done
t_tput="$(cmp_ok 'a >= 2 * b' "$(r chronik.prod_rps)" "$(r kafka.prod_rps)")"
t_p99="$(cmp_ok 'a < b' "$(r chronik.prod_p99)" "$(r kafka.prod_p99)")"
t_rss="$(cmp_ok 'a < b / 4' "$(r chronik.peak_rss_mib)" "$(r kafka.peak_rss_mib)")"
if [[ -n "$valid_note" ]]; then
  t_tput+=" (run not valid)"; t_p99+=" (run not valid)"; t_rss+=" (run not valid)"
fi
t_idle="$(cmp_ok 'a < b' "$(r idle1000.rss_mib)" 300)"
t_idle_rss="$(cmp_ok 'a < b' "$(r idle10000.rss_mib)" 100)"
t_idle_cpu="$(cmp_ok 'a < b' "$(r idle10000.cpu_pct)" 1)"
# issue 12's targets: what the broker costs per MB, latency at a fixed rate, failover
vs() { cmp_ok "$1" "$(r "chronik.$2")" "$(r "kafka.$2")"; }
t_cpu="$(vs 'a <= 0.5 * b' broker_cpu_ms_mb)"; t_ccpu="$(vs 'a <= 0.5 * b' cons_cpu_ms_mb)"
t_rf3cpu="$(vs 'a <= 0.5 * b' rf3_broker_cpu_ms_mb)"; t_rf3ccpu="$(vs 'a <= 0.5 * b' rf3_cons_cpu_ms_mb)"
t_disk="$(vs 'a <= 1.2 * b' disk_write_per_byte)"; t_fixed="$(vs 'a < b' fixed_p99)"
t_rf3fixed="$(vs 'a < b' rf3_fixed_p99)"; t_fetch="$(vs 'a >= b' cons_fetch_mbps)"
t_failover="$(cmp_ok 'a < b' "$(r chronik.failover_s)" 1)"
targets=(
  "Chronik produce throughput >= 2x Kafka's|$t_tput"
  "Chronik p99 produce latency < Kafka's|$t_p99"
  "Chronik peak RSS < 1/4 of Kafka's|$t_rss"
  "broker CPU per MB produced <= 0.5x Kafka's|$t_cpu"
  "broker CPU per MB consumed <= 0.5x Kafka's|$t_ccpu"
  "RF 3: CPU per MB produced <= 0.5x Kafka's|$t_rf3cpu"
  "RF 3: CPU per MB consumed <= 0.5x Kafka's|$t_rf3ccpu"
  "bytes written per byte produced <= 1.2x Kafka's|$t_disk"
  "fixed-rate produce p99 < Kafka's|$t_fixed"
  "RF 3: fixed-rate produce p99 < Kafka's|$t_rf3fixed"
  "fetch-only consume >= Kafka's|$t_fetch"
  "failover under 1 s|$t_failover"
  "idle Chronik with 1,000 partitions < 300 MiB RSS|$t_idle"
  "idle Chronik with 10,000 partitions < 100 MiB RSS|$t_idle_rss"
  "idle Chronik with 10,000 partitions < 1% of a core|$t_idle_cpu"
)
# The producer tool shares this machine's cores with the broker: a broker using no CPU at all
# could not be produced to faster than cores x 1000 / (tool CPU ms per MB). Reported so that a
# throughput ratio is read against what this machine allows.
CORES="$(nproc)"
ceiling="$(awk -v c="$CORES" -v t="$(r chronik.tool_cpu_ms_mb)" 'BEGIN { if (t > 0) printf "%.1f", c * 1000 / t }')"
ceiling_note=""; budget_note=""
if [[ -n "$ceiling" && -n "$(r kafka.prod_mbps)" ]]; then
  ceiling_note="$(awk -v c="$ceiling" -v k="$(r kafka.prod_mbps)" -v n="$CORES" 'BEGIN {
    printf "client-bound ceiling on this %d-core machine: %.1f MB/s (the producer tool alone would use every core), %.2fx Kafka'"'"'s measured rate", n, c, c / k }')"
  # At twice Kafka's rate the tool needs 2k x t ms of CPU per second; what is left of the
  # cores is all the broker (and the kernel's I/O on its behalf) may use per MB.
  budget_note="$(awk -v n="$CORES" -v k="$(r kafka.prod_mbps)" -v t="$(r chronik.tool_cpu_ms_mb)" -v b="$(r chronik.broker_cpu_ms_mb)" 'BEGIN {
    left = n * 1000 - 2 * k * t
    if (left <= 0) printf "2x Kafka (%.1f MB/s) is beyond this machine: the producer tool alone would need %.2f cores", 2 * k, 2 * k * t / 1000
    else printf "2x Kafka (%.1f MB/s) leaves the broker, kernel I/O included, %.2f ms of CPU per MB (Chronik used %.2f in its own process)", 2 * k, left / (2 * k), b }')"
fi

machine_cpu="$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)"
java_ver="$("$JAVA" -version 2>&1 | head -n 1)"

{
  printf '\n=== Chronik vs Apache Kafka %s: %s records x %s B, topic bench (%s partitions, RF 1), acks=all ===\n' \
    "${KAFKA_VERSION:-4.1.1}" "$RECORDS" "$RECORD_SIZE" "$PARTITIONS"
  printf '%-44s %14s %14s %14s\n' metric Chronik Kafka Chronik/Kafka
  printf '%-44s %14s %14s %14s\n' "--------------------------------------------" "--------------" "--------------" "--------------"
  for row in "${rows[@]}"; do
    k="${row%%|*}"; label="${row#*|}"
    printf '%-44s %14s %14s %14s\n' "$label" "$(dash "$(r "chronik.$k")")" "$(dash "$(r "kafka.$k")")" \
      "$(ratio "$(r "chronik.$k")" "$(r "kafka.$k")")"
  done
  for n in $IDLE_PARTITIONS; do
    printf '%-44s %14s %14s %14s\n' "idle, $n partitions: RSS (MiB)" "$(dash "$(r "idle$n.rss_mib")")" - -
    printf '%-44s %14s %14s %14s\n' "idle, $n partitions: CPU (% of a core)" "$(dash "$(r "idle$n.cpu_pct")")" - -
  done
  printf '\nTargets\n'
  for t in "${targets[@]}"; do printf '  %-58s %s\n' "${t%%|*}" "${t#*|}"; done
  [[ -z "$ceiling_note" ]] || printf '  %s\n  %s\n' "$ceiling_note" "$budget_note"
  [[ -z "$valid_note" ]] || printf '  %s\n' "$valid_note"
  ((${#FAILED[@]})) && printf '\nFAILED phases: %s (logs in %s)\n' "${FAILED[*]}" "$WORK"
  printf '\n(run took %ss; logs in %s; markdown in %s)\n' "$elapsed" "$WORK" "$OUT_MD"
} | tee "$WORK/table.txt"

mkdir -p "$(dirname "$OUT_MD")"
{
  echo "# Chronik vs Apache Kafka: benchmark results"
  echo
  echo "Run: $started_at, by \`bench/run.sh\` (\`make bench\`), took ${elapsed}s."
  echo "Workload: $RECORDS records x $RECORD_SIZE B per broker, topic \`bench\` with $PARTITIONS partitions, RF 1,"
  echo "producer acks=all unthrottled (kafka-tools ProducerPerformance), then ConsumerPerformance over the same records;"
  echo "before it, $WARMUP unmeasured records into topic \`warmup\` to warm each broker up."
  echo "Brokers ran one after the other on the same machine; Chronik first, then Apache Kafka ${KAFKA_VERSION:-4.1.1} (KRaft, single node)."
  echo "\"RF 3\" rows: three brokers of each (\`bench/rf3.py\`; Kafka as three KRaft broker+controller nodes with"
  echo "min.insync.replicas=2, Chronik acknowledging once a Raft majority has fsynced), ${BENCH_RF3_RECORDS:-300000} records into a"
  echo "$PARTITIONS-partition RF 3 topic after as many unmeasured ones, CPU, disk writes and peak RSS summed over the three;"
  echo "fixed rate ${BENCH_RF3_FIXED_RATE_MBS:-5} MB/s; failover: a producer at 500 records/s into a one-partition RF 3 topic, its leader"
  echo "SIGKILLed, time to the first ack of a record sent after the kill (median and longest of 3, restarted in between)."
  echo
  echo "| metric | Chronik | Kafka | Chronik/Kafka |"
  echo "|---|---:|---:|---:|"
  for row in "${rows[@]}"; do
    k="${row%%|*}"; label="${row#*|}"
    echo "| $label | $(dash "$(r "chronik.$k")") | $(dash "$(r "kafka.$k")") | $(ratio "$(r "chronik.$k")" "$(r "kafka.$k")") |"
  done
  for n in $IDLE_PARTITIONS; do
    echo "| idle, $n partitions: RSS (MiB) | $(dash "$(r "idle$n.rss_mib")") | - | - |"
    echo "| idle, $n partitions: CPU over ${IDLE_WAIT}s (% of a core) | $(dash "$(r "idle$n.cpu_pct")") | - | - |"
    echo "| idle, $n partitions: time to create and elect (s) | $(dash "$(r "idle$n.create_s")") | - | - |"
  done
  echo
  echo "## Targets"
  echo
  echo "| target | result |"
  echo "|---|---|"
  for t in "${targets[@]}"; do echo "| ${t%%|*} | ${t#*|} |"; done
  echo
  if [[ -n "$ceiling_note" ]]; then echo "Throughput bound: $ceiling_note; $budget_note."; echo; fi
  if [[ -n "$valid_note" ]]; then echo "**$valid_note**"; echo; fi
  if (( busy_before > 20 )); then
    echo "**Warning:** the CPUs were ${busy_before}% busy just before the run: other work on this machine skews these numbers."; echo
  fi
  if ((${#FAILED[@]})); then echo "**Failed phases:** ${FAILED[*]} (see the logs of the run in \`$WORK\`)."; echo; fi
  echo "Notes: peak RSS is the broker process's VmHWM (for Kafka, the broker's java process, heap"
  echo "${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}). \"produce\" latencies are ProducerPerformance's at full throughput,"
  echo "so they include time queued in the producer; \"fixed-rate\" ones come from a run at $FIXED_RATE_MBS MB/s for ${FIXED_SECONDS}s"
  echo "(after the consume), a rate neither broker saturates. \"incl. group join\" rates are ConsumerPerformance's"
  echo "MB.sec/nMsg.sec (whole run); \"fetch only\" excludes the consumer group rebalance. Broker CPU per MB is the"
  echo "broker process's user + system time during the run over the MB produced or consumed; bytes written to disk"
  echo "per byte produced are its /proc/PID/io write_bytes during the produce (WAL, data, compactions so far)."
  echo
  echo "## Tool summary lines"
  echo
  echo '```'
  for b in chronik kafka; do
    [[ -n "$(r "$b.prod_summary")" ]] && echo "$b ProducerPerformance: $(r "$b.prod_summary")"
    [[ -n "$(r "$b.cons_summary")" ]] && echo "$b ConsumerPerformance: $(r "$b.cons_summary")"
    [[ -n "$(r "$b.fixed_summary")" ]] && echo "$b ProducerPerformance at $FIXED_RATE_MBS MB/s: $(r "$b.fixed_summary")"
  done
  echo '```'
  echo
  echo "## Commands"
  echo
  echo '```'
  echo "BENCH_RECORDS=$RECORDS BENCH_WARMUP_RECORDS=$WARMUP BENCH_ONLY=${ONLY} CHRONIK_BROKER_BIN=${CHRONIK_BROKER_BIN:-} bench/run.sh"
  cat "$CMDS"
  echo '```'
  echo "\`<jars>\` is $JARS (tests/java/fetch-jars.sh)."
  echo
  echo "## Machine"
  echo
  echo '```'
  echo "date: $started_at"
  echo "nproc: $(nproc)"
  echo "cpu: ${machine_cpu:-unknown}"
  echo "kernel: $(uname -sr)"
  echo "java: $java_ver"
  echo "CPU busy in the 2 s before the run: ${busy_before}%"
  echo "load average at start: $load_before, at end: $load_after"
  echo "free -g:"
  free -g
  echo '```'
} > "$OUT_MD"
log "wrote $OUT_MD"

# The figures as JSON, under the names issue 12 and later runs compare by.
RESULTS="$RESULTS" OUT_JSON="$OUT_JSON" STARTED="$started_at" CPU="${machine_cpu:-unknown}" \
  COMMIT="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)" "$PYTHON" - <<'PY'
import json, os
results = {}
for line in open(os.environ["RESULTS"]):
    key, _, value = line.rstrip("\n").partition("=")
    results[key] = value
names = {
    "produce_cpu_ms_per_mb": "broker_cpu_ms_mb", "consume_cpu_ms_per_mb": "cons_cpu_ms_mb",
    "disk_write_bytes_per_byte": "disk_write_per_byte", "fixed_rate_p50_ms": "fixed_p50",
    "fixed_rate_p99_ms": "fixed_p99", "fixed_rate_p999_ms": "fixed_p999",
    "fetch_only_mb_s": "cons_fetch_mbps", "peak_rss_mib": "peak_rss_mib",
    "produce_mb_s": "prod_mbps", "produce_p99_ms": "prod_p99",
    "producer_tool_cpu_ms_per_mb": "tool_cpu_ms_mb",
    "rf3_produce_cpu_ms_per_mb": "rf3_broker_cpu_ms_mb", "rf3_consume_cpu_ms_per_mb": "rf3_cons_cpu_ms_mb",
    "rf3_disk_write_bytes_per_byte": "rf3_disk_write_per_byte", "rf3_fixed_rate_p50_ms": "rf3_fixed_p50",
    "rf3_fixed_rate_p99_ms": "rf3_fixed_p99", "rf3_fixed_rate_p999_ms": "rf3_fixed_p999",
    "rf3_fetch_only_mb_s": "rf3_cons_fetch_mbps", "rf3_peak_rss_mib": "rf3_peak_rss_mib",
    "rf3_produce_mb_s": "rf3_prod_mbps", "rf3_produce_p99_ms": "rf3_prod_p99",
    "failover_s": "failover_s", "failover_max_s": "failover_max_s",
}
def number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None
metrics = {}
for name, key in names.items():
    c, k = number(results.get(f"chronik.{key}")), number(results.get(f"kafka.{key}"))
    metrics[name] = {"chronik": c, "kafka": k, "ratio": round(c / k, 3) if c is not None and k else None}
for name, key in {"idle_rss_mib_1000_partitions": "idle1000.rss_mib",
                  "idle_cpu_pct_1000_partitions": "idle1000.cpu_pct",
                  "idle_rss_mib_10000_partitions": "idle10000.rss_mib",
                  "idle_cpu_pct_10000_partitions": "idle10000.cpu_pct"}.items():
    metrics[name] = {"chronik": number(results.get(key)), "kafka": None, "ratio": None}
doc = {"date": os.environ["STARTED"], "commit": os.environ["COMMIT"], "machine": os.environ["CPU"],
       "metrics": metrics}
with open(os.environ["OUT_JSON"], "w") as f:
    json.dump(doc, f, indent=2)
    f.write("\n")
PY
log "wrote $OUT_JSON"

if ((${#FAILED[@]})); then exit 1; fi
if [[ "${BENCH_STRICT:-0}" == 1 ]]; then
  for t in "${targets[@]}"; do [[ "${t#*|}" == MET ]] || exit 3; done
fi
exit 0
