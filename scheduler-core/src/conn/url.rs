//! Parsing the URL forms of the [module docs](super) into a [`Target`].

use redis::RedisError;

use super::Mode;
use crate::error::{Error, Result};

/// A parsed URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    Single(String),
    Cluster {
        /// `redis[s]://[userinfo@]`, the start of every node's URL.
        prefix: String,
        /// `host:port` of each seed node.
        seeds: Vec<String>,
        /// `[/db][?query]`, the end of every node's URL.
        tail: String,
    },
    Sentinel {
        tls: bool,
        /// `host:port` of each sentinel.
        sentinels: Vec<String>,
        master: String,
        /// `redis[s]://[userinfo@]x/[db]`, parsed for the credentials and db of the master.
        auth_url: String,
        sentinel_username: Option<String>,
        sentinel_password: Option<String>,
    },
}

pub(super) fn invalid(url: &str, why: impl Into<String>) -> Error {
    Error::InvalidUrl {
        url: url.to_owned(),
        source: RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "invalid URL",
            why.into(),
        )),
    }
}

/// Percent-decodes a query value (`%XX`, `+` left as is).
pub(super) fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let (b'%', Some(v)) = (b[i], hex) {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn parse(url: &str) -> Result<Target> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid(
            url,
            "no scheme (use redis://, redis+cluster://, redis+sentinel://)",
        ));
    };
    let (tls, kind) = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "rediss" | "unix" | "redis+unix" => return Ok(Target::Single(url.to_owned())),
        "redis+cluster" => (false, Mode::Cluster),
        "rediss+cluster" => (true, Mode::Cluster),
        "redis+sentinel" => (false, Mode::Sentinel),
        "rediss+sentinel" => (true, Mode::Sentinel),
        other => return Err(invalid(url, format!("unsupported scheme {other:?}"))),
    };
    let node_scheme = if tls { "rediss" } else { "redis" };
    // Split off the query, then the path, then the user info (before the last '@').
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let default_port = if kind == Mode::Cluster { 6379 } else { 26379 };
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(|h| {
            // `host`, `host:port`, `[v6]`, `[v6]:port`.
            let has_port = match h.rfind(']') {
                Some(end) => h[end..].contains(':'),
                None => h.contains(':'),
            };
            if has_port {
                h.to_owned()
            } else {
                format!("{h}:{default_port}")
            }
        })
        .collect();
    if hosts.is_empty() {
        return Err(invalid(url, "no host"));
    }
    let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    match kind {
        Mode::Cluster => {
            let tail = match (path.is_empty(), query.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!("/{path}"),
                (true, false) => format!("/?{query}"),
                (false, false) => format!("/{path}?{query}"),
            };
            Ok(Target::Cluster {
                prefix: format!("{node_scheme}://{user}"),
                seeds: hosts,
                tail,
            })
        }
        _ => {
            let mut segs = path.split('/').filter(|s| !s.is_empty());
            let master = segs
                .next()
                .map(percent_decode)
                .ok_or_else(|| invalid(url, "no master name (redis+sentinel://hosts/<master>)"))?;
            let db = segs.next().unwrap_or("0");
            let (mut sentinel_username, mut sentinel_password) = (None, None);
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                match k {
                    "sentinel_username" => sentinel_username = Some(percent_decode(v)),
                    "sentinel_password" => sentinel_password = Some(percent_decode(v)),
                    _ => {}
                }
            }
            Ok(Target::Sentinel {
                tls,
                sentinels: hosts,
                master,
                auth_url: format!("{node_scheme}://{user}localhost/{db}"),
                sentinel_username,
                sentinel_password,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every URL form parses into its mode, with credentials, database and defaults.
    #[test]
    fn urls() {
        assert_eq!(
            parse("redis://u:p@h:1/2").unwrap(),
            Target::Single("redis://u:p@h:1/2".into())
        );
        assert_eq!(
            parse("rediss://h:1").unwrap(),
            Target::Single("rediss://h:1".into())
        );
        assert_eq!(
            parse("redis+cluster://u:p%40x@a:1,b:2,c").unwrap(),
            Target::Cluster {
                prefix: "redis://u:p%40x@".into(),
                seeds: vec!["a:1".into(), "b:2".into(), "c:6379".into()],
                tail: String::new(),
            }
        );
        assert_eq!(
            parse("rediss+cluster://[::1]:7000,[::1]/?protocol=resp2").unwrap(),
            Target::Cluster {
                prefix: "rediss://".into(),
                seeds: vec!["[::1]:7000".into(), "[::1]:6379".into()],
                tail: "/?protocol=resp2".into(),
            }
        );
        assert_eq!(
            parse("redis+sentinel://:pw@s1,s2:26380/mymaster/3?sentinel_password=x%21%é%").unwrap(),
            Target::Sentinel {
                tls: false,
                sentinels: vec!["s1:26379".into(), "s2:26380".into()],
                master: "mymaster".into(),
                auth_url: "redis://:pw@localhost/3".into(),
                sentinel_username: None,
                sentinel_password: Some("x!%é%".into()),
            }
        );
        assert!(matches!(
            parse("rediss+sentinel://s1/m").unwrap(),
            Target::Sentinel { tls: true, .. }
        ));
        for bad in [
            "h:1",
            "http://h",
            "redis+sentinel://s1",
            "redis+cluster:///x",
        ] {
            assert!(
                matches!(parse(bad), Err(Error::InvalidUrl { .. })),
                "{bad} should be refused"
            );
        }
    }
}
