//! Errors of the room logic, each mapped once to a protocol error code.

use switchboard_proto::ErrorCode;

/// A backend (store or bus) failed; the request may be retried later.
#[derive(Debug, Clone, thiserror::Error)]
#[error("backend unavailable: {0}")]
pub struct BackendError(pub String);

/// Why a request was refused. The `Display` text is safe to show a client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RoomError {
    #[error("join the room first")]
    NotInRoom,
    #[error("no such offer (it may have been answered, withdrawn or expired)")]
    OfferNotFound,
    #[error("the offer was already answered")]
    OfferTaken,
    #[error("{0}")]
    NotAllowed(&'static str),
    #[error("{0}")]
    TooLarge(&'static str),
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] BackendError),
}

impl RoomError {
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotInRoom => ErrorCode::NotInRoom,
            Self::OfferNotFound => ErrorCode::OfferNotFound,
            Self::OfferTaken => ErrorCode::OfferTaken,
            Self::NotAllowed(_) => ErrorCode::NotAllowed,
            Self::TooLarge(_) => ErrorCode::TooLarge,
            Self::Unavailable(_) => ErrorCode::Unavailable,
        }
    }
}

impl From<BackendError> for RoomError {
    fn from(err: BackendError) -> Self {
        Self::Unavailable(err)
    }
}
