//! The API's one error type, answered as Docker does: a status code and `{"message": ...}`.

use hyper::StatusCode;
use vessel_engine::EngineError;

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Bad input: malformed JSON, a wrong type, an unsupported field or value (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such container, image, network or page (404).
    #[error("{0}")]
    NotFound(String),
    /// Credentials a registry refused (401).
    #[error("{0}")]
    Unauthorized(String),
    /// Refused outright: a predefined network, a network in use (403).
    #[error("{0}")]
    Forbidden(String),
    /// The state forbids it: a name in use, a running container to remove (409).
    #[error("{0}")]
    Conflict(String),
    /// A body over the cap (413).
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    /// A Docker endpoint vessel does not implement (501).
    #[error("{0} is not implemented by vessel")]
    NotImplemented(String),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
    /// Setting up the server failed (not answered to a client).
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: std::io::Error,
    },
}

impl ApiError {
    /// The HTTP status Docker answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) | ApiError::Setup { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        let msg = e.to_string();
        match e {
            EngineError::NoSuchInstance(k) => ApiError::NotFound(format!("No such container: {k}")),
            EngineError::NoSuchVolume(v) => ApiError::NotFound(format!("get {v}: no such volume")),
            EngineError::Image(vessel_image::Error::ImageNotFound(i)) => {
                ApiError::NotFound(format!("No such image: {i}"))
            }
            EngineError::Image(vessel_image::Error::InUse(..)) => ApiError::Conflict(msg),
            EngineError::Image(
                vessel_image::Error::InvalidReference { .. } | vessel_image::Error::InvalidInput(_),
            ) => ApiError::BadRequest(msg),
            EngineError::NameInUse(_)
            | EngineError::Conflict(_)
            | EngineError::Network(vessel_network::Error::AddressInUse(..)) => {
                ApiError::Conflict(msg)
            }
            EngineError::Network(vessel_network::Error::NoSuchNetwork(n)) => {
                ApiError::NotFound(format!("network {n} not found"))
            }
            EngineError::Network(
                vessel_network::Error::InvalidName(_)
                | vessel_network::Error::InvalidSubnet(_)
                | vessel_network::Error::InvalidMtu(_)
                | vessel_network::Error::ReservedName(_)
                | vessel_network::Error::InvalidAlias(_)
                | vessel_network::Error::InvalidAddress(_)
                | vessel_network::Error::InvalidPort(_),
            ) => ApiError::BadRequest(msg),
            EngineError::InvalidFlag(_) | EngineError::Ambiguous(_) => ApiError::BadRequest(msg),
            EngineError::CommandNotFound(_) | EngineError::NotExecutable(_) => {
                ApiError::BadRequest(msg)
            }
            _ => ApiError::Internal(msg),
        }
    }
}

impl From<vessel_image::Error> for ApiError {
    fn from(e: vessel_image::Error) -> ApiError {
        ApiError::from(EngineError::Image(e))
    }
}

impl From<vessel_network::Error> for ApiError {
    fn from(e: vessel_network::Error) -> ApiError {
        ApiError::from(EngineError::Network(e))
    }
}
