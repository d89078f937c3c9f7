#!/usr/bin/env bash
# A real Jaeger v2 on 127.0.0.1 without Docker.
#   scripts/jaeger.sh build   build the pinned version from the Go module proxy (cached)
#   scripts/jaeger.sh start   start it with in-memory storage; waits until the query API answers
#   scripts/jaeger.sh stop | status | path
# Jaeger v2 releases are published to the module proxy as module versions v1.x (v2.13 == v1.76.0).
# `go install ...@version` is refused because the module's go.mod has replace directives, so the
# module is downloaded and built in place. The binary is cached outside the clone, keyed by version.
set -euo pipefail

JAEGER_VERSION="${JAEGER_VERSION:-v1.76.0}"
CACHE="${WEIR_CACHE:-$HOME/.cache/weir}/jaeger/$JAEGER_VERSION"
BIN="$CACHE/jaeger"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
RUN_DIR="${WEIR_JAEGER_DIR:-$ROOT/.local/jaeger}"
PID_FILE="$RUN_DIR/jaeger.pid"
QUERY="http://127.0.0.1:16686"

build() {
  if [ -x "$BIN" ]; then echo "jaeger $JAEGER_VERSION cached at $BIN"; return; fi
  mkdir -p "$CACHE"
  local dir
  dir=$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  echo "building jaeger $JAEGER_VERSION from $dir (about 10 min on 2 cores)"
  (cd "$dir" && go build -o "$BIN.tmp" ./cmd/jaeger)
  mv "$BIN.tmp" "$BIN"
  echo "built $BIN"
}

running() { [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

start() {
  build
  if running; then echo "jaeger already running (pid $(cat "$PID_FILE"))"; return; fi
  mkdir -p "$RUN_DIR"
  # No arguments: the built-in all-in-one config (in-memory storage, OTLP on 4317/4318,
  # query API and UI on 16686), all bound to loopback.
  nohup "$BIN" >"$RUN_DIR/jaeger.log" 2>&1 &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 120); do
    if curl -fsS "$QUERY/api/services" >/dev/null 2>&1; then echo "jaeger ready at $QUERY"; return; fi
    running || { echo "jaeger exited; log:"; tail -20 "$RUN_DIR/jaeger.log"; exit 1; }
    sleep 0.5
  done
  echo "jaeger did not answer within 60 s; log:"; tail -20 "$RUN_DIR/jaeger.log"; exit 1
}

stop() {
  if running; then
    kill "$(cat "$PID_FILE")" 2>/dev/null || true
    for _ in $(seq 1 40); do running || break; sleep 0.25; done
    running && kill -9 "$(cat "$PID_FILE")" 2>/dev/null || true
  fi
  rm -f "$PID_FILE"
  echo "jaeger stopped"
}

case "${1:-}" in
  build) build ;;
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running (pid $(cat "$PID_FILE"))"; else echo "stopped"; exit 1; fi ;;
  path) echo "$BIN" ;;
  *) echo "usage: $0 build|start|stop|status|path" >&2; exit 2 ;;
esac
