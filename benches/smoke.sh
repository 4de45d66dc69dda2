#!/usr/bin/env bash
# Smoke run of every benchmark scenario with tiny sizes (well under a minute): keeps the bench
# building and working. Checks that each run's last line is a JSON object and that no task was
# lost or run twice; asserts no timing. Each scenario starts its own throwaway redis-server.
#
#   benches/smoke.sh            # needs redis-server on PATH
#   SMOKE_BULLMQ=1 benches/smoke.sh   # also the BullMQ peer (needs node and npm)
#   SMOKE_PROFILE=dev benches/smoke.sh  # debug build (CI: reuses the test build's dependencies)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${SMOKE_PROFILE:-release}
cargo build --profile "$profile" --quiet -p scheduler-bench
if [ "$profile" = dev ]; then bench=target/debug/scheduler-bench; else bench=target/$profile/scheduler-bench; fi
log=$(mktemp -t sched-smoke-XXXXXX)
trap 'rm -f "$log"' EXIT

check() {
  # The last line must be JSON; lost and duplicates, where present, must be 0 (also inside the
  # scale scenario's lists).
  tail -n 1 "$log" | python3 -c '
import json, sys
d = json.loads(sys.stdin.read())
bad = []
def walk(x, path):
    if isinstance(x, dict):
        for k, v in x.items():
            if k in ("lost", "duplicates") and v != 0:
                bad.append(f"{path}{k}={v}")
            walk(v, f"{path}{k}.")
    elif isinstance(x, list):
        for i, v in enumerate(x):
            walk(v, f"{path}{i}.")
walk(d, "")
if bad:
    sys.exit("smoke: " + ", ".join(bad))
print("  ok:", d.get("scenario"), {k: d[k] for k in ("enqueue_per_s", "enqueue_bulk_per_s", "processed_per_s", "lateness_ms", "bytes_per_task", "idle_cmds_per_s_per_worker", "max_script_ms") if k in d})
'
}

run() {
  echo "== scheduler-bench $*"
  "$bench" "$@" >"$log" || { cat "$log"; exit 1; }
  check
}

start=$(date +%s)
run throughput --tasks 500
run lateness --tasks 500 --spread-secs 1
run memory --tasks 500
run backlog --tasks 2000
run idle --workers 2 --window-secs 1
run scale --tasks 500 --spread-secs 1 --rates 200,1000
run profile --tasks 500
run backup --tasks 500
run dashboard --tasks 2000
run connections --tasks 2000
run schedules --tasks 20 --window-secs 2

if [ "${SMOKE_BULLMQ:-0}" = 1 ]; then
  peer=benches/peers/bullmq
  bdir=${BULLMQ_DIR:-/tmp/sched-bench-bullmq}
  if ! cmp -s "$peer/package.json" "$bdir/package.json" || [ ! -d "$bdir/node_modules/bullmq" ]; then
    mkdir -p "$bdir" && cp "$peer/package.json" "$bdir/"
    npm install --prefix "$bdir" --no-audit --no-fund --loglevel=error
  fi
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rdir=$(mktemp -d)
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$rdir" \
    --daemonize yes --pidfile "$rdir/redis.pid" --logfile "$rdir/redis.log"
  trap 'rm -f "$log"; kill "$(cat "$rdir/redis.pid")" 2>/dev/null || true; rm -rf "$rdir"' EXIT
  for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  for s in throughput "lateness --spread-secs 1" memory; do
    echo "== bullmq $s"
    # shellcheck disable=SC2086
    NODE_PATH="$bdir/node_modules" node "$peer/bench.js" $s --tasks 500 \
      --redis-url "redis://127.0.0.1:$port" >"$log" || { cat "$log"; exit 1; }
    check
  done
fi
echo "smoke: every scenario ran in $(( $(date +%s) - start )) s"
