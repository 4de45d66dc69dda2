#!/usr/bin/env node
// BullMQ side of the scheduler benchmarks: the scenarios `throughput`, `lateness` and `memory` of
// benches/src (issue 3), written the same way, printing the same JSON keys on the last line.
//
//   node bench.js <throughput|lateness|memory> --redis-url redis://127.0.0.1:6379
//       [--tasks N] [--spread-secs S] [--concurrency C] [--producers P] [--bulk-chunk B]
//       [--workers W] [--remove-on-complete] [--keep]
//
// Workers run in separate Node processes (this file forked with `--role worker`), as the Rust
// bench runs its workers in separate processes. Job data is {seq, pad} with a 90-character pad
// (~110 bytes of JSON); the processor records the seq (to count lost and duplicate runs) and its
// lateness. Needs `bullmq` and `ioredis` (package.json here; benches/compare.sh installs them).
'use strict';

const { fork } = require('node:child_process');
const { performance } = require('node:perf_hooks');
const os = require('node:os');
const fs = require('node:fs');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');

const QUEUE = 'bench';
const PAD = 'x'.repeat(90);

function parseArgs(argv) {
  const a = {
    scenario: null, tasks: null, spreadSecs: null, redisUrl: null, concurrency: 100,
    producers: 64, bulkChunk: 1000, workers: 1, removeOnComplete: false, keep: false,
    role: 'bench', prefix: null,
  };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => argv[++i];
    switch (k) {
      case '--tasks': a.tasks = Number(v()); break;
      case '--spread-secs': a.spreadSecs = Number(v()); break;
      case '--redis-url': a.redisUrl = v(); break;
      case '--concurrency': a.concurrency = Number(v()); break;
      case '--producers': a.producers = Number(v()); break;
      case '--bulk-chunk': a.bulkChunk = Number(v()); break;
      case '--workers': a.workers = Number(v()); break;
      case '--remove-on-complete': a.removeOnComplete = true; break;
      case '--keep': a.keep = true; break;
      case '--role': a.role = v(); break;
      case '--prefix': a.prefix = v(); break;
      default:
        if (k.startsWith('--')) throw new Error(`unknown option ${k}`);
        a.scenario = k;
    }
  }
  if (!a.redisUrl) throw new Error('--redis-url is required');
  return a;
}

