#!/usr/bin/env bash
# A local three-node Apache Kafka cluster for the chaos run and the failover tests (`make run` keeps the
# single broker of infra/kafka.sh). Each node is broker and controller in one process, KRaft, loopback;
# the controllers form a static three-voter quorum.
#   infra/kafka-cluster.sh start|stop|reset|status|bootstrap|controller
#   infra/kafka-cluster.sh kill N|restart N|pause N|resume N     (N = 1, 2 or 3)
# start waits until the three brokers are registered and prints the bootstrap string; controller prints
# the node whose controller is active (the quorum's leader). kill is SIGKILL; restart starts a killed
# node again on its data, while the other two run (alone, a node has no quorum and never comes up);
# pause/resume are SIGSTOP/SIGCONT.
# KAFKA_CLUSTER_PORT (default 19192) is node 1's broker port: brokers on it and the next two ports,
# controllers on the three after (19192-19194, 19195-19197). KAFKA_CLUSTER_HEAP (default 384m) is each
# node's -Xmx; KAFKA_CLUSTER_JAVA_OPTS adds JVM options.
# Data lives under FUSION_CACHE (default .cache/ in the repo) in kafka-cluster-<port>/node-N, each
# node's log (all its runs) in node-N/kafka.log.
set -euo pipefail

# shellcheck source=infra/kafka-common.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka-common.sh"  # here, root, cache, lib, pom, fetch_jars
base=${KAFKA_CLUSTER_PORT:-19192}
dir=$cache/kafka-cluster-$base
nodes=(1 2 3)
heap=${KAFKA_CLUSTER_HEAP:-384m}  # each node's -Xmx

log() { echo "kafka-cluster: $*" >&2; }

broker_port() { echo $((base + $1 - 1)); }
controller_port() { echo $((base + 2 + $1)); }
node_dir() { echo "$dir/node-$1"; }
bootstrap() { local n out=(); for n in "${nodes[@]}"; do out+=("127.0.0.1:$(broker_port "$n")"); done; (IFS=,; echo "${out[*]}"); }
voters() { local n out=(); for n in "${nodes[@]}"; do out+=("$n@127.0.0.1:$(controller_port "$n")"); done; (IFS=,; echo "${out[*]}"); }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_of() { cat "$(node_dir "$1")/pid" 2>/dev/null || true; }

# Node N's process is alive (running or paused), and the pid file's pid is still that node's JVM.
running() {
  local pid; pid=$(pid_of "$1")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null \
    && tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF "$(node_dir "$1")/server.properties"
}

paused() { running "$1" && [[ $(ps -o state= -p "$(pid_of "$1")") == T* ]]; }

# Small heaps (three JVMs share the machine), and the C1 compiler only: the three nodes start in about
# half the time on two cores. KAFKA_CLUSTER_JAVA_OPTS comes last, so it can override any of these
# (e.g. -XX:TieredStopAtLevel=4 for full C2 throughput).
read -ra extra_opts <<< "${KAFKA_CLUSTER_JAVA_OPTS:-}"
java_opts=("-Xms128m" "-Xmx$heap" -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  "-Dlog4j2.configurationFile=$here/kafka/log4j2.yaml" "${extra_opts[@]}" -cp "$lib/*")

java_run() { java "${java_opts[@]}" "$@"; }

check_node() { [[ ${1:-} =~ ^[123]$ ]] || { echo "usage: $0 $action 1|2|3" >&2; exit 2; }; }

# A Kafka Uuid as `StorageTool random-uuid` prints it (16 random bytes, base64url, never starting with
# '-'), without a JVM's start-up.
new_cluster_id() {
  local id
  while :; do
    id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    [[ $id == -* ]] || { echo "$id"; return 0; }
  done
}

