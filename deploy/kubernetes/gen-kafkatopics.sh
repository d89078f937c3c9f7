#!/usr/bin/env bash
# Writes kafkatopics.yaml: a Strimzi KafkaTopic for every topic of the repository's
# topology.yaml, from `weir export strimzi`.
#   deploy/kubernetes/gen-kafkatopics.sh
# Run it after changing topics in topology.yaml and commit the result; tests/deploy.rs runs
# the same command with the ARGS below and fails while the committed file differs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
OUT="$HERE/kafkatopics.yaml"

# The Strimzi cluster of the Skeji guide (`skeji-kafka` in namespace `kafka`, where its
# Topic Operator watches) and 3 copies of every topic that does not declare its own
# replication_factor (needs at least 3 brokers; use --replicas 1 for a one-broker cluster).
# tests/deploy.rs reads this line.
ARGS=(--cluster skeji-kafka --namespace kafka --replicas 3)

tmp="$(mktemp "$OUT.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
cargo run --quiet --manifest-path "$ROOT/Cargo.toml" --bin weir -- \
  export strimzi -t "$ROOT/topology.yaml" "${ARGS[@]}" >"$tmp"
chmod 644 "$tmp"
mv "$tmp" "$OUT"
trap - EXIT
echo "wrote $OUT"