function connection(url) {
  const u = new URL(url);
  const c = { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
  if (u.password) c.password = decodeURIComponent(u.password);
  if (u.username) c.username = decodeURIComponent(u.username);
  if (u.pathname && u.pathname.length > 1) c.db = Number(u.pathname.slice(1));
  return c;
}

const nowUs = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const round2 = (x) => Math.round(x * 100) / 100;
const perS = (n, secs) => (secs > 0 ? Math.round(n / secs) : 0);
const loadAvg = () => round2(os.loadavg()[0]);
const bullmqVersion = () => {
  try {
    return JSON.parse(fs.readFileSync(require.resolve('bullmq/package.json'), 'utf8')).version;
  } catch (_) {
    return 'unknown';
  }
};

// ---------------------------------------------------------------------------------------------
// Worker process

async function workerMain(a) {
  const runs = []; // [seq, lateMs, lateStartUs]
  let completed = 0;
  const worker = new Worker(
    QUEUE,
    async (job) => {
      const startUs = nowUs();
      const due = job.timestamp + (job.opts.delay || 0);
      runs.push([job.data.seq, job.processedOn - due, startUs - due * 1000]);
    },
    {
      connection: connection(a.redisUrl),
      prefix: a.prefix,
      concurrency: a.concurrency,
      autorun: false,
    },
  );
  worker.on('completed', () => { completed++; });
  worker.on('error', (e) => console.error('worker error:', e.message));
  await worker.waitUntilReady();
  let last = -1;
  const progress = setInterval(() => {
    if (completed !== last) {
      last = completed;
      process.send({ t: 'p', n: completed });
    }
  }, 2);
  process.on('message', async (m) => {
    if (m.t === 'go') {
      worker.run().catch((e) => console.error('worker run:', e.message));
    } else if (m.t === 'stop') {
      await worker.close();
      clearInterval(progress);
      const cpu = process.cpuUsage();
      process.send({ t: 'end', runs, completed, cpuUs: cpu.user + cpu.system }, () => process.exit(0));
    }
  });
  process.send({ t: 'built' });
}

// ---------------------------------------------------------------------------------------------
// Parent side: worker processes

class Pool {
  static async spawn(n, a, prefix) {
    const pool = new Pool();
    pool.children = [];
    const built = [];
    for (let i = 0; i < n; i++) {
      const child = fork(__filename, [
        '--role', 'worker', '--redis-url', a.redisUrl, '--prefix', prefix,
        '--concurrency', String(a.concurrency),
      ]);
      const c = { child, progress: 0, end: null };
      built.push(new Promise((resolve, reject) => {
        child.on('message', (m) => {
          if (m.t === 'built') resolve();
          else if (m.t === 'p') c.progress = m.n;
          else if (m.t === 'end') { c.end = m; c.progress = m.completed; }
        });
        child.on('exit', (code) => { if (!c.end) reject(new Error(`worker exited with ${code}`)); });
      }));
      pool.children.push(c);
    }
    await Promise.all(built);
    return pool;
  }

  go() {
    const at = performance.now();
    for (const c of this.children) c.child.send({ t: 'go' });
    return at;
  }

  completed() {
    return this.children.reduce((s, c) => s + c.progress, 0);
  }

  async waitCompleted(target, timeoutMs) {
    const deadline = performance.now() + timeoutMs;
    while (this.completed() < target) {
      if (performance.now() > deadline) return null;
      await sleep(1);
    }
    return performance.now();
  }

  async stop() {
    for (const c of this.children) c.child.send({ t: 'stop' });
    const ends = await Promise.all(this.children.map((c) => new Promise((resolve) => {
      if (c.end) return resolve(c.end);
      c.child.on('message', (m) => { if (m.t === 'end') resolve(m); });
    })));
    return {
      runs: ends.flatMap((e) => e.runs),
      cpuUs: ends.reduce((s, e) => s + e.cpuUs, 0),
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Redis probes (same as benches/src/probe.rs)

async function info(admin, section) {
  const text = await admin.info(section);
  const m = {};
  for (const line of text.split('\n')) {
    const i = line.indexOf(':');
    if (i > 0) m[line.slice(0, i)] = line.slice(i + 1).trim();
  }
  return m;
}

async function snapshot(admin) {
  const stats = await info(admin, 'commandstats');
  const cpu = await info(admin, 'cpu');
  const cmds = {};
  for (const [k, v] of Object.entries(stats)) {
    if (!k.startsWith('cmdstat_')) continue;
    const f = Object.fromEntries(v.split(',').map((kv) => kv.split('=')));
    cmds[k.slice(8)] = [Number(f.calls || 0), Number(f.usec || 0)];
  }
  return {
    at: performance.now(), cmds,
    cpuS: Number(cpu.used_cpu_sys || 0) + Number(cpu.used_cpu_user || 0),
  };
}

function cost(a, b, tasks) {
  const per = (x) => (tasks > 0 ? x / tasks : x);
  const commands = {};
  let calls = 0;
  let scriptCalls = 0;
  let scriptUsec = 0;
  for (const [name, [c1, u1]] of Object.entries(b.cmds)) {
    const [c0, u0] = a.cmds[name] || [0, 0];
    let c = c1 - c0;
    if (name === 'info') c -= 2;
    if (c <= 0) continue;
    const u = u1 - u0;
    commands[name] = { calls: c, usec_per_call: round2(u / c) };
    calls += c;
    if (['evalsha', 'eval', 'evalsha_ro', 'eval_ro', 'fcall'].includes(name)) {
      scriptCalls += c;
      scriptUsec += u;
    }
  }
  const secs = (b.at - a.at) / 1000;
  const cpuS = b.cpuS - a.cpuS;
  return {
    script_calls_per_task: round2(per(scriptCalls)),
    script_usec_per_task: round2(per(scriptUsec)),
    redis_calls_per_task: round2(per(calls)),
    redis_cpu_us_per_task: round2(per(cpuS * 1e6)),
    redis_cpu_busy: round2(secs > 0 ? cpuS / secs : 0),
    commands,
  };
}

async function deletePrefix(admin, prefix) {
  let cursor = '0';
  do {
    const [next, keys] = await admin.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 5000);
    if (keys.length) await admin.unlink(...keys);
    cursor = next;
  } while (cursor !== '0');
}

function lostAndDuplicates(runs, total) {
  const seen = new Uint32Array(total);
  let stray = 0;
  for (const r of runs) {
    if (r[0] >= 0 && r[0] < total) seen[r[0]]++;
    else stray++;
  }
  let lost = 0;
  let dups = stray;
  for (const c of seen) {
    if (c === 0) lost++;
    else dups += c - 1;
  }
  return [lost, dups];
}

function percentiles(values) {
  if (!values.length) return { p50: 0, p90: 0, p99: 0, max: 0 };
  const v = Float64Array.from(values).sort();
  const at = (q) => round2(v[Math.min(v.length, Math.max(1, Math.ceil(q * v.length))) - 1]);
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: round2(v[v.length - 1]) };
}

const freshPrefix = () => `bullbench-${process.pid}-${Math.floor(Math.random() * 0xffffffff).toString(16)}`;

function base(a, scenario, loadStart) {
  return {
    scenario, system: 'bullmq', bullmq_version: bullmqVersion(), concurrency: a.concurrency,
    remove_on_complete: a.removeOnComplete, load_avg_1m_start: loadStart, load_avg_1m_end: loadAvg(),
  };
}

function makeQueue(a, prefix) {
  const defaultJobOptions = a.removeOnComplete ? { removeOnComplete: true } : {};
  return new Queue(QUEUE, { connection: connection(a.redisUrl), prefix, defaultJobOptions });
}

async function waitQueueEmpty(queue, timeoutMs) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const c = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'paused');
    if (Object.values(c).reduce((s, x) => s + x, 0) === 0) return performance.now();
    if (performance.now() > deadline) {
      console.error('queue not empty:', c);
      return performance.now();
    }
    await sleep(2);
  }
}

