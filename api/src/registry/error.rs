//! The one place errors become Kubernetes `Status` objects: every failure the
//! registry or the REST layer reports is an `ApiError`, whose reason and code
//! are those kube-apiserver gives for the same mistake.

use serde_json::{json, Value};

use crate::store::StoreError;

/// `Status.reason` values Balsa answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    AlreadyExists,
    Conflict,
    Gone,
    Expired,
    Invalid,
    MethodNotAllowed,
    NotAcceptable,
    UnsupportedMediaType,
    RequestEntityTooLarge,
    TooManyRequests,
    Timeout,
    ServiceUnavailable,
    InternalError,
}

impl Reason {
    pub fn code(self) -> u16 {
        match self {
            Reason::BadRequest => 400,
            Reason::Unauthorized => 401,
            Reason::Forbidden => 403,
            Reason::NotFound => 404,
            Reason::MethodNotAllowed => 405,
            Reason::NotAcceptable => 406,
            Reason::AlreadyExists | Reason::Conflict => 409,
            Reason::Gone | Reason::Expired => 410,
            Reason::RequestEntityTooLarge => 413,
            Reason::UnsupportedMediaType => 415,
            Reason::Invalid => 422,
            Reason::TooManyRequests => 429,
            Reason::InternalError => 500,
            Reason::ServiceUnavailable => 503,
            Reason::Timeout => 504,
        }
    }

    const ALL: [Reason; 17] = [
        Reason::BadRequest,
        Reason::Unauthorized,
        Reason::Forbidden,
        Reason::NotFound,
        Reason::AlreadyExists,
        Reason::Conflict,
        Reason::Gone,
        Reason::Expired,
        Reason::Invalid,
        Reason::MethodNotAllowed,
        Reason::NotAcceptable,
        Reason::UnsupportedMediaType,
        Reason::RequestEntityTooLarge,
        Reason::TooManyRequests,
        Reason::Timeout,
        Reason::ServiceUnavailable,
        Reason::InternalError,
    ];

    /// The reason a `Status` names; unknown ones become `InternalError`.
    pub fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .unwrap_or(Reason::InternalError)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::BadRequest => "BadRequest",
            Reason::Unauthorized => "Unauthorized",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Conflict => "Conflict",
            Reason::Gone => "Gone",
            Reason::Expired => "Expired",
            Reason::Invalid => "Invalid",
            Reason::MethodNotAllowed => "MethodNotAllowed",
            Reason::NotAcceptable => "NotAcceptable",
            Reason::UnsupportedMediaType => "UnsupportedMediaType",
            Reason::RequestEntityTooLarge => "RequestEntityTooLarge",
            Reason::TooManyRequests => "TooManyRequests",
            Reason::Timeout => "Timeout",
            Reason::ServiceUnavailable => "ServiceUnavailable",
            Reason::InternalError => "InternalError",
        }
    }
}

/// One invalid field, as `details.causes[]` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueNotSupported`,
    /// `FieldValueDuplicate`, `FieldValueTooLong`, `FieldValueTooMany`,
    /// `FieldValueForbidden`.
    pub reason: &'static str,
    pub field: String,
    pub message: String,
}

impl Cause {
    const REASONS: [&'static str; 7] = [
        "FieldValueInvalid",
        "FieldValueRequired",
        "FieldValueNotSupported",
        "FieldValueDuplicate",
        "FieldValueTooLong",
        "FieldValueTooMany",
        "FieldValueForbidden",
    ];

    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {why}"),
        }
    }

    /// field.Invalid with the value omitted (`field.OmitValueType{}`).
    pub fn invalid_omitted(field: impl Into<String>, why: &str) -> Self {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {why}"),
        }
    }

    pub fn required(field: impl Into<String>) -> Self {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// `Required value: why`, as field.Required with a detail.
    pub fn required_because(field: impl Into<String>, why: &str) -> Self {
        Cause {
            message: format!("Required value: {why}"),
            ..Cause::required(field)
        }
    }

    pub fn forbidden(field: impl Into<String>, why: &str) -> Self {
        Cause {
            reason: "FieldValueForbidden",
            field: field.into(),
            message: format!("Forbidden: {why}"),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }

    pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> Self {
        let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!(
                "Unsupported value: {value:?}: supported values: {}",
                list.join(", ")
            ),
        }
    }

    /// A value longer than `max` bytes (field.TooLong: the value is omitted).
    pub fn too_long(field: impl Into<String>, max: usize) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        Cause {
            reason: "FieldValueTooLong",
            field: field.into(),
            message: format!("Too long: may not be more than {max} {unit}"),
        }
    }

    /// A list of `actual` items where at most `max` are allowed.
    pub fn too_many(field: impl Into<String>, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Cause {
            reason: "FieldValueTooMany",
            field: field.into(),
            message: format!("Too many: {actual}: must have at most {max} {unit}"),
        }
    }

    pub fn unknown_field(field: impl Into<String>) -> Self {
        let field = field.into();
        Cause {
            reason: "FieldValueInvalid",
            message: format!("unknown field {field:?}"),
            field,
        }
    }

    /// `spec.replicas: Invalid value: -1: must be ...`
    pub fn line(&self) -> String {
        if self.field.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.field, self.message)
        }
    }
}

