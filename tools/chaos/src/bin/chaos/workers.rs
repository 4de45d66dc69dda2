//! Worker processes of a scenario in slots, restarted by a supervisor when one exits.

use crate::*;

/// Worker processes in slots; a supervisor restarts a slot whose process exited.
pub(crate) struct Workers {
    pub(crate) bin: PathBuf,
    pub(crate) flags: Vec<String>,
    pub(crate) dir: PathBuf,
    pub(crate) slots: Vec<Option<Child>>,
    pub(crate) spawned: usize,
    pub(crate) supervise: bool,
    /// Per slot: `CHAOS_CLOCK_OFFSET_MS` of its processes (none: no skew).
    pub(crate) offsets: Vec<i64>,
    /// Per slot: flags of its own after the common ones (none: just those).
    pub(crate) slot_flags: Vec<Vec<String>>,
    /// libfaketime (`libfaketime.so.1`): when set, a slot with a clock offset runs with it
    /// preloaded (`FAKETIME=<±s>`), so every wall-clock read of the process is off, not only
    /// what `chaos_worker` computes itself (`CHAOS_CLOCK_OFFSET_MS` is then 0). Monotonic clocks
    /// (tokio's timers) are left alone.
    pub(crate) faketime: Option<PathBuf>,
}

/// libfaketime's library, where Debian's `libfaketime` package puts it, if installed.
pub(crate) fn find_faketime() -> Option<PathBuf> {
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
        "/usr/lib/faketime/libfaketime.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

impl Workers {
    pub(crate) fn spawn_slot(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawned += 1;
        let out = File::create(self.dir.join(format!("out-{}.txt", self.spawned)))?;
        let offset = self.offsets.get(i).copied().unwrap_or(0);
        let mut cmd = Command::new(&self.bin);
        match &self.faketime {
            Some(lib) if offset != 0 => {
                cmd.env("LD_PRELOAD", lib)
                    .env("FAKETIME", format!("{:+}", offset as f64 / 1000.0))
                    .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
                    .env("CHAOS_CLOCK_OFFSET_MS", "0");
            }
            _ => {
                cmd.env("CHAOS_CLOCK_OFFSET_MS", offset.to_string());
            }
        }
        let child = cmd
            .args(&self.flags)
            .args(self.slot_flags.get(i).into_iter().flatten())
            .arg("--record-dir")
            .arg(&self.dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::from(out))
            .stderr(Stdio::null())
            .spawn()?;
        self.slots[i] = Some(child);
        Ok(())
    }

    pub(crate) fn pid(&self, i: usize) -> Option<u32> {
        self.slots[i].as_ref().map(|c| c.id())
    }

    /// Restarts exited processes; returns how many.
    pub(crate) fn supervise_once(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.slots.len() {
            let (exited, restart) = match self.slots[i].as_mut() {
                Some(c) => (matches!(c.try_wait(), Ok(Some(_))), true),
                None => (true, false),
            };
            if exited && self.supervise && self.spawn_slot(i).is_ok() && restart {
                n += 1;
            }
        }
        n
    }

    /// SIGTERM to all, wait up to `wait`, then SIGKILL what is left.
    pub(crate) fn stop_all(&mut self, wait: Duration) {
        self.supervise = false;
        for c in self.slots.iter().flatten() {
            signal(c.id(), "TERM");
        }
        let deadline = Instant::now() + wait;
        for c in self.slots.iter_mut().flatten() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        self.kill_all();
    }

    pub(crate) fn kill_all(&mut self) {
        for c in self.slots.iter_mut().flatten() {
            if let Ok(None) = c.try_wait() {
                signal(c.id(), "CONT");
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.supervise = false;
        self.kill_all();
    }
}
