//! TLS test support: a CA and a server/client certificate made with `openssl` in a temp dir, and
//! a `redis-server` that speaks only TLS (`--port 0 --tls-port`), killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::server::{free_port, redis_server_command, temp_dir};

/// A CA and one certificate signed by it (for `localhost` and `127.0.0.1`, usable by the server
/// and as a client certificate), PEM files in a temp dir removed on drop.
#[derive(Debug)]
pub struct Certs {
    /// The directory of the PEM files.
    pub dir: PathBuf,
}

impl Certs {
    /// Makes the files, or returns `None` (with a printed reason) when `openssl` is missing.
    pub fn generate() -> Option<Self> {
        if Command::new("openssl").arg("version").output().is_err() {
            eprintln!("SKIPPED: openssl is not installed (apt-get install openssl)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "sched-tls-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write ext.cnf");
        let steps: [&[&str]; 5] = [
            &["genrsa", "-out", "ca.key", "2048"],
            &[
                "req",
                "-x509",
                "-new",
                "-nodes",
                "-key",
                "ca.key",
                "-sha256",
                "-days",
                "2",
                "-subj",
                "/CN=scheduler test CA",
                "-out",
                "ca.crt",
            ],
            &["genrsa", "-out", "node.key", "2048"],
            &[
                "req",
                "-new",
                "-key",
                "node.key",
                "-subj",
                "/CN=localhost",
                "-out",
                "node.csr",
            ],
            &[
                "x509",
                "-req",
                "-in",
                "node.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-sha256",
                "-extfile",
                "ext.cnf",
                "-out",
                "node.crt",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Some(Self { dir })
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The node certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("node.crt")
    }

    /// The node certificate's key (PEM).
    pub fn key(&self) -> PathBuf {
        self.dir.join("node.key")
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `redis-server` listening only on a TLS port that requires client certificates signed by
/// the CA.
#[derive(Debug)]
pub struct TlsRedis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl TlsRedis {
    /// Starts it with the certificates of `certs`.
    pub fn start(certs: &Certs) -> Self {
        for _ in 0..5 {
            let port = free_port();
            let dir = temp_dir("sched-tls-redis", port);
            let log = dir.join("redis.log");
            let port_s = port.to_string();
            let child = redis_server_command([
                "--port".as_ref(),
                "0".as_ref(),
                "--tls-port".as_ref(),
                port_s.as_ref(),
                "--bind".as_ref(),
                "127.0.0.1".as_ref(),
                "--save".as_ref(),
                "".as_ref(),
                "--appendonly".as_ref(),
                "no".as_ref(),
                "--dir".as_ref(),
                dir.as_os_str(),
                "--logfile".as_ref(),
                log.as_os_str(),
                "--tls-cert-file".as_ref(),
                certs.cert().as_os_str(),
                "--tls-key-file".as_ref(),
                certs.key().as_os_str(),
                "--tls-ca-cert-file".as_ref(),
                certs.ca().as_os_str(),
                "--tls-auth-clients".as_ref(),
                "yes".as_ref(),
            ])
            .expect("redis-server must be on PATH");
            let mut s = Self {
                child: Some(child),
                port,
                dir,
            };
            if s.wait_ready(&log) {
                return s;
            }
            eprintln!(
                "TLS redis-server on port {port} did not come up; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            s.kill();
        }
        panic!("could not start a TLS redis-server after 5 tries");
    }

    fn wait_ready(&mut self, log: &Path) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if std::fs::read_to_string(log).is_ok_and(|l| l.contains("Ready to accept connections"))
            {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The TLS port.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
