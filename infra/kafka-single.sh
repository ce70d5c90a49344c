# One broker on loopback, its files under $dir: shared by infra/kafka.sh and infra/kafka-secure.sh;
# sourced, not run. The caller sets port and dir, defines log() and configure(), then calls these.
# shellcheck source=infra/kafka-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka-common.sh"  # here, root, cache, lib, pom, fetch_jars

running() { [[ -f $dir/pid ]] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

java_opts=(-Xms256m -Xmx768m -XX:+UseG1GC -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml" -cp "$lib/*")

java_run() { java "${java_opts[@]}" "$@"; }

# Refuses a port another process holds; fetches the jars and writes the configuration.
prepare_broker() {
  if port_open; then log "port $port is taken by another process"; exit 1; fi
  fetch_jars
  configure
}

# Starts the configured broker in the background and returns once it listens.
launch_broker() {
  nohup java "${java_opts[@]}" kafka.Kafka "$dir/server.properties" > "$dir/kafka.log" 2>&1 &
  echo $! > "$dir/pid"
  for _ in $(seq 1 120); do
    if grep -q "Kafka Server started" "$dir/kafka.log" 2>/dev/null && port_open; then return 0; fi
    running || { log "the broker exited; its log:"; tail -30 "$dir/kafka.log" >&2; exit 1; }
    sleep 0.5
  done
  log "not up after 60 s; see $dir/kafka.log"; exit 1
}

stop_broker() {
  if ! running; then rm -f "$dir/pid"; log "not running"; return 0; fi
  local pid; pid=$(cat "$dir/pid")
  kill "$pid"
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
  kill -9 "$pid" 2>/dev/null || true
  rm -f "$dir/pid"
  log "stopped"
}
