//! Storage failpoints for the chaos harness: a slow log sync (a slow disk) and
//! a failing one (an fsync that returns an I/O error). They exist only when the
//! crate is built with the `failpoints` feature; without it [`before_log_sync`]
//! is an empty inline function and [`set`] refuses anything but "no faults", so
//! a plain build pays nothing and cannot be told to misbehave.
//!
//! What must stay true under a failing sync: the append's callback gets the
//! error, openraft treats it as fatal (the Raft node stops, nothing in that
//! append is reported as persisted, so no write in it is acknowledged by this
//! replica), and the master exits (`balsa server` watches
//! [`crate::Replica::fatal_error`]).

use std::time::Duration;

/// The storage faults in force (all off by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failpoints {
    /// Sleep this long before each log sync.
    pub log_sync_delay: Option<Duration>,
    /// Fail every log sync with an I/O error.
    pub log_sync_error: bool,
}

impl Failpoints {
    pub fn is_none(&self) -> bool {
        *self == Failpoints::default()
    }
}

/// Whether this build has failpoints compiled in.
pub const ENABLED: bool = cfg!(feature = "failpoints");

#[cfg(feature = "failpoints")]
static STATE: std::sync::RwLock<Failpoints> = std::sync::RwLock::new(Failpoints {
    log_sync_delay: None,
    log_sync_error: false,
});

/// Puts `f` in force for this process (every replica in it).
#[cfg(feature = "failpoints")]
pub fn set(f: Failpoints) -> Result<(), &'static str> {
    *STATE.write().unwrap_or_else(|e| e.into_inner()) = f;
    Ok(())
}

/// Without the feature only "no faults" is accepted.
#[cfg(not(feature = "failpoints"))]
pub fn set(f: Failpoints) -> Result<(), &'static str> {
    if f.is_none() {
        Ok(())
    } else {
        Err("this balsa was built without the `failpoints` feature")
    }
}

/// Called by the log flusher before each sync: waits out a slow disk and
/// returns the injected sync error, if any.
#[cfg(feature = "failpoints")]
pub async fn before_log_sync() -> Result<(), std::io::Error> {
    let f = STATE.read().unwrap_or_else(|e| e.into_inner()).clone();
    if let Some(d) = f.log_sync_delay {
        tokio::time::sleep(d).await;
    }
    if f.log_sync_error {
        return Err(std::io::Error::other("failpoint log-sync-error"));
    }
    Ok(())
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub async fn before_log_sync() -> Result<(), std::io::Error> {
    Ok(())
}

#[cfg(all(test, feature = "failpoints"))]
mod tests {
    use std::time::Duration;

    use balsa_api::{Op, ResourceKey, Revision, Store, StoreError};

    use super::*;
    use crate::{Faults, Member, Replica, ReplicaConfig};

    async fn create(r: &Replica, name: &str) -> Result<Revision, StoreError> {
        let value = serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default"},
        })
        .to_string()
        .into();
        let key = ResourceKey::new("", "configmaps", Some("default"), name);
        r.txn(vec![Op::Create { key, value }])
            .await
            .map(|(rev, _)| rev)
    }

    /// A failed log sync must never be acknowledged: the write fails, the
    /// Raft node stops, and the replica says so (its owner then exits).
    #[tokio::test]
    async fn a_failed_log_sync_is_never_acknowledged_and_stops_the_replica() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = ReplicaConfig::new(1, dir.path().join("r1"));
        config.request_timeout = Duration::from_secs(5);
        let me = Member {
            peer_addr: "127.0.0.1:1".into(),
            api_addr: "127.0.0.1:2".into(),
        };
        let replica = Replica::open(config, me.clone(), Faults::default())
            .await
            .expect("open");
        replica
            .initialize([(1, me)].into(), None)
            .await
            .expect("init");
        // Writes succeed (retrying while the single member elects itself).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match create(&replica, "before").await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() > deadline => panic!("no write: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        assert!(replica.fatal_error().is_none());

        set(Failpoints {
            log_sync_delay: None,
            log_sync_error: true,
        })
        .expect("failpoints compiled in");
        let written = create(&replica, "after").await;
        set(Failpoints::default()).expect("heal");
        assert!(
            written.is_err(),
            "a write whose log sync failed was acknowledged: {written:?}"
        );
        // The node stops on the storage error; nothing is served as written.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while replica.fatal_error().is_none() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the replica kept running after a failed log sync"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(matches!(
            create(&replica, "later").await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(replica.own_status().error.contains("raft has stopped"));
    }
}
