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