// ---------------------------------------------------------------------------------------------
// Scenarios

async function throughput(a, admin) {
  const load = loadAvg();
  const n = a.tasks ?? 100000;
  const prefix = freshPrefix();
  const queue = makeQueue(a, prefix);
  await queue.waitUntilReady();
  const s0 = await snapshot(admin);
  let next = 0;
  let t = performance.now();
  await Promise.all(Array.from({ length: a.producers }, async () => {
    for (;;) {
      const seq = next++;
      if (seq >= n) return;
      await queue.add('noop', { seq, pad: PAD });
    }
  }));
  const single = (performance.now() - t) / 1000;
  const s1 = await snapshot(admin);
  t = performance.now();
  for (let from = n; from < 2 * n; from += a.bulkChunk) {
    const jobs = [];
    for (let seq = from; seq < Math.min(from + a.bulkChunk, 2 * n); seq++) {
      jobs.push({ name: 'noop', data: { seq, pad: PAD } });
    }
    await queue.addBulk(jobs);
  }
  const bulk = (performance.now() - t) / 1000;
  const s2 = await snapshot(admin);
  console.log(`enqueue: ${n} single add() from ${a.producers} producers in ${single.toFixed(2)} s (${perS(n, single)}/s); ${n} by addBulk of ${a.bulkChunk} in ${bulk.toFixed(2)} s (${perS(n, bulk)}/s)`);

  const pool = await Pool.spawn(a.workers, a, prefix);
  const s3 = await snapshot(admin);
  const go = pool.go();
  if ((await pool.waitCompleted(2 * n, 60000 + 2 * n)) === null) {
    console.error(`only ${pool.completed()} of ${2 * n} jobs completed`);
  }
  const done = await waitQueueEmpty(queue, 10000);
  const s4 = await snapshot(admin);
  const secs = (done - go) / 1000;
  const rep = await pool.stop();
  const [lost, duplicates] = lostAndDuplicates(rep.runs, 2 * n);
  console.log(`processed: ${2 * n} jobs by ${a.workers} worker process(es) x ${a.concurrency} concurrency in ${secs.toFixed(2)} s (${perS(2 * n, secs)}/s); lost ${lost}, duplicates ${duplicates}`);
  await queue.close();
  if (!a.keep) await deletePrefix(admin, prefix);
  return {
    ...base(a, 'throughput', load), tasks: n, processed_tasks: 2 * n, workers: a.workers,
    producers: a.producers, bulk_chunk: a.bulkChunk,
    enqueue_per_s: perS(n, single), enqueue_bulk_per_s: perS(n, bulk),
    processed_per_s: perS(2 * n, secs), lost, duplicates,
    worker_cpu_us_per_task: round2(rep.cpuUs / (2 * n)),
    profile: {
      enqueue: cost(s0, s1, n), enqueue_bulk: cost(s1, s2, n), drain: cost(s3, s4, 2 * n),
    },
  };
}

