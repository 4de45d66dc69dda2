//! Child processes of a test: the harness binaries of `tools/chaos`, built on demand, and a guard
//! that kills a child on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The package of the harness binaries (`tools/chaos`): `chaos`, `chaos_worker`, `test_worker`.
pub const TOOLS_PACKAGE: &str = "scheduler-chaos";

/// The workspace root (where `cargo build -p ...` runs).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Whether `var` is one of the variables cargo sets for the crate it compiles or runs (a test
/// process has `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`, `CARGO_PKG_VERSION_*`...), as opposed to
/// cargo's own configuration (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_BUILD_*`...).
fn set_by_cargo_for_a_crate(var: &str) -> bool {
    var == "OUT_DIR"
        || [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CFG_",
            "CARGO_FEATURE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| var.starts_with(p))
        || [
            "CARGO_CRATE_NAME",
            "CARGO_PRIMARY_PACKAGE",
            "CARGO_TARGET_TMPDIR",
            "CARGO_RUSTC_CURRENT_DIR",
        ]
        .contains(&var)
}

/// Path of a binary of [`TOOLS_PACKAGE`] (`chaos`, `chaos_worker`, `test_worker`), built once per
/// test process with the same profile as the test (`cargo build -p scheduler-chaos --bin
/// <name>`, `--release` from a release test).
///
/// The build runs without the variables cargo set for this test process (`OUT_DIR`,
/// `CARGO_MANIFEST_*`, `CARGO_PKG_*`, `CARGO_CRATE_NAME`...; not `CARGO_HOME`, `CARGO_TARGET_DIR`
/// and the like, which configure cargo): build scripts that declare `rerun-if-env-changed` on them
/// (ring's, through `cc`, on `CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`...) would otherwise see them
/// change, run again, and rebuild ring, rustls, redis and every crate above them, both here and
/// in the next `cargo` command run from a shell, which sees them unset again.
pub fn tool_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    let exe = std::env::current_exe().expect("test exe");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile dir")
        .to_owned();
    let release = profile_dir.file_name().is_some_and(|n| n == "release");
    let built = BUILT.get_or_init(Default::default);
    // Held across the build: two tests of one process asking for one binary build it once.
    let mut built = built.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|n| n == name) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        for (var, _) in std::env::vars_os() {
            if var.to_str().is_some_and(set_by_cargo_for_a_crate) {
                cmd.env_remove(var);
            }
        }
        cmd.current_dir(workspace_root()).args([
            "build",
            "--quiet",
            "-p",
            TOOLS_PACKAGE,
            "--bin",
            name,
        ]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {TOOLS_PACKAGE} --bin {name} failed"
        );
        built.push(name.to_owned());
    }
    profile_dir.join(name)
}

/// Sends signal `sig` (a number or a name such as `TERM`, `STOP`, `CONT`) to `pid` with `kill`.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// A child process killed (SIGKILL) on drop unless it already exited.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// Sends a signal by number (15 = SIGTERM, 9 = SIGKILL, 19 = SIGSTOP, 18 = SIGCONT).
    pub fn signal(&self, sig: i32) {
        signal(self.0.id(), &sig.to_string());
    }

    /// Waits up to `timeout` for the process to exit; its exit status if it did.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::set_by_cargo_for_a_crate;

    #[test]
    fn only_the_variables_cargo_sets_for_a_crate_are_dropped() {
        for v in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_EXE_schedctl",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ] {
            assert!(set_by_cargo_for_a_crate(v), "{v}");
        }
        for v in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO_INCREMENTAL",
            "PATH",
            "RUSTFLAGS",
        ] {
            assert!(!set_by_cargo_for_a_crate(v), "{v}");
        }
    }
}
