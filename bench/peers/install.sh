#!/usr/bin/env bash
# Installs the peers Ferry is compared with (NATS JetStream, RabbitMQ quorum queues) and their
# Node clients. Idempotent: a second run changes nothing. The clients go into
# bench/.peer-clients (git-ignored), never into Ferry's package.json, so Ferry keeps its own
# dependency list. The Debian package of RabbitMQ starts a node of its own when there is no
# systemd; we stop that one by its pid so it cannot clash with the cluster we start.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
clients="$here/../.peer-clients"

missing=()
command -v nats-server >/dev/null 2>&1 || missing+=(nats-server)
command -v rabbitmq-server >/dev/null 2>&1 || missing+=(rabbitmq-server)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "peers: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Stop RabbitMQ nodes the package may have started (default node name rabbit@<host>), by pid.
# Our own nodes are named ferrybench<N>@localhost and are left alone.
for pid in $(pgrep -u rabbitmq -f 'beam.*-sname rabbit@|beam.*rabbit@' 2>/dev/null || true); do
  if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q ferrybench; then
    echo "peers: stopping the package's RabbitMQ node (pid $pid)" >&2
    kill "$pid" 2>/dev/null || true
  fi
done
# epmd started by the package listens on all interfaces; ours is started bound to loopback.
for pid in $(pgrep -x epmd 2>/dev/null || true); do
  if ! tr '\0' ' ' <"/proc/$pid/environ" 2>/dev/null | grep -q 'ERL_EPMD_ADDRESS=127.0.0.1'; then
    echo "peers: stopping an epmd not bound to loopback (pid $pid)" >&2
    kill "$pid" 2>/dev/null || true
  fi
done

if [ ! -f "$clients/node_modules/nats/package.json" ] || [ ! -f "$clients/node_modules/amqplib/package.json" ]; then
  echo "peers: installing the nats and amqplib npm clients into $clients" >&2
  mkdir -p "$clients"
  [ -f "$clients/package.json" ] || echo '{ "name": "ferry-bench-peer-clients", "private": true }' >"$clients/package.json"
  npm install --prefix "$clients" --no-audit --no-fund --silent nats@2 amqplib@0.10 >/dev/null
fi

echo "nats-server $(nats-server --version 2>/dev/null | sed 's/.*v//')"
echo "rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null)"
echo "nats.js $(node -p "require('$clients/node_modules/nats/package.json').version")"
echo "amqplib $(node -p "require('$clients/node_modules/amqplib/package.json').version")"
