#!/usr/bin/env bash
# A real single-node Apache Kafka broker (KRaft, combined broker+controller) on 127.0.0.1 without
# Docker, run straight from the official jars on Maven Central.
#   scripts/kafka.sh fetch           resolve the jars with Maven into the cache (once per version)
#   scripts/kafka.sh start           format storage on first use, start in the background, wait until it answers
#   scripts/kafka.sh stop | status   graceful stop (SIGTERM, SIGKILL after 30 s) | exit 1 when stopped
#   scripts/kafka.sh reset           stop and delete the run dir (all topics, offsets and logs)
#   scripts/kafka.sh topics ARGS...  kafka-topics, e.g. `topics --list`, `topics --create --topic t --partitions 6`
#   scripts/kafka.sh groups ARGS...  kafka-consumer-groups, e.g. `groups --list`, `groups --describe --group g`
# Environment: WEIR_KAFKA_PORT (9092), WEIR_KAFKA_CONTROLLER_PORT (9093), WEIR_KAFKA_HEAP (768m),
#   WEIR_KAFKA_DIR (run dir, default <repo>/.local/kafka), WEIR_CACHE (default ~/.cache/weir), JAVA_HOME.
# The jar set is scripts/kafka/pom.xml (mvn dependency:copy-dependencies), cached outside the clone in
# $WEIR_CACHE/kafka/<version>/libs and refetched when the pom changes. The run dir holds
# server.properties (rewritten on every start), cluster.id, data/, server.log (log4j2, configured by
# scripts/kafka/log4j2.yaml) and kafka.out (JVM stdout/stderr, normally empty).
set -euo pipefail

