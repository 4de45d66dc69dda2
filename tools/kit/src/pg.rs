//! A throwaway PostgreSQL database on the server at 127.0.0.1:5432 (trust authentication, user
//! `postgres`; `.ci/run` installs and starts it when missing), created with a unique name and
//! dropped (`WITH (FORCE)`) with the value. Through `psql`, so that the kit needs no driver.

/// A database of its own, dropped on drop.
#[derive(Debug)]
pub struct PgDb {
    name: String,
}

impl PgDb {
    /// Creates `sched_<tag>_<pid>_<random>`. Panics, saying how to get PostgreSQL, when `psql`
    /// cannot run or the server refuses.
    pub fn create(tag: &str) -> Self {
        let name = format!(
            "sched_{tag}_{}_{}",
            std::process::id(),
            rand::random::<u32>()
        );
        psql(&format!("CREATE DATABASE {name}"));
        Self { name }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres://postgres@127.0.0.1:5432/<name>`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:5432/{}", self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        psql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ));
    }
}

/// Runs `sql` with `psql` on database `postgres`; panics with its error output when it fails.
pub fn psql(sql: &str) {
    let out = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", "postgres"])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql runs (install PostgreSQL: .ci/run does)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {} (is PostgreSQL running at 127.0.0.1:5432 with trust authentication?)",
        String::from_utf8_lossy(&out.stderr)
    );
}
