//! A watcher: the whole state of a kind, then every change, for as long as it
//! is polled, across master failures.
//!
//! ```text
//!  Relist ──list ok──► Open(rev) ──watch opened──► Streaming(rev)
//!    ▲                   ▲   │                         │ events: rev advances
//!    │                   │   └─ error: back off ──┐    │ bookmarks: rev advances
//!    │                   └────────────────────────┴────┤ stream error / end:
//!    │                                                 │ resume after rev
//!    └──── 410 Expired (rev left the window), or ──────┘
//!          an event that does not decode as K
//! ```
//!
//! A list is delivered as `Init`, `InitApply` per object, `InitDone`, so a
//! cache can swap its whole content at once (objects deleted while the
//! watcher was away disappear), then `Progress` at the list's revision;
//! bookmarks are delivered as `Progress` too. Every event after that comes from one
//! replica's log in revision order; resuming on another replica after the
//! last revision seen neither repeats nor skips an event, because every
//! replica's log is the same.

use std::collections::VecDeque;
use std::time::Duration;

use balsa_proto::objects::{EventType as WireEventType, WatchReply};
use futures::{Stream, StreamExt};

use super::api::{Api, Resource};
use super::backoff::Backoff;
use super::managed_fields::without_managed_fields;
use crate::grpc::status::api_from_status;
use crate::registry::{ApiError, Reason};
use crate::store::Revision;

#[derive(Debug, Clone, PartialEq)]
pub enum Event<K> {
    /// A (re)list begins.
    Init,
    /// An object of the list.
    InitApply(K),
    /// The list is complete: what was not in it is gone.
    InitDone,
    /// An object was created or changed.
    Apply(K),
    /// An object was deleted (its last state).
    Delete(K),
    /// Every change up to this revision has been delivered: the end of a
    /// list, or a bookmark. A cache at this revision is at least as new as
    /// the store was then.
    Progress(Revision),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// How long an idle watch waits for a bookmark (which moves the resume
    /// point forward, so a resumed watch does not fall out of the window).
    pub bookmark_interval: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Objects come without metadata.managedFields (for caches; see
    /// `managed_fields`).
    pub strip_managed_fields: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            // A bookmark a second costs little and lets a watcher notice a
            // silent master within a few seconds.
            bookmark_interval: Duration::from_secs(1),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            strip_managed_fields: false,
        }
    }
}

enum Phase {
    Relist,
    Open(Revision),
    Streaming {
        stream: Box<tonic::Streaming<WatchReply>>,
        revision: Revision,
    },
}

struct State<K: Resource> {
    api: Api<K>,
    config: Config,
    phase: Phase,
    pending: VecDeque<Event<K>>,
    backoff: Backoff,
    /// A delay to wait before the next attempt (set after a failure).
    delay: Option<Duration>,
}

/// Watches `api`'s objects. The stream never ends by itself; errors are
/// yielded (for logging) and the watcher retries with backoff.
pub fn watcher<K: Resource>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<Event<K>, ApiError>> + Send {
    let state = State {
        backoff: Backoff::new(config.backoff_initial, config.backoff_max),
        api,
        config,
        phase: Phase::Relist,
        pending: VecDeque::new(),
        delay: None,
    };
    futures::stream::unfold(state, |mut s| async move {
        let item = s.step().await;
        Some((item, s))
    })
}

/// How long a watch may stay silent: bookmarks come every
/// `bookmark_interval` when nothing else does, so a few missed ones mean the
/// stream is dead.
fn idle_limit(config: &Config) -> Duration {
    (config.bookmark_interval * 3).max(Duration::from_secs(1))
}

fn is_expired(e: &ApiError) -> bool {
    matches!(e.reason, Reason::Expired | Reason::Gone)
}

fn decode<K: Resource>(reply: &WatchReply, strip: bool) -> Result<K, ApiError> {
    let object = if strip {
        without_managed_fields(&reply.object)
    } else {
        std::borrow::Cow::Borrowed(&reply.object[..])
    };
    serde_json::from_slice(&object).map_err(|e| {
        ApiError::internal(format!(
            "a watch event at revision {} cannot be read: {e}",
            reply.revision
        ))
    })
}

