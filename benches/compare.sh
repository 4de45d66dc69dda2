#!/usr/bin/env bash
# Runs the scheduler's throughput, lateness and memory scenarios and BullMQ's, one after the other,
# against one throwaway redis-server (FLUSHALL between runs, on that server only), and prints a
# table of both with their ratios.
#
#   benches/compare.sh [--tasks N] [--lateness-tasks N] [--spread-secs S] [--concurrency C]
#                      [--bullmq-concurrency C] [--scenarios "throughput lateness memory"]
#                      [--out DIR] [--remove-on-complete] [--archive URL]
#
# Defaults: 100000 tasks (throughput, memory), 20000 over 10 s (lateness), our concurrency 256,
# BullMQ's 100 (the best of 50/100/200 here, see docs/benchmarks.md). BullMQ (package.json
# beside bench.js) is installed with npm into $BULLMQ_DIR (default /tmp/sched-bench-bullmq) if
# it is not there yet. Every run's full output goes to --out (default a new temp dir).
# --remove-on-complete: both systems delete a task when it succeeds (BullMQ's removeOnComplete,
# our --result-ttl-secs 0); without it BullMQ keeps finished jobs forever and we keep them 24 h.
# --archive URL: instead of BullMQ, the second system is ours again with the task history archive
# on (its worker processes archive into the PostgreSQL database at URL: use a scratch database,
# rows are left there): what the archive costs, run for run (docs/storage.md).
set -euo pipefail
cd "$(dirname "$0")/.."

tasks=100000
late_tasks=20000
spread=10
conc=256
bconc=100
scenarios="throughput lateness memory"
out=""
bullmq_extra=()
ours_extra=()
archive=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tasks) tasks=$2; shift 2 ;;
    --lateness-tasks) late_tasks=$2; shift 2 ;;
    --spread-secs) spread=$2; shift 2 ;;
    --concurrency) conc=$2; shift 2 ;;
    --bullmq-concurrency) bconc=$2; shift 2 ;;
    --scenarios) scenarios=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    # Both delete a task when it succeeds: BullMQ's removeOnComplete, our result TTL 0.
    --remove-on-complete) bullmq_extra+=(--remove-on-complete); ours_extra+=(--result-ttl-secs 0); shift ;;
    --archive) archive=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
out=${out:-$(mktemp -d -t sched-compare-XXXXXX)}
# The second system's outputs: BullMQ's, or ours with the archive on.
second=bullmq
if [ -n "$archive" ]; then second=archive; fi
mkdir -p "$out"

peer=benches/peers/bullmq
bdir=${BULLMQ_DIR:-/tmp/sched-bench-bullmq}
if [ -z "$archive" ] && { ! cmp -s "$peer/package.json" "$bdir/package.json" || [ ! -d "$bdir/node_modules/bullmq" ]; }; then
  echo "installing BullMQ into $bdir"
  mkdir -p "$bdir"
  cp "$peer/package.json" "$bdir/package.json"
  npm install --prefix "$bdir" --no-audit --no-fund --loglevel=error
fi

cargo build --release --quiet -p scheduler-bench
bench=target/release/scheduler-bench

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
rdir=$(mktemp -d -t sched-compare-redis-XXXXXX)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$rdir" \
  --daemonize yes --pidfile "$rdir/redis.pid" --logfile "$rdir/redis.log"
trap 'kill "$(cat "$rdir/redis.pid")" 2>/dev/null || true; rm -rf "$rdir"' EXIT
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
url="redis://127.0.0.1:$port"

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'); $(uptime | sed 's/.*load/load/')"
echo "redis: $(redis-server --version | cut -d' ' -f3) at $url, default settings, --save '' --appendonly no; outputs in $out"
echo "code: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$( [ -n "$(git status --porcelain 2>/dev/null | grep -v '^??')" ] && echo ' + uncommitted changes')"
# How fast this Redis is right now (the machine is shared): plain SET, one at a time and 16 deep.
echo "calibration: redis-benchmark SET $(redis-benchmark -p "$port" -t set -n 100000 -c 1 --csv 2>/dev/null | tail -1 | cut -d, -f2 | tr -d '"')/s one at a time, $(redis-benchmark -p "$port" -t set -n 300000 -P 16 --csv 2>/dev/null | tail -1 | cut -d, -f2 | tr -d '"')/s pipelined 16 deep"

