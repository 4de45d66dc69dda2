#!/usr/bin/env python3
"""Redis memory per pending task for candidate storage layouts (used_memory delta / N).

Why the task record is a listpack hash with args in 64-byte pieces, and what a layout under
250 B per task would have to give up (docs/benchmarks.md, "Memory"). Starts its own
redis-server on a free port (default settings, no persistence) and kills it at the end.

    pip install redis && python3 benches/layouts/memory_layouts.py [--tasks N]
"""
import argparse
import os
import socket
import subprocess
import tempfile
import time

import redis

ap = argparse.ArgumentParser()
ap.add_argument("--tasks", type=int, default=100_000)
N = ap.parse_args().tasks

s = socket.socket()
s.bind(("127.0.0.1", 0))
port = s.getsockname()[1]
s.close()
tmp = tempfile.mkdtemp()
proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                         "--appendonly", "no", "--dir", tmp], stdout=subprocess.DEVNULL)
try:
    r = redis.Redis(port=port)
    for _ in range(50):
        try:
            r.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)

    args = os.urandom(101)  # the benchmarks' 101-byte MessagePack arguments
    pre = "bench-12345-abcdef:{bench:7}:"  # a benchmark run's key prefix
    due0 = 1_790_000_000_000

    def ulid(i):
        return "01JCZ" + "%021d" % i  # 26 characters, as a generated task id

    def hash_fields(i, split):
        f = {"name": "bench_task", "state": "scheduled", "max_retries": 0, "timeout_ms": 30000,
             "priority": 5, "run_at": due0 + i, "enqueued_at": due0 - 3_600_000}
        if split:
            f["args"], f["args:1"] = args[:64], args[64:]
        else:
            f.update(queue="bench", attempts=0, token=0, args=args)
        return f

    layouts = {
        "hash of 12 fields, args whole (hashtable) + sorted-set entry (the layout before)":
            lambda p, i: (p.hset(pre + "t:" + ulid(i), mapping=hash_fields(i, False)),
                          p.zadd(pre + "scheduled", {ulid(i): due0 + i})),
        "hash, args in 64-byte pieces (listpack) + sorted-set entry (the layout now)":
            lambda p, i: (p.hset(pre + "t:" + ulid(i), mapping=hash_fields(i, True)),
                          p.zadd(pre + "scheduled", {ulid(i): due0 + i})),
        "one hash per partition, id -> packed record + sorted-set entry":
            lambda p, i: (p.hset(pre + "tasks", ulid(i), b"bench_task|scheduled|0,30000,5|" + args),
                          p.zadd(pre + "scheduled", {ulid(i): due0 + i})),
        "sorted-set entry alone (id -> due)":
            lambda p, i: p.zadd(pre + "scheduled", {ulid(i): due0 + i}),
        "time-bucket lists of packed records, no per-id index":
            lambda p, i: p.rpush(pre + "b:%d" % ((due0 + i * 36) // 1000),
                                 ulid(i).encode() + b"|bench_task|0,30000,5|" + args),
    }
    print(f"{N} tasks, Redis {r.info('server')['redis_version']}, default settings")
    for name, add in layouts.items():
        r.flushall()
        base = r.info("memory")["used_memory"]
        p = r.pipeline(transaction=False)
        for i in range(N):
            add(p, i)
            if i % 1000 == 999:
                p.execute()
        p.execute()
        per = (r.info("memory")["used_memory"] - base) / N
        print(f"{per:7.0f} B/task  {r.dbsize():7d} keys  {name}")
finally:
    proc.kill()
    proc.wait()