KAFKA_VERSION="4.1.1" # keep in sync with kafka.version in scripts/kafka/pom.xml
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
POM="$HERE/kafka/pom.xml"
LIBS="${WEIR_CACHE:-$HOME/.cache/weir}/kafka/$KAFKA_VERSION/libs"
RUN_DIR="${WEIR_KAFKA_DIR:-$ROOT/.local/kafka}"
case "$RUN_DIR" in /*) ;; *) RUN_DIR="$PWD/$RUN_DIR" ;; esac
PORT="${WEIR_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${WEIR_KAFKA_CONTROLLER_PORT:-9093}"
HEAP="${WEIR_KAFKA_HEAP:-768m}"
BOOTSTRAP="127.0.0.1:$PORT"
PID_FILE="$RUN_DIR/kafka.pid"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"
# Short-lived admin tools: small heap, fast startup, warnings only (on stderr).
TOOL=("$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$HERE/kafka/tools-log4j2.yaml" -cp "$LIBS/*")
# Main classes (what bin/kafka-*.sh of the 4.1 distribution run).
BROKER_MAIN=kafka.Kafka
STORAGE_MAIN=kafka.tools.StorageTool
TOPICS_MAIN=org.apache.kafka.tools.TopicCommand
GROUPS_MAIN=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand

need() { command -v "$1" >/dev/null || { echo "error: $1 not found ($2)" >&2; exit 1; }; }

pom_stamp() { echo "$KAFKA_VERSION $(sha256sum <"$POM" | cut -d' ' -f1)"; }

FETCH_TMP=""
fetch() {
  [ "$(cat "$LIBS/.complete" 2>/dev/null)" = "$(pom_stamp)" ] && return
  need mvn "Maven 3 is needed to resolve the Kafka jars"
  mkdir -p "$(dirname "$LIBS")"
  # Download next to the final location and rename, so a half download is never used.
  FETCH_TMP=$(mktemp -d "$LIBS.tmp.XXXXXX")
  trap 'rm -rf "$FETCH_TMP" "$FETCH_TMP.log"' EXIT
  chmod 755 "$FETCH_TMP"
  echo "resolving kafka $KAFKA_VERSION jars from Maven Central into $LIBS"
  if ! mvn -q -B -f "$POM" -Dkafka.version="$KAFKA_VERSION" dependency:copy-dependencies \
    -DoutputDirectory="$FETCH_TMP" >"$FETCH_TMP.log" 2>&1; then
    cat "$FETCH_TMP.log" >&2
    echo "error: maven could not resolve the kafka jars" >&2
    exit 1
  fi
  pom_stamp >"$FETCH_TMP/.complete"
  rm -rf "$LIBS"
  mv "$FETCH_TMP" "$LIBS"
  echo "$(find "$LIBS" -name '*.jar' | wc -l) jars, $(du -sh "$LIBS" | cut -f1) in $LIBS"
}

# running: does the pid file name a live broker (and not an unrelated process that reused the pid)?
running() { [ -f "$PID_FILE" ] && ps -p "$(cat "$PID_FILE")" -o args= 2>/dev/null | grep -q "$BROKER_MAIN"; }
# gone PID: has PID exited (and closed its sockets)? A zombie counts as gone.
gone() { local st; st=$(ps -p "$1" -o stat= 2>/dev/null) || return 0; [[ $st == Z* ]]; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

write_config() {
  cat >"$RUN_DIR/server.properties" <<EOF
# Written by scripts/kafka.sh on every start: edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$RUN_DIR/data
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
EOF
}

LOG_OFFSET=0 # size of server.log before this start: only newer lines are relevant to a failure
fail() {
  echo "error: $1" >&2
  echo "--- last lines of $RUN_DIR/server.log:" >&2
  tail -c +$((LOG_OFFSET + 1)) "$RUN_DIR/server.log" 2>/dev/null | tail -n 25 >&2
  echo "--- $RUN_DIR/kafka.out (JVM stdout/stderr):" >&2
  tail -n 25 "$RUN_DIR/kafka.out" >&2
  stop >&2 # do not leave a half-started broker behind
  exit 1
}

start() {
  fetch
  need "$JAVA" "Kafka $KAFKA_VERSION needs Java 17+; set JAVA_HOME or put java on PATH"
  if running; then echo "kafka already running (pid $(cat "$PID_FILE")) on $BOOTSTRAP"; return; fi
  for p in "$PORT" "$CONTROLLER_PORT"; do
    if port_open "$p"; then echo "error: 127.0.0.1:$p is already in use by another process" >&2; exit 1; fi
  done
  mkdir -p "$RUN_DIR"
  write_config
  if [ ! -f "$RUN_DIR/data/meta.properties" ]; then
    [ -s "$RUN_DIR/cluster.id" ] || "${TOOL[@]}" "$STORAGE_MAIN" random-uuid >"$RUN_DIR/cluster.id"
    # --standalone: this node is the only voter of a dynamic KRaft quorum.
    "${TOOL[@]}" "$STORAGE_MAIN" format --standalone --cluster-id "$(cat "$RUN_DIR/cluster.id")" \
      --config "$RUN_DIR/server.properties"
  fi
  local t0=$SECONDS
  LOG_OFFSET=$(wc -c 2>/dev/null <"$RUN_DIR/server.log" || echo 0)
  nohup "$JAVA" -Xms"$HEAP" -Xmx"$HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Dkafka.logs.dir="$RUN_DIR" -Dlog4j2.configurationFile="$HERE/kafka/log4j2.yaml" \
    -cp "$LIBS/*" "$BROKER_MAIN" "$RUN_DIR/server.properties" >"$RUN_DIR/kafka.out" 2>&1 &
  echo $! >"$PID_FILE"
  echo "starting kafka $KAFKA_VERSION (pid $!), waiting for $BOOTSTRAP"
  until port_open "$PORT"; do
    running || fail "kafka exited during startup"
    ((SECONDS - t0 < 90)) || fail "kafka did not open $BOOTSTRAP within 90 s"
    sleep 0.5
  done
  # The port is open; make sure the broker really serves admin requests (metadata caught up).
  if ! timeout $((90 - (SECONDS - t0) + 5)) "${TOOL[@]}" "$TOPICS_MAIN" --bootstrap-server "$BOOTSTRAP" \
    --list >/dev/null; then
    fail "kafka opened $BOOTSTRAP but did not answer a topic listing"
  fi
  echo "kafka ready on $BOOTSTRAP after $((SECONDS - t0)) s (log: $RUN_DIR/server.log)"
}

stop() {
  if running; then
    local pid
    pid=$(cat "$PID_FILE")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do gone "$pid" && break; sleep 0.5; done
    if ! gone "$pid"; then
      echo "kafka (pid $pid) did not stop within 30 s, killing it"
      kill -9 "$pid" 2>/dev/null || true
      for _ in $(seq 1 20); do gone "$pid" && break; sleep 0.25; done
    fi
    echo "kafka stopped"
  else
    echo "kafka not running"
  fi
  rm -f "$PID_FILE"
}

reset() {
  stop
  # Guard against a mistyped WEIR_KAFKA_DIR: only delete what looks like a run dir.
  if [ -e "$RUN_DIR" ] && [ ! -f "$RUN_DIR/server.properties" ]; then
    echo "error: $RUN_DIR has no server.properties, refusing to delete it" >&2
    exit 1
  fi
  rm -rf "$RUN_DIR"
  echo "deleted $RUN_DIR"
}

admin() {
  fetch >&2
  need "$JAVA" "Kafka $KAFKA_VERSION needs Java 17+; set JAVA_HOME or put java on PATH"
  exec "${TOOL[@]}" "$1" --bootstrap-server "$BOOTSTRAP" "${@:2}"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
  fetch) fetch ;;
  start) start ;;
  stop) stop ;;
  status)
    if running; then echo "kafka running (pid $(cat "$PID_FILE")) on $BOOTSTRAP"; else echo "kafka stopped"; exit 1; fi
    ;;
  reset) reset ;;
  topics) admin "$TOPICS_MAIN" "$@" ;;
  groups) admin "$GROUPS_MAIN" "$@" ;;
  *) echo "usage: $0 fetch|start|stop|status|reset|topics ARGS...|groups ARGS..." >&2; exit 2 ;;
esac
