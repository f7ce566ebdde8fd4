#!/usr/bin/env bash
# Starts or stops a 3-node NATS JetStream cluster on loopback for the benchmark.
#   nats.sh start <dir> [default|always]   data, configs, logs and pid files under <dir>
#   nats.sh stop <dir>
#   nats.sh supports-sync-always           exit 0 when this nats-server accepts sync_interval
# Client ports 14222-14224, route ports 16222-16224, server names n1-n3. Idempotent: start
# stops a cluster left running in <dir> and wipes its data first; stop of a stopped cluster is a
# no-op. Processes are stopped by their pid files, nothing else is touched.
set -euo pipefail
# shellcheck source=bench/peers/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

client_port_base=14222
route_port_base=16222
leader_wait_s=30

stop_cluster() {
  stop_by_pidfiles "$1" nats.pid 50
}

# sync_interval (and its value "always") appeared in nats-server 2.10; 2.9 rejects or ignores it.
supports_sync_always() {
  local probe; probe="$(mktemp -d)"
  printf 'listen: 127.0.0.1:%d\njetstream { store_dir: "%s", sync_interval: always }\n' \
    "$client_port_base" "$probe" >"$probe/probe.conf"
  local ok=1
  if nats-server -t -c "$probe/probe.conf" >"$probe/out" 2>&1 && grep -qa sync_interval "$(command -v nats-server)"; then
    ok=0
  fi
  rm -rf "$probe"
  return "$ok"
}

write_config() {
  local dir="$1" i="$2" sync="$3"
  local routes="" j
  for j in 1 2 3; do routes+="nats-route://127.0.0.1:$((route_port_base + j - 1)), "; done
  local sync_line=""
  [ "$sync" = always ] && sync_line="sync_interval: always"
  cat >"$dir/n$i/nats.conf" <<CONF
server_name: n$i
listen: 127.0.0.1:$((client_port_base + i - 1))
pid_file: "$dir/n$i/nats.pid"
log_file: "$dir/n$i/nats.log"
jetstream { store_dir: "$dir/n$i/store", $sync_line }
cluster {
  name: ferrybench
  listen: 127.0.0.1:$((route_port_base + i - 1))
  routes: [ ${routes%, } ]
}
CONF
}

start_cluster() {
  local dir="$1" sync="${2:-default}"
  if [ "$sync" = always ] && ! supports_sync_always; then
    echo "nats.sh: this nats-server ($(nats-server --version)) does not support sync_interval: always" >&2
    exit 3
  fi
  stop_cluster "$dir"
  rm -rf "${dir:?}"/n1 "${dir:?}"/n2 "${dir:?}"/n3
  for i in 1 2 3; do
    mkdir -p "$dir/n$i/store"
    write_config "$dir" "$i" "$sync"
    nats-server -c "$dir/n$i/nats.conf" >>"$dir/n$i/stdout.log" 2>&1 &
  done
  for _ in $(seq $((leader_wait_s * 10))); do
    if grep -qs "JetStream cluster new metadata leader\|Self is new JetStream cluster metadata leader" "$dir"/n*/nats.log; then
      echo "nats.sh: cluster up in $dir (sync: $sync)" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "nats.sh: no JetStream metadata leader after ${leader_wait_s}s; logs in $dir" >&2
  exit 1
}

case "${1:-}" in
  start) start_cluster "${2:?dir}" "${3:-default}" ;;
  stop) stop_cluster "${2:?dir}" ;;
  supports-sync-always) supports_sync_always ;;
  *) echo "usage: nats.sh start <dir> [default|always] | stop <dir> | supports-sync-always" >&2; exit 2 ;;
esac
