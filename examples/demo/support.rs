//! What the quickstart and middleware examples share (a module of theirs, not an example).

use scheduler::Client;

/// Deletes every key of the demo's namespace.
pub(crate) async fn delete_namespace(client: &Client, ns: &str) -> anyhow::Result<()> {
    let mut conn = client.store().conn();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL")
                .arg(&keys)
                .query_async::<()>(&mut conn)
                .await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
