//! Splitting a pipeline by cluster slot, for pipelines that span partitions.

use redis::{Cmd, Pipeline};

/// The first key of a command (a script's first key), which decides its cluster slot.
pub(super) fn first_key(cmd: &Cmd) -> Option<Vec<u8>> {
    let mut args = cmd.args_iter().filter_map(|a| match a {
        redis::Arg::Simple(b) => Some(b),
        _ => None,
    });
    let name = args.next()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            args.next()?;
            let n: usize = std::str::from_utf8(args.next()?).ok()?.parse().ok()?;
            if n == 0 {
                None
            } else {
                args.next().map(<[u8]>::to_vec)
            }
        }
        b"TIME" | b"PING" | b"ECHO" | b"INFO" | b"DBSIZE" | b"CONFIG" | b"CLUSTER" | b"SCRIPT"
        | b"CLIENT" | b"COMMAND" | b"WAIT" | b"LASTSAVE" | b"ROLE" | b"PUBLISH" | b"SCAN" => None,
        _ => args.next().map(<[u8]>::to_vec),
    }
}

/// Splits `pipe` into pipelines of one cluster slot each, with the positions of their commands
/// in `pipe`. Commands without a key ride with the first group.
pub(crate) fn split_by_slot(pipe: &Pipeline, ignore_errors: bool) -> Vec<(Vec<usize>, Pipeline)> {
    use redis::cluster_routing::Slot;
    let mut order: Vec<Option<Slot>> = Vec::new();
    let mut groups: Vec<(Vec<usize>, Pipeline)> = Vec::new();
    let mut keyless = Vec::new();
    for (i, cmd) in pipe.cmd_iter().enumerate() {
        let Some(slot) = first_key(cmd).map(Slot::for_key) else {
            keyless.push(i);
            continue;
        };
        let g = match order.iter().position(|s| *s == Some(slot)) {
            Some(g) => g,
            None => {
                order.push(Some(slot));
                groups.push((Vec::new(), new_pipe(ignore_errors)));
                groups.len() - 1
            }
        };
        groups[g].0.push(i);
        groups[g].1.add_command(cmd.clone());
    }
    if !keyless.is_empty() {
        if groups.is_empty() {
            groups.push((Vec::new(), new_pipe(ignore_errors)));
        }
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        for i in keyless {
            groups[0].0.push(i);
            groups[0].1.add_command(cmds[i].clone());
        }
    }
    groups
}

/// An empty pipeline, reporting failed commands in its replies with `ignore_errors`.
pub(super) fn new_pipe(ignore_errors: bool) -> Pipeline {
    let mut p = Pipeline::new();
    if ignore_errors {
        p.ignore_errors();
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipeline over several partitions splits into one pipeline per slot, keyless commands
    /// riding with the first, and positions map back to the original order.
    #[test]
    fn split() {
        let mut p = redis::pipe();
        p.cmd("TIME");
        p.zcard("ns:{q:0}:ready");
        p.zcard("ns:{q:1}:ready");
        p.cmd("EVALSHA")
            .arg("abc")
            .arg(2)
            .arg("ns:{q:0}:x")
            .arg("ns:{q:0}:y");
        p.cmd("EVALSHA").arg("abc").arg(0);
        let groups = split_by_slot(&p, false);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].0, vec![1, 3, 0, 4]);
        assert_eq!(groups[1].0, vec![2]);
        assert_eq!(groups[0].1.len(), 4);
    }
}