for s in $scenarios; do
  case "$s" in
    lateness) n=$late_tasks ;;
    *) n=$tasks ;;
  esac
  redis-cli -p "$port" flushall >/dev/null
  echo "== ours: $s (--tasks $n)"
  "$bench" "$s" --redis-url "$url" --tasks "$n" --spread-secs "$spread" --concurrency "$conc" \
    "${ours_extra[@]}" | tee "$out/ours-$s.log" | grep -v '^{'
  tail -n 1 "$out/ours-$s.log" > "$out/ours-$s.json"
  redis-cli -p "$port" flushall >/dev/null
  if [ -n "$archive" ]; then
    echo "== ours, archive on: $s (--tasks $n)"
    "$bench" "$s" --redis-url "$url" --tasks "$n" --spread-secs "$spread" --concurrency "$conc" \
      --archive-url "$archive" "${ours_extra[@]}" | tee "$out/$second-$s.log" | grep -v '^{'
  else
    echo "== BullMQ: $s (--tasks $n)"
    NODE_PATH="$bdir/node_modules" node "$peer/bench.js" "$s" --redis-url "$url" --tasks "$n" \
      --spread-secs "$spread" --concurrency "$bconc" "${bullmq_extra[@]}" \
      | tee "$out/$second-$s.log" | grep -v '^{'
  fi
  tail -n 1 "$out/$second-$s.log" > "$out/$second-$s.json"
done

python3 - "$out" "$second" $scenarios <<'EOF'
import json, os, sys
out, second, scenarios = sys.argv[1], sys.argv[2], sys.argv[3:]
archive = second == "archive"
def load(who, s):
    p = os.path.join(out, f"{who}-{s}.json")
    return json.load(open(p)) if os.path.exists(p) else {}
rows = []
# (scenario, key, label, whether a ratio means something: None for counts)
metrics = [
    ("throughput", "enqueue_per_s", "enqueue, one call per task, 64 concurrent producers (/s)", True),
    ("throughput", "enqueue_bulk_per_s", "enqueue, bulk API in chunks of 1000 (/s)", True),
    ("throughput", "processed_per_s", "processed, one worker process (/s)", True),
    ("throughput", "lost", "lost", None),
    ("throughput", "duplicates", "duplicates", None),
    ("lateness", "lateness_ms.p50", "lateness p50 (ms)", False),
    ("lateness", "lateness_ms.p90", "lateness p90 (ms)", False),
    ("lateness", "lateness_ms.p99", "lateness p99 (ms)", False),
    ("lateness", "lateness_ms.max", "lateness max (ms)", False),
    ("lateness", "early", "started early", None),
    ("lateness", "lateness_start_ms.p99", "handler start - due p99 (ms, real clock)", False),
    ("memory", "bytes_per_task", "Redis memory per pending delayed task (B)", False),
    ("memory", "keys_created", "keys created", False),
]
def get(d, key):
    for k in key.split("."):
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d
print()
print("| metric | archive off | archive on | off / on |" if archive else "| metric | ours | BullMQ | ours / BullMQ |")
print("|---|---|---|---|")
for s, key, label, ratio_ok in metrics:
    if s not in scenarios:
        continue
    a, b = get(load("ours", s), key), get(load(second, s), key)
    ratio = ""
    if ratio_ok is not None and isinstance(a, (int, float)) and isinstance(b, (int, float)) and b:
        ratio = f"{a / b:.2f}"
    fmt = lambda v: "-" if v is None else (f"{v:,.0f}" if isinstance(v, (int, float)) and abs(v) >= 100 else str(v))
    print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio} |")
EOF
