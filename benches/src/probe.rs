//! The Redis side of a benchmark: a throwaway `redis-server` when no URL is given, an admin
//! connection, and snapshots of `INFO` (commandstats, cpu, memory) to compute what a phase cost
//! Redis.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use scheduler::redis::{self, aio::MultiplexedConnection};
use serde_json::{json, Value};

use scheduler_testkit::server::NO_PERSISTENCE;
use scheduler_testkit::RedisServer;

use crate::task::local_us;

/// The Redis a benchmark runs against, and an admin connection to it.
#[derive(Debug)]
pub(crate) struct Env {
    /// Its URL.
    pub(crate) url: String,
    /// Admin connection (INFO, CONFIG, SLOWLOG...): to the first master of a cluster.
    pub(crate) admin: MultiplexedConnection,
    /// Every master (one for a single Redis): its address and an admin connection. Snapshots
    /// sum over them and keep each one's share.
    pub(crate) masters: Vec<(String, MultiplexedConnection)>,
    /// Redis clock minus local clock, µs.
    pub(crate) offset_us: i64,
    /// Redis version.
    pub(crate) version: String,
    _server: Option<RedisServer>,
}

impl Env {
    /// Connects to `url`, or starts a redis-server of our own without one.
    pub(crate) async fn setup(url: Option<String>) -> Result<Self> {
        let (url, server) = match url {
            Some(u) => (u, None),
            None => {
                // The test kit's: a free loopback port, default settings, no persistence.
                let s = RedisServer::try_start(&NO_PERSISTENCE)?;
                (s.url(), Some(s))
            }
        };
        let masters = masters_of(&url).await?;
        let admin = masters[0].1.clone();
        let mut env = Self {
            url,
            admin,
            masters,
            offset_us: 0,
            version: String::new(),
            _server: server,
        };
        env.offset_us = env.clock_offset_us().await?;
        env.version = env
            .info("server")
            .await?
            .remove("redis_version")
            .unwrap_or_default();
        Ok(env)
    }

