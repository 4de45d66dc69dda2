//! A throwaway Sentinel deployment: one master, one replica, three sentinels, all on free
//! loopback ports, every process killed on drop.

use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::server::{free_port, redis_server_command, temp_dir, RedisServer};

/// The master name the sentinels monitor.
pub const MASTER_NAME: &str = "mymaster";

/// One `redis-server --sentinel` process.
#[derive(Debug)]
struct SentinelProc {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl SentinelProc {
    fn start(master_port: u16) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = temp_dir("sched-sentinel", port);
            let conf = dir.join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n\
                     sentinel parallel-syncs {MASTER_NAME} 1\n",
                    dir = dir.display()
                ),
            )
            .expect("write sentinel.conf");
            let child = redis_server_command([conf.as_os_str(), "--sentinel".as_ref()])
                .expect("redis-server must be on PATH");
            let mut s = Self {
                child: Some(child),
                port,
                dir,
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if s.conn().is_ok() {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            eprintln!(
                "sentinel on port {port} did not come up; its log:\n{}",
                std::fs::read_to_string(s.dir.join("sentinel.log")).unwrap_or_default()
            );
            s.kill();
        }
        panic!("could not start a sentinel after 5 tries");
    }

    fn conn(&self) -> redis::RedisResult<redis::Connection> {
        let mut c = redis::Client::open(format!("redis://127.0.0.1:{}", self.port))?
            .get_connection_with_timeout(Duration::from_millis(200))?;
        redis::cmd("PING").query::<String>(&mut c)?;
        Ok(c)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SentinelProc {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One master, one replica, three sentinels (quorum 2, down after 1 s).
#[derive(Debug)]
pub struct SentinelSetup {
    /// The first master (a replica after a failover).
    pub first_master: RedisServer,
    /// The first replica (the master after a failover).
    pub first_replica: RedisServer,
    sentinels: Vec<SentinelProc>,
}

impl SentinelSetup {
    /// Starts everything and waits until every sentinel knows the replica and the two other
    /// sentinels (needed for a failover to be authorised).
    pub fn start() -> Self {
        let master = RedisServer::start();
        let mport = master.port().to_string();
        let replica = RedisServer::start_with(&[
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            &mport,
        ]);
        let sentinels: Vec<SentinelProc> =
            (0..3).map(|_| SentinelProc::start(master.port())).collect();
        let s = Self {
            first_master: master,
            first_replica: replica,
            sentinels,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if s.ready() {
                return s;
            }
            if Instant::now() > deadline {
                for p in &s.sentinels {
                    eprintln!(
                        "--- sentinel {} ---\n{}",
                        p.port,
                        std::fs::read_to_string(p.dir.join("sentinel.log")).unwrap_or_default()
                    );
                }
                panic!("sentinels did not discover the replica and each other within 30 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn ready(&self) -> bool {
        let link_up = redis::cmd("INFO")
            .arg("replication")
            .query::<String>(&mut self.first_replica.conn())
            .is_ok_and(|i| i.contains("master_link_status:up"));
        link_up
            && self.sentinels.iter().all(|p| {
                let Ok(mut c) = p.conn() else { return false };
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(MASTER_NAME)
                    .query(&mut c)
                    .unwrap_or_default();
                let others: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("SENTINELS")
                    .arg(MASTER_NAME)
                    .query(&mut c)
                    .unwrap_or_default();
                replicas.len() == 1 && others.len() == 2
            })
    }

    /// `redis+sentinel://` URL naming the three sentinels and the master.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The master's port according to the first sentinel that answers.
    pub fn master_port(&self) -> Option<u16> {
        for p in &self.sentinels {
            let Ok(mut c) = p.conn() else { continue };
            let addr: RedisResultPair = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(MASTER_NAME)
                .query(&mut c);
            if let Ok(Some((_, port))) = addr {
                return port.parse().ok();
            }
        }
        None
    }

    /// `SENTINEL FAILOVER` on the first sentinel: promotes the replica without waiting for the
    /// master to be down.
    pub fn failover(&self) {
        let mut c = self.sentinels[0].conn().expect("sentinel answers");
        let _: String = redis::cmd("SENTINEL")
            .arg("FAILOVER")
            .arg(MASTER_NAME)
            .query(&mut c)
            .expect("SENTINEL FAILOVER accepted");
    }
}

type RedisResultPair = redis::RedisResult<Option<(String, String)>>;