# Every node's server.properties, and its storage formatted with the cluster's one id (first start only).
configure() {
  local n d voters_list cluster_id pids=() pid failed=0
  voters_list=$(voters)
  mkdir -p "$dir"
  [[ -f $dir/cluster-id ]] || new_cluster_id > "$dir/cluster-id"
  # The admin calls of wait_registered give up after a few seconds rather than the default minute.
  printf '%s\n' request.timeout.ms=3000 default.api.timeout.ms=5000 > "$dir/admin.properties"
  cluster_id=$(cat "$dir/cluster-id")
  for n in "${nodes[@]}"; do
    d=$(node_dir "$n")
    mkdir -p "$d/data"
    sed -e "s/@NODE_ID@/$n/g" -e "s/@BROKER_PORT@/$(broker_port "$n")/g" \
      -e "s/@CONTROLLER_PORT@/$(controller_port "$n")/g" -e "s/@VOTERS@/$voters_list/g" \
      "$here/kafka/cluster.properties" > "$d/server.properties"
    echo "log.dirs=$d/data" >> "$d/server.properties"
    # A static quorum (controller.quorum.voters) is formatted with no --standalone or
    # --initial-controllers: those are for a dynamic quorum (controller.quorum.bootstrap.servers).
    if [[ ! -f $d/data/meta.properties ]]; then
      java_run kafka.tools.StorageTool format -t "$cluster_id" -c "$d/server.properties" \
        > "$d/format.log" 2>&1 &
      pids+=($!)
    fi
  done
  for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
  [[ $failed == 0 ]] || { log "formatting the storage failed:"; cat "$dir"/node-*/format.log >&2; exit 1; }
}

launch() {
  local n=$1 d; d=$(node_dir "$n")
  if port_open "$(broker_port "$n")" || port_open "$(controller_port "$n")"; then
    log "node $n: port $(broker_port "$n") or $(controller_port "$n") is taken by another process"; exit 1
  fi
  # The log keeps every run of the node; offset marks where this run's lines begin.
  stat -c %s "$d/kafka.log" 2>/dev/null > "$d/log-offset" || echo 0 > "$d/log-offset"
  echo "=== $(date -Is) start" >> "$d/kafka.log"
  nohup java "${java_opts[@]}" kafka.Kafka "$d/server.properties" >> "$d/kafka.log" 2>&1 &
  echo $! > "$d/pid"
}

started() {
  local n=$1 d; d=$(node_dir "$n")
  tail -c +"$(($(cat "$d/log-offset") + 1))" "$d/kafka.log" | grep -q "Kafka Server started" \
    && port_open "$(broker_port "$n")"
}