    /// Redis clock minus local clock in µs: the median of 7 `TIME` samples, each read against
    /// the local clock at the middle of its round trip.
    pub(crate) async fn clock_offset_us(&mut self) -> Result<i64> {
        let mut samples = Vec::new();
        for _ in 0..7 {
            let before = local_us();
            let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut self.admin).await?;
            let after = local_us();
            samples.push(s * 1_000_000 + us - (before + after) / 2);
        }
        samples.sort_unstable();
        Ok(samples[samples.len() / 2])
    }

    /// Redis's clock now, unix ms.
    pub(crate) async fn redis_now_ms(&mut self) -> Result<i64> {
        let (s, us): (i64, i64) = redis::cmd("TIME").query_async(&mut self.admin).await?;
        Ok(s * 1000 + us / 1000)
    }

    /// One `INFO` section as a map.
    pub(crate) async fn info(&mut self, section: &str) -> Result<BTreeMap<String, String>> {
        let text: String = redis::cmd("INFO")
            .arg(section)
            .query_async(&mut self.admin)
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
            .collect())
    }

    /// `INFO memory` used_memory, bytes, summed over the masters.
    pub(crate) async fn used_memory(&mut self) -> Result<i64> {
        let mut total = 0;
        for (_, conn) in &mut self.masters {
            let m = info_of(conn, "memory").await?;
            total += m
                .get("used_memory")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
        }
        Ok(total)
    }

    /// `DBSIZE`, summed over the masters.
    pub(crate) async fn dbsize(&mut self) -> Result<i64> {
        let mut total = 0;
        for (_, conn) in &mut self.masters {
            total += redis::cmd("DBSIZE").query_async::<i64>(conn).await?;
        }
        Ok(total)
    }

    /// `CONFIG SET name value` on every master, returning the first one's old value.
    pub(crate) async fn config_set(&mut self, name: &str, value: &str) -> Result<String> {
        let old: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg(name)
            .query_async(&mut self.admin)
            .await?;
        for (_, conn) in &mut self.masters {
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query_async::<()>(conn)
                .await?;
        }
        Ok(old.get(1).cloned().unwrap_or_default())
    }

    /// A snapshot of the counters a phase is measured with, summed over the masters, with each
    /// master's own CPU and command count.
    pub(crate) async fn snapshot(&mut self) -> Result<Snapshot> {
        let mut cmds: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut nodes = Vec::with_capacity(self.masters.len());
        let mut cpu_total = 0.0;
        for (addr, conn) in &mut self.masters {
            let stats = info_of(conn, "commandstats").await?;
            let cpu = info_of(conn, "cpu").await?;
            let secs = |k: &str| {
                cpu.get(k)
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            let mut calls_here = 0;
            for (k, v) in stats {
                let Some(name) = k.strip_prefix("cmdstat_") else {
                    continue;
                };
                let field = |f: &str| {
                    v.split(',')
                        .filter_map(|kv| kv.split_once('='))
                        .find(|(key, _)| *key == f)
                        .and_then(|(_, x)| x.parse::<u64>().ok())
                        .unwrap_or(0)
                };
                let (c, u) = (field("calls"), field("usec"));
                calls_here += c;
                let e = cmds.entry(name.to_owned()).or_default();
                e.0 += c;
                e.1 += u;
            }
            let cpu_s = secs("used_cpu_sys") + secs("used_cpu_user");
            cpu_total += cpu_s;
            nodes.push((addr.clone(), cpu_s, calls_here));
        }
        Ok(Snapshot {
            at: Instant::now(),
            cmds,
            cpu_s: cpu_total,
            nodes,
        })
    }

    /// Deletes every key of namespace `ns` (SCAN + UNLINK, on every master).
    pub(crate) async fn delete_namespace(&mut self, ns: &str) -> Result<u64> {
        let mut n = 0;
        for (_, conn) in &mut self.masters {
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{ns}:*"))
                    .arg("COUNT")
                    .arg(5000)
                    .query_async(conn)
                    .await?;
                // One UNLINK per key: keys of different slots cannot share a command on a
                // cluster node (CROSSSLOT), and a single Redis takes them as fast in a pipeline.
                if !keys.is_empty() {
                    n += keys.len() as u64;
                    let mut pipe = redis::pipe();
                    for k in &keys {
                        pipe.cmd("UNLINK").arg(k).ignore();
                    }
                    pipe.query_async::<()>(conn).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(n)
    }
}

/// One `INFO` section of the node behind `conn`, as a map.
async fn info_of(
    conn: &mut MultiplexedConnection,
    section: &str,
) -> Result<BTreeMap<String, String>> {
    let text: String = redis::cmd("INFO").arg(section).query_async(conn).await?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
        .collect())
}

/// The masters behind `url`: itself for a single Redis; for `redis+cluster://` (or
/// `rediss+cluster://`) seed nodes, every master that `CLUSTER NODES` on the first seed lists
/// (not failed), reached with the URL's scheme and credentials.
async fn masters_of(url: &str) -> Result<Vec<(String, MultiplexedConnection)>> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(vec![(url.to_owned(), connect(url).await?)]);
    };
    let Some(plain) = scheme.strip_suffix("+cluster") else {
        return Ok(vec![(url.to_owned(), connect(url).await?)]);
    };
    let hosts = rest.split(['/', '?']).next().unwrap_or(rest);
    let (auth, hosts) = match hosts.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), hosts),
    };
    let seed = hosts.split(',').next().unwrap_or(hosts);
    let seed = if seed.contains(':') {
        seed.to_owned()
    } else {
        format!("{seed}:6379")
    };
    let mut conn = connect(&format!("{plain}://{auth}{seed}/")).await?;
    let nodes: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .with_context(|| format!("CLUSTER NODES on {seed}"))?;
    let mut masters = Vec::new();
    for line in nodes.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (f.get(1), f.get(2)) else {
            continue;
        };
        if !flags.split(',').any(|x| x == "master") || flags.contains("fail") {
            continue;
        }
        let addr = addr.split(['@', ',']).next().unwrap_or(addr).to_owned();
        let conn = connect(&format!("{plain}://{auth}{addr}/")).await?;
        masters.push((addr, conn));
    }
    masters.sort_by(|a, b| a.0.cmp(&b.0));
    anyhow::ensure!(
        !masters.is_empty(),
        "CLUSTER NODES on {seed} lists no master"
    );
    Ok(masters)
}

/// Opens a multiplexed connection.
pub(crate) async fn connect(url: &str) -> Result<MultiplexedConnection> {
    let client = redis::Client::open(url).with_context(|| format!("bad Redis URL {url}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .with_context(|| format!("cannot connect to {url}"))
}

/// Commandstats (calls, usec per command) and Redis CPU seconds at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    at: Instant,
    cmds: BTreeMap<String, (u64, u64)>,
    cpu_s: f64,
    /// Per master: address, CPU seconds, commands.
    nodes: Vec<(String, f64, u64)>,
}

/// What Redis did between two snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Cost {
    /// Wall time between the snapshots, s.
    pub(crate) secs: f64,
    /// Per command: calls, usec (the snapshots' own INFO calls left out).
    pub(crate) cmds: BTreeMap<String, (u64, u64)>,
    /// Redis CPU (user + sys), s.
    pub(crate) cpu_s: f64,
    /// Per master (one for a single Redis): address, CPU seconds, commands.
    pub(crate) nodes: Vec<(String, f64, u64)>,
}

