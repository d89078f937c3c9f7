#!/usr/bin/env bash
# The test command: everything weir's tests need, then `cargo test`.
#   scripts/test.sh [cargo test args...]
# Starts what the tests talk to (on 127.0.0.1 only) and stops it again on exit, even when
# tests fail. Set WEIR_TEST_KEEP_SERVICES=1 to leave them running.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

services=()
cleanup() {
  if [ "${WEIR_TEST_KEEP_SERVICES:-}" != "1" ]; then
    for s in "${services[@]}"; do scripts/"$s".sh stop || true; done
  fi
}
trap cleanup EXIT

if [ -d tests/kafka ]; then
  scripts/kafka.sh start
  services+=(kafka)
  export WEIR_KAFKA_BROKERS="127.0.0.1:${WEIR_KAFKA_PORT:-9092}"
fi
if [ -f scripts/postgres.sh ]; then
  scripts/postgres.sh start
  services+=(postgres)
  WEIR_POSTGRES_URL="$(scripts/postgres.sh url)"
  export WEIR_POSTGRES_URL
fi
if [ -f tests/kafka/jaeger.rs ]; then
  scripts/jaeger.sh start
  services+=(jaeger)
  export WEIR_JAEGER_QUERY="http://127.0.0.1:16686"
  export WEIR_JAEGER_OTLP="http://127.0.0.1:4318"
fi

# Without arguments, show what passing tests printed too: the Kafka, Jaeger and metrics
# tests print their counts (lost, duplicated, trace ids, spans per service).
if [ $# -eq 0 ]; then
  cargo test --locked -- --show-output
else
  cargo test --locked "$@"
fi