impl<K: Resource> State<K> {
    /// The next event, or the error of one failed attempt.
    async fn step(&mut self) -> Result<Event<K>, ApiError> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            if let Some(d) = self.delay.take() {
                tokio::time::sleep(d).await;
            }
            match &mut self.phase {
                Phase::Relist => match self.list().await {
                    Ok(list) => {
                        self.pending.push_back(Event::Init);
                        self.pending
                            .extend(list.items.into_iter().map(Event::InitApply));
                        self.pending.push_back(Event::InitDone);
                        self.pending.push_back(Event::Progress(list.revision));
                        self.phase = Phase::Open(list.revision);
                        self.backoff.reset();
                    }
                    Err(e) => return Err(self.failed(e)),
                },
                Phase::Open(revision) => {
                    let revision = *revision;
                    match self.open(revision).await {
                        Ok(stream) => {
                            self.phase = Phase::Streaming {
                                stream: Box::new(stream),
                                revision,
                            }
                        }
                        Err(e) => return Err(self.failed(e)),
                    }
                }
                Phase::Streaming { stream, revision } => {
                    let strip = self.config.strip_managed_fields;
                    match tokio::time::timeout(idle_limit(&self.config), stream.next()).await {
                        Err(_) => {
                            // Not even a bookmark: the master is frozen or the
                            // connection silently dead. Resume elsewhere.
                            let revision = *revision;
                            let status = tonic::Status::unavailable("the watch went silent");
                            self.api.client().failed(&status);
                            self.phase = Phase::Open(revision);
                            return Err(self.failed(api_from_status(&status)));
                        }
                        Ok(Some(Ok(reply))) => {
                            let event = match WireEventType::try_from(reply.r#type) {
                                Ok(WireEventType::Added | WireEventType::Modified) => {
                                    decode(&reply, strip).map(Event::Apply)
                                }
                                Ok(WireEventType::Deleted) => {
                                    decode(&reply, strip).map(Event::Delete)
                                }
                                Ok(WireEventType::Bookmark) => {
                                    Ok(Event::Progress(Revision(reply.revision).max(*revision)))
                                }
                                _ => continue,
                            };
                            let Ok(event) = event else {
                                // Resuming past an event the cache cannot take
                                // would leave it without that change for good:
                                // re-list instead (as client-go's reflector, it
                                // fails until the object reads again).
                                self.phase = Phase::Relist;
                                self.delay = Some(self.backoff.next_delay());
                                return event;
                            };
                            // Events and bookmarks alike move the resume point.
                            *revision = Revision(reply.revision).max(*revision);
                            self.backoff.reset();
                            return Ok(event);
                        }
                        Ok(Some(Err(status))) => {
                            self.api.client().failed(&status);
                            let revision = *revision;
                            self.phase = Phase::Open(revision);
                            return Err(self.failed(api_from_status(&status)));
                        }
                        Ok(None) => {
                            // The master ended the stream (shutting down): resume.
                            let revision = *revision;
                            self.phase = Phase::Open(revision);
                            self.delay = Some(self.backoff.next_delay());
                        }
                    }
                }
            }
        }
    }

    async fn list(&self) -> Result<super::ObjectList<K>, ApiError> {
        if self.config.strip_managed_fields {
            self.api.list_for_cache().await
        } else {
            self.api.list().await
        }
    }

    async fn open(&self, after: Revision) -> Result<tonic::Streaming<WatchReply>, ApiError> {
        let ms = u32::try_from(self.config.bookmark_interval.as_millis()).unwrap_or(u32::MAX);
        let req = self.api.watch_request(Some(after), ms);
        let channel = self.api.client().channel().await?;
        channel.send_watch(req).await.map_err(|s| {
            self.api.client().failed(&s);
            api_from_status(&s)
        })
    }

    /// After a failed attempt: 410 means re-list; anything else is retried
    /// where it failed, after a backoff.
    fn failed(&mut self, e: ApiError) -> ApiError {
        if is_expired(&e) {
            tracing::info!(error = %e.message, "watch expired; re-listing");
            self.phase = Phase::Relist;
        } else {
            self.delay = Some(self.backoff.next_delay());
        }
        e
    }
}
