//! How a write carries its fence (see `store::fence`) over gRPC: the term in
//! one request header, set by a client built for a leader-only control loop
//! and read by the Objects service, which then serves the request through a
//! fenced registry.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

use crate::store::{Fence, Lease};

pub const HEADER: &str = "balsa-fence-term";

/// Where a fenced client reads the lease it writes under: `None` while the
/// loop does not lead.
pub type LeaseSource = tokio::sync::watch::Receiver<Option<Lease>>;

/// The request, carrying the current lease's fence when `source` is given.
/// A loop that no longer leads is refused here, before anything is sent.
pub fn attach<T>(req: T, source: Option<&LeaseSource>) -> Result<Request<T>, Status> {
    let mut req = Request::new(req);
    let Some(source) = source else {
        return Ok(req);
    };
    let Some(lease) = *source.borrow() else {
        return Err(Status::aborted(
            "this control loop no longer leads; its writes are refused",
        ));
    };
    req.metadata_mut()
        .insert(HEADER, MetadataValue::from(lease.term));
    Ok(req)
}

/// The fence a request carries, if any.
pub fn read(md: &MetadataMap) -> Result<Option<Fence>, Status> {
    let Some(v) = md.get(HEADER) else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .map(|term| Some(Fence { term }))
        .ok_or_else(|| Status::invalid_argument(format!("{HEADER} must be a Raft term")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Revision;

    #[test]
    fn a_fenced_request_carries_the_current_term_and_none_without_a_lease() {
        let (tx, rx) = tokio::sync::watch::channel(Some(Lease {
            term: 7,
            revision: Revision(40),
        }));
        let req = attach((), Some(&rx)).unwrap();
        assert_eq!(read(req.metadata()).unwrap(), Some(Fence { term: 7 }));
        assert_eq!(read(attach((), None).unwrap().metadata()).unwrap(), None);
        tx.send_replace(None);
        assert_eq!(
            attach((), Some(&rx)).unwrap_err().code(),
            tonic::Code::Aborted
        );
    }
}
