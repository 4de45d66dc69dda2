//! A throwaway `redis-server`: free loopback port, its own temp dir, no persistence unless asked,
//! killed on drop, its log printed when it never comes up. Every process of the kit (single
//! servers, cluster nodes, sentinels, TLS servers) is started by [`redis_server_command`].

use std::ffi::OsStr;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port (bound, then released: another process may take it first, so
/// starters retry on a new port when a server does not come up).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// A fresh directory under the system temp dir, named `<prefix>-<pid>-<port>-<random>`.
pub fn temp_dir(prefix: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "{prefix}-{}-{port}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Spawns `redis-server` with `args`, stdout and stderr discarded (give it `--logfile`).
///
/// # Errors
///
/// When `redis-server` is not on `PATH` (`apt-get install redis-server`).
pub fn redis_server_command<I, S>(args: I) -> std::io::Result<Child>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new("redis-server")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!(
                    "cannot start redis-server (is it on PATH? apt-get install redis-server): {e}"
                ),
            )
        })
}

/// A `redis-server` of our own on a free loopback port, with its own temp dir, killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Whether the directory is ours to remove on drop.
    own_dir: bool,
    extra: Vec<String>,
    /// How long a start waits for the first PING answer.
    wait: Duration,
}

/// The arguments of a server without persistence.
pub const NO_PERSISTENCE: [&str; 4] = ["--save", "", "--appendonly", "no"];

impl RedisServer {
    /// Starts a server with no persistence. Panics if it does not come up (its log is printed).
    pub fn start() -> Self {
        Self::start_with(&NO_PERSISTENCE)
    }

    /// Starts a server with these extra arguments. Panics if it does not come up.
    pub fn start_with(args: &[&str]) -> Self {
        Self::try_start(args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server with these extra arguments in a temp dir removed on drop, waiting up to
    /// 10 s for it to serve; up to 5 tries on new ports.
    ///
    /// # Errors
    ///
    /// When `redis-server` cannot be run or does not answer PING after 5 tries.
    pub fn try_start(args: &[&str]) -> std::io::Result<Self> {
        Self::try_start_inner(None, args, Duration::from_secs(10))
    }

    /// Starts a server with these extra arguments whose data and log go to `dir` (created, kept
    /// on drop), waiting up to `wait` for it to serve; up to 5 tries on new ports.
    ///
    /// # Errors
    ///
    /// When `redis-server` cannot be run or does not answer PING after 5 tries.
    pub fn try_start_in(dir: &Path, args: &[&str], wait: Duration) -> std::io::Result<Self> {
        Self::try_start_inner(Some(dir), args, wait)
    }

    fn try_start_inner(dir: Option<&Path>, args: &[&str], wait: Duration) -> std::io::Result<Self> {
        for _ in 0..5 {
            let port = free_port();
            let (dir, own_dir) = match dir {
                Some(d) => {
                    std::fs::create_dir_all(d)?;
                    (d.to_owned(), false)
                }
                None => (temp_dir("sched-test", port), true),
            };
            let mut s = Self {
                child: None,
                port,
                dir,
                own_dir,
                extra: args.iter().map(|s| s.to_string()).collect(),
                wait,
            };
            if s.spawn()? {
                return Ok(s);
            }
        }
        Err(std::io::Error::other(
            "could not start redis-server after 5 tries",
        ))
    }

    /// Starts the process and waits for it to answer PING; false (log printed) if it did not.
    fn spawn(&mut self) -> std::io::Result<bool> {
        let log = self.dir.join("redis.log");
        self.spawn_process()?;
        let deadline = Instant::now() + self.wait;
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(true);
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        eprintln!(
            "redis-server on port {} did not come up; its log:\n{}",
            self.port,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.kill();
        Ok(false)
    }

    /// Starts the process, without waiting for it to serve.
    fn spawn_process(&mut self) -> std::io::Result<()> {
        let port = self.port.to_string();
        let dir = self.dir.as_os_str();
        let log = self.dir.join("redis.log");
        let mut args: Vec<&OsStr> = vec![
            OsStr::new("--port"),
            OsStr::new(&port),
            OsStr::new("--bind"),
            OsStr::new("127.0.0.1"),
            OsStr::new("--dir"),
            dir,
            OsStr::new("--logfile"),
            log.as_os_str(),
        ];
        args.extend(self.extra.iter().map(OsStr::new));
        self.child = Some(redis_server_command(args)?);
        Ok(())
    }

    fn ping(&self) -> bool {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A blocking connection, for seeding and inspecting state.
    pub fn conn(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Runs one command (`args[0]` and its arguments) on a new connection (2 s connect timeout).
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or refuses the command.
    pub fn cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        let c = redis::Client::open(self.url())?;
        let mut conn = c.get_connection_with_timeout(Duration::from_secs(2))?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut conn)
    }

    /// Kills the server with SIGKILL (no shutdown save) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the server and starts it again on the same port and directory without waiting for
    /// it to serve: while it reloads its data it answers `LOADING`.
    pub fn restart_nowait(&mut self) {
        self.kill();
        self.spawn_process().expect("redis-server restarts");
    }

    /// Starts the server again on the same port and directory (AOF or RDB files are reloaded).
    /// Panics if it does not come up.
    pub fn restart(&mut self) {
        assert!(self.try_restart().is_ok(), "redis-server did not restart");
    }

    /// Kills the server (if running) and starts it again on the same port and directory,
    /// waiting for it to serve.
    ///
    /// # Errors
    ///
    /// When it cannot be run or does not answer PING in time.
    pub fn try_restart(&mut self) -> std::io::Result<()> {
        self.kill();
        if self.spawn()? {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "redis-server on port {} did not come up",
                self.port
            )))
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        if self.own_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
