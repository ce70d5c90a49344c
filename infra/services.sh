#!/usr/bin/env bash
# Fusion's services as background processes: dispatcher, panel-worker, judge, gateway, activity.
#   infra/services.sh start|stop|status
# Each runs `fusion serve <name>` with the FUSION_* settings of this shell; logs in .cache/run/.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cache=${FUSION_CACHE:-$root/.cache}
dir=$cache/run
fusion=${FUSION_BIN:-$root/.venv/bin/fusion}
services=(dispatcher panel-worker judge gateway activity)
declare -A health_port=([dispatcher]=8181 [panel-worker]=8182 [judge]=8183 [gateway]=8080 [activity]=8184)
# The gateway (the Studio, GET /v1/fusions) and the activity recorder share one database.
export FUSION_DATABASE_URL=${FUSION_DATABASE_URL:-sqlite:///$cache/activity.sqlite}

log() { echo "services: $*" >&2; }

running() { [[ -f $dir/$1.pid ]] && kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; }

healthy() { curl -fsS -m 2 "http://127.0.0.1:${health_port[$1]}/health" > /dev/null 2>&1; }

start() {
  mkdir -p "$dir"
  for name in "${services[@]}"; do
    if running "$name"; then log "$name already running"; continue; fi
    FUSION_HEALTH_PORT=${health_port[$name]} nohup "$fusion" serve "$name" > "$dir/$name.log" 2>&1 &
    echo $! > "$dir/$name.pid"
  done
  for name in "${services[@]}"; do
    for _ in $(seq 1 120); do
      healthy "$name" && break
      running "$name" || { log "$name exited; its log:"; tail -20 "$dir/$name.log" >&2; exit 1; }
      sleep 0.5
    done
    healthy "$name" || { log "$name not healthy after 60 s; see $dir/$name.log"; exit 1; }
    log "$name up (health on 127.0.0.1:${health_port[$name]}, log $dir/$name.log)"
  done
}

stop() {
  for name in "${services[@]}"; do
    if running "$name"; then kill "$(cat "$dir/$name.pid")"; fi
  done
  for name in "${services[@]}"; do
    [[ -f $dir/$name.pid ]] || continue
    local pid; pid=$(cat "$dir/$name.pid")
    for _ in $(seq 1 120); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$name.pid"
    log "$name stopped"
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) for name in "${services[@]}"; do
            if running "$name"; then log "$name running"; else log "$name stopped"; fi
          done ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
