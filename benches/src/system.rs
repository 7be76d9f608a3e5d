//! What the jobs need of a replicated store, so every job runs the same code
//! against Balsa and etcd: a client (put, linearizable get, prefix watch) and a
//! cluster (leader, SIGKILL, restart).

use std::future::Future;
use std::time::Duration;

use futures::stream::BoxStream;

/// Bytes of every value written.
pub const VALUE_LEN: usize = 256;

/// A fixed 256-character value (no characters JSON would escape).
pub fn value() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..VALUE_LEN)
        .map(|i| ALPHABET[(i * 7 + i / 3) % ALPHABET.len()] as char)
        .collect()
}

/// Events of one watch: for each message, the names of the objects written.
pub type NameStream = BoxStream<'static, anyhow::Result<Vec<String>>>;

/// A client connected to one member. Cloning shares its connection.
///
/// `space` groups a job's objects: Balsa's namespace, etcd's key prefix
/// `/<space>/`. Names are valid Kubernetes object names.
pub trait Kv: Clone + Send + Sync + 'static {
    /// Writes a new object `name` with a 256-byte value; returns the store
    /// revision of the write (0 if unknown). With `retry`, "already exists"
    /// counts as success: an earlier attempt committed but its reply was lost.
    fn put(
        &self,
        space: &str,
        name: &str,
        retry: bool,
    ) -> impl Future<Output = anyhow::Result<u64>> + Send;

    /// A linearizable read of `name`; an error when it is missing.
    fn get(&self, space: &str, name: &str) -> impl Future<Output = anyhow::Result<()>> + Send;

    /// Every write in `space` after revision `after`. Resolves once the member
    /// has accepted the watch.
    fn watch(
        &self,
        space: &str,
        after: u64,
    ) -> impl Future<Output = anyhow::Result<NameStream>> + Send;
}

/// Writes `name`, retrying a failed attempt up to five times 50 ms apart (a
/// retry may find the object already written); `errors` counts the failed
/// attempts. The watch jobs use it so one lost reply does not end a run.
pub async fn put_retrying<C: Kv>(
    client: &C,
    space: &str,
    name: &str,
    errors: &mut usize,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        match client.put(space, name, attempt > 0).await {
            Ok(_) => return Ok(()),
            Err(e) if attempt < 5 => {
                *errors += 1;
                attempt += 1;
                eprintln!("  watch job: write {name} failed ({e:#}); retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.context(format!("writing {name}"))),
        }
    }
}

/// A running three-member cluster.
pub trait System {
    type Client: Kv;

    /// "Balsa" or "etcd".
    fn name(&self) -> &'static str;

    fn members(&self) -> usize;

    /// The process ids of the members running now (for their CPU time).
    fn pids(&self) -> Vec<u32>;

    /// A new connection to member `i` (an index into the member list).
    fn client(&self, i: usize) -> impl Future<Output = anyhow::Result<Self::Client>>;

    /// The index of the member that leads now.
    fn leader(&self) -> impl Future<Output = anyhow::Result<usize>>;

    /// SIGKILLs member `i`.
    fn kill(&mut self, i: usize) -> impl Future<Output = anyhow::Result<()>>;

    /// Starts member `i` again on its data and waits (up to `within`) until it
    /// has caught up with the leader's commit index.
    fn restart(&mut self, i: usize, within: Duration) -> impl Future<Output = anyhow::Result<()>>;

    /// Stops every member and removes the data (unless `keep_data`).
    fn shutdown(self, keep_data: bool) -> impl Future<Output = ()>;
}

/// Removes a system's temp dir, or keeps it (data and logs) and says where.
pub fn remove_or_keep(dir: tempfile::TempDir, keep: bool) {
    if keep {
        println!("kept data and logs in {}", dir.keep().display());
        return;
    }
    let path = dir.path().to_path_buf();
    if let Err(e) = dir.close() {
        eprintln!("warning: could not remove {}: {e}", path.display());
    }
}

/// Connects to the leader `n` times (separate HTTP/2 connections).
pub async fn leader_clients<S: System>(system: &S, n: usize) -> anyhow::Result<Vec<S::Client>> {
    let leader = system.leader().await?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(system.client(leader).await?);
    }
    Ok(out)
}

/// Zero-padded names sort and parse back to their index.
pub fn object_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i:07}")
}

/// The index in a name made by [`object_name`] with this prefix.
pub fn object_index(prefix: &str, name: &str) -> Option<usize> {
    name.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_256_plain_bytes() {
        let v = value();
        assert_eq!(v.len(), VALUE_LEN);
        assert!(v.bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn names_round_trip() {
        let n = object_name("w", 42);
        assert_eq!(n, "w-0000042");
        assert_eq!(object_index("w", &n), Some(42));
        assert_eq!(object_index("x", &n), None);
        assert_eq!(object_index("w", "w-abc"), None);
    }
}