# Waits until each given node is started; a node that exits on the way fails it.
wait_started() {
  local n pending=("$@") left
  for _ in $(seq 1 180); do
    left=()
    for n in "${pending[@]}"; do
      started "$n" && continue
      running "$n" || { log "node $n exited; its log:"; tail -30 "$(node_dir "$n")/kafka.log" >&2; exit 1; }
      left+=("$n")
    done
    [[ ${#left[@]} == 0 ]] && return 0
    pending=("${left[@]}")
    sleep 0.5
  done
  log "node(s) ${pending[*]} not up after 90 s; see $dir/node-*/kafka.log"; exit 1
}

# The brokers the cluster reports as registered and unfenced (a describe-cluster call, through
# ConfigCommand, which lists every live broker's dynamic configs).
registered_brokers() {
  timeout 20 java "${java_opts[@]}" kafka.admin.ConfigCommand --bootstrap-server "$(bootstrap)" \
    --command-config "$dir/admin.properties" --describe --entity-type brokers 2>/dev/null \
    | grep -c "^Dynamic configs for broker [0-9]" || true
}

wait_registered() {
  local count=0 deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    count=$(registered_brokers)
    [[ $count == "${#nodes[@]}" ]] && return 0
    sleep 1
  done
  log "only $count of ${#nodes[@]} brokers registered after 30 s"; exit 1
}

start() {
  local n todo=()
  for n in "${nodes[@]}"; do running "$n" || todo+=("$n"); done
  if [[ ${#todo[@]} == 0 ]]; then log "already running"; bootstrap; return 0; fi
  fetch_jars
  configure
  for n in "${todo[@]}"; do launch "$n"; done
  wait_started "${todo[@]}"
  wait_registered
  log "up: 3 brokers (pids $(for n in "${nodes[@]}"; do pid_of "$n"; done | paste -sd' ')), data in $dir"
  bootstrap
}

# A process that is gone or a zombie (killed, not yet reaped by whoever inherited it) holds no ports.
alive() { kill -0 "$1" 2>/dev/null && [[ $(ps -o stat= -p "$1" 2>/dev/null) != Z* ]]; }

any_alive() { local pid; for pid in "$@"; do alive "$pid" && return 0; done; return 1; }

# Stops every node at once (a node leaving last waits some 5 s for a quorum that is gone; in turn, each
# would). cluster.properties turns controlled shutdown off, which would wait minutes for that quorum.
stop() {
  local n pid pids=()
  for n in "${nodes[@]}"; do
    if running "$n"; then
      pid=$(pid_of "$n")
      kill -CONT "$pid" 2>/dev/null || true
      kill "$pid"
      pids+=("$pid")
    fi
    rm -f "$(node_dir "$n")/pid"
  done
  [[ ${#pids[@]} == 0 ]] && { log "not running"; return 0; }
  for _ in $(seq 1 60); do
    any_alive "${pids[@]}" || { log "stopped"; return 0; }
    sleep 0.5
  done
  for pid in "${pids[@]}"; do
    alive "$pid" && { log "pid $pid still running after 30 s: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; }
  done
  for _ in $(seq 1 100); do any_alive "${pids[@]}" || break; sleep 0.1; done
  log "stopped"
}

status() {
  local n state up=0
  for n in "${nodes[@]}"; do
    if paused "$n"; then state="paused (pid $(pid_of "$n"))"
    elif running "$n"; then state="running (pid $(pid_of "$n"))"; up=$((up + 1))
    else state=stopped; fi
    log "node $n: broker 127.0.0.1:$(broker_port "$n"), controller 127.0.0.1:$(controller_port "$n"): $state"
  done
  [[ $up == "${#nodes[@]}" ]]
}

kill_node() {
  local n=$1 pid
  running "$n" || { log "node $n is not running"; return 0; }
  pid=$(pid_of "$n")
  kill -9 "$pid"
  for _ in $(seq 1 200); do alive "$pid" || break; sleep 0.05; done
  rm -f "$(node_dir "$n")/pid"
  log "node $n killed (pid $pid)"
}

restart_node() {
  local n=$1
  if running "$n"; then log "node $n is already running (pid $(pid_of "$n"))"; return 0; fi
  [[ -f $(node_dir "$n")/data/meta.properties ]] || { log "node $n has no data; run start first"; exit 1; }
  launch "$n"
  wait_started "$n"
  log "node $n up again (pid $(pid_of "$n"))"
}

# The node whose controller is active: the last one to log its activation in its current run (the
# controllers log it at WARN, so the line is there with the quiet log4j2.yaml too).
active_controller() {
  local n d line latest="" node=""
  for n in "${nodes[@]}"; do
    running "$n" || continue
    d=$(node_dir "$n")
    line=$(tail -c +"$(($(cat "$d/log-offset") + 1))" "$d/kafka.log" \
      | grep "Performing controller activation" | tail -1 | cut -c2-24 || true)
    if [[ -n $line && $line > $latest ]]; then latest=$line; node=$n; fi
  done
  [[ -n $node ]] || { log "no active controller among the running nodes"; exit 1; }
  echo "$node"
}

signal_node() {
  local n=$1 sig=$2 what=$3
  running "$n" || { log "node $n is not running"; exit 1; }
  kill "-$sig" "$(pid_of "$n")"
  log "node $n $what"
}

action=${1:-}
case "$action" in
  start) start ;;
  stop) stop ;;
  reset) stop; rm -rf "$dir"; log "data removed" ;;
  status) status ;;
  bootstrap) bootstrap ;;
  controller) active_controller ;;
  kill) check_node "${2:-}"; kill_node "$2" ;;
  restart) check_node "${2:-}"; restart_node "$2" ;;
  pause) check_node "${2:-}"; signal_node "$2" STOP paused ;;
  resume) check_node "${2:-}"; signal_node "$2" CONT resumed ;;
  *) echo "usage: $0 start|stop|reset|status|bootstrap|controller|kill N|restart N|pause N|resume N" >&2; exit 2 ;;
esac
