# Process helpers shared by control-plane.sh and node.sh (sourced, not run).
#
# Each component runs in its own session with its pid in DIR/NAME.pid and its
# output appended to DIR/logs/NAME.log. The caller defines DIR, TIMEOUT (seconds),
# log and die before sourcing this file.

# pid of a component we started in DIR, if it is still that process.
running_pid() { # NAME
  local f="$DIR/$1.pid" pid cmdline
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f")"
  [[ -n "$pid" && -r "/proc/$pid/cmdline" ]] || return 1
  # Guard against pid reuse: the command line must name this DIR. (No `tr | grep -q`
  # pipeline: with pipefail, grep's early exit can fail it.)
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$DIR/"* ]] || return 1
  echo "$pid"
}

wait_gone() { # PID SECONDS: 0 once PID has exited, 1 if it is still there
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    kill -0 "$1" 2>/dev/null || return 0
    sleep 0.1
  done
  return 1
}

stop_one() { # NAME [GRACE-SECONDS]: SIGTERM, then SIGKILL after the grace period
  local name="$1" grace="${2:-10}" pid
  if pid="$(running_pid "$name")"; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" "$grace"; then
      log "$name did not exit after ${grace}s, killing"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || true
    fi
  fi
  rm -f "$DIR/$name.pid"
}

launch() { # NAME ARGS...: start in a new session, output to DIR/logs/NAME.log
  local name="$1" pidfile="$DIR/$1.pid" i
  shift
  rm -f "$pidfile"
  # The inner shell records its own pid, then execs the binary under that pid.
  # shellcheck disable=SC2016 # expanded by the inner shell
  setsid -f bash -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$pidfile" "$@" \
    >>"$DIR/logs/$name.log" 2>&1 </dev/null
  for ((i = 0; i < 100; i++)); do
    [[ -s "$pidfile" ]] && return
    sleep 0.05
  done
  die "$name did not start"
}

# wait_ready NAME CHECK...: 0 once CHECK passes; 1 if NAME exited, 2 after TIMEOUT
# seconds (with the last log lines printed in both cases).
wait_ready() {
  local name="$1" deadline=$((SECONDS + TIMEOUT))
  shift
  while ((SECONDS < deadline)); do
    # (checked twice: /proc/PID/cmdline reads empty for an instant while the
    # launcher execs the component)
    if ! running_pid "$name" >/dev/null && ! { sleep 0.3 && running_pid "$name" >/dev/null; }; then
      log "$name exited; last log lines:"
      tail -n 30 "$DIR/logs/$name.log" >&2 || true
      return 1
    fi
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.3
  done
  log "$name not ready after ${TIMEOUT}s; last log lines:"
  tail -n 30 "$DIR/logs/$name.log" >&2 || true
  return 2
}