impl Snapshot {
    /// The cost from `self` to `later`.
    pub(crate) fn cost_to(&self, later: &Snapshot) -> Cost {
        let mut cmds = BTreeMap::new();
        for (name, (calls, usec)) in &later.cmds {
            let (c0, u0) = self.cmds.get(name).copied().unwrap_or((0, 0));
            let mut calls = calls.saturating_sub(c0);
            // The INFO calls that took the snapshots (two per snapshot and master: commandstats
            // and cpu).
            if name == "info" {
                calls = calls.saturating_sub(2 * later.nodes.len() as u64);
            }
            if calls > 0 {
                cmds.insert(name.clone(), (calls, usec.saturating_sub(u0)));
            }
        }
        let nodes = later
            .nodes
            .iter()
            .map(|(addr, cpu, calls)| {
                let (c0, n0) = self
                    .nodes
                    .iter()
                    .find(|(a, _, _)| a == addr)
                    .map_or((0.0, 0), |(_, c, n)| (*c, *n));
                // Less the two INFO calls of the snapshot on this master.
                (addr.clone(), cpu - c0, calls.saturating_sub(n0 + 2))
            })
            .collect();
        Cost {
            secs: later.at.duration_since(self.at).as_secs_f64(),
            cmds,
            cpu_s: later.cpu_s - self.cpu_s,
            nodes,
        }
    }
}

impl Cost {
    /// Commands of every kind.
    pub(crate) fn calls(&self) -> u64 {
        self.cmds.values().map(|(c, _)| c).sum()
    }

    /// Script calls (EVALSHA and EVAL) and their µs, summed.
    pub(crate) fn scripts(&self) -> (u64, u64) {
        ["evalsha", "eval", "evalsha_ro", "eval_ro", "fcall"]
            .iter()
            .filter_map(|k| self.cmds.get(*k))
            .fold((0, 0), |(c, u), (c1, u1)| (c + c1, u + u1))
    }

    /// As JSON, per task when `tasks` > 0: script calls and their µs (INFO commandstats; Redis
    /// counts the commands a script runs both on their own and inside the script's time), Redis
    /// CPU µs (user + sys: adds networking and parsing), the Redis CPU busy share, and each
    /// command's calls and µs per call.
    pub(crate) fn to_json(&self, tasks: u64) -> Value {
        let per = |x: f64| if tasks > 0 { x / tasks as f64 } else { x };
        let (script_calls, script_usec) = self.scripts();
        let by_cmd: serde_json::Map<String, Value> = self
            .cmds
            .iter()
            .map(|(k, (c, u))| {
                (
                    k.clone(),
                    json!({ "calls": c, "usec_per_call": round2(*u as f64 / (*c).max(1) as f64) }),
                )
            })
            .collect();
        // On a cluster, each master's Redis CPU per task and its share of the total: what lets
        // throughput on N real cores be predicted.
        let masters: Vec<Value> = if self.nodes.len() > 1 {
            self.nodes
                .iter()
                .map(|(addr, cpu, calls)| {
                    json!({
                        "master": addr,
                        "redis_cpu_us_per_task": round2(per(cpu * 1e6)),
                        "cpu_share": round2(if self.cpu_s > 0.0 { cpu / self.cpu_s } else { 0.0 }),
                        "redis_calls_per_task": round2(per(*calls as f64)),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        json!({
            "masters": masters,
            "script_calls_per_task": round2(per(script_calls as f64)),
            "script_usec_per_task": round2(per(script_usec as f64)),
            "redis_calls_per_task": round2(per(self.calls() as f64)),
            "redis_cpu_us_per_task": round2(per(self.cpu_s * 1e6)),
            "redis_cpu_busy": round2(if self.secs > 0.0 { self.cpu_s / self.secs } else { 0.0 }),
            "commands": by_cmd,
        })
    }
}

/// Rounds to 2 decimals, for readable JSON.
pub(crate) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// The 1-minute load average, from /proc/loadavg.
pub(crate) fn load_avg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|x| x.parse().ok()))
        .unwrap_or(0.0)
}
