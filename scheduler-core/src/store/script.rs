//! How a script's source is assembled: the Lua files of `lua/` are compiled into the binary
//! (`include_str!`), each prefixed with the parts of `lua/_prelude.lua` (the server clock and
//! shared helpers) it uses ([`with_prelude`]). Their headers document keys, arguments and every
//! reply; the wrappers in the sibling files turn replies into types.

/// A lazily built [`redis::Script`] for `lua/<name>.lua` with the prelude it uses.
macro_rules! script {
    ($name:literal) => {
        std::sync::LazyLock::new(|| {
            redis::Script::new(&$crate::store::with_prelude(include_str!(concat!(
                "../../../lua/",
                $name,
                ".lua"
            ))))
        })
    };
}
pub(super) use script;

/// `lua/_prelude.lua`, whose definitions scripts share.
const PRELUDE: &str = include_str!("../../../lua/_prelude.lua");

/// The source Redis runs for the script `body`: the definitions of `lua/_prelude.lua` that the
/// body uses (directly or through another definition), in the prelude's order, then the body.
///
/// Redis runs a script's whole text on every call, and each `local function` of the prelude is
/// a closure made anew each time: the full prelude cost every call about 23,000 instructions
/// (`valgrind --tool=callgrind` on redis-server, a script returning 1), a third of a claim's
/// per-call work, whether the script used those helpers or not.
///
/// The prelude is a sequence of blocks separated by blank lines; a block defines the name after
/// its first `local function` or `local` (comments before it belong to it). A block without a
/// definition (the file's header) is left out.
pub fn with_prelude(body: &str) -> String {
    let blocks: Vec<(&str, &str)> = PRELUDE
        .split("\n\n")
        .filter_map(|block| {
            let def = block.lines().find(|l| l.starts_with("local "))?;
            let rest = def
                .trim_start_matches("local ")
                .trim_start_matches("function ");
            let name = rest
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()?;
            Some((name, block))
        })
        .collect();
    // Code without its comments: a helper named in a comment is not used.
    let code = |text: &str| {
        text.lines()
            .map(|l| l.split("--").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let uses = |text: &str, name: &str| {
        text.match_indices(name).any(|(i, _)| {
            let before = text[..i].chars().next_back();
            let after = text[i + name.len()..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            !word(before) && !word(after)
        })
    };
    // Walk backwards: a block may only use blocks defined before it.
    let mut keep = vec![false; blocks.len()];
    let mut needed = code(body);
    for (i, (name, block)) in blocks.iter().enumerate().rev() {
        if uses(&needed, name) {
            keep[i] = true;
            needed.push_str(&code(block));
        }
    }
    let mut out = String::new();
    for ((_, block), kept) in blocks.iter().zip(keep) {
        if kept {
            out.push_str(block);
            out.push_str("\n\n");
        }
    }
    out.push_str(body);
    out
}

/// Largest batch one script call takes: keeps each call around a few milliseconds at most.
pub const MAX_BATCH: u32 = 5000;

#[cfg(test)]
mod tests {
    use super::with_prelude;

    #[test]
    fn a_script_gets_the_prelude_definitions_it_uses_and_nothing_else() {
        let src = with_prelude("-- uses put_blob? no: only a comment\nreturn now_ms()\n");
        assert!(src.contains("local function now_ms()"));
        // now_ms calls now_us, defined before it.
        assert!(src.find("local function now_us()") < src.find("local function now_ms()"));
        assert!(!src.contains("local function put_blob("));
        assert!(!src.contains("local function get_blob("));
        assert!(src.ends_with("return now_ms()\n"));
    }

    #[test]
    fn a_helper_brings_what_it_calls() {
        // get_blob reads PIECE; put_blob is not needed.
        let src = with_prelude("return get_blob(KEYS[1], 'args', false, false)\n");
        assert!(src.contains("local PIECE = 64"));
        assert!(src.contains("local function get_blob("));
        assert!(!src.contains("local function put_blob("));
    }

    #[test]
    fn every_script_keeps_every_helper_it_calls() {
        // A name used but left out would be a nil global at run time; the integration tests run
        // every script, this checks the assembly alone against the prelude's own names.
        for body in [
            include_str!("../../../lua/enqueue.lua"),
            include_str!("../../../lua/claim.lua"),
            include_str!("../../../lua/reap.lua"),
        ] {
            let src = with_prelude(body);
            for name in ["now_ms", "int_of", "zadd_all"] {
                if body.contains(&format!("{name}(")) {
                    assert!(src.contains(&format!("local function {name}(")), "{name}");
                }
            }
        }
    }
}
