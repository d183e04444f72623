#!/usr/bin/env bash
# Run a single-node Apache Kafka (KRaft, broker+controller) on 127.0.0.1 as a plain
# java process. Used to validate the e2e harness and as the benchmark baseline.
#
#   bench/kafka-local.sh fetch     # download kafka_2.13 + runtime deps (idempotent)
#   bench/kafka-local.sh start     # fresh storage (random cluster id), start, wait until serving
#   bench/kafka-local.sh stop      # SIGTERM, wait, SIGKILL if needed (data kept)
#   bench/kafka-local.sh kill9     # SIGKILL (data kept)
#   bench/kafka-local.sh restart   # stop if running, start again on the SAME data
#   bench/kafka-local.sh status    # exit 0 if running
#   bench/kafka-local.sh log       # path of the broker's log
#
# Environment:
#   KAFKA_VERSION          (default 4.1.1)
#   KAFKA_LOCAL_DIR        run dir: config, data, logs, pid (default ${TMPDIR:-/tmp}/chronik-kafka-local)
#   KAFKA_LOCAL_PORT       PLAINTEXT port (default 19092)
#   KAFKA_LOCAL_CONTROLLER_PORT  (default 19093)
#   KAFKA_HEAP_OPTS        (default -Xms256m -Xmx1g)
#   JAVA_HOME              java to use (default: java on PATH)
#   KAFKA_LOCAL_EXTRA_PROPS  extra server.properties lines (newline separated)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KAFKA_VERSION="${KAFKA_VERSION:-4.1.1}"
CACHE="${CHRONIK_CACHE:-$HOME/.cache/chronik}"
KAFKA_HOME="$CACHE/kafka/$KAFKA_VERSION"
LIBS="$KAFKA_HOME/libs"
RUN_DIR="${KAFKA_LOCAL_DIR:-${TMPDIR:-/tmp}/chronik-kafka-local}"
PORT="${KAFKA_LOCAL_PORT:-19092}"
CPORT="${KAFKA_LOCAL_CONTROLLER_PORT:-19093}"
HEAP="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA="$JAVA_HOME/bin/java"; else JAVA=java; fi

PID_FILE="$RUN_DIR/kafka.pid"
OUT="$RUN_DIR/kafka.out"
CONF="$RUN_DIR/server.properties"
DATA="$RUN_DIR/data"

log() { echo "kafka-local: $*" >&2; }

fetch() {
  local stamp="$KAFKA_HOME/.complete" want
  want="$(sha256sum "$here/kafka-server/pom.xml" | cut -d' ' -f1)"
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
  command -v mvn >/dev/null || { log "mvn not found (install maven)"; exit 1; }
  log "fetching kafka_2.13 $KAFKA_VERSION into $LIBS"
  local tmp="$KAFKA_HOME/libs.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  if ! mvn -B -q -Dstyle.color=never -f "$here/kafka-server/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1 </dev/null; then
    cat "$tmp.log" >&2; rm -rf "$tmp" "$tmp.log"; log "mvn dependency:copy-dependencies failed"; exit 1
  fi
  rm -f "$tmp.log"
  ls "$tmp"/kafka_2.13-*.jar >/dev/null
  rm -rf "$LIBS"; mv "$tmp" "$LIBS"
  echo "$want" > "$stamp"
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid; pid="$(cat "$PID_FILE")"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  mkdir -p "$RUN_DIR/logs"
  cat > "$CONF" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$DATA
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
${KAFKA_LOCAL_EXTRA_PROPS:-}
EOF
  cat > "$RUN_DIR/log4j2.properties" <<EOF
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $RUN_DIR/logs/server.log
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
EOF
}

launch() {
  log "starting kafka $KAFKA_VERSION on 127.0.0.1:$PORT (dir $RUN_DIR)"
  # readiness is read from server.log: keep the previous run's log aside
  if [[ -f "$RUN_DIR/logs/server.log" ]]; then
    cat "$RUN_DIR/logs/server.log" >> "$RUN_DIR/logs/server.log.prev"; rm -f "$RUN_DIR/logs/server.log"
  fi
  # shellcheck disable=SC2086
  nohup "$JAVA" $HEAP -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$RUN_DIR/log4j2.properties" \
    -cp "$LIBS/*" kafka.Kafka "$CONF" >>"$OUT" 2>&1 </dev/null &
  echo $! > "$PID_FILE"
  wait_ready
}

wait_ready() {
  local pid; pid="$(cat "$PID_FILE")"
  local deadline=$((SECONDS + ${KAFKA_LOCAL_START_TIMEOUT:-120}))
  while (( SECONDS < deadline )); do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "kafka exited during startup; last output:"; tail -n 50 "$OUT" >&2
      tail -n 50 "$RUN_DIR/logs/server.log" >&2 2>/dev/null || true
      exit 1
    fi
    if port_open "$PORT" && grep -q "Kafka Server started" "$RUN_DIR/logs/server.log" 2>/dev/null; then
      log "kafka is up (pid $pid) at 127.0.0.1:$PORT"
      return 0
    fi
    sleep 0.5
  done
  log "kafka did not become ready in time; last output:"; tail -n 50 "$OUT" >&2
  tail -n 50 "$RUN_DIR/logs/server.log" >&2 2>/dev/null || true
  kill -9 "$pid" 2>/dev/null || true
  exit 1
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then rm -f "$PID_FILE"; return 0; fi
  log "stopping kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then log "still alive, SIGKILL"; kill -9 "$pid" 2>/dev/null || true; fi
  for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$PID_FILE"
}

kill9() {
  local pid
  if ! pid="$(running_pid)"; then rm -f "$PID_FILE"; return 0; fi
  log "SIGKILL kafka (pid $pid)"
  kill -9 "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  rm -f "$PID_FILE"
}

start() {
  if pid="$(running_pid)"; then log "already running (pid $pid)"; return 0; fi
  fetch
  if port_open "$PORT" || port_open "$CPORT"; then
    log "port $PORT or $CPORT is already in use by another process"; exit 1
  fi
  rm -rf "$DATA" "$RUN_DIR/logs" "$OUT"
  mkdir -p "$RUN_DIR"
  write_config
  local cluster_id
  cluster_id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
  log "formatting $DATA with cluster id $cluster_id"
  "$JAVA" -Xmx256m -Dlog4j2.configurationFile="$RUN_DIR/log4j2.properties" \
    -cp "$LIBS/*" kafka.tools.StorageTool format -t "$cluster_id" -c "$CONF" >>"$OUT" 2>&1 \
    || { log "storage format failed:"; tail -n 30 "$OUT" >&2; exit 1; }
  launch
}

restart() {
  stop
  [[ -f "$CONF" && -d "$DATA" ]] || { log "no previous run in $RUN_DIR; use start"; exit 1; }
  fetch
  launch
}

case "${1:-}" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  kill9) kill9 ;;
  restart) restart ;;
  status) if pid="$(running_pid)"; then echo "running (pid $pid) at 127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi ;;
  log) echo "$RUN_DIR/logs/server.log" ;;
  *) echo "usage: $0 fetch|start|stop|kill9|restart|status|log" >&2; exit 2 ;;
esac
