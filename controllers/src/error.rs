use balsa_api::registry::ApiError;

/// Why a reconcile failed; the runtime logs it once and retries with backoff.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step} {object}: {source}")]
    Api {
        step: &'static str,
        object: String,
        #[source]
        source: ApiError,
    },
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn api(step: &'static str, object: impl Into<String>) -> impl FnOnce(ApiError) -> Self {
        let object = object.into();
        move |source| Error::Api {
            step,
            object,
            source,
        }
    }
}