/// What the object in an error was: `deployments.apps "web"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub group: String,
    /// The plural resource name (kube puts it in `details.kind`).
    pub resource: String,
    pub kind: String,
    pub name: String,
}

impl Subject {
    /// `deployments.apps` / `pods`
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        }
    }
}

/// A failed API request, rendered as a `Status`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub reason: Reason,
    pub message: String,
    pub subject: Option<Box<Subject>>,
    pub causes: Vec<Cause>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        ApiError {
            reason,
            message: message.into(),
            subject: None,
            causes: Vec::new(),
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(Reason::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Reason::InternalError, message)
    }

    pub fn not_found(subject: Subject) -> Self {
        let message = format!("{} {:?} not found", subject.qualified(), subject.name);
        Self::new(Reason::NotFound, message).about(subject)
    }

    pub fn already_exists(subject: Subject) -> Self {
        let message = format!("{} {:?} already exists", subject.qualified(), subject.name);
        Self::new(Reason::AlreadyExists, message).about(subject)
    }

    pub fn conflict(subject: Subject, why: &str) -> Self {
        let message = format!(
            "Operation cannot be fulfilled on {} {:?}: {why}",
            subject.qualified(),
            subject.name
        );
        Self::new(Reason::Conflict, message).about(subject)
    }

    /// 422 with one line per cause, as kube-apiserver words it.
    pub fn invalid(subject: Subject, causes: Vec<Cause>) -> Self {
        let lines: Vec<String> = causes.iter().map(Cause::line).collect();
        let what = if subject.group.is_empty() {
            subject.kind.clone()
        } else {
            format!("{}.{}", subject.kind, subject.group)
        };
        let detail = match lines.len() {
            1 => lines[0].clone(),
            _ => format!("[{}]", lines.join(", ")),
        };
        let message = format!("{what} {:?} is invalid: {detail}", subject.name);
        ApiError {
            causes,
            ..Self::new(Reason::Invalid, message).about(subject)
        }
    }

    pub fn about(mut self, subject: Subject) -> Self {
        self.subject = Some(Box::new(subject));
        self
    }

    pub fn code(&self) -> u16 {
        self.reason.code()
    }

    /// The error as a store error, for the gRPC edge.
    pub fn to_store_error(&self) -> StoreError {
        let key = self
            .subject
            .as_ref()
            .map(|s| format!("{} {:?}", s.qualified(), s.name))
            .unwrap_or_default();
        match self.reason {
            Reason::NotFound => StoreError::NotFound { key },
            Reason::AlreadyExists => StoreError::AlreadyExists { key },
            Reason::Conflict => StoreError::Conflict {
                key,
                reason: self.message.clone(),
            },
            Reason::ServiceUnavailable | Reason::Timeout => {
                StoreError::Unavailable(self.message.clone())
            }
            Reason::InternalError => StoreError::Internal(self.message.clone()),
            _ => StoreError::Invalid(self.message.clone()),
        }
    }

    /// Reads a `Status` object back (what a client of the gRPC service gets);
    /// the inverse of `status`.
    pub fn from_status(status: &Value) -> Self {
        let details = &status["details"];
        let reason = Reason::parse(status["reason"].as_str().unwrap_or_default());
        let subject = details["kind"].as_str().map(|kind| {
            let (resource, kind) = if reason == Reason::Invalid {
                (String::new(), kind.to_string())
            } else {
                (kind.to_string(), String::new())
            };
            Box::new(Subject {
                group: details["group"].as_str().unwrap_or_default().into(),
                resource,
                kind,
                name: details["name"].as_str().unwrap_or_default().into(),
            })
        });
        let causes = details["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| Cause {
                reason: Cause::REASONS
                    .into_iter()
                    .find(|r| c["reason"] == *r)
                    .unwrap_or("FieldValueInvalid"),
                field: c["field"].as_str().unwrap_or_default().into(),
                message: c["message"].as_str().unwrap_or_default().into(),
            })
            .collect();
        ApiError {
            reason,
            message: status["message"].as_str().unwrap_or_default().into(),
            subject,
            causes,
            retry_after: details["retryAfterSeconds"].as_u64(),
        }
    }

    /// The `Status` object.
    pub fn status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason.as_str(),
            "code": self.code(),
        });
        let mut details = serde_json::Map::new();
        if let Some(s) = &self.subject {
            if !s.name.is_empty() {
                details.insert("name".into(), json!(s.name));
            }
            if !s.group.is_empty() {
                details.insert("group".into(), json!(s.group));
            }
            // Invalid names the Kind (NewInvalid takes a GroupKind, and
            // kubectl prints `The Deployment "web" is invalid`); every other
            // reason the resource.
            let kind = if self.reason == Reason::Invalid && !s.kind.is_empty() {
                &s.kind
            } else {
                &s.resource
            };
            details.insert("kind".into(), json!(kind));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(secs) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(secs));
        }
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }

    /// Maps a store failure about `subject`.
    pub fn from_store(e: StoreError, subject: Subject) -> Self {
        match e {
            StoreError::NotFound { .. } => Self::not_found(subject),
            StoreError::AlreadyExists { .. } => Self::already_exists(subject),
            StoreError::Conflict { reason, .. } => {
                let why = if reason.contains("uid") {
                    format!("Precondition failed: {reason}")
                } else {
                    "the object has been modified; please apply your changes to the latest version and try again".to_string()
                };
                Self::conflict(subject, &why)
            }
            StoreError::Fenced(why) => Self::conflict(subject, &why),
            StoreError::Expired { requested, oldest } => Self::new(
                Reason::Expired,
                format!("too old resource version: {requested} ({oldest})"),
            ),
            StoreError::Invalid(m) => Self::bad_request(m).about(subject),
            StoreError::TooLarge { size, limit, .. } => Self::new(
                Reason::RequestEntityTooLarge,
                format!("Request entity too large: the object is {size} bytes, limit is {limit}"),
            )
            .about(subject),
            StoreError::NotLeader { .. } | StoreError::Unavailable(_) => {
                let mut err = Self::new(
                    Reason::ServiceUnavailable,
                    format!("the store is unavailable, retry: {e}"),
                );
                err.retry_after = Some(1);
                err
            }
            StoreError::WatchCutOff(m) => Self::new(Reason::Gone, m),
            StoreError::Internal(m) => Self::internal(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str) -> Subject {
        Subject {
            group: "apps".into(),
            resource: "deployments".into(),
            kind: "Deployment".into(),
            name: name.into(),
        }
    }

    #[test]
    fn statuses_read_like_kube_apiservers() {
        let e = ApiError::not_found(deployment("web"));
        assert_eq!(e.message, r#"deployments.apps "web" not found"#);
        let s = e.status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["details"]["group"], "apps");

        let e = ApiError::invalid(
            deployment("web"),
            vec![Cause::invalid(
                "spec.replicas",
                -1,
                "must be greater than or equal to 0",
            )],
        );
        assert_eq!(
            e.message,
            r#"Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"#
        );
        let s = e.status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"][0]["field"], "spec.replicas");
        // Invalid names the Kind, as NewInvalid does.
        assert_eq!(s["details"]["kind"], "Deployment");
        assert_eq!(s["details"]["group"], "apps");
        let back = ApiError::from_status(&s);
        assert_eq!(back.subject.map(|s| s.kind), Some("Deployment".into()));

        let e = ApiError::from_store(
            StoreError::Conflict {
                key: String::new(),
                reason: "revision".into(),
            },
            deployment("web"),
        );
        assert_eq!(e.code(), 409);
        assert!(e.message.contains("the object has been modified"));
        assert_eq!(
            ApiError::from_store(
                StoreError::expired(crate::Revision(3), crate::Revision(9)),
                deployment("x")
            )
            .code(),
            410
        );
    }
}
