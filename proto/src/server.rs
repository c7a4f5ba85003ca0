//! Server → browser messages.

use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::ids::{OfferId, PeerId, Req, RoomId};
use crate::payload::{Candidate, IceServer, Sdp};

/// A pending offer as shown to a peer that may answer it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingOffer {
    pub offer_id: OfferId,
    pub from: PeerId,
    pub sdp: Sdp,
    pub candidates: Vec<Candidate>,
}

/// Why a pending offer stopped being pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseReason {
    Answered,
    Withdrawn,
    Expired,
    OffererLeft,
}

/// Everything the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    /// The first frame after connecting.
    Welcome {
        peer_id: PeerId,
        ice_servers: Vec<IceServer>,
        max_message_bytes: usize,
        heartbeat_ms: u64,
    },
    /// Reply to `join`.
    Joined {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<Req>,
        room: RoomId,
        offers: Vec<PendingOffer>,
    },
    /// Reply to `offer`.
    OfferCreated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<Req>,
        offer_id: OfferId,
    },
    /// A new pending offer in a room you joined (or addressed to you).
    Offer {
        offer_id: OfferId,
        room: RoomId,
        from: PeerId,
        sdp: Sdp,
        candidates: Vec<Candidate>,
    },
    /// Reply to `answer`: you won the offer; the caller's buffered candidates.
    Answered {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<Req>,
        offer_id: OfferId,
        candidates: Vec<Candidate>,
    },
    /// To the caller: your offer was answered.
    Answer {
        offer_id: OfferId,
        from: PeerId,
        sdp: Sdp,
    },
    /// A candidate relayed from the other party of an answered offer.
    Candidate {
        offer_id: OfferId,
        from: PeerId,
        candidate: Candidate,
    },
    /// A pending offer you were shown is gone.
    OfferClosed {
        offer_id: OfferId,
        room: RoomId,
        reason: CloseReason,
    },
    /// The other party ended the call or left.
    Hangup { offer_id: OfferId, from: PeerId },
    /// Someone entered a room you are in.
    PeerJoined { room: RoomId, peer_id: PeerId },
    /// Someone left a room you are in (or disconnected).
    PeerLeft { room: RoomId, peer_id: PeerId },
    /// Reply to `ping`.
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<Req>,
    },
    /// Reply to a request that has no other result.
    Ok { req: Req },
    /// A request failed; the connection stays open.
    Error {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        req: Option<Req>,
        code: ErrorCode,
        message: String,
    },
}

impl ServerMessage {
    /// Every `type` the server sends.
    pub const KINDS: [&'static str; 14] = [
        "welcome",
        "joined",
        "offer_created",
        "offer",
        "answered",
        "answer",
        "candidate",
        "offer_closed",
        "hangup",
        "peer_joined",
        "peer_left",
        "pong",
        "ok",
        "error",
    ];

    /// This message's `type` (bounded: fit for a metric label).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Welcome { .. } => "welcome",
            Self::Joined { .. } => "joined",
            Self::OfferCreated { .. } => "offer_created",
            Self::Offer { .. } => "offer",
            Self::Answered { .. } => "answered",
            Self::Answer { .. } => "answer",
            Self::Candidate { .. } => "candidate",
            Self::OfferClosed { .. } => "offer_closed",
            Self::Hangup { .. } => "hangup",
            Self::PeerJoined { .. } => "peer_joined",
            Self::PeerLeft { .. } => "peer_left",
            Self::Pong { .. } => "pong",
            Self::Ok { .. } => "ok",
            Self::Error { .. } => "error",
        }
    }

    /// The JSON text frame for this message.
    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail: every map key is a string.
        serde_json::to_string(self).unwrap_or_default()
    }
}
