//! The Lua scripts of `lua/` by SHA1, to name the scripts a `SLOWLOG` or `INFO commandstats` shows
//! only by their hash.
//!
//! The hashes are derived, not listed: each `lua/*.lua` file is hashed as the library sends it
//! (the parts of `_prelude.lua` it uses followed by the body, `scheduler::broker::scripts::with_prelude`)
//! and as written (the lock scripts go without the prelude), so a new or changed script is named
//! without touching this module.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

/// The `lua/` directory of the workspace.
pub fn lua_dir() -> PathBuf {
    crate::process::workspace_root().join("lua")
}

/// SHA1 (lowercase hex, as Redis shows it) -> script name (`lua/<name>.lua`), for every script
/// of `lua/` with and without the prelude. Empty if `lua/` cannot be read.
pub fn script_hashes() -> &'static HashMap<String, String> {
    static HASHES: OnceLock<HashMap<String, String>> = OnceLock::new();
    HASHES.get_or_init(|| {
        let mut out = HashMap::new();
        let Ok(entries) = std::fs::read_dir(lua_dir()) else {
            return out;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Some(name) = path.file_stem().and_then(|n| n.to_str()) else {
                continue;
            };
            if path.extension() != Some("lua".as_ref()) || name.starts_with('_') {
                continue;
            }
            let Ok(body) = std::fs::read_to_string(&path) else {
                continue;
            };
            for source in [scheduler::broker::scripts::with_prelude(&body), body] {
                out.insert(
                    redis::Script::new(&source).get_hash().to_owned(),
                    name.to_owned(),
                );
            }
        }
        out
    })
}

/// The name of the script with this SHA1, `"other"` for a script not in `lua/`.
pub fn script_name(sha: &str) -> &'static str {
    script_hashes()
        .get(sha)
        .map(String::as_str)
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every script the library runs is named, with and without the prelude, and an unknown hash
    /// is "other".
    #[test]
    fn names_every_script_of_lua() {
        let enqueue = include_str!("../../../lua/enqueue.lua");
        let sha = redis::Script::new(&scheduler::broker::scripts::with_prelude(enqueue))
            .get_hash()
            .to_owned();
        assert_eq!(script_name(&sha), "enqueue");
        let renew = redis::Script::new(include_str!("../../../lua/lock_renew.lua"))
            .get_hash()
            .to_owned();
        assert_eq!(script_name(&renew), "lock_renew");
        let names: std::collections::BTreeSet<&str> =
            script_hashes().values().map(String::as_str).collect();
        for name in [
            "enqueue", "promote", "claim", "ack", "retry", "reap", "extend", "release", "cancel",
        ] {
            assert!(names.contains(name), "{name} missing from {names:?}");
        }
        assert_eq!(script_name("0000"), "other");
    }
}
