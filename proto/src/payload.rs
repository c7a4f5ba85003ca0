//! What peers exchange through the server: session descriptions (`Sdp`), trickled
//! ICE candidates (`Candidate`), and the ICE server list handed out in `welcome`.
//!
//! Payloads are opaque to the server beyond the checks here, which bound their size
//! so that nothing a client sends can grow server memory without limit.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{ErrorCode, FieldError};
use crate::ids::parse_str;

/// An SDP offer or answer: starts with `v=0`, at most [`Sdp::MAX_BYTES`].
/// Shared (`Arc`), because one offer is shown to many peers.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Sdp(Arc<str>);

impl Sdp {
    pub const MAX_BYTES: usize = 32 * 1024;

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        if !s.starts_with("v=0") {
            return Err(FieldError::new(
                ErrorCode::InvalidSdp,
                "an SDP must start with v=0",
            ));
        }
        if s.len() > Self::MAX_BYTES {
            return Err(FieldError::new(
                ErrorCode::InvalidSdp,
                format!("an SDP may be at most {} bytes", Self::MAX_BYTES),
            ));
        }
        Ok(Self(s.into()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Sdp {
    /// Never prints the contents (they carry addresses and fingerprints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sdp({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Sdp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_str(d, Sdp::parse)
    }
}

/// A trickled ICE candidate: the browser's `RTCIceCandidateInit` as JSON.
/// An empty `candidate` string means end-of-candidates.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", try_from = "CandidateFields")]
pub struct Candidate {
    pub candidate: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

impl Candidate {
    /// Longest `candidate` line accepted (real ones are under 200 bytes).
    pub const MAX_CANDIDATE_BYTES: usize = 1024;
    /// Longest `sdpMid` or `usernameFragment` accepted.
    pub const MAX_FIELD_BYTES: usize = 256;
}

impl fmt::Debug for Candidate {
    /// Never prints the contents (they carry network addresses).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Candidate({} bytes)", self.candidate.len())
    }
}

/// The unchecked shape of a candidate, checked by `TryFrom` into [`Candidate`].
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CandidateFields {
    #[serde(default)]
    candidate: String,
    #[serde(default)]
    sdp_mid: Option<String>,
    #[serde(default, rename = "sdpMLineIndex")]
    sdp_m_line_index: Option<u16>,
    #[serde(default)]
    username_fragment: Option<String>,
}

impl TryFrom<CandidateFields> for Candidate {
    type Error = FieldError;

    fn try_from(c: CandidateFields) -> Result<Self, Self::Error> {
        Self::new(
            c.candidate,
            c.sdp_mid,
            c.sdp_m_line_index,
            c.username_fragment,
        )
    }
}

impl Candidate {
    /// A candidate, if every field is within its size limit.
    pub fn new(
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
        username_fragment: Option<String>,
    ) -> Result<Self, FieldError> {
        let too_long =
            |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > Self::MAX_FIELD_BYTES);
        if candidate.len() > Self::MAX_CANDIDATE_BYTES
            || too_long(&sdp_mid)
            || too_long(&username_fragment)
        {
            return Err(FieldError::new(
                ErrorCode::TooLarge,
                format!(
                    "a candidate line may be at most {} bytes, sdpMid and usernameFragment {}",
                    Self::MAX_CANDIDATE_BYTES,
                    Self::MAX_FIELD_BYTES
                ),
            ));
        }
        Ok(Self {
            candidate,
            sdp_mid,
            sdp_m_line_index,
            username_fragment,
        })
    }
}

/// One entry of the browser's `RTCConfiguration.iceServers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdp_must_look_like_one_and_be_bounded() {
        assert!(Sdp::parse("v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\n").is_ok());
        assert_eq!(
            Sdp::parse("hello").map_err(|e| e.code),
            Err(ErrorCode::InvalidSdp)
        );
        let huge = format!("v=0{}", "a".repeat(Sdp::MAX_BYTES));
        assert_eq!(
            Sdp::parse(&huge).map_err(|e| e.code),
            Err(ErrorCode::InvalidSdp)
        );
    }

    #[test]
    fn candidate_uses_browser_field_names() {
        let json = r#"{"candidate":"candidate:1 1 udp 1 127.0.0.1 5000 typ host","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"ab"}"#;
        let c: Candidate = serde_json::from_str(json).expect("parse");
        assert_eq!(c.sdp_mid.as_deref(), Some("0"));
        assert_eq!(c.sdp_m_line_index, Some(0));
        assert_eq!(serde_json::to_string(&c).expect("serialize"), json);
    }

    #[test]
    fn end_of_candidates_and_nulls_are_accepted() {
        let c: Candidate =
            serde_json::from_str(r#"{"candidate":"","sdpMid":null,"sdpMLineIndex":null}"#)
                .expect("parse");
        assert!(c.candidate.is_empty());
        assert_eq!(c.sdp_mid, None);
    }

    #[test]
    fn oversized_candidates_are_rejected() {
        let json = format!(
            r#"{{"candidate":"{}"}}"#,
            "x".repeat(Candidate::MAX_CANDIDATE_BYTES + 1)
        );
        assert!(serde_json::from_str::<Candidate>(&json).is_err());
    }
}
