#!/usr/bin/env bash
# A real PostgreSQL server on 127.0.0.1 for the `sql` kind's tests and the enrich example,
# straight from the Debian package's binaries (no Docker, no system service).
#   scripts/postgres.sh start    initdb on first use, start in the background, wait until it answers,
#                                create the database `weir`
#   scripts/postgres.sh stop     fast shutdown (pg_ctl -m fast)
#   scripts/postgres.sh status   exit 1 when stopped
#   scripts/postgres.sh url      print the URL, e.g. postgres://postgres@127.0.0.1:55432/weir
#   scripts/postgres.sh reset    stop and delete the data dir
# Environment: WEIR_POSTGRES_PORT (55432), WEIR_POSTGRES_DIR (default <repo>/.local/postgres),
#   WEIR_POSTGRES_BIN (default: the newest /usr/lib/postgresql/*/bin).
# Trust authentication on 127.0.0.1 only: a throwaway server for development and CI, never
# for data you keep. When run as root the server runs as the `postgres` OS user (initdb refuses
# root); install the binaries with `apt-get install -y postgresql` (.ci/run does when missing).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PORT="${WEIR_POSTGRES_PORT:-55432}"
DIR="${WEIR_POSTGRES_DIR:-$ROOT/.local/postgres}"
case "$DIR" in /*) ;; *) DIR="$PWD/$DIR" ;; esac
DATA="$DIR/data"
LOG="$DIR/postgres.log"
DB=weir

find_bin() {
  if [ -n "${WEIR_POSTGRES_BIN:-}" ]; then echo "$WEIR_POSTGRES_BIN"; return; fi
  local b
  b=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  [ -n "$b" ] || { echo "error: PostgreSQL binaries not found; apt-get install -y postgresql" >&2; exit 1; }
  echo "$b"
}
BIN="$(find_bin)"

# as_owner CMD...: runs CMD as the data dir's owner (`postgres` when we are root).
if [ "$(id -u)" = 0 ]; then
  OWNER=postgres
  as_owner() { runuser -u "$OWNER" -- "$@"; }
else
  OWNER="$(id -un)"
  as_owner() { "$@"; }
fi

ready() { "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" -d postgres; }
running() { [ -f "$DATA/postmaster.pid" ] && as_owner "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

start() {
  if running; then echo "postgres already running on 127.0.0.1:$PORT"; return; fi
  mkdir -p "$DIR"
  [ "$OWNER" = "$(id -un)" ] || chown "$OWNER" "$DIR"
  if [ ! -f "$DATA/PG_VERSION" ]; then
    as_owner "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --encoding=UTF8 --no-instructions >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; exit 1; }
  fi
  # Sockets go in the run dir: /var/run/postgresql may not exist or be writable.
  as_owner "$BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c fsync=off -c max_connections=200" start >/dev/null \
    || { tail -20 "$LOG" >&2; exit 1; }
  for _ in $(seq 1 60); do ready && break; sleep 1; done
  ready || { echo "error: postgres did not answer on 127.0.0.1:$PORT" >&2; tail -20 "$LOG" >&2; exit 1; }
  if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
    "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
  fi
  echo "postgres running on 127.0.0.1:$PORT ($(url))"
}

stop() {
  if running; then as_owner "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null; echo "postgres stopped"; else echo "postgres not running"; fi
}

url() { echo "postgres://postgres@127.0.0.1:$PORT/$DB"; }

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) if running; then echo "running on 127.0.0.1:$PORT"; else echo "stopped"; exit 1; fi ;;
  url) url ;;
  reset) stop; rm -rf "$DIR" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
