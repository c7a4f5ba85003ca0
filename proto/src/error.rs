//! Protocol error codes, as carried in `{"type":"error","code":…}` frames.
//!
//! [`FieldError`] is how a field newtype (a room name, an SDP…) reports *which*
//! code its rejection maps to through serde, whose errors only carry text: its
//! `Display` starts with the code, and [`crate::client`] reads it back.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Every error code a client can receive. See `docs/PROTOCOL.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, not an object, no string `type`, wrong field types, binary frame.
    BadMessage,
    /// A well-formed message whose `type` the server does not know.
    UnknownType,
    /// Something exceeds a size or count limit (the frame limit itself closes with 1009).
    TooLarge,
    /// An SDP that does not start with `v=0` or is too long.
    InvalidSdp,
    /// A room name outside `[A-Za-z0-9_.~-]{1,128}`.
    InvalidRoom,
    /// The message needs membership of a room the peer has not joined.
    NotInRoom,
    /// No such offer: never existed, expired, withdrawn or ended.
    OfferNotFound,
    /// Another peer already answered this offer.
    OfferTaken,
    /// The peer is not a party allowed to do this.
    NotAllowed,
    /// The peer sends faster than the server allows.
    RateLimited,
    /// Authentication failed or is missing.
    Unauthorized,
    /// A backend is down; retry later.
    Unavailable,
    /// A server bug; the message was not processed.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 13] = [
        Self::BadMessage,
        Self::UnknownType,
        Self::TooLarge,
        Self::InvalidSdp,
        Self::InvalidRoom,
        Self::NotInRoom,
        Self::OfferNotFound,
        Self::OfferTaken,
        Self::NotAllowed,
        Self::RateLimited,
        Self::Unauthorized,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The wire spelling, e.g. `"offer_taken"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadMessage => "bad_message",
            Self::UnknownType => "unknown_type",
            Self::TooLarge => "too_large",
            Self::InvalidSdp => "invalid_sdp",
            Self::InvalidRoom => "invalid_room",
            Self::NotInRoom => "not_in_room",
            Self::OfferNotFound => "offer_not_found",
            Self::OfferTaken => "offer_taken",
            Self::NotAllowed => "not_allowed",
            Self::RateLimited => "rate_limited",
            Self::Unauthorized => "unauthorized",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The text is not one of the error codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code")]
pub struct UnknownCode;

impl FromStr for ErrorCode {
    type Err = UnknownCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or(UnknownCode)
    }
}

/// A field value rejected while parsing, with the error code it maps to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct FieldError {
    pub code: ErrorCode,
    pub message: String,
}

impl FieldError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_their_wire_spelling() {
        for code in ErrorCode::ALL {
            assert_eq!(code.as_str().parse::<ErrorCode>(), Ok(code));
            let json = serde_json::to_string(&code).expect("serialize");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        assert_eq!("nope".parse::<ErrorCode>(), Err(UnknownCode));
    }
}
