#!/usr/bin/env bash
# Runs one scheduler-bench scenario against a throwaway local Redis Cluster of N masters (default
# 3, no replicas, no persistence), then stops it. The bench reports Redis CPU and commands per
# task for every master (`masters` in each profile of its JSON line) beside the sums.
#
#   benches/cluster.sh [--masters N] SCENARIO [scheduler-bench options...]
#   e.g. benches/cluster.sh throughput --tasks 100000
set -euo pipefail
cd "$(dirname "$0")/.."
masters=3
if [ "${1:-}" = "--masters" ]; then masters=$2; shift 2; fi
[ $# -ge 1 ] || { echo "usage: $0 [--masters N] SCENARIO [options...]" >&2; exit 2; }

cargo build --release --quiet -p scheduler-bench
dir=$(mktemp -d -t sched-cluster-XXXXXX)
ports=()
cleanup() {
  for p in "${ports[@]}"; do redis-cli -p "$p" shutdown nosave </dev/null >/dev/null 2>&1 || true; done
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq "$masters"); do
  # A free port whose cluster bus port (port + 10000) is free and valid too.
  port=$(python3 -c '
import random, socket
while True:
    p = random.randint(20000, 45000)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass')
  mkdir -p "$dir/$port"
  redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
    --cluster-config-file "$dir/$port/nodes.conf" --save '' --appendonly no --dir "$dir/$port" \
    --daemonize yes --logfile "$dir/$port/redis.log"
  ports+=("$port")
done
for p in "${ports[@]}"; do
  for _ in $(seq 50); do redis-cli -p "$p" ping >/dev/null 2>&1 && break; sleep 0.1; done
done
nodes=()
for p in "${ports[@]}"; do nodes+=("127.0.0.1:$p"); done
redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
for _ in $(seq 100); do
  [ "$(redis-cli -p "${ports[0]}" cluster info | tr -d '\r' | grep cluster_state)" = "cluster_state:ok" ] && break
  sleep 0.1
done
url="redis+cluster://$(IFS=,; echo "${nodes[*]}")"
echo "cluster of $masters masters at $url"
scenario=$1; shift
target/release/scheduler-bench "$scenario" --redis-url "$url" "$@"
