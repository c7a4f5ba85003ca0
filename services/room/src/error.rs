//! Errors of the room logic, each mapped once to a protocol error code.

use std::borrow::Cow;

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
    NotAllowed(Cow<'static, str>),
    #[error("{0}")]
    TooLarge(Cow<'static, str>),
    #[error("the service is temporarily unavailable; retry later")]
    Unavailable(#[source] BackendError),
    /// A refusal that came from another process (a room replica) as code + text.
    #[error("{message}")]
    Remote { code: ErrorCode, message: String },
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
            Self::Remote { code, .. } => *code,
        }
    }

    pub(crate) fn not_allowed(why: &'static str) -> Self {
        Self::NotAllowed(Cow::Borrowed(why))
    }

    pub(crate) fn too_large(why: &'static str) -> Self {
        Self::TooLarge(Cow::Borrowed(why))
    }

    /// The room service cannot be reached.
    pub fn unavailable(why: impl Into<String>) -> Self {
        Self::Unavailable(BackendError(why.into()))
    }
}

impl From<BackendError> for RoomError {
    fn from(err: BackendError) -> Self {
        Self::Unavailable(err)
    }
}
