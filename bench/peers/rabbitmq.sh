#!/usr/bin/env bash
# Starts or stops a 3-node RabbitMQ cluster on loopback for the benchmark (quorum queues).
#   rabbitmq.sh start <dir>     nodes ferrybench1..3@localhost, state and logs under <dir>
#   rabbitmq.sh stop <dir>
#   rabbitmq.sh ctl <dir> <n> <rabbitmqctl args...>   rabbitmqctl against node n, with our cookie
# AMQP ports 25672-25674, distribution ports 25682-25684, all bound to 127.0.0.1 (epmd too).
# Runs /usr/lib/rabbitmq/bin/* directly: the /usr/sbin wrappers switch user with `su`, which
# resets HOME and with it the Erlang cookie shared by our nodes and rabbitmqctl. Idempotent:
# start stops a cluster left running in <dir> and wipes its state first. Nodes are stopped by
# the pids in their pid files; nothing else is touched.
set -euo pipefail
# shellcheck source=bench/peers/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

amqp_port_base=25672
dist_port_base=25682
bin=/usr/lib/rabbitmq/bin
boot_wait_s=90

node_env() {
  local dir="$1" i="$2"
  export HOME="$dir/home"
  export RABBITMQ_NODENAME="ferrybench$i@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT=$((amqp_port_base + i - 1))
  export RABBITMQ_DIST_PORT=$((dist_port_base + i - 1))
  export RABBITMQ_MNESIA_BASE="$dir/n$i/mnesia"
  export RABBITMQ_LOG_BASE="$dir/n$i/log"
  export RABBITMQ_PID_FILE="$dir/n$i/rabbit.pid"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export ERL_EPMD_ADDRESS=127.0.0.1
  export ERL_CRASH_DUMP="$dir/erl_crash.dump" # rabbitmqctl too writes one into its cwd otherwise
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

ctl() {
  local dir="$1" i="$2"; shift 2
  (node_env "$dir" "$i"; "$bin/rabbitmqctl" -n "ferrybench$i@localhost" "$@")
}

stop_cluster() {
  stop_by_pidfiles "$1" rabbit.pid 100
}

write_files() {
  local dir="$1"
  mkdir -p "$dir/home"
  # The cookie is shared by the three nodes and rabbitmqctl; Erlang insists on mode 400.
  if [ ! -f "$dir/home/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/home/.erlang.cookie"
    chmod 400 "$dir/home/.erlang.cookie"
  fi
  echo "[]." >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
  echo "[]." >"$dir/advanced.config"
  cat >"$dir/rabbitmq.conf" <<CONF
loopback_users.guest = true
log.console = false
log.file.level = info
CONF
}

start_node() {
  local dir="$1" i="$2"
  mkdir -p "$dir/n$i/log" "$dir/n$i/mnesia"
  (node_env "$dir" "$i"; setsid "$bin/rabbitmq-server" >"$dir/n$i/stdout.log" 2>&1 </dev/null &)
}

wait_node() {
  local dir="$1" i="$2"
  for _ in $(seq $((boot_wait_s * 2))); do [ -s "$dir/n$i/rabbit.pid" ] && break; sleep 0.5; done
  ctl "$dir" "$i" wait --timeout "$boot_wait_s" "$dir/n$i/rabbit.pid" >/dev/null
}

start_cluster() {
  local dir="$1"
  stop_cluster "$dir"
  rm -rf "${dir:?}"/n1 "${dir:?}"/n2 "${dir:?}"/n3
  write_files "$dir"
  for i in 1 2 3; do start_node "$dir" "$i"; done
  for i in 1 2 3; do wait_node "$dir" "$i"; done
  for i in 2 3; do
    ctl "$dir" "$i" stop_app >/dev/null
    ctl "$dir" "$i" join_cluster ferrybench1@localhost >/dev/null
    ctl "$dir" "$i" start_app >/dev/null
  done
  echo "rabbitmq.sh: cluster up in $dir" >&2
}

case "${1:-}" in
  start) start_cluster "${2:?dir}" ;;
  stop) stop_cluster "${2:?dir}" ;;
  ctl) dir="${2:?dir}"; n="${3:?node}"; shift 3; ctl "$dir" "$n" "$@" ;;
  *) echo "usage: rabbitmq.sh start <dir> | stop <dir> | ctl <dir> <n> <args...>" >&2; exit 2 ;;
esac
