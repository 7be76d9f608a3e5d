//! One watcher and one cache per kind, shared by every controller that needs
//! the kind: each subscribes to its changes. The changes channel is bounded;
//! a subscriber that falls behind is told to resync (reconcile everything)
//! rather than letting the channel grow.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use tokio::sync::broadcast;

use super::api::{Api, Resource};
use super::reflector::{self, Store, Writer};
use super::watcher::{self, watcher, Event};

/// What a subscriber hears.
#[derive(Debug)]
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
    /// The cache was (re)built from a list: anything may have changed.
    Resynced,
}

impl<K> Clone for Change<K> {
    fn clone(&self) -> Self {
        match self {
            Change::Applied(k) => Change::Applied(k.clone()),
            Change::Deleted(k) => Change::Deleted(k.clone()),
            Change::Resynced => Change::Resynced,
        }
    }
}

const CHANGES: usize = 4096;

/// What the one `run` takes: where to watch, the cache's writer, settings.
type Parts<K> = (Api<K>, Writer<K>, watcher::Config);

pub struct Informer<K: Resource> {
    store: Store<K>,
    changes: broadcast::Sender<Change<K>>,
    /// Taken by the one `run`.
    parts: Arc<Mutex<Option<Parts<K>>>>,
}

impl<K: Resource> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self {
            store: self.store.clone(),
            changes: self.changes.clone(),
            parts: self.parts.clone(),
        }
    }
}

impl<K: Resource> Informer<K> {
    /// A cache of `api`'s objects, kept without their managedFields.
    pub fn new(api: Api<K>) -> Self {
        let config = watcher::Config {
            strip_managed_fields: true,
            ..Default::default()
        };
        Self::with_config(api, config)
    }

    pub fn with_config(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let (changes, _) = broadcast::channel(CHANGES);
        Self {
            store,
            changes,
            parts: Arc::new(Mutex::new(Some((api, writer, config)))),
        }
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change<K>> {
        self.changes.subscribe()
    }

    /// Keeps the cache until the future is dropped. Only the first call
    /// watches; later ones return at once.
    pub async fn run(&self) {
        let parts = self.parts.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some((api, mut writer, config)) = parts else {
            tracing::warn!(kind = K::KIND, "informer already running");
            return;
        };
        let mut events = std::pin::pin!(watcher(api, config));
        while let Some(item) = events.next().await {
            let event = match item {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(kind = K::KIND, error = %e.message, "watch failed; retrying");
                    continue;
                }
            };
            // No subscribers is fine: send only fails then.
            let _ = match writer.apply_owned(event) {
                Event::Apply(k) => self.changes.send(Change::Applied(k)),
                Event::Delete(k) => self.changes.send(Change::Deleted(k)),
                Event::InitDone => self.changes.send(Change::Resynced),
                Event::Init | Event::InitApply(_) | Event::Progress(_) => continue,
            };
        }
    }
}