async function lateness(a, admin) {
  const load = loadAvg();
  const n = a.tasks ?? 20000;
  const spread = a.spreadSecs ?? 10;
  const prefix = freshPrefix();
  const queue = makeQueue(a, prefix);
  await queue.waitUntilReady();
  const pool = await Pool.spawn(a.workers, a, prefix);
  const s0 = await snapshot(admin);
  pool.go();
  await sleep(300);
  const leadMs = 1000;
  const t0 = Date.now() + leadMs;
  const spanMs = spread * 1000;
  const due = (i) => t0 + Math.floor(spanMs * (i + 0.5) / n);
  let next = 0;
  let minAhead = Infinity;
  while (next < n) {
    const now = Date.now();
    const jobs = [];
    while (next < n && due(next) <= now + leadMs && jobs.length < a.bulkChunk) {
      jobs.push({
        name: 'noop',
        data: { seq: next, pad: PAD },
        opts: { timestamp: now, delay: Math.max(0, due(next) - now) },
      });
      next++;
    }
    if (!jobs.length) {
      await sleep(10);
      continue;
    }
    await queue.addBulk(jobs);
    minAhead = Math.min(minAhead, due(next - 1) - (performance.timeOrigin + performance.now()));
  }
  const wait = Math.max(0, t0 + spanMs - Date.now()) + 60000;
  if ((await pool.waitCompleted(n, wait)) === null) console.error(`only ${pool.completed()} of ${n} jobs ran`);
  const s1 = await snapshot(admin);
  const rep = await pool.stop();
  const [lost, duplicates] = lostAndDuplicates(rep.runs, n);
  const claim = percentiles(rep.runs.map((r) => r[1]));
  const start = percentiles(rep.runs.map((r) => r[2] / 1000));
  const early = rep.runs.filter((r) => r[1] < 0).length;
  const earlyStart = rep.runs.filter((r) => r[2] < 0).length;
  console.log(`lateness of ${n} jobs due over ${spread} s (${Math.round(n / spread)}/s), processedOn - (timestamp + delay): p50 ${claim.p50} p90 ${claim.p90} p99 ${claim.p99} max ${claim.max} ms, ${early} early`);
  console.log(`  processor start - due (real clock): p50 ${start.p50} p90 ${start.p90} p99 ${start.p99} max ${start.max} ms, ${earlyStart} early; lost ${lost}, duplicates ${duplicates}`);
  await queue.close();
  if (!a.keep) await deletePrefix(admin, prefix);
  return {
    ...base(a, 'lateness', load), tasks: n, spread_secs: spread, workers: a.workers,
    lateness_ms: claim, early, lateness_start_ms: start, early_start: earlyStart, lost, duplicates,
    producer_min_ahead_ms: round2(minAhead), worker_cpu_us_per_task: round2(rep.cpuUs / n),
    profile: cost(s0, s1, n),
  };
}

async function memory(a, admin) {
  const load = loadAvg();
  const n = a.tasks ?? 100000;
  const prefix = freshPrefix();
  const queue = makeQueue(a, prefix);
  await queue.waitUntilReady();
  await sleep(200);
  const m0 = Number((await info(admin, 'memory')).used_memory);
  const k0 = await admin.dbsize();
  const t = performance.now();
  for (let from = 0; from < n; from += a.bulkChunk) {
    const jobs = [];
    for (let seq = from; seq < Math.min(from + a.bulkChunk, n); seq++) {
      jobs.push({ name: 'noop', data: { seq, pad: PAD }, opts: { delay: 3600 * 1000 } });
    }
    await queue.addBulk(jobs);
  }
  const secs = (performance.now() - t) / 1000;
  await sleep(500);
  const m1 = Number((await info(admin, 'memory')).used_memory);
  const k1 = await admin.dbsize();
  const bytes = (m1 - m0) / n;
  console.log(`memory: ${n} jobs due in 1 h take ${m1 - m0} bytes of used_memory (${Math.round(bytes)} B/job) and ${k1 - k0} keys`);
  await queue.close();
  if (!a.keep) await deletePrefix(admin, prefix);
  return {
    ...base(a, 'memory', load), tasks: n, bytes_per_task: Math.round(bytes),
    used_memory_delta: m1 - m0, keys_created: k1 - k0, enqueue_bulk_per_s: perS(n, secs),
  };
}

async function main() {
  const a = parseArgs(process.argv.slice(2));
  if (a.role === 'worker') return workerMain(a);
  const admin = new IORedis(a.redisUrl);
  const server = await info(admin, 'server');
  console.log(`bullmq ${bullmqVersion()} ${a.scenario}: Redis ${server.redis_version} at ${a.redisUrl}, load average ${loadAvg()}`);
  const scenarios = { throughput, lateness, memory };
  const run = scenarios[a.scenario];
  if (!run) throw new Error(`scenario must be one of ${Object.keys(scenarios).join(', ')}`);
  const out = await run(a, admin);
  out.redis_version = server.redis_version;
  await admin.quit();
  console.log(JSON.stringify(out));
  process.exit(0);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
