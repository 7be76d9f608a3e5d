//! A watch stream: one task per watcher pulls from the window and feeds a
//! bounded channel. A watcher that reads too slowly falls behind the window and
//! is cut off with a reason; it never makes the store hold more memory.
//!
//! A watcher is woken only by events of its own resource (see the window's
//! `subscribe_resource`), so its cursor may stay behind other resources'
//! revisions; before a bookmark it scans again, so the bookmark carries the
//! newest revision.
//!
//! Bookmarks say "nothing happened up to here", which only a replica in touch
//! with the cluster can say: while `fresh` is false (no known leader, Raft
//! stopped) they are withheld, the watch goes silent, and a client that
//! expects bookmarks moves to another replica.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::window::WatchWindow;
use super::{KeyPrefix, StoreError, WatchEvent, WatchOptions, WatchStream};

const CHANNEL: usize = 1024;
const PAGE: usize = 512;

pub fn watch(
    window: Arc<WatchWindow>,
    prefix: KeyPrefix,
    opts: WatchOptions,
    fresh: Option<watch::Receiver<bool>>,
) -> Result<WatchStream, StoreError> {
    prefix.validate()?;
    // Refuse a too-old start now, so the caller gets the error, not a stream.
    window.read().check(opts.after)?;
    let (tx, rx) = mpsc::channel(CHANNEL);
    tokio::spawn(feed(window, prefix, opts, fresh, tx));
    Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
}

async fn feed(
    window: Arc<WatchWindow>,
    prefix: KeyPrefix,
    opts: WatchOptions,
    fresh: Option<watch::Receiver<bool>>,
    tx: mpsc::Sender<Result<WatchEvent, StoreError>>,
) {
    let mut changes = window.subscribe_resource(&prefix.group, &prefix.resource);
    let mut cursor = opts.after;
    let bookmark_every = opts.bookmark_interval.unwrap_or(Duration::MAX);
    let mut last_sent = Instant::now();
    let mut bookmark_due = false;
    loop {
        changes.mark_unchanged();
        // The start was checked strictly in `watch`; from here on the watcher
        // is only cut off if it missed an event of its own prefix.
        let page = window.read().events_after_continuing(cursor, &prefix, PAGE);
        let (events, upto) = match page {
            Ok(page) => page,
            Err(StoreError::Expired { .. }) => {
                let reason = format!("watcher fell behind the watch window at revision {cursor}");
                let _ = tx.send(Err(StoreError::WatchCutOff(reason))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        let sent_any = !events.is_empty();
        for event in events {
            if tx.send(Ok(WatchEvent::Event(event))).await.is_err() {
                return;
            }
        }
        if sent_any {
            last_sent = Instant::now();
            bookmark_due = false;
        }
        let caught_up = upto >= window.current();
        cursor = upto;
        if !caught_up {
            continue;
        }
        if bookmark_due {
            bookmark_due = false;
            let is_fresh = fresh.as_ref().is_none_or(|f| *f.borrow());
            if is_fresh && tx.send(Ok(WatchEvent::Bookmark(cursor))).await.is_err() {
                return;
            }
            last_sent = Instant::now();
        }
        let bookmark_at = last_sent.checked_add(bookmark_every);
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    let _ = tx.send(Err(StoreError::Unavailable("store is shutting down".into()))).await;
                    return;
                }
            }
            // Scan first: the cursor only follows this resource's events.
            _ = sleep_until(bookmark_at) => bookmark_due = true,
            _ = tx.closed() => return,
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::store::window::WindowConfig;
    use crate::store::{Event, Revision};

    fn ev(rev: u64, resource: &str, name: &str) -> Event {
        crate::store::window::added_event(rev, resource, name)
    }

    async fn next(w: &mut WatchStream) -> WatchEvent {
        tokio::time::timeout(Duration::from_secs(5), w.next())
            .await
            .expect("an event or bookmark within 5 s")
            .expect("stream open")
            .expect("no error")
    }

    /// Writes to other resources do not wake a watcher, yet its bookmarks
    /// carry the newest revision, and its own events still come in order.
    #[tokio::test]
    async fn a_watcher_sleeps_through_other_resources_and_bookmarks_the_newest() {
        let window = WatchWindow::new(WindowConfig::default(), Revision(0));
        let prefix = KeyPrefix::resource("", "pods");
        let mut w = watch(
            window.clone(),
            prefix,
            WatchOptions {
                after: Revision(0),
                bookmark_interval: Some(Duration::from_millis(50)),
            },
            None,
        )
        .unwrap();
        window.write().push(Revision(1), vec![ev(1, "pods", "a")]);
        for rev in 2..=5 {
            window
                .write()
                .push(Revision(rev), vec![ev(rev, "configmaps", "c")]);
        }
        match next(&mut w).await {
            WatchEvent::Event(e) => assert_eq!(e.revision, Revision(1)),
            other => panic!("expected the pod event, got {other:?}"),
        }
        assert_eq!(next(&mut w).await, WatchEvent::Bookmark(Revision(5)));
        window.write().push(Revision(6), vec![ev(6, "pods", "b")]);
        match next(&mut w).await {
            WatchEvent::Event(e) => assert_eq!(e.revision, Revision(6)),
            other => panic!("expected the second pod event, got {other:?}"),
        }
    }
}
