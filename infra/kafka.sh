#!/usr/bin/env bash
# The local Apache Kafka broker: single node, KRaft, on loopback.
#   infra/kafka.sh start|stop|reset|status
# Jars come from Maven Central through infra/kafka/pom.xml into the cache folder (once).
# KAFKA_PORT (default 9092) picks the listener; the controller listens on the next port.
# Everything lives under FUSION_CACHE (default .cache/ in the repo), which git ignores.
set -euo pipefail

# shellcheck source=infra/kafka-single.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka-single.sh"  # running, port_open, java_run, launch_broker, stop_broker
port=${KAFKA_PORT:-9092}
controller_port=${KAFKA_CONTROLLER_PORT:-$((port + 1))}
dir=$cache/kafka-$port

log() { echo "kafka: $*" >&2; }

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
  prepare_broker
  launch_broker
  log "up on 127.0.0.1:$port (pid $(cat "$dir/pid"), data in $dir)"
}

stop() { stop_broker; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  reset) stop; rm -rf "$dir"; log "data removed" ;;
  status) if running; then log "running on 127.0.0.1:$port"; else log "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|reset|status" >&2; exit 2 ;;
esac
