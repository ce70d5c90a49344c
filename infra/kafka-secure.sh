#!/usr/bin/env bash
# A local Apache Kafka broker that authenticates every client and authorizes each request, for the
# security tests and for running the services under their own identities. Single node, KRaft,
# loopback, the jars and broker settings of infra/kafka.sh.
#   infra/kafka-secure.sh start|stop|reset|status
#   infra/kafka-secure.sh env USER    the FUSION_KAFKA_* settings that connect as USER (admin, fusion-judge…)
# Clients and the broker itself: SASL_PLAINTEXT with SCRAM-SHA-512 on 127.0.0.1:KAFKA_SECURE_PORT
# (default 19492). The controller listens on the next port, SASL_PLAINTEXT with PLAIN: SCRAM credentials
# live in the metadata log the controller serves, so the controller's own listener uses a static one.
# Users: `admin`, the super user (the broker and controller connect as it), and one per service of
# services/fusion/kafka/acls.py, each with a random password in DIR/users/USER/password (laid out like a
# mounted Strimzi KafkaUser secret), created when the data folder is formatted. The ACLs of the same
# table are created through the Admin API (infra/kafka/CreateAcls.java) on every start. What no ACL
# allows is refused (allow.everyone.if.no.acl.found=false).
# Data, passwords and the log live under FUSION_CACHE (default .cache/ in the repo) in kafka-secure-PORT.
set -euo pipefail

# shellcheck source=infra/kafka-single.sh
source "$(dirname "${BASH_SOURCE[0]}")/kafka-single.sh"  # running, port_open, java_run, launch_broker, stop_broker
port=${KAFKA_SECURE_PORT:-19492}
controller_port=$((port + 1))
dir=$cache/kafka-secure-$port
python=${FUSION_PYTHON:-$root/.venv/bin/python}

log() { echo "kafka-secure: $*" >&2; }

password_of() { cat "$dir/users/$1/password"; }

# A password of 32 letters and digits (it goes into JAAS and --add-scram strings unquoted).
new_password() { head -c 48 /dev/urandom | base64 -w0 | tr -d '/+=' | cut -c1-32; }

# As a Strimzi KafkaUser secret's `password` key holds it: the password alone, no line end.
new_user() {
  mkdir -p "$dir/users/$1"
  printf '%s' "$(new_password)" > "$dir/users/$1/password"
}

scram_for() { echo "SCRAM-SHA-512=[name=$1,password=$(password_of "$1")]"; }

configure() {
  if [[ -f $dir/data/meta.properties ]]; then
    return 0
  fi
  umask 077  # the passwords, and the broker's properties that hold admin's
  rm -rf "$dir" && mkdir -p "$dir/data"
  local users user admin scram=()
  users=$("$python" -m fusion.kafka.acls users)
  for user in admin $users; do
    new_user "$user"
    scram+=(--add-scram "$(scram_for "$user")")
  done
  admin=$(password_of admin)
  sed -e "s/127.0.0.1:9093/127.0.0.1:$controller_port/g" -e "s/127.0.0.1:9092/127.0.0.1:$port/g" \
    "$here/kafka/server.properties" > "$dir/server.properties"
  # Later keys override earlier ones: the listeners become authenticated, and an authorizer decides.
  cat >> "$dir/server.properties" <<EOF
log.dirs=$dir/data

# --- infra/kafka-secure.sh: authentication and authorization ---
listeners=SASL_PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=SASL_PLAINTEXT://127.0.0.1:$port
listener.security.protocol.map=SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT
inter.broker.listener.name=SASL_PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
sasl.mechanism.controller.protocol=PLAIN
listener.name.controller.sasl.enabled.mechanisms=PLAIN
listener.name.controller.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin" user_admin="$admin";
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin
EOF
  cat > "$dir/admin.properties" <<EOF
bootstrap.servers=127.0.0.1:$port
security.protocol=SASL_PLAINTEXT
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$admin";
EOF
  java_run kafka.tools.StorageTool format -t "$(java_run kafka.tools.StorageTool random-uuid)" \
    -c "$dir/server.properties" "${scram[@]}" > "$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; exit 1; }
}

# Users are created when the data is formatted: one added to the table since needs a reset.
check_users() {
  local user
  for user in $("$python" -m fusion.kafka.acls users); do
    [[ -f $dir/users/$user/password ]] || { log "user $user is newer than the data: $0 reset, then start"; exit 1; }
  done
}

create_acls() {
  "$python" -m fusion.kafka.acls bindings \
    | java_run "$here/kafka/CreateAcls.java" "$dir/admin.properties" > "$dir/acls.log" 2>&1 \
    || { log "ACLs not created; its log:"; cat "$dir/acls.log" >&2; exit 1; }
  log "$(tail -1 "$dir/acls.log")"
}

start() {
  if running; then log "already running on 127.0.0.1:$port (pid $(cat "$dir/pid"))"; return 0; fi
  prepare_broker
  check_users
  launch_broker
  create_acls
  log "up on 127.0.0.1:$port (pid $(cat "$dir/pid")), SASL/SCRAM-SHA-512; passwords in $dir/users"
}

stop() { stop_broker; }

# The settings (see docs/configuration.md) that connect a Fusion process as USER.
env_for() {
  [[ -f $dir/users/${1:-}/password ]] || { log "no user '${1:-}' (start the broker first; users: $(ls "$dir/users" 2>/dev/null | xargs))"; exit 1; }
  echo "FUSION_KAFKA_BOOTSTRAP=127.0.0.1:$port"
  echo "FUSION_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT"
  echo "FUSION_KAFKA_SASL_MECHANISM=SCRAM-SHA-512"
  echo "FUSION_KAFKA_SASL_USERNAME=$1"
  echo "FUSION_KAFKA_SASL_PASSWORD_FILE=$dir/users/$1/password"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  reset) stop; rm -rf "$dir"; log "data removed" ;;
  status) if running; then log "running on 127.0.0.1:$port"; else log "stopped"; exit 1; fi ;;
  env) env_for "${2:-}" ;;
  *) echo "usage: $0 start|stop|reset|status|env USER" >&2; exit 2 ;;
esac
