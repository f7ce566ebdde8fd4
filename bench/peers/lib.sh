# Shared by the peer cluster scripts (sourced, not run).

# stop_by_pidfiles <dir> <pid file name> <wait in tenths of a second>: ends the processes named
# by <dir>/n1..n3/<pid file name> (TERM, then KILL after the wait) and removes the pid files.
stop_by_pidfiles() {
  local dir="$1" name="$2" tenths="$3"
  for i in 1 2 3; do
    local pidfile="$dir/n$i/$name"
    [ -s "$pidfile" ] || continue
    local pid; pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq "$tenths"); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
}
