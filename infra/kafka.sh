#!/usr/bin/env bash
# The local Apache Kafka broker: single node, KRaft, on loopback.
#   infra/kafka.sh start|stop|reset|status
# Jars come from Maven Central through infra/kafka/pom.xml into the cache folder (once).
# KAFKA_PORT (default 9092) picks the listener; the controller listens on the next port.
# Everything lives under FUSION_CACHE (default .cache/ in the repo), which git ignores.
set -euo pipefail

# shellcheck source=infra/kafka-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka-common.sh"  # here, root, cache, lib, pom, fetch_jars
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
dir=$cache/kafka-$port

log() { echo "kafka: $*" >&2; }

running() { [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml" -cp "$lib/*")

java_run() { java "${java_opts[@]}" "$@"; }

configure() {
  mkdir -p "$dir/data"
  sed -e "s/127.0.0.1:9093/127.0.0.1:$controller_port/g" -e "s/127.0.0.1:9092/127.0.0.1:$port/g" \
    "$here/kafka/server.properties" > "$dir/server.properties"
  echo "log.dirs=$dir/data" >> "$dir/server.properties"
  if [[ ! -f $dir/data/meta.properties ]]; then
    java_run kafka.tools.StorageTool format -t "$(java_run kafka.tools.StorageTool random-uuid)" \
      -c "$dir/server.properties" > "$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; exit 1; }
  fi
}

start() {
  if running; then log "already running on 127.0.0.1:$port (pid $(cat "$dir/pid"))"; return 0; fi
  if port_open; then log "port $port is taken by another process"; exit 1; fi
  fetch_jars
  configure
  nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 120); do
    if grep -q "Kafka Server started" "$dir/kafka.log" 2>/dev/null && port_open; then
      log "up on 127.0.0.1:$port (pid $(cat "$dir/pid"), data in $dir)"
      return 0
    fi
    running || { log "the broker exited; its log:"; tail -30 "$dir/kafka.log" >&2; exit 1; }
    sleep 0.5
  done
  log "not up after 60 s; see $dir/kafka.log"; exit 1
}

stop() {
  if ! running; then rm -f "$dir/pid"; log "not running"; return 0; fi
  local pid; pid=$(cat "$dir/pid")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  reset) stop; rm -rf "$dir"; log "data removed" ;;
  status) if running; then log "running on 127.0.0.1:$port"; else log "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|reset|status" >&2; exit 2 ;;
esac
