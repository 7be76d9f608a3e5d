//! A client of any of the masters: it talks to one at a time and moves to the
//! next when that one cannot be reached. Writes need no leader here: every
//! master forwards them.

use std::sync::{Arc, Mutex};

use tonic::service::Routes;
use tonic::{Code, Status};

use super::leader::Leadership;
use crate::grpc::client::Client as Channel;
use crate::grpc::fence::LeaseSource;
use crate::registry::{ApiError, Reason};

#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<String>,
    /// Inside a master, its own API services: every call goes there and
    /// `endpoints` only names them (see `grpc::transport`).
    local: Option<Channel>,
    /// The endpoint in use, and its connection once made.
    current: Mutex<(usize, Option<Channel>)>,
    /// See `fenced_by`.
    fence: Option<LeaseSource>,
}

/// Could another master answer this? (It could not be reached, or it has no
/// leader or quorum now: a partitioned master says so.)
pub(crate) fn is_transport(s: &Status) -> bool {
    matches!(
        s.code(),
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded
    )
}

impl Client {
    /// A client of these masters' API addresses (`host:port`); nothing is
    /// dialled until the first call.
    pub fn new(endpoints: Vec<String>) -> Result<Self, ApiError> {
        if endpoints.is_empty() {
            return Err(ApiError::bad_request("a client needs at least one master"));
        }
        Ok(Self::with(endpoints, None, None))
    }

    fn with(endpoints: Vec<String>, local: Option<Channel>, fence: Option<LeaseSource>) -> Self {
        Self {
            inner: Arc::new(Inner {
                endpoints,
                local,
                current: Mutex::new((0, None)),
                fence,
            }),
        }
    }

    /// A client of this process's own API services (`routes`, which the
    /// listener at `addr` also serves): for the control loops a master runs.
    pub fn local(routes: Routes, addr: String) -> Self {
        Self::with(vec![addr], Some(Channel::local(routes)), None)
    }

    /// The same masters, with writes fenced by `fence`.
    fn with_fence(&self, fence: Option<LeaseSource>) -> Self {
        Self::with(
            self.inner.endpoints.clone(),
            self.inner.local.clone(),
            fence,
        )
    }

    /// A client for a leader-only control loop: each write it sends carries
    /// the lease `leadership` holds at that moment, so a master refuses it
    /// once that leadership is gone (see `store::fence`), and a write made
    /// while not leading is refused before it is sent.
    pub fn fenced_by(&self, leadership: &Leadership) -> Self {
        self.with_fence(Some(leadership.source()))
    }

    /// The same masters without a fence, for writes that are observations
    /// rather than decisions: Events. Upstream's event broadcaster writes
    /// through a client of its own that no leader election fences, so an
    /// Event recorded just before leadership moved is still written.
    pub fn unfenced(&self) -> Self {
        if self.inner.fence.is_none() {
            return self.clone();
        }
        self.with_fence(None)
    }

    /// An unfenced client of the store's Objects service (what the typed
    /// client is built on), on the current master or this process's own.
    pub async fn raw(&self) -> Result<Channel, ApiError> {
        self.unfenced().channel().await
    }

    pub fn endpoints(&self) -> &[String] {
        &self.inner.endpoints
    }

    /// The connection to the current master, dialling the masters in turn
    /// until one answers.
    pub(crate) async fn channel(&self) -> Result<Channel, ApiError> {
        if let Some(local) = &self.inner.local {
            return Ok(local.clone().fenced(self.inner.fence.clone()));
        }
        let start = {
            let cur = self.lock();
            if let Some(c) = &cur.1 {
                return Ok(c.clone());
            }
            cur.0
        };
        let n = self.inner.endpoints.len();
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            match Channel::connect(&self.inner.endpoints[idx]).await {
                Ok(c) => {
                    let c = c.fenced(self.inner.fence.clone());
                    let mut cur = self.lock();
                    *cur = (idx, Some(c.clone()));
                    return Ok(c);
                }
                Err(e) => last = Some(e),
            }
        }
        let why = last.map(|e| e.to_string()).unwrap_or_default();
        Err(ApiError::new(
            Reason::ServiceUnavailable,
            format!("no master could be reached: {why}"),
        ))
    }

    /// Notes that a call on the current master failed in transport: the next
    /// call goes to the next master.
    pub(crate) fn failed(&self, s: &Status) {
        if is_transport(s) {
            let mut cur = self.lock();
            tracing::debug!(
                endpoint = %self.inner.endpoints[cur.0],
                error = %s.message(),
                "master unreachable; moving to the next"
            );
            cur.0 = (cur.0 + 1) % self.inner.endpoints.len();
            cur.1 = None;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, Option<Channel>)> {
        // The lock guards two plain fields and is never held across an await;
        // a poisoned one still holds a usable value.
        self.inner
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfenced_drops_the_fence_and_keeps_the_masters() {
        let plain = Client::new(vec!["a:1".into(), "b:2".into()]).expect("client");
        let fenced = plain.fenced_by(&Leadership::always());
        assert!(fenced.inner.fence.is_some());
        let events = fenced.unfenced();
        assert!(events.inner.fence.is_none());
        assert_eq!(events.endpoints(), plain.endpoints());
        // An unfenced client is its own unfenced form.
        assert!(Arc::ptr_eq(&plain.unfenced().inner, &plain.inner));
    }
}
