//! `serve`: the web dashboard (`scheduler::dashboard`) on an address, until Ctrl-C or SIGTERM.

use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use scheduler::dashboard::{axum, router, DashboardConfig};

use crate::Ctx;

/// What `schedctl serve` is given.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on. Anyone who reaches it and has the credentials can act on tasks:
    /// keep it on loopback, or set a token.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Require this token (the login form, or `Authorization: Bearer`).
    #[arg(long, env = "SCHED_DASHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Accept HTTP basic auth as `user:password`.
    #[arg(long, env = "SCHED_DASHBOARD_BASIC", hide_env_values = true)]
    basic: Option<String>,
    /// Show no action and refuse them all.
    #[arg(long)]
    read_only: bool,
    /// Serve under this path (e.g. `/ops/tasks`), for a reverse proxy that forwards it as is.
    #[arg(long, default_value = "")]
    prefix: String,
    /// How often the overview refreshes: `2s`, `500ms`...
    #[arg(long, default_value = "2s", value_parser = crate::render::parse_duration)]
    refresh: u64,
    /// PostgreSQL URL of the task history archive: the History page searches it. Without it
    /// the page says that history is not configured.
    #[arg(long, env = "SCHED_ARCHIVE_URL")]
    database_url: Option<String>,
}

pub(crate) async fn serve(ctx: &Ctx, a: ServeArgs) -> Result<String> {
    let mut config = DashboardConfig::new()
        .read_only(a.read_only)
        .prefix(&a.prefix)
        .refresh(Duration::from_millis(a.refresh));
    if let Some(t) = &a.token {
        if t.bytes()
            .any(|b| !b.is_ascii_graphic() || b == b';' || b == b',')
        {
            bail!("--token: use printable ASCII without spaces, ';' or ','");
        }
        config = config.token(t);
    }
    if let Some(b) = &a.basic {
        let Some((user, password)) = b.split_once(':') else {
            bail!("--basic takes user:password");
        };
        config = config.basic_auth(user, password);
    }
    if let Some(url) = &a.database_url {
        let db = scheduler::archive::HistoryDb::connect(url, 4).await?;
        config = config.history(db);
    }
    let app = router(&ctx.client, config);
    let listener = tokio::net::TcpListener::bind(&a.addr)
        .await
        .with_context(|| format!("cannot listen on {}", a.addr))?;
    let local = listener.local_addr()?;
    let open = a.token.is_none() && a.basic.is_none();
    eprintln!(
        "schedctl: dashboard of namespace {:?} at http://{local}{}/{}{}{}",
        ctx.namespace,
        a.prefix.trim_end_matches('/'),
        if a.read_only { " (read-only)" } else { "" },
        if open {
            " (no credentials required)"
        } else {
            ""
        },
        if a.database_url.is_some() {
            " (with history)"
        } else {
            ""
        },
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("serving the dashboard")?;
    Ok(String::new())
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
