//! A throwaway Redis Cluster: 6 `redis-server` processes on free loopback ports (3 masters, 3
//! replicas), created with `redis-cli --cluster create`, every process killed on drop.

use std::time::{Duration, Instant};

use crate::server::{free_port, RedisServer};

/// Slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// One slot range of `CLUSTER SLOTS`: first and last slot, master port, replica ports.
#[derive(Debug, Clone)]
pub struct SlotRange {
    /// First slot.
    pub start: u16,
    /// Last slot.
    pub end: u16,
    /// Port of the master.
    pub master: u16,
    /// Ports of the replicas.
    pub replicas: Vec<u16>,
}

/// A local Redis Cluster of 3 masters with one replica each.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 6 nodes and creates the cluster, or returns `None` (with a printed reason) when
    /// `redis-cli` is missing. Panics with the nodes' logs if the cluster does not form.
    pub fn start() -> Option<Self> {
        if std::process::Command::new("redis-cli")
            .arg("--version")
            .output()
            .is_err()
        {
            eprintln!("SKIPPED: redis-cli is not installed (apt-get install redis-tools)");
            return None;
        }
        let nodes: Vec<RedisServer> = (0..6)
            .map(|_| {
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-port",
                    &bus,
                    // Fail a silent master over within about 2 s.
                    "--cluster-node-timeout",
                    "1000",
                    // Partitions are independent: while one master fails over, the others serve.
                    "--cluster-require-full-coverage",
                    "no",
                ])
            })
            .collect();
        let c = Self { nodes };
        let mut cmd = std::process::Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for n in &c.nodes {
            cmd.arg(format!("127.0.0.1:{}", n.port()));
        }
        let out = cmd
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !c.wait_healthy(Duration::from_secs(30)) {
            c.dump_logs();
            panic!("the cluster did not reach cluster_state:ok with 3 masters and 3 replicas");
        }
        Some(c)
    }

    /// Ports of all nodes, live or not.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// `redis+cluster://` URL listing every node as a seed.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }

    /// A plain (non-cluster) blocking connection to one node, with short timeouts.
    pub fn node_conn(&self, port: u16) -> redis::RedisResult<redis::Connection> {
        let c = redis::Client::open(format!("redis://127.0.0.1:{port}"))?
            .get_connection_with_timeout(Duration::from_millis(500))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(c)
    }

    fn node(&self, port: u16) -> &RedisServer {
        self.nodes
            .iter()
            .find(|n| n.port() == port)
            .expect("no such node")
    }

    /// Kills the node on `port` with SIGKILL (no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        let n = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("no such node");
        n.kill();
    }

    /// The slot map as the first reachable node sees it.
    pub fn slots(&self) -> Vec<SlotRange> {
        for p in self.ports() {
            let Ok(mut c) = self.node_conn(p) else {
                continue;
            };
            let Ok(v) = redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query::<redis::Value>(&mut c)
            else {
                continue;
            };
            return parse_slots(&v);
        }
        Vec::new()
    }

    /// Master ports, in slot order.
    pub fn masters(&self) -> Vec<u16> {
        let mut m: Vec<u16> = Vec::new();
        for r in self.slots() {
            if !m.contains(&r.master) {
                m.push(r.master);
            }
        }
        m
    }

    /// The slot of `key` (`CLUSTER KEYSLOT`, asked of a live node).
    pub fn keyslot(&self, key: &str) -> u16 {
        for p in self.ports() {
            if let Ok(mut c) = self.node_conn(p) {
                if let Ok(s) = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query(&mut c) {
                    return s;
                }
            }
        }
        panic!("no node answered CLUSTER KEYSLOT");
    }

    /// The master serving `slot`.
    pub fn master_of_slot(&self, slot: u16) -> u16 {
        self.slots()
            .iter()
            .find(|r| r.start <= slot && slot <= r.end)
            .map(|r| r.master)
            .expect("slot not covered")
    }

    /// The replica of `master` (first one listed).
    pub fn replica_of(&self, master: u16) -> Option<u16> {
        self.slots()
            .iter()
            .find(|r| r.master == master)
            .and_then(|r| r.replicas.first().copied())
    }

    /// The role (`master`, `slave`) the node on `port` reports, if it answers.
    pub fn role(&self, port: u16) -> Option<String> {
        let mut c = self.node_conn(port).ok()?;
        let v: Vec<redis::Value> = redis::cmd("ROLE").query(&mut c).ok()?;
        redis::from_redis_value(v.into_iter().next()?).ok()
    }

    /// Waits until every live node reports `cluster_state:ok` and the slot map covers all slots
    /// with masters that answer, each with a replica unless `replicas` is false.
    pub fn wait_until(&self, timeout: Duration, replicas: bool) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.healthy(replicas) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// [`RedisCluster::wait_until`] with replicas.
    pub fn wait_healthy(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, true)
    }

    fn healthy(&self, replicas: bool) -> bool {
        let mut live = 0;
        for p in self.ports() {
            let Ok(mut c) = self.node_conn(p) else {
                continue;
            };
            live += 1;
            let Ok(info) = redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c) else {
                return false;
            };
            if !info.contains("cluster_state:ok") {
                return false;
            }
        }
        if live == 0 {
            return false;
        }
        let slots = self.slots();
        let covered: u32 = slots.iter().map(|r| u32::from(r.end - r.start) + 1).sum();
        covered == u32::from(SLOTS)
            && slots.iter().all(|r| {
                self.role(r.master).as_deref() == Some("master")
                    && (!replicas || !r.replicas.is_empty())
            })
    }

    /// Prints every node's log (for a failed start).
    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!(
                "--- node {} ---\n{}",
                n.port(),
                std::fs::read_to_string(n.dir().join("redis.log")).unwrap_or_default()
            );
        }
    }

    /// Whether the node on `port` still runs.
    pub fn is_up(&self, port: u16) -> bool {
        let _ = self.node(port);
        self.node_conn(port).is_ok()
    }
}

fn parse_slots(v: &redis::Value) -> Vec<SlotRange> {
    let mut out = Vec::new();
    let redis::Value::Array(ranges) = v else {
        return out;
    };
    for r in ranges {
        let redis::Value::Array(items) = r else {
            continue;
        };
        let int = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(i)) => Some(*i),
            _ => None,
        };
        let port = |v: &redis::Value| match v {
            redis::Value::Array(n) => int(n.get(1)).map(|p| p as u16),
            _ => None,
        };
        let (Some(start), Some(end)) = (int(items.first()), int(items.get(1))) else {
            continue;
        };
        let Some(master) = items.get(2).and_then(port) else {
            continue;
        };
        out.push(SlotRange {
            start: start as u16,
            end: end as u16,
            master,
            replicas: items.iter().skip(3).filter_map(port).collect(),
        });
    }
    out.sort_by_key(|r| r.start);
    out
}
