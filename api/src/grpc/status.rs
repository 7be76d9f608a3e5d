//! `StoreError` <-> gRPC `Status`, in one place. The error itself travels as
//! JSON in the status details, so a client rebuilds the exact variant.

use tonic::{Code, Status};

use crate::store::StoreError;

pub fn to_status(e: &StoreError) -> Status {
    let code = match e {
        StoreError::NotFound { .. } => Code::NotFound,
        StoreError::AlreadyExists { .. } => Code::AlreadyExists,
        StoreError::Conflict { .. } => Code::Aborted,
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
