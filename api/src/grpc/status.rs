//! Errors <-> gRPC `Status`, in one place. The error itself travels as JSON in
//! the status details, so a client rebuilds it exactly: a `StoreError` as
//! itself, a registry's `ApiError` as the Kubernetes `Status` object the REST
//! API would have answered.

use tonic::{Code, Status};

use crate::registry::{ApiError, Reason};
use crate::store::StoreError;

/// A registry error: the code follows its HTTP code, the details hold its
/// Kubernetes `Status`.
pub fn api_to_status(e: &ApiError) -> Status {
    let code = match e.reason {
        Reason::NotFound => Code::NotFound,
        Reason::AlreadyExists => Code::AlreadyExists,
        Reason::Conflict => Code::Aborted,
        Reason::Gone | Reason::Expired => Code::OutOfRange,
        Reason::Unauthorized => Code::Unauthenticated,
        Reason::Forbidden => Code::PermissionDenied,
        Reason::TooManyRequests => Code::ResourceExhausted,
        Reason::ServiceUnavailable => Code::Unavailable,
        Reason::Timeout => Code::DeadlineExceeded,
        Reason::InternalError => Code::Internal,
        _ => Code::InvalidArgument,
    };
    let details = serde_json::to_vec(&e.status()).unwrap_or_default();
    Status::with_details(code, e.message.clone(), details.into())
}

/// What the registry (or the store behind it) answered, as an `ApiError`;
/// transport failures are `ServiceUnavailable`.
pub fn api_from_status(s: &Status) -> ApiError {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(s.details()) {
        if v["kind"] == "Status" {
            return ApiError::from_status(&v);
        }
    }
    let e = from_status(s);
    ApiError::from_store(e, Default::default())
}

pub fn to_status(e: &StoreError) -> Status {
    let code = match e {
        StoreError::NotFound { .. } => Code::NotFound,
        StoreError::AlreadyExists { .. } => Code::AlreadyExists,
        StoreError::Conflict { .. } => Code::Aborted,
        StoreError::Fenced(_) => Code::FailedPrecondition,
        StoreError::Expired { .. } => Code::OutOfRange,
        StoreError::Invalid(_) | StoreError::TooLarge { .. } => Code::InvalidArgument,
        StoreError::NotLeader { .. } | StoreError::Unavailable(_) => Code::Unavailable,
        StoreError::WatchCutOff(_) => Code::ResourceExhausted,
        StoreError::Internal(_) => Code::Internal,
    };
    let details = serde_json::to_vec(e).unwrap_or_default();
    Status::with_details(code, e.to_string(), details.into())
}

pub fn from_status(s: &Status) -> StoreError {
    if let Ok(e) = serde_json::from_slice::<StoreError>(s.details()) {
        return e;
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(s.details()) {
        if v["kind"] == "Status" {
            return ApiError::from_status(&v).to_store_error();
        }
    }
    let msg = s.message().to_string();
    match s.code() {
        Code::NotFound => StoreError::NotFound { key: msg },
        Code::AlreadyExists => StoreError::AlreadyExists { key: msg },
        Code::InvalidArgument => StoreError::Invalid(msg),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
            StoreError::Unavailable(msg)
        }
        _ => StoreError::Internal(format!("{:?}: {msg}", s.code())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_errors_survive_the_wire() {
        use crate::registry::{Cause, Subject};
        let subject = Subject {
            group: "apps".into(),
            resource: "deployments".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        };
        let invalid = ApiError::invalid(subject.clone(), vec![Cause::required("spec.selector")]);
        let back = api_from_status(&api_to_status(&invalid));
        assert_eq!(back.reason, Reason::Invalid);
        assert_eq!(back.message, invalid.message);
        assert_eq!(back.causes, invalid.causes);
        assert_eq!(back.subject.as_ref().map(|s| s.name.as_str()), Some("web"));
        assert_eq!(back.status(), invalid.status());

        let mut busy = ApiError::new(Reason::TooManyRequests, "Cannot evict pod");
        busy.retry_after = Some(10);
        let status = api_to_status(&busy);
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(api_from_status(&status), busy);
        // Store errors read as API errors too.
        let gone = api_from_status(&to_status(&StoreError::Expired {
            requested: 1,
            oldest: 5,
        }));
        assert_eq!(gone.reason, Reason::Expired);
    }

    #[test]
    fn errors_survive_the_wire() {
        for e in [
            StoreError::Expired {
                requested: 3,
                oldest: 9,
            },
            StoreError::NotLeader {
                leader: Some("127.0.0.1:1".into()),
            },
            StoreError::TooLarge {
                key: "k".into(),
                size: 2,
                limit: 1,
            },
        ] {
            assert_eq!(from_status(&to_status(&e)), e);
        }
        assert_eq!(
            to_status(&StoreError::Expired {
                requested: 1,
                oldest: 2
            })
            .code(),
            Code::OutOfRange
        );
    }
}
